"""Submissions: the manifest schema, safe unpacking, format checks and validation.

``load(path) -> Submission`` never runs or unpickles anything from the submission;
validating it end to end (loading the model in the sandbox) is
:func:`harness.sandbox.validate`, next to the sandbox it needs.
"""

from harness.submission.archive import ArchiveLimits
from harness.submission.core import Submission, load
from harness.submission.manifest import FORMATS, MANIFEST_NAME, MANIFEST_SCHEMA, manifest_problems


__all__ = ["ArchiveLimits", "FORMATS", "MANIFEST_NAME", "MANIFEST_SCHEMA", "Submission", "load",
           "manifest_problems"]
