"""Benchmark: `harness evaluate` (challenge preset, procedural dSprites) against the 2019 way.

harness: `harness evaluate` run as a user runs it (the CLI in its own process; wall and CPU
seconds of it and its sandboxed child): every metric declares its sample, each unique grid index
is rendered and encoded once through the sandboxed ONNX encoder, every metric scores from the code
table. Beside it, the same sandboxed encoder alone on images rendered beforehand: the ceiling for
evaluate's encoding (target: evaluate encodes at >= 90% of it).

2019 way: disentanglement_lib's own metric functions (factor_vae, dci, sap, mig, irs with the
study gin values), each sampling and encoding on its own through a TorchScript representation
function in-process, batch by batch (16 or 64 images per call), over the same procedural dataset.

    python bench/bench_evaluate.py                       # both, study sizes
    python bench/bench_evaluate.py --skip-2019           # harness only (--skip-harness: 2019 only)
    python bench/bench_evaluate.py --submission DIR      # another submission (default: submissions/example)
    python bench/bench_evaluate.py --scale-2019 0.1      # the 2019 side at 0.1x the study sizes, extrapolated

The encoder is the example submission when it exists (else its training checkpoint, exported
here; else a random-init encoder of the DESIGN 7 architecture). The 2019 side needs the same
network as TorchScript: from the example's checkpoint when present, else the random-init encoder
(same architecture, same cost).
Prints wall times, the ratio, and where the time goes. Figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STUDY = {  # disentanglement_lib unsupervised_study_v1 metric gin values (DESIGN 4)
    "factor_vae": dict(batch_size=64, num_train=10000, num_eval=5000, num_variance_estimate=10000),
    "dci": dict(num_train=10000, num_test=5000, batch_size=16),
    "sap": dict(num_train=10000, num_test=5000, batch_size=16, continuous_factors=False),
    "mig": dict(num_train=10000, batch_size=16),
    "irs": dict(num_train=10000, batch_size=16, diff_quantile=0.99),
}


def _random_encoder(seed: int = 0):
    """DESIGN 7 architecture, random init, its mean head rescaled so that every code dimension has
    std 1 on dSprites images (active, std >= 0.05, as in a trained model): a collapsed code lets
    disentanglement_lib's FactorVAE return before encoding anything (at 0.1x it then encoded 1,000
    images instead of ~100,000, and the 2019 side looked cheaper than it is)."""
    import torch

    from harness import datasets
    from harness.baseline.models import ConvEncoder

    torch.manual_seed(seed)
    encoder = ConvEncoder(1, 64, 64, 10).eval()
    ds = datasets.load("dsprites")
    images = ds.observations(np.random.default_rng(seed).integers(0, ds.num_observations, 1024))
    x = torch.from_numpy(np.moveaxis(images.astype(np.float32) / 255.0, -1, 1).copy())
    with torch.no_grad():
        out = encoder(x)
        std = (out[0] if isinstance(out, (tuple, list)) else out).std(dim=0).clamp_min(1e-6)
        encoder.mean.weight.div_(std[:, None])
        encoder.mean.bias.div_(std)
    return encoder


def prepare_models(submission: Path | None, work: Path) -> tuple[Path, Path, str]:
    """(harness submission folder, TorchScript file for the 2019 side, description)."""
    from harness.baseline.export import export_checkpoint, export_encoder

    ts_dir = work / "torchscript"
    checkpoint = submission / "checkpoint.safetensors" if submission is not None else None
    if submission is not None and (submission / "submission.json").exists():
        if checkpoint.exists():
            export_checkpoint(checkpoint, ts_dir, format="torchscript", validate=False)
            what = f"{submission} (2019 side: the same network from its checkpoint, as TorchScript)"
        else:
            export_encoder(_random_encoder(), ts_dir, input_shape=(1, 64, 64), format="torchscript", validate=False)
            what = f"{submission} (2019 side: random-init encoder of the same architecture, as TorchScript)"
        return submission, _model_file(ts_dir), what
    if checkpoint is not None and checkpoint.exists():  # trained, not exported yet: export it both ways
        onnx_dir = work / "checkpoint-onnx"
        export_checkpoint(checkpoint, onnx_dir, format="onnx", validate=False)
        export_checkpoint(checkpoint, ts_dir, format="torchscript", validate=False)
        return onnx_dir, _model_file(ts_dir), f"{checkpoint} exported to ONNX (harness) and TorchScript (2019)"
    encoder = _random_encoder()
    onnx_dir = work / "random-onnx"
    export_encoder(encoder, onnx_dir, input_shape=(1, 64, 64), format="onnx", name="random-init", validate=False)
    export_encoder(encoder, ts_dir, input_shape=(1, 64, 64), format="torchscript", validate=False)
    return onnx_dir, _model_file(ts_dir), "random-init DESIGN 7 encoder (no example submission yet)"


def _model_file(folder: Path) -> Path:
    return folder / json.loads((folder / "submission.json").read_text())["model"]


def run_harness(submission: Path, out: Path, sandbox: str) -> dict:
    """``harness evaluate`` as a user runs it: the CLI in its own process, wall and CPU seconds of
    that process and its children (the sandboxed encoder included)."""
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "evaluate", str(submission), "--out", str(out),
                           "--sandbox", sandbox, "--seed", "0"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"harness evaluate exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    results = json.loads((out / "results.json").read_text())
    results["_wall_s"] = wall
    results["_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return results


def standalone_throughput(submission: Path, sandbox: str, images: int = 32_768, batch: int = 2048,
                          repeats: int = 3) -> float:
    """Images/s of the same sandboxed encoder on images rendered beforehand (nothing else running),
    in calls of the size evaluate makes: the ceiling for evaluate's encoding (the best of
    ``repeats`` runs, so that the ratio to it is not flattered by a slow run)."""
    from harness import datasets
    from harness.sandbox import open_encoder

    ds = datasets.load("dsprites")
    pixels = ds.observations(np.random.default_rng(0).integers(0, ds.num_observations, size=images))
    rates = []
    with open_encoder(submission, backend=sandbox, device="cpu") as session:
        session.encode(pixels[:batch])  # warm-up: the runtime's first call allocates
        for _ in range(repeats):
            t0 = time.perf_counter()
            for start in range(0, images, batch):
                session.encode(pixels[start:start + batch])
            rates.append(images / (time.perf_counter() - t0))
    return max(rates)


_SIZES = ("num_train", "num_eval", "num_test", "num_variance_estimate")


def run_2019(torchscript: Path, scale: float = 1.0) -> dict:
    """Each DL metric on its own: sample, encode batch by batch through TorchScript, score.

    ``scale`` < 1 runs every sample size times ``scale`` and extrapolates the time linearly (the
    images encoded are linear in the sizes; so, nearly, is the classifiers' fitting)."""
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    import dlib_oracle  # the metrics engineer's shims: gin denylist rename, gin.tf alias, tf stub

    from harness import datasets

    dl = dlib_oracle.load()
    dlib_oracle.configure(["prune_dims.threshold = 0.05"])  # the study's FactorVAE gin

    class TimedAdapter(dlib_oracle.GroundTruthAdapter):
        render_s = 0.0

        def sample_observations_from_factors(self, factors, random_state):
            t0 = time.perf_counter()
            images = super().sample_observations_from_factors(factors, random_state)
            TimedAdapter.render_s += time.perf_counter() - t0
            return images

    torch.set_num_threads(2)
    model = torch.jit.load(str(torchscript)).eval()
    encode_s = [0.0]
    images = [0]

    def representation_function(x):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1), dtype=np.float32)))
        out = out[0] if isinstance(out, (tuple, list)) else out
        encode_s[0] += time.perf_counter() - t0
        images[0] += len(x)
        return out.numpy()

    data = TimedAdapter(datasets.load("dsprites"))
    fns = {"factor_vae": dl.factor_vae.compute_factor_vae, "dci": dl.dci.compute_dci,
           "sap": dl.sap_score.compute_sap, "mig": dl.mig.compute_mig, "irs": dl.irs.compute_irs}
    out = {}
    for name, fn in fns.items():
        e0, r0, i0 = encode_s[0], data.render_s, images[0]
        sizes = {k: (max(2, int(round(v * scale))) if k in _SIZES else v) for k, v in STUDY[name].items()}
        t0 = time.perf_counter()
        scores = fn(data, representation_function, np.random.RandomState(0), **sizes)
        wall = time.perf_counter() - t0
        enc, ren = encode_s[0] - e0, data.render_s - r0
        out[name] = {k: v / scale for k, v in {"wall_s": wall, "encode_s": enc, "render_s": ren,
                                                 "score_s": wall - enc - ren, "images": images[0] - i0}.items()}
        out[name]["scores"] = scores
        note = "" if scale == 1 else f"  -> x{1 / scale:g} = {wall / scale:8.1f} s extrapolated"
        print(f"  2019 {name:<10} {wall:8.1f} s  (render {ren:6.1f}, encode {enc:7.1f}, "
              f"score {wall - enc - ren:7.1f}; {images[0] - i0:>9,} images){note}", flush=True)
    return out


def _print_harness(res: dict, sandbox: str, standalone: float | None) -> None:
    ev = res["evaluations"][0]
    t = ev["timing"]
    wall, cpu = res["_wall_s"], res["_cpu_s"]
    print(f"\nharness evaluate (challenge preset, dsprites, sandbox {sandbox}, device "
          f"{res['environment']['device']}): {wall:.1f} s wall, {cpu:.1f} CPU-s (targets <= 60 s, <= 110 CPU-s)")
    print(f"  images requested {t['images_requested']:,}, encoded {t['images_encoded']:,} (unique grid points)")
    table_s = t.get("code_table_s", t["encode_s"])
    rate = t["images_encoded"] / table_s
    print(f"  code table {table_s:.1f} s: {rate:,.0f} images/s (render {t['render_s']:.1f} s in a thread, "
          f"inside the encoder's calls {t['encode_s']:.1f} s)")
    if standalone:
        print(f"  the same sandboxed encoder alone, on images rendered beforehand (best of 3): {standalone:,.0f} images/s; "
              f"evaluate encodes at {rate / standalone:.0%} of it (target >= 90%)")
    metrics_s = sum(t["metrics_s"].values())
    print(f"  metrics {metrics_s:.1f} s, report figures {t['report_s']:.1f} s, start-up/loading/report files "
          f"{wall - t['total_s']:.1f} s")
    for name, seconds in t["metrics_s"].items():
        print(f"  metric {name:<10} {seconds:7.1f} s (sample + score)")
    for name, values in ev["metrics"].items():
        print(f"  {name}: " + ", ".join(f"{k}={v!r}" for k, v in values.items()
                                       if isinstance(v, (int, float)) and not k.endswith("_ci95")))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--submission", type=Path, default=REPO / "submissions" / "example")
    parser.add_argument("--sandbox", default="process")
    parser.add_argument("--skip-2019", action="store_true", help="only the harness side")
    parser.add_argument("--skip-harness", action="store_true", help="only the 2019 side")
    parser.add_argument("--scale-2019", type=float, default=1.0,
                        help="run the 2019 side at these times the study sizes and extrapolate (e.g. 0.1: "
                             "at study sizes it encodes ~1 M images 64 at a time, about an hour on 2 cores)")
    parser.add_argument("--out", type=Path, default=None, help="keep results.json/report.html here")
    parser.add_argument("--skip-standalone", action="store_true",
                        help="skip timing the encoder alone (the 90%% target's reference)")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start "
          f"(other work on the machine slows both sides); torch {torch.__version__} "
          f"(cuda available: {torch.cuda.is_available()}), onnxruntime {onnxruntime.__version__} "
          f"{onnxruntime.get_available_providers()}")
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        work = Path(tmp)
        sub, ts, what = prepare_models(args.submission, work)
        print(f"encoder: {what}", flush=True)
        res = None
        if not args.skip_harness:
            res = run_harness(sub, args.out or work / "out", args.sandbox)
            if res["status"] != "ok":
                print("harness evaluation failed:", json.dumps(res["failure"]))
                return 1
            standalone = None if args.skip_standalone else standalone_throughput(sub, args.sandbox)
            _print_harness(res, args.sandbox, standalone)
            print(f"  load average after: {os.getloadavg()[0]:.2f}")
        if args.skip_2019:
            return 0
        print(f"\n2019 way (disentanglement_lib metric functions, TorchScript, each metric on its own; "
              f"load average {os.getloadavg()[0]:.2f}):", flush=True)
        t0 = time.perf_counter()
        old = run_2019(ts, args.scale_2019)
        measured = time.perf_counter() - t0
        old_wall = sum(v["wall_s"] for v in old.values())
        enc = sum(v["encode_s"] for v in old.values())
        ren = sum(v["render_s"] for v in old.values())
        imgs = sum(v["images"] for v in old.values())
        label = "" if args.scale_2019 == 1 else (f" (extrapolated from {measured:.1f} s measured at "
                                                 f"{args.scale_2019:g} x the study sizes)")
        print(f"  total {old_wall:.1f} s{label}: render {ren:.1f} s, encode {enc:.1f} s, "
              f"score {old_wall - enc - ren:.1f} s, {int(imgs):,} images")
        if res is not None:
            print(f"\nharness {res['_wall_s']:.1f} s vs 2019 way {old_wall:.1f} s: "
                  f"{old_wall / res['_wall_s']:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
