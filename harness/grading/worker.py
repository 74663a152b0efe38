"""One job in its own worker process: ``python -m harness.grading.worker SPEC OUTCOME``.

Each attempt runs in a fresh process so that a crash, a hang or a leak in one job cannot take the
grader or other jobs with it, and so that everything the job and its sandboxed child print lands in
one log file, which is capped before it is stored. The worker dies with its parent
(``PR_SET_PDEATHSIG``): a grader killed with SIGKILL leaves no orphan still grading.

The job itself is a function ``fn(job: dict) -> dict`` named ``"module:function"`` in the spec
(default :func:`harness.grading.jobs.evaluate_job`); it returns one ``evaluations`` entry of
results.json and raises :class:`~harness.errors.SubmissionFailure` for the participant's failures.
Anything else it raises is an ``infra_error`` (our side: retried, never counted against anyone).
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

DEFAULT_JOB_FN = "harness.grading.jobs:evaluate_job"
_HARD_LOG_BYTES = 64 << 20  # a runaway log is truncated while the job runs


def die_with_parent(expected_parent: int | None) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)  # the parent died before prctl took effect


def _limit_own_memory(megabytes: int | None) -> None:
    """Bound this trusted process (codes, metrics) apart from the model's sandbox: a soft
    RLIMIT_AS, so the sandbox child it starts may set its own (or lift it for CUDA)."""
    if not megabytes:
        return
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = int(megabytes) * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        pass


def resolve(fn_name: str):
    module, _, attr = fn_name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _json_ready(value):
    """A plain-JSON copy (numpy scalars and arrays become floats and lists; NaN stays NaN)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def run_job(spec: dict) -> dict:
    """Run the job in this process; return the outcome dict (never raises)."""
    from harness.errors import InputError, SubmissionFailure

    start = time.time()
    path = spec["job"].get("submission_path")
    if path and not os.path.exists(path):
        # graded before, so it existed: this machine does not see it (a worker off the shared filesystem)
        return {"status": "failed", "wall_s": 0.0, "failure": {
            "kind": "infra_error", "message": f"submission {path} is not visible on {socket.gethostname()} "
            "(do all workers mount the shared filesystem at the same path?)", "detail": None}}
    try:
        fn = resolve(spec.get("job_fn") or DEFAULT_JOB_FN)
        evaluation = _json_ready(fn(spec["job"]))
        outcome = {"status": "ok", "evaluation": evaluation}
    except SubmissionFailure as exc:
        outcome = {"status": "failed", "failure": exc.to_dict()}
    except MemoryError:
        # our own process, at its limit: the same job would hit it again, so no retry this run
        outcome = {"status": "failed", "final": True, "failure": {
            "kind": "infra_error", "message": f"the grader's job process ran out of its memory limit "
            f"({spec.get('job_memory_mb')} MB; [grading] job_memory_mb in the challenge file)", "detail": None}}
    except InputError as exc:
        # the challenge named something this machine cannot provide (dataset file, metric): ours
        # ("final": retrying cannot help until the organizer fixes it; a new `grade` run retries)
        outcome = {"status": "failed", "final": True,
                   "failure": {"kind": "infra_error", "message": str(exc), "detail": None}}
    except BaseException as exc:  # noqa: BLE001 - every other error is on our side
        outcome = {"status": "failed", "failure": {
            "kind": "infra_error", "message": f"{type(exc).__name__}: {exc}"[:500],
            "detail": traceback.format_exc()[-8000:]}}
    outcome["wall_s"] = round(time.time() - start, 3)
    return outcome


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, outcome_path = argv
    parent = os.environ.get("HARNESS_GRADER_PID")
    die_with_parent(int(parent) if parent else None)
    return run_attempt(spec_path, outcome_path)


def run_attempt(spec_path, outcome_path) -> int:
    """The attempt in this process (fresh, or forked from a zygote): job, then outcome file."""
    spec = json.loads(Path(spec_path).read_text())
    _limit_own_memory(spec.get("job_memory_mb"))
    outcome = run_job(spec)
    tmp = outcome_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(outcome, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, outcome_path)
    return 0


def cap_log(path: Path, cap_bytes: int) -> str:
    """The log's text, its head and tail kept when longer than ``cap_bytes``; the file is rewritten capped."""
    try:
        size = path.stat().st_size
    except OSError:
        return ""
    with open(path, "rb") as fh:
        if size <= cap_bytes:
            data = fh.read()
        else:
            head = fh.read(cap_bytes // 4)
            fh.seek(size - (cap_bytes - cap_bytes // 4))
            tail = fh.read()
            data = head + f"\n[... {size - len(head) - len(tail)} bytes cut: log capped at {cap_bytes} bytes ...]\n".encode() + tail
    if size > cap_bytes:
        path.write_bytes(data)
    return data.decode("utf-8", "replace")


class WorkerProcess:
    """A job attempt in a child process: start, poll, kill; then :meth:`outcome`."""

    def __init__(self, spec: dict, workdir, *, log_cap_bytes: int, time_limit: float | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.spec_path = self.workdir / "spec.json"
        self.outcome_path = self.workdir / "outcome.json"
        self.log_path = self.workdir / "log.txt"
        self.log_cap_bytes = log_cap_bytes
        self.time_limit = time_limit
        self.spec_path.write_text(json.dumps(spec))
        if self.outcome_path.exists():
            self.outcome_path.unlink()
        env = dict(os.environ, HARNESS_GRADER_PID=str(os.getpid()), PYTHONUNBUFFERED="1")
        threads = str(spec.get("threads") or 1)  # the metrics' BLAS/OpenMP pools: one job, its share of cores
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "LOKY_MAX_CPU_COUNT"):  # joblib's n_jobs=-1 counts this many cores
            env[var] = threads
        if spec.get("docker_image"):
            env["HARNESS_DOCKER_IMAGE"] = spec["docker_image"]
        self._log = open(self.log_path, "ab")
        self.started = time.time()
        self.killed_for = None
        self.proc = self._fork(env) or subprocess.Popen(
            # -c, not -m: harness.grading imports this module, and runpy would warn in every job's log
            [sys.executable, "-c", "import sys; from harness.grading.worker import main; sys.exit(main(sys.argv[1:]))",
             str(self.spec_path), str(self.outcome_path)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # its own process group: a timeout kills the job's children too
        )

    def _fork(self, env: dict):
        """The attempt forked from a warm zygote (harness.grading.zygote), or None to start afresh."""
        from harness.grading import zygote

        if not zygote.enabled():
            return None
        warm = zygote.zygote_for(env)
        if warm is None:
            return None
        try:
            return zygote.ForkedAttempt(warm, warm.spawn(self.spec_path, self.outcome_path, self.log_path))
        except OSError:
            return None

    def poll(self) -> bool:
        """True once the process has ended. Enforces the grader-side time limit and log cap."""
        if self.proc.poll() is not None:
            return True
        if self.time_limit is not None and time.time() - self.started > self.time_limit:
            self.killed_for = f"the job ran past the grader's limit of {self.time_limit:.0f} s"
            self.kill()
            return True
        try:
            if self.log_path.stat().st_size > _HARD_LOG_BYTES:
                os.truncate(self.log_path, 0)
                with open(self.log_path, "ab") as fh:
                    fh.write(b"[log truncated while running: over 64 MiB]\n")
        except OSError:
            pass
        return False

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:  # a forked attempt not yet in its own process group
                os.kill(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait()

    def wait(self, poll_interval: float = 0.05) -> dict:
        while not self.poll():
            time.sleep(poll_interval)
        return self.outcome()

    def outcome(self) -> dict:
        self._log.close()
        log = cap_log(self.log_path, self.log_cap_bytes)
        try:
            outcome = json.loads(self.outcome_path.read_text())
        except (OSError, ValueError):
            rc = self.proc.returncode
            why = self.killed_for or (
                f"the worker process died with signal {-rc}" if rc and rc < 0 else f"the worker exited with code {rc}")
            outcome = {"status": "failed", "failure": {"kind": "infra_error", "message": why + " before reporting",
                                                        "detail": log[-4000:] or None},
                       "wall_s": round(time.time() - self.started, 3)}
        outcome["log"] = log
        return outcome


def run_in_subprocess(spec: dict, workdir, *, log_cap_bytes: int, time_limit: float | None = None) -> dict:
    """Run one attempt in a worker process and wait for it (what a Dask task does on its machine)."""
    return WorkerProcess(spec, workdir, log_cap_bytes=log_cap_bytes, time_limit=time_limit).wait()


if __name__ == "__main__":
    sys.exit(main())
