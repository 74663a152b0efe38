"""Safe unpacking of submission archives (.zip, .tar.gz, .tgz, .tar).

Only plain files and folders are extracted. Absolute paths, ``..`` components, links, device files,
FIFOs, too many members and more bytes than the limit (counted while decompressing, so a
decompression bomb stops at the limit whatever its headers claim) are refused with an
``invalid_submission`` failure.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass

from harness.errors import SubmissionFailure

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps applied while unpacking (defaults suit an encoder of a few hundred MB)."""

    max_total_bytes: int = 2 * 1024**3
    max_members: int = 10_000


def is_archive(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(ARCHIVE_SUFFIXES)


def _invalid(message: str, detail: str | None = None) -> SubmissionFailure:
    return SubmissionFailure("invalid_submission", message, detail)


def _safe_relpath(name: str) -> str:
    """The member's path, checked: relative, no ``..``, no drive letters or backslash tricks."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _invalid(f"archive member {name!r} has an absolute path; archive the folder with relative paths")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise _invalid(f"archive member {name!r} points outside the archive ('..'); use plain relative paths")
    return posixpath.join(*parts) if parts else ""  # "" is the archive's root folder ("./")


class _Budget:
    def __init__(self, limits: ArchiveLimits):
        self.limits = limits
        self.bytes = 0
        self.members = 0

    def member(self):
        self.members += 1
        if self.members > self.limits.max_members:
            raise _invalid(f"archive has more than {self.limits.max_members} members")

    def add(self, n: int):
        self.bytes += n
        if self.bytes > self.limits.max_total_bytes:
            raise _invalid(
                f"archive unpacks to more than {self.limits.max_total_bytes // 1024**2} MiB "
                "(decompression bomb or model too large)")


def _copy_stream(src, dest_path: str, budget: _Budget):
    os.makedirs(os.path.dirname(dest_path), exist_ok=True)
    if os.path.lexists(dest_path):
        raise _invalid(f"archive has two members named {os.path.basename(dest_path)!r}")
    with open(dest_path, "xb") as out:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            budget.add(len(chunk))
            out.write(chunk)


def _unpack_zip(path: str, dest: str, budget: _Budget):
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _invalid(f"{os.path.basename(path)} is not a readable zip archive: {exc}") from None
    with zf:
        for info in zf.infolist():
            budget.member()
            rel = _safe_relpath(info.filename)
            mode = info.external_attr >> 16
            # no file-type bits (Windows zippers, ZipFile.open("w")) means a plain file
            if stat.S_IFMT(mode) and (stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise _invalid(f"archive member {info.filename!r} is {kind}; only plain files are allowed")
            if not rel and not info.is_dir():
                raise _invalid(f"archive member {info.filename!r} has an empty name")
            target = os.path.join(dest, rel)
            if info.is_dir():
                os.makedirs(target, exist_ok=True)
                continue
            try:
                with zf.open(info) as src:
                    _copy_stream(src, target, budget)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise _invalid(f"archive member {info.filename!r} cannot be read: {exc}") from None


def _unpack_tar(path: str, dest: str, budget: _Budget):
    try:
        tf = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _invalid(f"{os.path.basename(path)} is not a readable tar archive: {exc}") from None
    with tf:
        try:
            for member in tf:
                budget.member()
                rel = _safe_relpath(member.name)
                if member.issym() or member.islnk():
                    raise _invalid(f"archive member {member.name!r} is a link; only plain files are allowed")
                if not (member.isreg() or member.isdir()):
                    raise _invalid(f"archive member {member.name!r} is a device, FIFO or other special "
                                   "file; only plain files are allowed")
                if not rel and not member.isdir():
                    raise _invalid(f"archive member {member.name!r} has an empty name")
                target = os.path.join(dest, rel)
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                    continue
                src = tf.extractfile(member)
                _copy_stream(src, target, budget)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise _invalid(f"archive {os.path.basename(path)} is corrupt: {exc}") from None


def unpack(path: str, dest: str, *, limits: ArchiveLimits = ArchiveLimits()) -> None:
    """Unpack the archive at ``path`` into the existing empty folder ``dest``, safely."""
    budget = _Budget(limits)
    try:
        if path.lower().endswith(".zip"):
            _unpack_zip(path, dest, budget)
        else:
            _unpack_tar(path, dest, budget)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest, exist_ok=True)
        raise
