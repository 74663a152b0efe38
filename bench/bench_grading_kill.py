"""An organizer's batch graded twice: once straight through, once with the grader SIGKILLed mid-run
and the same command run again. Prints the counts, whether the boards are identical, and how many
times each job ended (it must be once).

    python bench/bench_grading_kill.py                 # 19 submissions of 12 teams, 2 splits: 38 jobs
    python bench/bench_grading_kill.py --kill-after 10 --workers 2

The batch holds what a real one does: good entries, two teams exporting the default name
`my-encoder`, the same model bytes under two teams, a broken archive, a manifest of deeply nested
JSON, a constant code (valid: it ranks, at 0), NaN codes, a TorchScript model that raises with text
about the images, and an entry named like a spreadsheet formula. The real CLI runs (`harness
grade`, `harness leaderboard --format json`), with the real sandbox and SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_grading import write_encoder  # noqa: E402

SHAPE = (16, 16, 1)  # the dummy dataset's
LATENT = 6
SECRET = "HELD-OUT PIXELS 0 255 255 0"


def _manifest(folder: Path, name, fmt="onnx", model="encoder.onnx", **extra):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "submission.json").write_text(json.dumps({
        "name": name, "format": fmt, "model": model, "input": {"channels": 1, "height": 16, "width": 16},
        "latent_dim": LATENT, "outputs": ["mean"], **extra}))


def _onnx(folder: Path, seed: int, name=None):
    _manifest(folder, name or folder.name)
    write_encoder(folder / "encoder.onnx", SHAPE, LATENT, seed)


def _onnx_graph(folder: Path, nodes, inits, name):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    _manifest(folder, name)
    graph = helper.make_graph(nodes, "encoder", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                               ["N", 1, 16, 16])],
                              [helper.make_tensor_value_info("codes", TensorProto.FLOAT, ["N", LATENT])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "encoder.onnx"))


def make_batch(root: Path, seed: int) -> int:
    from onnx import helper

    rng = np.random.default_rng(seed)
    n = 0
    for team, entries in {"team-a": 3, "team-j": 3, "team-k": 2, "team-l": 1}.items():
        for i in range(entries):
            _onnx(root / team / f"entry-{i}", int(rng.integers(1 << 30)))
            n += 1
    # the default name from two teams: two entries, never a collision
    _onnx(root / "team-b" / "first", int(rng.integers(1 << 30)), name="my-encoder")
    _onnx(root / "team-b" / "second", int(rng.integers(1 << 30)))
    _onnx(root / "team-c" / "mine", int(rng.integers(1 << 30)), name="my-encoder")
    # the same bytes as team-a's first entry under another team: flagged identical
    (root / "team-d" / "copy").mkdir(parents=True)
    for f in ("submission.json", "encoder.onnx"):
        (root / "team-d" / "copy" / f).write_bytes((root / "team-a" / "entry-0" / f).read_bytes())
    n += 4
    # a broken archive and a manifest of deeply nested JSON: invalid_submission, the batch goes on
    (root / "team-e").mkdir()
    (root / "team-e" / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    (root / "team-e" / "deep").mkdir()
    (root / "team-e" / "deep" / "submission.json").write_text("[" * 100_000 + "]" * 100_000)
    n += 2
    # a constant code: valid, ranks at 0
    zeros = np.zeros((256, LATENT), np.float32)
    _onnx_graph(root / "team-f" / "constant", [helper.make_node("Flatten", ["images"], ["flat"], axis=1),
                                               helper.make_node("MatMul", ["flat", "W"], ["codes"])],
                {"W": zeros}, "constant")
    # NaN codes: bad_output
    _onnx_graph(root / "team-i" / "nan", [helper.make_node("Flatten", ["images"], ["flat"], axis=1),
                                          helper.make_node("MatMul", ["flat", "W"], ["z"]),
                                          helper.make_node("Sqrt", ["z"], ["codes"])],
                {"W": -np.ones((256, LATENT), np.float32)}, "nan")
    # an entry (folder) name that is a spreadsheet formula (display names are refused, so the folder)
    _onnx(root / "team-h" / "=1+2", int(rng.integers(1 << 30)), name="sheet")
    n += 3
    # a TorchScript model whose forward raises with text about the images it holds
    import torch

    class Raiser(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] > 0:
                raise RuntimeError("HELD-OUT PIXELS 0 255 255 0")  # SECRET: TorchScript takes no globals
            return x.flatten(1)[:, :6]

    _manifest(root / "team-g" / "raiser", "raiser", fmt="torchscript", model="encoder.pt")
    torch.jit.save(torch.jit.script(Raiser()), str(root / "team-g" / "raiser" / "encoder.pt"))
    return n + 1


def write_challenge(path: Path, private: Path) -> None:
    path.write_text(f"""name = "kill-bench"
[splits.public]
datasets = ["dummy"]
[splits.private]
datasets = [{json.dumps(str(private))}]
[metrics]
preset = "challenge"
[ranking]
values = ["factor_vae.eval_accuracy", "dci.disentanglement", "sap.sap_score", "mig.discrete_mig", "irs.irs"]
[limits]
wall_seconds = 60
memory_mb = 4096
threads = 1
[grading]
max_attempts = 3
lease_seconds = 60
""")


def harness(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          **kwargs)


def ended(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT count(*) FROM jobs WHERE state IN ('finished', 'failed')").fetchone()[0]


def boards(db: Path) -> dict:
    out = {}
    for split in ("public", "private"):
        res = harness("leaderboard", "--db", db, "--split", split, "--format", "json")
        if res.returncode != 0:
            raise SystemExit(f"leaderboard failed: {res.stderr.strip()}")
        out[split] = json.loads(res.stdout)
    return out


def comparable(board: dict) -> dict:
    """A board without the moments it was made or graded at."""
    drop = {"generated_at", "created_at", "finished_at", "submitted_at", "graded_at", "time"}

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in drop}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v
    return strip(board)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kill-after", type=int, default=12, help="SIGKILL the grader once this many jobs ended")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as tmp:
        tmp = Path(tmp)
        n = make_batch(tmp / "subs", args.seed)
        private = tmp / "private.h5"
        res = harness("datasets", "export", "dummy", "--out", private, "--seed", "7")
        if res.returncode != 0:
            raise SystemExit(res.stderr)
        write_challenge(tmp / "c.toml", private)
        grade = ["grade", tmp / "subs", "--challenge", tmp / "c.toml", "--workers", args.workers]
        print(f"bench_grading_kill: {n} submissions, 2 splits, --workers {args.workers}, "
              f"cpu cores={os.cpu_count()}, load average={os.getloadavg()[0]:.2f}")

        start = time.perf_counter()
        straight = harness(*grade, "--db", tmp / "a.db")
        print(f"  run A (straight through): exit {straight.returncode}, {time.perf_counter() - start:.1f} s; "
              f"{straight.stdout.strip().splitlines()[-1] if straight.stdout.strip() else straight.stderr[-300:]}")

        db = tmp / "b.db"
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "harness", *map(str, grade), "--db", db],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while proc.poll() is None and (not db.exists() or ended(db) < args.kill_after):
            time.sleep(0.05)
        at = ended(db)
        os.kill(proc.pid, signal.SIGKILL)  # the grader only: its workers die with it (PDEATHSIG)
        proc.wait()
        with sqlite3.connect(db) as con:
            running = con.execute("SELECT count(*) FROM jobs WHERE state='running'").fetchone()[0]
        print(f"  run B: grader SIGKILLed after {time.perf_counter() - start:.1f} s with {at} jobs ended, "
              f"{running} running")
        again = harness(*grade, "--db", db)
        print(f"  run B again (same command): exit {again.returncode}, {time.perf_counter() - start:.1f} s in all; "
              f"{again.stdout.strip().splitlines()[-1] if again.stdout.strip() else again.stderr[-300:]}")

        with sqlite3.connect(db) as con:
            jobs = con.execute("SELECT count(*) FROM jobs").fetchone()[0]
            ends = dict(con.execute("SELECT job_id, count(*) FROM events WHERE event IN ('finished', 'failed') "
                                    "GROUP BY job_id").fetchall())
            requeued = con.execute("SELECT count(*) FROM events WHERE event='requeued'").fetchone()[0]
            states = dict(con.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
            kinds = dict(con.execute("SELECT failure_kind, count(*) FROM jobs WHERE state='failed' "
                                     "GROUP BY failure_kind").fetchall())
        once = sum(1 for c in ends.values() if c == 1)
        print(f"  jobs: {jobs}; states {states}; failures by kind {kinds}")
        print(f"  jobs that ended exactly once: {once} of {jobs} (more than once: "
              f"{sum(1 for c in ends.values() if c > 1)}, never: {jobs - len(ends)}); re-queued after the kill: "
              f"{requeued}")
        a, b = boards(tmp / "a.db"), boards(db)
        for split in ("public", "private"):
            same = comparable(a[split]) == comparable(b[split])
            rows = a[split]["entries"]
            print(f"  {split} board: {len(rows)} ranked, A and B identical: {same}")
        text = json.dumps(b) + harness("status", "--db", db).stdout
        for split in ("public", "private"):
            text += harness("leaderboard", "--db", db, "--split", split, "--format", "csv").stdout
        print(f"  the raiser's text on a board or in status: {SECRET in text}; "
              f"a CSV cell starting with '=': {any(c.startswith('=') for ln in text.splitlines() for c in ln.split(','))}")
        ok = once == jobs and all(comparable(a[s]) == comparable(b[s]) for s in a) and SECRET not in text
        print("  verdict:", "every job ended once, identical boards" if ok else "FAILED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
