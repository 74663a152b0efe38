"""Finding the submissions to grade: directories, archives, or folders of them.

A participant is ``extra.participant`` in the manifest when given; otherwise the folder that holds
the submission when a folder of participant folders is graded (``submissions/<team>/<entry>``);
otherwise the submission's own name (every submission its own participant).
"""

from __future__ import annotations

import hashlib
import os
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


def discover(paths, *, max_latent_dim: int | None = None) -> list[SubmissionEntry]:
    """Load every submission named by ``paths``; refuse two submissions with the same name.

    A submission the loader refuses is kept, with ``manifest_error`` set: it becomes a failed job
    (``invalid_submission``) and grading goes on.
    """
    from harness import submission as submission_mod

    entries: list[SubmissionEntry] = []
    seen: dict[str, str] = {}
    for path, folder in _candidates(paths):
        path = path.resolve()
        try:
            caps = {"max_latent_dim": max_latent_dim} if max_latent_dim else {}
            with submission_mod.load(path, **caps) as sub:
                name, content_hash, error = sub.name, sub.sha256, None
                extra = sub.manifest.get("extra") or {}
                participant = extra.get("participant") if isinstance(extra.get("participant"), str) else None
        except SubmissionFailure as exc:
            name, content_hash, error, participant = _stem(path), "raw:" + raw_hash(path), exc.message, None
        if name in seen:
            raise InputError(f"two submissions are named {name!r}: {seen[name]} and {path}; rename one "
                             "(the name is the leaderboard entry)")
        seen[name] = str(path)
        entries.append(SubmissionEntry(
            name=name, participant=participant or folder or name, path=str(path), content_hash=content_hash,
            submitted_at=_submitted_at(path), manifest_error=error,
        ))
    return entries
