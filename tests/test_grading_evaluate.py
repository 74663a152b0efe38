"""End to end with the real job: sandboxed ONNX encoders scored by the real metrics, ranked."""

import json

from helpers_grading import make_submission

CHALLENGE = """
name = "e2e"
[splits.public]
datasets = ["dummy"]
[metrics]
names = ["mig", "sap"]
[ranking]
values = ["mig.discrete_mig", "sap.sap_score"]
[limits]
wall_seconds = 120
memory_mb = 4096
threads = 1
"""


def test_real_evaluation_through_the_grader(tmp_path, job_record):
    from harness.grading import Store, build_board, grade, load_challenge

    subs = tmp_path / "subs"
    make_submission(subs, "bands", {})            # reads each factor's band: a clean code
    broken = make_submission(subs, "truncated", {})
    (broken / "encoder.onnx").write_bytes((broken / "encoder.onnx").read_bytes()[:40])  # the runtime refuses it
    (tmp_path / "c.toml").write_text(CHALLENGE)
    summary = grade([subs], load_challenge(tmp_path / "c.toml"), tmp_path / "g.db", workers=2)
    assert summary.counts["finished"] == 1 and summary.counts["failed"] == 1
    with Store(tmp_path / "g.db") as store:
        rows = {r["submission"]: r for r in store.jobs()}
        board = build_board(store)
    result = json.loads(rows["bands"]["result"])
    assert result["dataset"]["name"] == "dummy"
    assert 0.5 < result["metrics"]["mig"]["discrete_mig"] <= 1.0
    assert rows["truncated"]["failure_kind"] in ("load_error", "invalid_submission")
    assert [r.name for r in board.rows] == ["bands"]


def test_a_models_exception_text_is_never_published(tmp_path, job_record):
    """A model that raises with what it saw (held-out pixels) gets its text to the organizer's
    detail only: status lines and every board format show the kind and our own message."""
    import subprocess
    import sys

    import torch

    from harness.grading import Store, grade, load_challenge

    class Leaky(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("LEAK " + str(float(x.sum())))

    subs = tmp_path / "subs"
    folder = make_submission(subs, "leaky", {})
    torch.jit.save(torch.jit.script(Leaky()), str(folder / "encoder.pt"))
    manifest = json.loads((folder / "submission.json").read_text())
    manifest.update(format="torchscript", model="encoder.pt")
    (folder / "submission.json").write_text(json.dumps(manifest))
    (folder / "encoder.onnx").unlink()
    (tmp_path / "c.toml").write_text(CHALLENGE)
    db = tmp_path / "g.db"
    grade([subs], load_challenge(tmp_path / "c.toml"), db, workers=1)
    with Store(db) as store:
        row = store.jobs()[0]
    assert row["failure_kind"] == "runtime_error" and "LEAK" in (row["failure_detail"] or "")
    assert "LEAK" not in row["failure_message"]
    for args in (["status"], *(["leaderboard", "--format", f] for f in ("table", "csv", "json", "md", "html"))):
        out = subprocess.run([sys.executable, "-m", "harness", *args, "--db", str(db)], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "LEAK" not in out.stdout + out.stderr, args
