"""Dataset throughput and memory figures (not a timed test).

    python bench/bench_datasets.py [--skip-h5] [--keep]

Prints: procedural dSprites images/s (target >= 20,000), procedural shapes3d images/s
(target >= 2,000), and the peak RSS of a fresh process sampling 100,000 random observations, in
batches of 10,000 as the evaluator does, from a 480,000-image chunked uint8 HDF5 file
(64x64x3, Shapes3D-sized, 5.9 GB, written to /tmp and removed afterwards; target < 1 GB).
Figures depend on the machine and on what else runs on it: say so when you quote them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from harness import datasets  # noqa: E402

H5_PATH = "/tmp/harness_bench_480k.h5"
N_H5, SHAPE = 480_000, (64, 64, 3)


def _cache_cover(ds) -> np.ndarray:
    """Factor combinations touching every cached sprite / template once: the dataset's own
    ``cache_cover()`` where it has one (mpi3d_toy), else one hue, and five positions per axis, which
    reach each of dSprites' five sub-pixel phases."""
    if hasattr(ds, "cache_cover"):
        return ds.cache_cover()
    ranges = [range(1) if "hue" in n else range(min(s, 5)) if n.startswith("pos") else range(s)
              for n, s in zip(ds.factor_names, ds.factor_sizes)]
    return np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, len(ranges))


def throughput(name: str, total: int, batch: int) -> None:
    ds = datasets.load(name)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    ds.observations(ds.factors_to_index(_cache_cover(ds)), rng)
    warm = time.perf_counter() - start
    n = 0
    start = time.perf_counter()
    while n < total:
        idx = rng.integers(0, ds.num_observations, size=batch)
        ds.observations(idx, rng)
        n += batch
    elapsed = time.perf_counter() - start
    print(f"{name}: {n / elapsed:,.0f} images/s ({n:,} random images in batches of {batch:,}, "
          f"{elapsed:.2f} s; first-use cache fill {warm:.2f} s)")


def _content(rows: np.ndarray) -> np.ndarray:
    """Row-dependent pixels (uint8 arithmetic wraps), so a wrong row read is caught."""
    pattern = (np.arange(np.prod(SHAPE)) % 256).astype(np.uint8).reshape(SHAPE)
    return pattern[None] + (rows % 251).astype(np.uint8)[:, None, None, None]


def write_h5() -> None:
    import h5py

    start = time.perf_counter()
    with h5py.File(H5_PATH, "w") as f:
        images = f.create_dataset("images", shape=(N_H5, *SHAPE), dtype=np.uint8, chunks=(16, *SHAPE))
        f.create_dataset("factors", data=np.stack(np.unravel_index(np.arange(N_H5), [10, 10, 10, 8, 4, 15]), -1).astype(np.int32))
        f.attrs["factor_names"] = ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
        f.attrs["factor_sizes"] = [10, 10, 10, 8, 4, 15]
        block = 2048
        for a in range(0, N_H5, block):
            images[a : a + block] = _content(np.arange(a, min(a + block, N_H5)))
    size = os.path.getsize(H5_PATH) / 2**30
    print(f"wrote {H5_PATH}: {N_H5:,} images {SHAPE}, chunks of 16 rows, {size:.1f} GiB in {time.perf_counter() - start:.1f} s")


def sample_h5() -> None:
    """Runs in a fresh process so that its peak RSS is the sampling's alone."""
    ds = datasets.load(H5_PATH)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    checksum, n = 0, 0
    for _ in range(10):
        idx = rng.integers(0, ds.num_observations, size=10_000)
        images = ds.observations(idx)
        assert np.array_equal(images[:50], _content(idx[:50])), "wrong rows read"
        checksum += int(images[:, 0, 0, 0].sum())
        n += len(idx)
    elapsed = time.perf_counter() - start
    # VmHWM is this process's own peak; ru_maxrss would include the parent's peak from before exec
    with open("/proc/self/status") as status:
        peak = int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024
    print(f"sampled {n:,} random observations from {H5_PATH} in batches of 10,000: {elapsed:.1f} s "
          f"({n / elapsed:,.0f} images/s), peak RSS {peak:,.0f} MiB (target < 1,024 MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-h5", action="store_true", help="skip the 5.9 GB HDF5 memory figure")
    parser.add_argument("--keep", action="store_true", help="keep the HDF5 file in /tmp")
    parser.add_argument("--sample-h5", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sample_h5:
        sample_h5()
        return
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared: figures are lower bounds)")
    throughput("dsprites", total=200_000, batch=10_000)
    throughput("shapes3d", total=50_000, batch=5_000)
    throughput("noisy_dsprites", total=20_000, batch=5_000)
    throughput("mpi3d_toy", total=100_000, batch=10_000)
    if args.skip_h5:
        return
    write_h5()
    try:
        subprocess.run([sys.executable, os.path.abspath(__file__), "--sample-h5"], check=True)
    finally:
        if not args.keep:
            os.remove(H5_PATH)


if __name__ == "__main__":
    main()
