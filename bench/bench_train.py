"""Training and export speed of the baseline kit.

    python bench/bench_train.py [--steps 300] [--warmup 100] [--threads 1 2] [--dataset dsprites] [--models beta_vae factor_vae]
                                [--malloc kept glibc]

Prints, per model, thread count and malloc setting: training steps per second at batch 64 on the
dataset (data rendering included, after the warm-up steps that fill the sprite cache) and minor page faults per step, each
measured in a fresh process (the malloc setting is process-wide and glibc's own thresholds adapt
over a process's life). ``kept`` is what ``harness train`` does (``harness.allocator.keep_freed_memory``);
``glibc`` leaves glibc's defaults. Then, for each submission format, the seconds to export a
trained checkpoint and verify it (PyTorch match + ``harness validate`` in the sandbox).
On a machine with CUDA it also times the GPU. Figures depend on the load from other processes:
say what else was running when you quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import torch


def steps_per_second(model, dataset, steps, warmup, threads, device, batch_size, malloc):
    """Measure in this process (called through ``--one`` in a fresh interpreter)."""
    import harness.baseline.training as training
    from harness.baseline import train

    if malloc == "glibc":
        training.keep_freed_memory = lambda: False
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        warm = train(model, dataset, out=tmp, steps=warmup, batch_size=batch_size, device=device, progress=False,
                     export_format=None, checkpoint_every=10_000)
        t0, c0 = time.perf_counter(), time.process_time()
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        done = train(model, dataset, out=tmp, steps=warmup + steps, batch_size=batch_size, device=device,
                     progress=False, export_format=None, checkpoint_every=10_000)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    assert warm.step == warmup and done.step == warmup + steps
    return {"rate": steps / wall, "cores": cpu / wall, "faults": faults / steps}


def measure_in_fresh_process(model, args, device, threads, malloc):
    spec = json.dumps([model, args.dataset, args.steps, args.warmup, threads, device, args.batch_size, malloc])
    done = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dataset", default="dsprites")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", nargs="+", default=["beta_vae", "annealed_vae", "factor_vae", "dip_vae_i",
                                                        "dip_vae_ii", "beta_tcvae"])
    parser.add_argument("--formats", nargs="+", default=["onnx", "torchscript", "torch_export"])
    parser.add_argument("--malloc", nargs="+", choices=["kept", "glibc"], default=["kept", "glibc"],
                        help="kept: harness.allocator.keep_freed_memory (what harness train does); glibc: its defaults")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, printed as JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(steps_per_second(*json.loads(args.one))))
        return
    load = os.getloadavg()
    print(f"# harness baseline bench: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} at start, torch {torch.__version__}")
    print(f"## training: {args.dataset}, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          "each row in a fresh process")
    print("| model | device | threads | malloc | steps/s | CPU use (cores) | minor faults/step |\n|---|---|---|---|---|---|---|")
    devices = [("cpu", t) for t in args.threads] + ([("cuda", 1)] if torch.cuda.is_available() else [])
    for model in args.models:
        for device, threads in devices:
            for malloc in args.malloc:
                m = measure_in_fresh_process(model, args, device, threads, malloc)
                print(f"| {model} | {device} | {threads} | {malloc} | {m['rate']:.2f} | {m['cores']:.2f} | "
                      f"{m['faults']:.0f} |", flush=True)

    from harness.baseline import export_checkpoint, train

    torch.set_num_threads(1)
    print("## export + verify (+ harness validate in the sandbox) of a 64x64 beta_vae checkpoint, 1 thread")
    print("| format | exporter | seconds | model bytes | max abs diff |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        run = train("beta_vae", args.dataset, out=tmp, steps=2, batch_size=8, progress=False, export_format=None)
        for fmt in args.formats:
            result = export_checkpoint(run.checkpoint, os.path.join(tmp, fmt), format=fmt)
            print(f"| {fmt} | {result.exporter} | {result.seconds:.1f} | {result.model_path.stat().st_size} | "
                  f"{result.max_abs_diff:.1g} |", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
