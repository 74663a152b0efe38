"""Grading test helpers: the injected job function the real worker processes run, real tiny ONNX
submissions, and challenge files.

``fake_job`` reads what to do from the submission's manifest ``extra.fake`` (values to report, sleep,
a failure to raise, infra failures before succeeding) so the lifecycle can be driven exactly. The
``job_record`` fixture (conftest.py) puts this folder on the workers' PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from harness.errors import SubmissionFailure

JOB_FN = "helpers_grading:fake_job"


# ---- the injected job function (runs inside worker processes) ---------------------------------

def fake_job(job: dict) -> dict:
    manifest = json.loads((Path(job["submission_path"]) / "submission.json").read_text())
    fake = manifest["extra"]["fake"]
    record = Path(os.environ["GRADING_TEST_RECORD"])
    key = f"{job['submission']}|{job['dataset']}|{job['split']}"
    # one line per execution: the test counts executions against endings
    previous = sum(line.startswith(key + "|") for line in record.read_text().splitlines()) if record.exists() else 0
    with open(record, "a") as fh:
        fh.write(f"{key}|{job['attempt']}\n")
    print(f"fake job {job['submission']} on {job['dataset']} attempt {job['attempt']}", flush=True)
    if fake.get("print_lines"):
        for i in range(fake["print_lines"]):
            print(f"line {i:06d} " + "x" * 40)
        print("last line", flush=True)
    time.sleep(fake.get("sleep", 0.0))
    from harness import datasets

    datasets.load(job["dataset"])  # real: an organizer file that is no dataset is our (infra) error
    if previous < fake.get("infra_failures", 0):  # counted by executions: Dask retries reuse the spec
        raise RuntimeError("simulated infrastructure failure")
    if "fail" in fake:
        raise SubmissionFailure(fake["fail"], "simulated participant failure")
    metrics = {}
    for name, value in fake["values"].items():
        metric, key = name.split(".")
        value = float(value)
        metrics.setdefault(metric, {})[key] = value
        metrics[metric][key + "_ci95"] = [value - fake.get("ci", 0.01), value + fake.get("ci", 0.01)]
    return {"dataset": {"name": job["dataset"], "factor_names": ["a", "b", "c"], "factor_sizes": [4, 5, 6]},
            "preset": job["preset"], "seed": job["seed"], "metrics": metrics,
            "timing": {"encode_s": 0.0, "metrics_s": {}, "total_s": 0.0, "images_encoded": 0}}


# ---- submissions and challenge files ---------------------------------------------------------------------------------

def write_onnx_encoder(path: Path, latent_dim: int = 3) -> None:
    """A real ONNX encoder for 16x16x1 images: flatten, then one matrix (band means of the dummy)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((256, latent_dim), dtype=np.float32)
    for k in range(min(latent_dim, 3)):
        weights[5 * k * 16: (5 * k + 5) * 16, k] = 1.0 / 80.0
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["codes"])],
        "encoder",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("codes", TensorProto.FLOAT, ["N", latent_dim])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def make_submission(root: Path, name: str, fake: dict | None = None, participant: str | None = None) -> Path:
    sub = root / name
    sub.mkdir(parents=True)
    write_onnx_encoder(sub / "encoder.onnx")
    extra = {"fake": fake or {}}
    if participant:
        extra["participant"] = participant
    (sub / "submission.json").write_text(json.dumps({
        "name": name, "format": "onnx", "model": "encoder.onnx",
        "input": {"channels": 1, "height": 16, "width": 16}, "latent_dim": 3, "outputs": ["mean"], "extra": extra,
    }))
    return sub


CHALLENGE = """
name = "test-challenge"
[splits.public]
datasets = ["dummy"]
{private}
[metrics]
preset = "challenge"
[ranking]
method = "mean_rank"
values = ["mig.discrete_mig", "sap.sap_score"]
[limits]
wall_seconds = 60
memory_mb = 2048
threads = 1
[grading]
max_attempts = {max_attempts}
lease_seconds = {lease}
"""


def write_challenge(path: Path, *, private=False, max_attempts=3, lease=30) -> Path:
    private_block = '[splits.private]\ndatasets = ["private.bin"]' if private else ""
    if private:
        (path.parent / "private.bin").write_bytes(b"organizer file")
    path.write_text(CHALLENGE.format(private=private_block, max_attempts=max_attempts, lease=lease))
    return path
