"""Attempts forked from a warm zygote keep what a fresh worker process gave: their own process
group, log and exit status, a kill that takes their children, death with the grader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.grading import zygote
from harness.grading.worker import WorkerProcess

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


# ---- job functions (run in the attempts) -------------------------------------------------------

def report_job(job: dict) -> dict:
    print("hello from the attempt", flush=True)
    return {"metrics": {"pids": {"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0)}},
            "env": os.environ.get("ZYGOTE_TEST_VALUE")}


def sleeper_job(job: dict) -> dict:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(job["pid_file"]).write_text(json.dumps([os.getpid(), child.pid]))
    time.sleep(600)
    return {}


def segfault_job(job: dict) -> dict:
    import ctypes

    ctypes.string_at(0)  # SIGSEGV
    return {}


@pytest.fixture
def importable(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")]))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _wait_gone(pids, seconds=10.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_an_attempt_is_forked_from_the_zygote_with_its_own_group_log_and_env(tmp_path, importable, monkeypatch):
    monkeypatch.setenv("ZYGOTE_TEST_VALUE", "seen")
    attempt = WorkerProcess({"job_fn": "test_grading_zygote:report_job", "job": {}}, tmp_path, log_cap_bytes=4096)
    assert isinstance(attempt.proc, zygote.ForkedAttempt)
    outcome = attempt.wait()
    assert outcome["status"] == "ok", outcome
    pids = outcome["evaluation"]["metrics"]["pids"]
    assert pids["pid"] == attempt.proc.pid and pids["pgid"] == pids["pid"]  # its own process group
    assert pids["ppid"] != os.getpid()  # a child of the zygote, not of the grader
    assert outcome["evaluation"]["env"] == "seen"  # the environment a fresh worker would have had
    assert "hello from the attempt" in outcome["log"]
    assert attempt.proc.returncode == 0


def test_a_kill_takes_the_attempt_and_its_children(tmp_path, importable):
    pid_file = tmp_path / "pids.json"
    attempt = WorkerProcess({"job_fn": "test_grading_zygote:sleeper_job", "job": {"pid_file": str(pid_file)}},
                            tmp_path / "w", log_cap_bytes=4096, time_limit=60)
    deadline = time.time() + 30
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    pids = json.loads(pid_file.read_text())
    attempt.kill()
    assert _wait_gone(pids)
    assert attempt.proc.returncode == -signal.SIGKILL
    assert attempt.outcome()["failure"]["kind"] == "infra_error"


def test_a_crashing_attempt_is_reported_with_its_signal(tmp_path, importable):
    outcome = WorkerProcess({"job_fn": "test_grading_zygote:segfault_job", "job": {}}, tmp_path,
                            log_cap_bytes=4096).wait()
    assert outcome["status"] == "failed"
    assert f"signal {signal.SIGSEGV}" in outcome["failure"]["message"]


GRADER = """
import json, sys, time
from harness.grading.worker import WorkerProcess
attempt = WorkerProcess({"job_fn": "test_grading_zygote:sleeper_job", "job": {"pid_file": sys.argv[1]}},
                        sys.argv[2], log_cap_bytes=4096)
print(attempt.proc.pid, flush=True)
time.sleep(600)
"""


def test_the_zygote_and_its_attempts_die_with_a_killed_grader(tmp_path, importable):
    pid_file = tmp_path / "pids.json"
    grader = subprocess.Popen([sys.executable, "-c", GRADER, str(pid_file), str(tmp_path / "w")],
                              stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not pid_file.exists() and time.time() < deadline:
            time.sleep(0.05)
        attempt, child = json.loads(pid_file.read_text())
        zygote_pid = int(open(f"/proc/{attempt}/stat").read().split(") ")[1].split()[1])
        assert zygote_pid != grader.pid
    finally:
        grader.kill()
        grader.wait()
    try:
        assert _wait_gone([zygote_pid, attempt])
    finally:  # the attempt's own plain child outlives it, as with a fresh worker: sandboxes die with
        os.kill(child, signal.SIGKILL)  # their parent themselves (launcher's die_with_parent)


def test_without_the_zygote_an_attempt_is_a_fresh_process(tmp_path, importable, monkeypatch):
    monkeypatch.setenv("HARNESS_ZYGOTE", "0")
    attempt = WorkerProcess({"job_fn": "test_grading_zygote:report_job", "job": {}}, tmp_path, log_cap_bytes=4096)
    assert isinstance(attempt.proc, subprocess.Popen)
    outcome = attempt.wait()
    assert outcome["status"] == "ok" and outcome["evaluation"]["metrics"]["pids"]["ppid"] == os.getpid()
