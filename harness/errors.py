"""Errors shared across the package.

``InputError`` is bad input from a user (a wrong name, a missing or corrupt file, an invalid
config): the CLI prints its message as one line and exits with code 2, never a traceback.

``SubmissionFailure`` is a participant's submission failing in one of the kinds of DESIGN 3.2.
"""

from __future__ import annotations

FAILURE_KINDS = (
    "invalid_submission",  # manifest, files, archive, declared shapes
    "load_error",          # the runtime refused the model
    "runtime_error",       # forward raised
    "bad_output",          # wrong shape/dtype, NaN/inf (constant output is not a failure)
    "timeout",             # wall or CPU
    "memory_exceeded",
    "crashed",             # signal, segfault
    "infra_error",         # our side; never counts against the participant
)


class InputError(ValueError):
    """Bad user input: the message is one line that says what to fix."""


class SubmissionFailure(Exception):
    """A submission failed: ``kind`` is one of FAILURE_KINDS, ``message`` says what to fix."""

    def __init__(self, kind: str, message: str, detail: str | None = None):
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "detail": self.detail}
