"""Finding the submissions to grade: directories, archives, or folders of them.

Identity is the organizer's layout, never the manifest (DESIGN 3.6): the participant is the folder
that holds the entry when a folder of participant folders is graded (``submissions/<team>/<entry>``,
key ``<team>/<entry>``); in a flat folder every entry is its own participant (key ``<entry>``, the
folder or archive name without its suffix). The manifest's ``name`` is only a display label, and
``extra.participant`` is ignored: a participant cannot take another's place or credit.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InputError, SubmissionFailure

_ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
MANIFEST = "submission.json"


@dataclass(frozen=True)
class SubmissionEntry:
    name: str
    participant: str
    path: str
    content_hash: str
    submitted_at: float
    manifest_error: str | None = None


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _is_submission(path: Path) -> bool:
    return _is_archive(path) or (path.is_dir() and (path / MANIFEST).is_file())


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def raw_hash(path: Path) -> str:
    """Hash of the bytes on disk (for submissions the loader refuses: a fixed one is regraded)."""
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath, name)
            h.update(str(full.relative_to(path)).encode() + b"\0")
            if full.is_file() and not full.is_symlink():
                with open(full, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
    return h.hexdigest()


def _submitted_at(path: Path) -> float:
    """When the submission arrived: the archive's or the manifest's modification time."""
    target = path / MANIFEST if path.is_dir() and (path / MANIFEST).exists() else path
    return target.stat().st_mtime


def _candidates(paths) -> list[tuple[Path, str | None]]:
    """(submission path, participant folder or None) for each argument."""
    found: list[tuple[Path, str | None]] = []
    for arg in paths:
        path = Path(arg)
        if not path.exists():
            raise InputError(f"submission path not found: {path}")
        if _is_submission(path):
            found.append((path, None))
            continue
        if not path.is_dir():
            raise InputError(f"{path} is neither a submission folder, an archive ({', '.join(_ARCHIVE_SUFFIXES)}) "
                             "nor a folder of them")
        children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        before = len(found)
        for child in children:
            if _is_submission(child):
                found.append((child, None))
            elif child.is_dir():
                # a participant folder holding their entries
                for entry in sorted(p for p in child.iterdir() if not p.name.startswith(".")):
                    if _is_submission(entry):
                        found.append((entry, child.name))
        if len(found) == before:
            raise InputError(f"no submissions in {path} (expected folders with {MANIFEST}, or archives)")
    return found


def _entry_key(path: Path, folder: str | None, taken: set[str]) -> str:
    """The entry's key from where it lies; a repeat (two paths ending alike) gets a stable suffix
    from its full path instead of stopping the batch."""
    key = f"{folder}/{_stem(path)}" if folder else _stem(path)
    key = re.sub(r"[\x00-\x1f\x7f]", "?", key)[:200]
    if key in taken:
        key = f"{key}@{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    return key


def discover(paths, *, max_latent_dim: int | None = None) -> list[SubmissionEntry]:
    """Every submission named by ``paths``, keyed by where it lies (see the module docstring).

    A submission the loader refuses is kept, with ``manifest_error`` set: it becomes a failed job
    (``invalid_submission``) and grading goes on.
    """
    from harness import submission as submission_mod

    entries: list[SubmissionEntry] = []
    taken: set[str] = set()
    caps = {"max_latent_dim": max_latent_dim} if max_latent_dim else {}
    for path, folder in _candidates(paths):
        path = path.resolve()
        key = _entry_key(path, folder, taken)
        taken.add(key)
        try:
            with submission_mod.load(path, **caps) as sub:
                content_hash, error = sub.sha256, None
        except SubmissionFailure as exc:
            content_hash, error = "raw:" + raw_hash(path), exc.message
        except (OSError, ValueError, RecursionError) as exc:  # one unreadable entry never stops the batch
            content_hash, error = "raw:unreadable", f"the submission could not be read: {type(exc).__name__}"
        entries.append(SubmissionEntry(
            name=key, participant=folder or key, path=str(path), content_hash=content_hash,
            submitted_at=_submitted_at(path), manifest_error=error,
        ))
    return entries
