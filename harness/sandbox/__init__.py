"""The sandboxed runner: untrusted encoders run contained, fail with a reason, and run fast.

``open_encoder(submission, backend=..., limits=Limits(), device=...)`` yields an
:class:`EncoderSession`; see docs/sandbox.md for the isolation layers and the backends.
"""

from harness.sandbox.limits import Limits


def open_encoder(submission, **options):
    """See :func:`harness.sandbox.session.open_encoder`."""
    from harness.sandbox.session import open_encoder as _open

    return _open(submission, **options)


def validate(path, **options) -> dict:
    """See :func:`harness.sandbox.validation.validate`."""
    from harness.sandbox.validation import validate as _validate

    return _validate(path, **options)


def __getattr__(name):
    if name in ("EncoderSession", "check_outputs"):
        from harness.sandbox import session

        return getattr(session, name)
    if name in ("BACKEND_NAMES",):
        from harness.sandbox import backends

        return backends.BACKEND_NAMES
    raise AttributeError(name)


__all__ = ["Limits", "open_encoder", "validate", "EncoderSession", "BACKEND_NAMES"]
