"""Warm job processes: a zygote that has imported what jobs use forks one process per attempt.

A fresh ``python`` per attempt spends 1.2-2 CPU-s importing numpy, scikit-learn, LightGBM and the
harness before the job does anything; forked from a zygote that imported them once, an attempt
starts in milliseconds. Each attempt is still its own process (its own session, log, memory limit
and exit status), so a crash, a hang or a leak stays in that attempt, as with a fresh process.

The zygote is started with the environment a fresh worker would get (one zygote per distinct
environment). Protocol (JSON lines): the grader writes ``{"spec", "outcome", "log"}`` on the zygote's
stdin; the zygote forks, answers ``{"pid": N}``, and reports ``{"exit": N, "code": C}`` when that
child ends (``C`` as ``Popen.returncode``: negative for a signal). The zygote dies with the grader
(parent-death signal, and at its stdin's end) and its children die with it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading

#: what an evaluation job imports: the point of the zygote
PRELOAD = ("numpy", "harness.grading.jobs", "harness.grading.worker", "harness.evaluation.evaluate",
           "harness.evaluation.report", "harness.metrics", "harness.datasets.dsprites", "sklearn.svm",
           "sklearn.linear_model", "lightgbm", "matplotlib.figure")


# --- inside the zygote --------------------------------------------------------------------------

def _child(request: dict, grader_pid: int, zygote_pid: int, close_fds) -> None:
    """The forked attempt: its own session and log, then the job."""
    code = 1
    try:
        os.setsid()  # its own process group: a kill takes the attempt's sandbox children too
        from harness.grading import worker

        worker.die_with_parent(zygote_pid)
        for fd in close_fds:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(devnull)
        sys.stdout.reconfigure(line_buffering=True)  # what PYTHONUNBUFFERED gives a fresh worker
        code = worker.run_attempt(request["spec"], request["outcome"])
    except BaseException:  # noqa: BLE001 - said in the attempt's log; the grader sees the exit code
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The zygote's loop (``python -c 'from harness.grading.zygote import serve; serve()'``)."""
    from harness.grading import worker

    grader_pid = int(os.environ["HARNESS_GRADER_PID"])
    worker.die_with_parent(grader_pid)
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - an optional library: the job that needs it says so
            pass
    commands, events = sys.stdin.fileno(), sys.stdout
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd is written
    pending = b""
    zygote_pid = os.getpid()

    def report(message: dict) -> None:
        events.write(json.dumps(message) + "\n")
        events.flush()

    while True:
        ready, _, _ = select.select([commands, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
        while True:  # reap every child that ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            report({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
        if commands in ready:
            data = os.read(commands, 1 << 16)
            if not data:
                return  # the grader is gone; the children die with this process
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request, grader_pid, zygote_pid, (wake_r, wake_w))
                report({"pid": pid})


# --- in the grader ------------------------------------------------------------------------------

class Zygote:
    """The grader's handle on one zygote (started with the environment its attempts need)."""

    def __init__(self, env: dict):
        self._lock = threading.Lock()
        self._pids: list[int] = []
        self._exits: dict[int, int] = {}
        self._changed = threading.Condition()
        self.running = 0  # attempts forked and not yet ended
        self.proc = None
        started = threading.Event()
        # The zygote's parent-death signal follows the thread that started it: a thread that lives
        # as long as the zygote starts it (a Dask worker's task threads come and go).
        self._keeper = threading.Thread(target=self._keep, args=(env, started), name="harness-zygote", daemon=True)
        self._keeper.start()
        started.wait(30)
        if self.proc is None:
            raise OSError("the zygote process did not start")

    def _keep(self, env: dict, started: threading.Event) -> None:
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from harness.grading.zygote import serve; serve()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        finally:
            started.set()
        for line in self.proc.stdout:  # events, until the zygote ends
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                if "pid" in event:
                    pid = int(event["pid"])
                    self._pids.append(pid)
                    self._exits.pop(pid, None)  # an earlier attempt's pid, reused: its exit was before
                    self.running += 1
                elif "exit" in event:
                    self._exits[int(event["exit"])] = int(event["code"])
                    self.running -= 1
                self._changed.notify_all()
        self.proc.wait()
        with self._changed:
            self._changed.notify_all()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """End the zygote (only when no attempt runs: they would die with it)."""
        if self.proc is not None and self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def spawn(self, spec_path, outcome_path, log_path) -> int:
        """Fork one attempt; its pid. Raises OSError when the zygote is gone."""
        request = {"spec": str(spec_path), "outcome": str(outcome_path), "log": str(log_path)}
        with self._lock:  # one request at a time: each answer is the pid of the last request
            with self._changed:
                seen = len(self._pids)
            try:
                self.proc.stdin.write((json.dumps(request) + "\n").encode())
                self.proc.stdin.flush()
            except (OSError, ValueError) as exc:
                raise OSError(f"the zygote is gone ({exc})") from None
            with self._changed:
                if not self._changed.wait_for(lambda: len(self._pids) > seen or not self.alive(), timeout=30):
                    raise OSError("the zygote did not answer")
                if len(self._pids) <= seen:
                    raise OSError("the zygote is gone")
                return self._pids[seen]

    def returncode(self, pid: int) -> int | None:
        """The attempt's exit status once it ended; -9 if the zygote died first (the attempt with it)."""
        with self._changed:
            if pid in self._exits:
                return self._exits[pid]
        return None if self.alive() else -signal.SIGKILL

    def wait(self, pid: int, timeout: float | None = None) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits or not self.alive(), timeout=timeout)
        return self.returncode(pid)


_ZYGOTES: dict[tuple, Zygote] = {}
_ZYGOTES_LOCK = threading.Lock()
#: idle zygotes kept beyond this are ended (each holds its imported libraries: ~300 MB)
MAX_IDLE_ZYGOTES = 2


def enabled() -> bool:
    return os.environ.get("HARNESS_ZYGOTE", "1") != "0" and hasattr(os, "fork")


def zygote_for(env: dict) -> Zygote | None:
    """A running zygote started with ``env`` (one per distinct environment), or None when none can
    be started here (the caller then starts a fresh process)."""
    key = tuple(sorted(env.items()))
    with _ZYGOTES_LOCK:
        zygote = _ZYGOTES.get(key)
        if zygote is not None and zygote.alive():
            return zygote
        for old_key, old in list(_ZYGOTES.items()):
            if not old.alive():
                del _ZYGOTES[old_key]
            elif len(_ZYGOTES) >= MAX_IDLE_ZYGOTES and old.running == 0:
                old.close()
                del _ZYGOTES[old_key]
        try:
            zygote = Zygote(env)
        except OSError:
            return None
        _ZYGOTES[key] = zygote
        return zygote


class ForkedAttempt:
    """What :class:`harness.grading.worker.WorkerProcess` needs of a process, for a forked attempt."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote, self.pid = zygote, pid
        self.returncode = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.returncode(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.wait(self.pid, timeout)
        return self.returncode
