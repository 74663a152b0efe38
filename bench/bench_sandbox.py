"""Throughput of the reference conv encoder (DESIGN 7) exported to ONNX: in-process vs sandboxed.

    python bench/bench_sandbox.py [--images 10240] [--batch 1024] [--threads 2] [--repeats 5]
                                  [--backends process,bwrap] [--formats onnx,torchscript]
                                  [--flood-mb 1024]

Prints images/s for the same onnxruntime settings (threads, no spinning) and the same uint8 ->
float32 conversion in-process (backend "none") and through each sandbox backend, and the overhead;
runs alternate between backends, and CPU time per image (parent + child) is reported too, since on a
shared machine wall-clock figures move with the load.
``--flood-mb`` also times a TorchScript model that prints that many MB through the sandbox and
reports the parent's peak RSS (the log is truncated to its tail, never held whole).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np


def export_reference_encoder(folder: str, fmt: str = "onnx") -> str:
    import torch

    torch.manual_seed(0)
    try:
        from harness.baseline.export import export_encoder
        from harness.baseline.models import ConvEncoder

        export_encoder(ConvEncoder(1, 64, 64, 10), folder, input_shape=(1, 64, 64), format=fmt,
                       name="bench-reference", validate=False)
        return "harness.baseline ConvEncoder via export_encoder"
    except ImportError:  # baseline package not available: the same architecture, exported here
        if fmt != "onnx":
            raise
        import json

        from torch import nn

        enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
                            nn.Conv2d(32, 64, 2, 2), nn.ReLU(), nn.Conv2d(64, 64, 2, 2), nn.ReLU(), nn.Flatten(),
                            nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
        os.makedirs(folder, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(enc, (torch.zeros(2, 1, 64, 64),), os.path.join(folder, "encoder.onnx"),
                              input_names=["x"], output_names=["mean"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
        with open(os.path.join(folder, "submission.json"), "w") as fh:
            json.dump({"name": "bench-reference", "format": "onnx", "model": "encoder.onnx",
                       "input": {"channels": 1, "height": 64, "width": 64}, "latent_dim": 10}, fh)
        return "same architecture exported in the bench (harness.baseline not importable)"


class DirectEncoder:
    """The model called straight from this process (the runtime, the same settings and uint8 ->
    float32 conversion, batch by batch): the floor every backend is measured against."""

    _proc = None
    _sd = None
    layers: list = []

    def __init__(self, sub, limits):
        from harness.sandbox import loaders

        self._prepare = loaders.prepare_batch
        self._channels = sub.input_shape[0]
        self._batch = limits.batch_size
        self._forward, _ = loaders.load_model(fmt=sub.format, path=sub.model_path, root=sub.root,
                                              threads=limits.threads, device="cpu", num_outputs=1,
                                              input_shape=sub.input_shape)

    def encode(self, images):
        x = images.transpose(0, 3, 1, 2)
        return np.concatenate([self._forward(self._prepare(x[i:i + self._batch], channels=self._channels))[0]
                               for i in range(0, len(x), self._batch)])


def child_cpu_seconds(enc) -> float:
    """CPU time of the sandboxed child: every process of its uid (bwrap: the launcher is a grandchild)."""
    if enc._proc is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    uid = enc._sd.uid if enc._sd is not None else None
    pids = [enc._proc.pid]
    if uid is not None:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) == uid]
    total = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def _uid_of(pid):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def compare(sub, backends, images, limits, repeats):
    """Open every backend at once, then alternate runs between them so that load drift on a shared
    machine hits all of them alike. Returns {backend: (rates, cpu_per_1000, start_s, codes, layers)}."""
    from contextlib import ExitStack

    from harness.sandbox import open_encoder

    results = {}
    with ExitStack() as stack, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sessions = {}
        for backend in backends:
            t0 = time.perf_counter()
            try:
                enc = DirectEncoder(sub, limits) if backend == "direct" else \
                    stack.enter_context(open_encoder(sub, backend=backend, limits=limits))
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"{backend}: unavailable: {exc}")
                continue
            sessions[backend] = (enc, time.perf_counter() - t0)
            enc.encode(images[: limits.batch_size])  # warm-up: arena allocation, first-run kernels
        rates = {b: [] for b in sessions}
        cpu = {b: [] for b in sessions}
        codes = {}
        for _ in range(repeats):
            for backend, (enc, _) in sessions.items():
                c0 = time.process_time() + child_cpu_seconds(enc)
                t = time.perf_counter()
                codes[backend] = enc.encode(images)
                rates[backend].append(len(images) / (time.perf_counter() - t))
                cpu[backend].append((time.process_time() + child_cpu_seconds(enc) - c0) / len(images) * 1e6)
        for backend, (enc, start_s) in sessions.items():
            results[backend] = (rates[backend], statistics.median(cpu[backend]), start_s, codes[backend], enc.layers)
    return results


def flood(mb: int) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    import hostile

    from harness.sandbox import Limits, open_encoder
    from harness.submission import load

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sub = hostile.torchscript(os.path.join(tmp, "flood"), "print", lines=mb * 1024)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        with open_encoder(load(sub), limits=Limits(wall_seconds=600, threads=1)) as enc:
            enc.encode(hostile.images(1))
            total = enc._log.total
            kept = len(enc.log)
        dt = time.perf_counter() - t
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"flood: the model printed {total / 1024**2:.0f} MiB in {dt:.1f} s; the parent kept {kept} bytes of log; "
          f"parent peak RSS {rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MiB")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10240)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backends", default="process,bwrap")
    ap.add_argument("--formats", default="onnx", help="comma list of onnx, torchscript, torch_export")
    ap.add_argument("--flood-mb", type=int, default=0)
    args = ap.parse_args(argv)

    from harness.sandbox import Limits
    from harness.submission import load

    rng = np.random.default_rng(0)  # dSprites-like binary images
    images = (rng.random((args.images, 64, 64, 1)) < 0.1).astype(np.uint8) * 255
    limits = Limits(threads=args.threads, batch_size=args.batch)
    print(f"machine: {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.2f} "
          f"(shared with other work: figures are lower bounds); threads={args.threads}, batch={args.batch}, "
          f"images={args.images}, median of {args.repeats}")
    for fmt in [f for f in args.formats.split(",") if f]:
        with tempfile.TemporaryDirectory() as tmp:
            how = export_reference_encoder(os.path.join(tmp, "ref"), fmt)
            print(f"model: reference conv encoder (DESIGN 7), {fmt}, {how}")
            sub = load(os.path.join(tmp, "ref"))
            backends = ["direct", "none"] + [b for b in args.backends.split(",") if b and b not in ("none", "direct")]
            results = compare(sub, backends, images, limits, args.repeats)
            sub.close()
        base = statistics.median(results["direct"][0])
        base_cpu = results["direct"][1]
        labels = {"direct": "in-process (runtime direct)", "none": "unsandboxed (backend none)"}
        for backend, (rates, cpu_k, start_s, codes, layers) in results.items():
            rate = statistics.median(rates)
            label = labels.get(backend, f"sandboxed ({backend})")
            line = (f"  {label:28s} {rate:7.0f} images/s (runs {', '.join(f'{r:.0f}' for r in rates)})  "
                    f"CPU {cpu_k:5.0f} ms per 1000 images ({1e6 / cpu_k:5.0f} images per CPU-second)")
            if backend != "direct":
                line += (f"  overhead: wall {100 * (1 - rate / base):+.1f}%, CPU {100 * (cpu_k / base_cpu - 1):+.1f}%"
                         f"  start {start_s:.2f} s  identical codes: {np.array_equal(codes, results['direct'][3])}"
                         f"  layers: {len(layers)}")
            print(line)
    if args.flood_mb:
        flood(args.flood_mb)


if __name__ == "__main__":
    main()
