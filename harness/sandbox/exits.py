"""Why a sandboxed child is gone, as a failure kind (DESIGN 3.2), from facts the parent observed.

Kept apart from the session so that every rule can be tested alone, with plain values: the exit
code, whether the parent killed the child for its wall-clock limit, whether the memory cgroup
recorded an OOM kill, and the tail of what the model printed. The log tail is the model's own
text, so it only ever picks between two of the model's own failure kinds, never ``infra_error``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from harness.errors import SubmissionFailure

_MEMORY_WORDS = ("bad_alloc", "out of memory", "cannot allocate memory", "can't allocate memory", "memoryerror",
                 "failed to map segment from shared object",
                 # glibc could not load its unwinder for a C++ exception: an mmap refused under RLIMIT_AS
                 "libgcc_s.so.1 must be installed for unwinding")
LOADING_STAGES = ("setting up the sandbox", "loading the model")


@dataclass(frozen=True)
class ExitFacts:
    """What the parent knows about a child that stopped answering."""

    code: int                      # Popen.returncode: negative for a signal
    what: str                      # what the child was doing ("encoding a batch of 1024", ...)
    killed_for_wall: bool = False  # the parent killed it at the wall-clock deadline
    total_limit: float | None = None  # set when the deadline that passed was the whole session's
    oom_killed: bool = False       # the session's memory cgroup counted an OOM kill
    log_tail: str = ""
    wall_limit: float | None = None
    cpu_limit: float | None = None
    memory_mb: int | None = None
    file_size_mb: int | None = None


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def classify_exit(facts: ExitFacts, detail: str | None = None) -> SubmissionFailure:
    """The failure a dead child stands for. Never ``infra_error``: the caller decides whether the
    child was still ours (setting up the sandbox) or already the model's."""
    what = facts.what
    if facts.killed_for_wall and facts.total_limit:
        return SubmissionFailure("timeout", f"the model used up the session's whole wall-clock budget "
                                 f"({facts.total_limit:.0f} s, every call included) while {what}", detail)
    if facts.killed_for_wall:
        return SubmissionFailure("timeout", f"{what} took longer than the wall-clock limit ({facts.wall_limit} s)",
                                 detail)
    if facts.oom_killed:
        return SubmissionFailure("memory_exceeded", f"the model went over the memory limit ({facts.memory_mb} MB "
                                 f"for all its processes) while {what}", detail)
    tail = facts.log_tail[-2000:].lower()
    if facts.code != 0 and any(word in tail for word in _MEMORY_WORDS):
        return SubmissionFailure("memory_exceeded", f"the model ran out of memory while {what} (limit "
                                 f"{facts.memory_mb} MB)", detail)
    if facts.code < 0:
        sig = -facts.code
        if sig == signal.SIGXCPU:
            return SubmissionFailure("timeout", f"{what} used more than the CPU-time limit ({facts.cpu_limit} s)",
                                     detail)
        if sig == signal.SIGKILL:
            return SubmissionFailure("memory_exceeded", f"the model was killed (SIGKILL) while {what}, most likely "
                                     "by the out-of-memory killer", detail)
        if sig == signal.SIGXFSZ:
            return SubmissionFailure("runtime_error", f"the model wrote a file larger than the {facts.file_size_mb} "
                                     f"MB limit while {what}", detail)
        return SubmissionFailure("crashed", f"the model crashed with {_signal_name(sig)} while {what}", detail)
    return SubmissionFailure("crashed", f"the model's process exited (code {facts.code}) while {what}; a model "
                             "must not exit or close its standard streams", detail)
