"""Grading throughput: N submissions on one dataset, serial (--workers 1) vs --workers 2, and the
sandbox's start-up cost per job (process backend, and docker when an engine and image are there).

    python bench/bench_grading.py                      # 20 submissions on 'dummy', challenge preset
    python bench/bench_grading.py --dataset dsprites --submissions 20 --metrics mig,sap

Attempts are forked from the grader's warm zygote (harness.grading.zygote). Jobs are the real
thing (harness.grading.jobs:evaluate_job: sandboxed encoder + metrics) unless --job encode, which
only encodes the whole dataset through the sandbox (no metrics). Busy cores come from /proc/stat
(the forked attempts are not this process's children): figures count whatever else the machine
is running, so say so when you quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def encode_job(job: dict) -> dict:
    """Encode every observation of the dataset through the sandbox; report code statistics only."""
    from harness import datasets, sandbox, submission
    from harness.sandbox import Limits

    ds = datasets.load(job["dataset"])
    idx = np.arange(min(ds.num_observations, 20000))
    with submission.load(job["submission_path"]) as sub, sandbox.open_encoder(
            sub, backend=job["backend"], device="cpu", limits=Limits(threads=job["limits"]["threads"])) as enc:
        codes = enc.encode(ds.observations(idx))
    return {"dataset": {"name": ds.name, "factor_names": ds.factor_names, "factor_sizes": ds.factor_sizes},
            "preset": None, "seed": job["seed"],
            "metrics": {"codes": {"std": float(codes.std())}},
            "timing": {"encode_s": 0.0, "metrics_s": {}, "total_s": 0.0, "images_encoded": len(idx)}}


def noop_job(job: dict) -> dict:
    """Nothing: measures what a worker process costs by itself."""
    return {"metrics": {}}


def write_encoder(path: Path, shape, latent_dim: int, seed: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w, c = shape
    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal((h * w * c, latent_dim)) / np.sqrt(h * w * c)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["z"]),
         helper.make_node("Tanh", ["z"], ["codes"])],
        "encoder", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info("codes", TensorProto.FLOAT, ["N", latent_dim])],
        [numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def make_submissions(root: Path, n: int, shape, seed: int) -> None:
    for i in range(n):
        sub = root / f"bench-{i:02d}"
        sub.mkdir(parents=True)
        write_encoder(sub / "encoder.onnx", shape, 10, seed + i)
        (sub / "submission.json").write_text(json.dumps({
            "name": sub.name, "format": "onnx", "model": "encoder.onnx",
            "input": {"channels": shape[2], "height": shape[0], "width": shape[1]}, "latent_dim": 10}))


def write_challenge(path: Path, dataset: str, metrics: list[str] | None, values: list[str], params: dict) -> None:
    lines = ['name = "bench"', "[splits.public]", f"datasets = [{json.dumps(dataset)}]", "[metrics]"]
    lines.append(f"names = {json.dumps(metrics)}" if metrics else 'preset = "challenge"')
    for metric, p in params.items():
        lines.append(f"[metrics.params.{metric}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in p.items()]
    lines += ["[ranking]", f"values = {json.dumps(values)}", "[limits]", "threads = 1", "memory_mb = 4096"]
    path.write_text("\n".join(lines) + "\n")


def sandbox_startup(sub_dir: Path, backend: str, repeats: int) -> list[float]:
    from harness import sandbox, submission
    from harness.sandbox import Limits

    times = []
    with submission.load(sub_dir) as sub:
        channels, height, width = sub.input_shape
        image = np.zeros((1, height, width, channels), dtype=np.uint8)
        for _ in range(repeats):
            start = time.perf_counter()
            with sandbox.open_encoder(sub, backend=backend, device="cpu", limits=Limits(threads=1)) as enc:
                enc.encode(image)
            times.append(time.perf_counter() - start)
    return times


def _machine_busy_seconds() -> float:
    """CPU seconds every core spent not idle, from /proc/stat (attempts forked from the zygote are
    not this process's children, so its rusage misses them; on a quiet machine this is the jobs)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--submissions", type=int, default=20)
    ap.add_argument("--dataset", default="dummy")
    ap.add_argument("--metrics", default="mig,sap", help="comma-separated metric names, or 'challenge' (preset)")
    ap.add_argument("--job", choices=["evaluate", "encode"], default="evaluate")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--startup-repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--startup-only", action="store_true", help="only the sandbox start-up figures")
    args = ap.parse_args(argv)

    from harness import datasets
    from harness.grading import grade, load_challenge
    from harness.sandbox import docker as docker_backend

    ds = datasets.load(args.dataset)
    metrics = None if args.metrics == "challenge" else args.metrics.split(",")
    values = {"mig": "mig.discrete_mig", "sap": "sap.sap_score", "irs": "irs.irs", "dci": "dci.disentanglement",
              "factor_vae": "factor_vae.eval_accuracy"}
    ranked = [values[m] for m in (metrics or values) if m in values] or ["mig.discrete_mig"]
    job_fn = None if args.job == "evaluate" else "bench_grading:encode_job"
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])

    print(f"bench_grading: {args.submissions} submissions on {args.dataset!r} "
          f"({ds.num_observations} grid points), job={args.job}, metrics={args.metrics}, "
          f"cpu cores={os.cpu_count()}, load average={os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        make_submissions(tmp / "subs", args.submissions, ds.observation_shape, args.seed)
        write_challenge(tmp / "c.toml", args.dataset, metrics, ranked, {})
        challenge = load_challenge(tmp / "c.toml")
        wall = {}
        for workers in () if args.startup_only else (1, args.workers):
            db = tmp / f"w{workers}.db"
            busy_before = _machine_busy_seconds()
            start = time.perf_counter()
            summary = grade([tmp / "subs"], challenge, db, workers=workers, job_fn=job_fn)
            wall[workers] = time.perf_counter() - start
            cpu = _machine_busy_seconds() - busy_before
            if summary.counts["finished"] != args.submissions:
                from harness.grading import status_report

                print(status_report(db))
                return 1
            cores = os.cpu_count() or 1
            print(f"  --workers {workers}: {wall[workers]:7.2f} s wall ({wall[workers] / args.submissions:.2f} s/job), "
                  f"{cpu:7.2f} CPU-s on the machine: {cpu / wall[workers]:.2f} of {cores} cores busy "
                  f"({cpu / wall[workers] / cores:.0%}; with 2 workers the target is >= 90%)")
        if wall:
            ratio = wall[args.workers] / wall[1]
            print(f"  ratio workers={args.workers} / serial: {ratio:.3f}  (target <= 0.60: "
                  f"{'met' if ratio <= 0.6 else 'NOT met'})")

        from harness.grading.worker import run_in_subprocess

        times = []
        for i in range(args.startup_repeats):
            start = time.perf_counter()
            run_in_subprocess({"job_fn": "bench_grading:noop_job", "job": {}}, tmp / f"noop-{i}", log_cap_bytes=4096)
            times.append(time.perf_counter() - start)
        worker_s = statistics.median(times)
        print(f"worker process per job attempt (forked from the warm zygote, report; no job): median "
              f"{worker_s:.3f} s")
        from harness.datasets import dsprites  # noqa: F401 - imported in the zygote too

        start = time.perf_counter()
        datasets.load("dsprites").observations(np.arange(0, 737_280, 97))  # first use in a job: sprite cache read
        dataset_s = time.perf_counter() - start
        print(f"dataset open (dsprites, first use, 7,601 images): {dataset_s:.3f} s "
              "(in this process, its modules imported, as in a forked attempt)")
        sub0 = tmp / "subs" / "bench-00"
        print(f"sandbox start-up per job (open + 1 image + close, {args.startup_repeats} runs):")
        backends = ["process", "bwrap"]
        ok, why = docker_backend.available()
        backends.append("docker") if ok else print(f"  docker : skipped ({why})")
        for backend in backends:
            try:
                times = sandbox_startup(sub0, backend, args.startup_repeats)
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"  {backend:7s}: failed: {exc}")
                continue
            print(f"  {backend:7s}: median {statistics.median(times):.3f} s, min {min(times):.3f} s, "
                  f"max {max(times):.3f} s; per-job overhead (worker + sandbox + dataset open) "
                  f"{worker_s + statistics.median(times) + dataset_s:.2f} s (target <= 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
