"""Throughput of the reference conv encoder (DESIGN 7) exported to ONNX: in-process vs sandboxed.

    python bench/bench_sandbox.py [--images 10240] [--batch 1024] [--threads 2] [--repeats 3]
                                  [--backends process,bwrap] [--flood-mb 1024]

Prints images/s for the same onnxruntime settings (threads, no spinning) and the same uint8 ->
float32 conversion in-process (backend "none") and through each sandbox backend, and the overhead.
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


def export_reference_encoder(folder: str) -> str:
    import torch

    torch.manual_seed(0)
    try:
        from harness.baseline.export import export_encoder
        from harness.baseline.models import ConvEncoder

        export_encoder(ConvEncoder(1, 64, 64, 10), folder, input_shape=(1, 64, 64), format="onnx",
                       name="bench-reference", validate=False)
        return "harness.baseline ConvEncoder via export_encoder"
    except ImportError:  # baseline package not available: the same architecture, exported here
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


def time_backend(sub, backend, images, limits, repeats):
    from harness.sandbox import open_encoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        with open_encoder(sub, backend=backend, limits=limits) as enc:
            start_s = time.perf_counter() - t0
            enc.encode(images[: limits.batch_size])  # warm-up: arena allocation, first-run kernels
            rates = []
            for _ in range(repeats):
                t = time.perf_counter()
                codes = enc.encode(images)
                rates.append(len(images) / (time.perf_counter() - t))
            layers = enc.layers
    return statistics.median(rates), rates, start_s, codes, layers


def flood(mb: int) -> None:
    import torch  # noqa: F401

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
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default="process,bwrap")
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
    with tempfile.TemporaryDirectory() as tmp:
        how = export_reference_encoder(os.path.join(tmp, "ref"))
        print(f"model: reference conv encoder (DESIGN 7), ONNX, {how}")
        sub = load(os.path.join(tmp, "ref"))
        base, base_rates, _, base_codes, _ = time_backend(sub, "none", images, limits, args.repeats)
        print(f"{'in-process (backend none)':34s} {base:8.0f} images/s  runs: "
              f"{', '.join(f'{r:.0f}' for r in base_rates)}")
        for backend in [b for b in args.backends.split(",") if b]:
            try:
                rate, rates, start_s, codes, layers = time_backend(sub, backend, images, limits, args.repeats)
            except Exception as exc:
                print(f"{'sandboxed (' + backend + ')':34s} unavailable: {exc}")
                continue
            same = np.allclose(codes, base_codes, atol=1e-5)
            print(f"{'sandboxed (' + backend + ')':34s} {rate:8.0f} images/s  runs: "
                  f"{', '.join(f'{r:.0f}' for r in rates)}  overhead {100 * (1 - rate / base):+.1f}%  "
                  f"start {start_s:.2f} s  codes identical: {same}  layers: {len(layers)}")
        sub.close()
    if args.flood_mb:
        flood(args.flood_mb)


if __name__ == "__main__":
    main()
