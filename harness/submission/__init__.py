"""Submissions: the manifest schema, safe unpacking, format checks and validation.

``load(path) -> Submission`` never runs or unpickles anything from the submission;
``validate(path)`` additionally loads the model in the sandbox and runs probe batches.
"""

from harness.submission.archive import ArchiveLimits
from harness.submission.core import Submission, load
from harness.submission.manifest import FORMATS, MANIFEST_NAME, MANIFEST_SCHEMA, manifest_problems

# Imported eagerly so that the package attribute ``validate`` is the function for good: both
# ``harness.submission.validate(path)`` and ``from harness.submission.validate import validate`` work.
from harness.submission.validate import validate  # noqa: E402  isort: skip


__all__ = ["ArchiveLimits", "FORMATS", "MANIFEST_NAME", "MANIFEST_SCHEMA", "Submission", "load",
           "manifest_problems", "validate"]
