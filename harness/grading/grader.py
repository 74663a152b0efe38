"""The grading loop: register jobs, recover abandoned ones, run them, write every outcome back.

The grader is the only writer of results. Executors only run attempts and hand outcomes back:
- :class:`LocalExecutor`: ``workers`` worker processes on this machine (``--workers N``);
- :class:`DaskExecutor`: one Dask task per job on a distributed cluster (``--scheduler ADDRESS``);
- with ``[sandbox] backend = "docker"`` each job's encoder runs in its own container
  (:mod:`harness.sandbox.docker`); the metrics run in the worker process.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import InputError
from harness.grading.challenge import Challenge
from harness.grading.discover import discover
from harness.grading.store import Store
from harness.grading.worker import DEFAULT_JOB_FN, WorkerProcess, cap_log, run_in_subprocess


@dataclass
class GradeSummary:
    registered: dict
    recovered: list
    ended: dict = field(default_factory=lambda: {"finished": 0, "failed": 0, "queued": 0, "stale": 0})
    wall_s: float = 0.0
    counts: dict = field(default_factory=dict)


def job_spec(row, challenge: Challenge, job_fn: str | None) -> dict:
    """What a worker needs to run one attempt (plain JSON: it crosses processes and machines)."""
    return {
        "job_fn": job_fn or DEFAULT_JOB_FN,
        "threads": challenge.limits.threads,
        "job_memory_mb": challenge.job_memory_mb,
        "docker_image": challenge.image if challenge.backend == "docker" else None,
        "job": {
            "id": row["id"], "attempt": row["attempts"], "submission": row["submission"],
            "submission_path": row["path"], "dataset": row["dataset"], "split": row["split"],
            "preset": challenge.preset, "metrics": challenge.metric_names,
            "metric_params": challenge.metric_params, "seed": challenge.seed,
            "backend": challenge.backend,  # docker: the job's encoder session is its container
            "device": challenge.device, "limits": vars(challenge.limits), "job_seconds": challenge.job_time_limit,
        },
    }


def _grader_time_limit(challenge: Challenge) -> float:
    # the sandbox enforces wall_seconds on each model call; this guards the whole job, metrics included
    return challenge.job_time_limit


class LocalExecutor:
    """Runs attempts in worker processes (or job containers) on this machine."""

    def __init__(self, workers: int, challenge: Challenge):
        if workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        self.capacity = workers
        self.challenge = challenge
        self.running: dict[int, tuple[int, object]] = {}

    def submit(self, job_id: int, attempt: int, spec: dict, workdir: Path) -> None:
        cap = self.challenge.log_cap_kb * 1024
        limit = _grader_time_limit(self.challenge)
        self.running[job_id] = (attempt, WorkerProcess(spec, workdir, log_cap_bytes=cap, time_limit=limit))

    def poll(self):
        done = []
        for job_id, (attempt, handle) in list(self.running.items()):
            if handle.poll():
                del self.running[job_id]
                done.append((job_id, attempt, handle.outcome()))
        return done

    def shutdown(self) -> list[tuple[int, int]]:
        """Kill what still runs; returns the (job, attempt) pairs it abandoned."""
        abandoned = []
        for job_id, (attempt, handle) in self.running.items():
            handle.kill()
            abandoned.append((job_id, attempt))
        self.running.clear()
        return abandoned


class InfraRetry(Exception):
    """Raised inside a Dask task for an infra_error outcome, so that Dask retries the task."""

    def __init__(self, outcome: dict):
        super().__init__(outcome)  # args = (outcome,): it pickles across processes and machines
        self.outcome = outcome

    def __str__(self):
        return self.outcome["failure"]["message"]


def dask_task(spec: dict, cap_bytes: int, time_limit: float) -> dict:
    """One job on a Dask worker: a worker process in a private temporary folder; the log comes back."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="harness-job-") as tmp:
        outcome = run_in_subprocess(spec, tmp, log_cap_bytes=cap_bytes, time_limit=time_limit)
    if outcome.get("status") != "ok" and (outcome.get("failure") or {}).get("kind") == "infra_error":
        raise InfraRetry(outcome)
    return outcome


class DaskExecutor:
    """One Dask task per job; Dask retries infrastructure failures on any worker.

    The cluster's workers must see the submissions and dataset files at the same paths as the
    grader (a shared filesystem) and have this package installed.
    """

    def __init__(self, address: str, challenge: Challenge):
        try:
            from distributed import Client
        except ImportError:
            raise InputError("--scheduler needs Dask: pip install 'harness[dask]'") from None
        try:
            self.client = Client(address, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self.challenge = challenge
        threads = sum(self.client.nthreads().values()) or 1
        self.capacity = 2 * threads  # keep the rest queued in the store, where a restart finds it
        self.running: dict[int, tuple[int, object]] = {}

    def submit(self, job_id: int, attempt: int, spec: dict, workdir: Path) -> None:
        future = self.client.submit(
            dask_task, spec, self.challenge.log_cap_kb * 1024, _grader_time_limit(self.challenge),
            key=f"harness-job-{job_id}-{attempt}-{os.getpid()}-{time.time_ns()}", pure=False,
            retries=max(0, self.challenge.max_attempts - 1),
        )
        self.running[job_id] = (attempt, future)

    def poll(self):
        done = []
        for job_id, (attempt, future) in list(self.running.items()):
            if not future.done():
                continue
            del self.running[job_id]
            try:
                outcome = future.result()
            except InfraRetry as exc:
                outcome = exc.outcome
                outcome["failure"]["message"] += " (after Dask retries)"
                outcome["final"] = True
            except Exception as exc:  # noqa: BLE001 - KilledWorker, lost connection: ours
                outcome = {"status": "failed", "final": True, "failure": {
                    "kind": "infra_error", "message": f"Dask: {type(exc).__name__}: {exc}"[:500], "detail": None}}
            done.append((job_id, attempt, outcome))
        return done

    def shutdown(self) -> list[tuple[int, int]]:
        abandoned = list((job_id, attempt) for job_id, (attempt, _) in self.running.items())
        for _, future in self.running.values():
            future.cancel()
        self.running.clear()
        self.client.close()
        return abandoned


def grade(paths, challenge: Challenge, db, *, workers: int = 1, scheduler: str | None = None, regrade=(),
          job_fn: str | None = None, log_dir=None, echo=None, poll_interval: float = 0.05) -> GradeSummary:
    """Grade the submissions at ``paths`` under ``challenge`` into the store ``db``.

    Safe to kill at any moment and rerun with the same arguments: finished and failed jobs stay as
    they are, abandoned ones are re-queued, and every job ends exactly once.

    Parameters
    ----------
    paths : submission folders, archives, or folders of them.
    challenge : a :class:`Challenge` (see :func:`harness.grading.load_challenge`).
    db : path of the SQLite store (created if missing).
    workers : local worker processes (ignored with ``scheduler``).
    scheduler : address of a Dask distributed scheduler, e.g. ``tcp://10.0.0.5:8786``.
    regrade : submission names to grade again even when unchanged.
    job_fn : ``"module:function"`` that runs one job (default: the sandboxed evaluation).
    log_dir : where attempt logs go (default ``<db>.logs/``).
    echo : callable taking one line of progress, or None.
    """
    echo = echo or (lambda line: None)
    started = time.time()
    entries = discover(paths, max_latent_dim=challenge.limits.max_latent_dim)
    known = {e.name for e in entries}
    unknown = sorted(set(regrade) - known)
    if unknown:
        raise InputError(f"--regrade names no submission being graded: {', '.join(unknown)}")
    store = Store(db)
    try:
        registered = store.register(entries, challenge, regrade=regrade)
        echo(f"{len(entries)} submission(s): {registered['new']} new job(s), {registered['requeued']} re-queued, "
             f"{registered['unchanged']} unchanged")
        run_id = store.start_run(command="grade")
        log_root = (Path(log_dir) if log_dir else Path(str(db) + ".logs")).resolve()
        adopted = adopt_finished_orphans(store, log_root, challenge)
        if adopted:
            echo(f"kept {len(adopted)} result(s) that workers wrote before an earlier grader died")
        recovered = store.recover(max_attempts=challenge.max_attempts)
        if recovered:
            echo(f"recovered {len(recovered)} job(s) abandoned by an earlier grader")
        summary = GradeSummary(registered=registered, recovered=recovered)
        executor = DaskExecutor(scheduler, challenge) if scheduler else LocalExecutor(workers, challenge)
        _loop(store, executor, challenge, run_id, job_fn, log_root, summary, echo, poll_interval)
        summary.counts = store.counts()
        summary.wall_s = time.time() - started
        return summary
    finally:
        store.close()


def adopt_finished_orphans(store: Store, log_root: Path, challenge: Challenge) -> list[int]:
    """End running jobs of dead graders (this host) whose worker had already written its outcome.

    The worker writes ``outcome.json`` atomically before it exits, so a grader killed between
    that and its own write loses nothing: the next grader records the outcome under the dead
    attempt's identity (the same conditional update, so still exactly once).
    """
    adopted = []
    for row in store.jobs(state="running"):
        if not store.owner_dead(row["owner"]):
            continue
        workdir = log_root / f"job-{row['id']}-attempt-{row['attempts']}"
        try:
            outcome = json.loads((workdir / "outcome.json").read_text())
        except (OSError, ValueError):
            continue
        log_path = workdir / "log.txt"
        outcome["log"] = cap_log(log_path, challenge.log_cap_kb * 1024)
        state = store.finish(row["id"], row["owner"], row["attempts"], outcome, max_attempts=challenge.max_attempts,
                             log_path=str(log_path) if log_path.exists() else None,
                             note="adopted from a dead grader's worker")
        if state is not None:
            _cleanup_workdir(workdir)
            adopted.append(row["id"])
    return adopted


def grade_forever(challenge: Challenge, db, *, stop, workers: int = 1, scheduler: str | None = None,
                  job_fn: str | None = None, log_dir=None, echo=None, poll_interval: float = 0.2) -> None:
    """Run the jobs the store's other writers queue (``harness serve``'s uploads) until ``stop``
    (a ``threading.Event``) is set: the batch grader's loop, the same leases and exactly-once ends,
    idling instead of returning when the queue is empty. Recovers abandoned jobs on start."""
    echo = echo or (lambda line: None)
    store = Store(db)
    try:
        run_id = store.start_run(command="serve")
        log_root = (Path(log_dir) if log_dir else Path(str(db) + ".logs")).resolve()
        adopt_finished_orphans(store, log_root, challenge)
        store.recover(max_attempts=challenge.max_attempts)
        summary = GradeSummary(registered={}, recovered=[])
        executor = DaskExecutor(scheduler, challenge) if scheduler else LocalExecutor(workers, challenge)
        _loop(store, executor, challenge, run_id, job_fn, log_root, summary, echo, poll_interval, stop=stop)
    finally:
        store.close()


def _loop(store, executor, challenge, run_id, job_fn, log_root, summary, echo, poll_interval, stop=None):
    lease = challenge.lease_seconds
    last_renew = time.time()
    try:
        while True:
            while len(executor.running) < executor.capacity:
                row = store.claim(run_id, lease)
                if row is None:
                    break
                workdir = log_root / f"job-{row['id']}-attempt-{row['attempts']}"
                if workdir.exists():
                    shutil.rmtree(workdir)
                executor.submit(row["id"], row["attempts"], job_spec(row, challenge, job_fn), workdir)
            for job_id, attempt, outcome in executor.poll():
                log_path = log_root / f"job-{job_id}-attempt-{attempt}" / "log.txt"
                if not log_path.exists() and outcome.get("log"):
                    log_path.parent.mkdir(parents=True, exist_ok=True)
                    log_path.write_text(outcome["log"])
                max_attempts = attempt if outcome.pop("final", False) else challenge.max_attempts
                state = store.finish(job_id, run_id, attempt, outcome, max_attempts=max_attempts,
                                     log_path=str(log_path) if log_path.exists() else None)
                _cleanup_workdir(log_path.parent)
                row = store.job(job_id)
                if state is None:
                    summary.ended["stale"] += 1
                    continue
                summary.ended[state] += 1
                what = f"{row['submission']} on {row['dataset']} ({row['split']})"
                if state == "finished":
                    echo(f"finished {what} in {outcome.get('wall_s', 0):.1f} s")
                else:
                    f = outcome["failure"]
                    echo(f"{'retrying' if state == 'queued' else 'failed'} {what}: {f['kind']}: {f['message']}")
            if stop is not None and stop.is_set():
                break
            if not executor.running:
                if stop is None and not store.has_queued():
                    break
                if stop is None:
                    continue
            if time.time() - last_renew > lease / 4:
                store.renew(run_id, executor.running.keys(), lease)
                last_renew = time.time()
            time.sleep(poll_interval)
    except BaseException:
        # interrupted (Ctrl-C) or crashed: give our running jobs back without counting the attempt
        for job_id, attempt in executor.shutdown():
            store.release(job_id, run_id, attempt, "grader interrupted")
        raise
    for job_id, attempt in executor.shutdown():  # stopped (serve): the next grader runs them
        store.release(job_id, run_id, attempt, "grader stopped")


def _cleanup_workdir(workdir: Path) -> None:
    for name in ("spec.json", "outcome.json"):
        try:
            (workdir / name).unlink()
        except OSError:
            pass
