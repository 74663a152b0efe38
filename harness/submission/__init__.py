"""Submissions: the manifest schema, safe unpacking, format checks and validation.

``load(path) -> Submission`` never runs or unpickles anything from the submission;
``validate(path)`` additionally loads the model in the sandbox and runs probe batches.
"""

from harness.submission.archive import ArchiveLimits
from harness.submission.core import Submission, load
from harness.submission.manifest import FORMATS, MANIFEST_NAME, MANIFEST_SCHEMA, manifest_problems


def validate(path, **options):
    """See :func:`harness.submission.validation.validate`."""
    from harness.submission.validation import validate as _validate

    return _validate(path, **options)


__all__ = ["ArchiveLimits", "FORMATS", "MANIFEST_NAME", "MANIFEST_SCHEMA", "Submission", "load",
           "manifest_problems", "validate"]
