"""Safe unpacking of submission archives (.zip, .tar.gz, .tgz, .tar).

Only plain files and folders are extracted. Absolute paths, ``..`` components, links, device files,
FIFOs, sparse files, too many members and more bytes than the limit (counted while decompressing, so
a decompression bomb stops at the limit whatever its headers claim) are refused with an
``invalid_submission`` failure, and so is everything an attacker who read the stdlib would try on
the parsers themselves:

- paths: a component over ``NAME_MAX`` (255 bytes), more than ``max_depth`` folders, more than
  ``max_path_bytes`` bytes, names that are not UTF-8 or hold control/bidi characters, and a name
  used for both a file and a folder;
- zip: a central directory larger than :data:`MAX_ZIP_DIRECTORY_BYTES` or holding more entries than
  ``max_members`` (``zipfile`` builds an object per entry before we see any), encryption, and
  compression other than stored/deflated (LZMA and bzip2 decoders size their memory from the header);
- tar: only the compression the suffix names (gzip for .tar.gz/.tgz, none for .tar); GNU long-name
  and pax headers over :data:`MAX_TAR_HEADER_BYTES` (``tarfile`` reads one whole into memory,
  whatever size it declares), more than :data:`MAX_TAR_HEADERS_TOTAL` of them in all, chains of
  more than :data:`MAX_TAR_HEADER_CHAIN` (``tarfile`` recurses once per header), and pax records
  laid out to make ``tarfile``'s parser quadratic; ``tarfile``'s list of every member seen is
  emptied as we go.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass

from harness.errors import SubmissionFailure
from harness.text import is_safe, quoted, safe_text

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
NAME_MAX = 255  # bytes in one path component (Linux); a longer one is an OSError at extraction
MAX_TAR_HEADER_BYTES = 64 * 1024
MAX_TAR_HEADERS_TOTAL = 16 * 1024**2
MAX_TAR_HEADER_CHAIN = 16
MAX_PAX_DIGITS = 64  # longest digit run in a pax header (tarfile's hdrcharset search is quadratic in it)
MAX_ZIP_DIRECTORY_BYTES = 64 * 1024**2

_ZIP_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error,
                    zlib.error, NotImplementedError)
_TAR_READ_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError, zlib.error)


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps applied while unpacking (defaults suit an encoder of a few hundred MB).

    ``max_depth`` and ``max_path_bytes`` bound every path (archives and folders alike).
    """

    max_total_bytes: int = 2 * 1024**3
    max_members: int = 10_000
    max_depth: int = 32
    max_path_bytes: int = 1024


def is_archive(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(ARCHIVE_SUFFIXES)


def _invalid(message: str, detail: str | None = None) -> SubmissionFailure:
    return SubmissionFailure("invalid_submission", message, detail)


def path_problem(rel: str, limits: ArchiveLimits) -> str | None:
    """Why the relative path ``rel`` ('/'-separated) cannot be part of a submission, or None.

    The same rules for archives and folders: UTF-8, printable, no component over NAME_MAX bytes,
    at most ``limits.max_depth`` components and ``limits.max_path_bytes`` bytes, so that what is
    accepted can be written, copied and shown everywhere.
    """
    try:
        size = len(rel.encode("utf-8"))
    except UnicodeEncodeError:
        return "has a name that is not valid UTF-8; use plain ASCII or UTF-8 names"
    if not is_safe(rel):
        return "has control or bidi characters in its name; use plain printable names"
    parts = rel.split("/")
    longest = max(len(p.encode("utf-8")) for p in parts)
    if longest > NAME_MAX:
        return f"has a name component of {longest} bytes; the limit is {NAME_MAX}"
    if len(parts) > limits.max_depth:
        return f"is nested {len(parts)} levels deep; at most {limits.max_depth} are allowed"
    if size > limits.max_path_bytes:
        return f"has a path of {size} bytes; at most {limits.max_path_bytes} are allowed"
    return None


def _safe_relpath(name: str, limits: ArchiveLimits) -> str:
    """The member's path, checked: relative, no ``..``, no drive letters or backslash tricks, and
    within :func:`path_problem`'s rules."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _invalid(f"archive member {quoted(name)} has an absolute path; archive the folder with relative paths")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise _invalid(f"archive member {quoted(name)} points outside the archive ('..'); use plain relative paths")
    rel = posixpath.join(*parts) if parts else ""  # "" is the archive's root folder ("./")
    problem = rel and path_problem(rel, limits)
    if problem:
        raise _invalid(f"archive member {quoted(name)} {problem}")
    return rel


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


# --- writing members: a name is a file or a folder, never both ----------------------------------

def _conflict(dest: str, rel: str, is_dir: bool) -> SubmissionFailure:
    """The message for a member whose path collides with an earlier one (found on disk)."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        if not os.path.isdir(os.path.join(dest, prefix)):
            return _invalid(f"archive member {quoted(rel)} is inside {quoted(prefix)}, which the archive also "
                            "holds as a file; a name is either a file or a folder")
    if is_dir:
        return _invalid(f"archive member {quoted(rel)} is a folder, but the archive also holds a file of that name")
    if os.path.isdir(os.path.join(dest, rel)):
        return _invalid(f"archive member {quoted(rel)} is a file, but the archive also holds a folder of that name")
    return _invalid(f"archive has two members named {quoted(rel)}")


def _make_dirs(dest: str, rel: str, *, is_dir: bool) -> None:
    """Make the folder ``rel`` (a folder member) or the parent of ``rel`` (a file member)."""
    folder = rel if is_dir else posixpath.dirname(rel)
    if not folder:
        return
    try:
        os.makedirs(os.path.join(dest, folder), exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise _conflict(dest, rel, is_dir) from None


def _copy_stream(src, dest: str, rel: str, budget: _Budget, read_errors: tuple) -> None:
    """Write the member ``rel`` from ``src`` under ``dest``, counting bytes as they decompress."""
    _make_dirs(dest, rel, is_dir=False)
    try:
        out = open(os.path.join(dest, rel), "xb")
    except (FileExistsError, IsADirectoryError, NotADirectoryError):
        raise _conflict(dest, rel, False) from None
    with out:
        while True:
            try:
                chunk = src.read(1 << 20)
            except read_errors as exc:
                raise _invalid(f"archive member {quoted(rel)} cannot be read: {safe_text(exc, 200)}") from None
            if not chunk:
                break
            budget.add(len(chunk))
            out.write(chunk)


# --- zip --------------------------------------------------------------------------------------

def check_zip_directory(fh, max_members: int, what: str = "archive") -> None:
    """Refuse a zip whose central directory is over MAX_ZIP_DIRECTORY_BYTES or lists more than
    ``max_members`` entries, before ``zipfile`` builds an object for each (~500 bytes apiece: a
    2 GiB zip of empty entries would be tens of GB). Counts entries the way ``zipfile`` walks them
    (by size, not by the count the header declares). A file that is not a zip is left to ``zipfile``.
    """
    endrec = zipfile._EndRecData(fh)  # private, but in every CPython since 2.x; None: not a zip
    if endrec is None:
        return
    size_cd = endrec[zipfile._ECD_SIZE]
    if size_cd > MAX_ZIP_DIRECTORY_BYTES or endrec[zipfile._ECD_ENTRIES_TOTAL] > max_members:
        raise _invalid(f"{what} lists more than {max_members} members or a central directory over "
                       f"{MAX_ZIP_DIRECTORY_BYTES // 1024**2} MiB")
    start = endrec[zipfile._ECD_LOCATION] - size_cd
    if endrec[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    if start < 0:
        return
    fh.seek(start)
    data = fh.read(size_cd)
    pos = count = 0
    while pos + zipfile.sizeCentralDir <= len(data):
        count += 1
        if count > max_members:
            raise _invalid(f"{what} has more than {max_members} members")
        name_len, extra_len, comment_len = struct.unpack_from("<3H", data, pos + 28)
        pos += zipfile.sizeCentralDir + name_len + extra_len + comment_len


def _check_zip_member(info: zipfile.ZipInfo, limits: ArchiveLimits) -> str:
    """The member's checked path; refuses links, special files, encryption and exotic compression."""
    rel = _safe_relpath(info.filename, limits)
    shown = quoted(info.filename)
    mode = info.external_attr >> 16
    # no file-type bits (Windows zippers, ZipFile.open("w")) means a plain file
    if stat.S_IFMT(mode) and (stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise _invalid(f"archive member {shown} is {kind}; only plain files are allowed")
    if not rel and not info.is_dir():
        raise _invalid(f"archive member {shown} has an empty name")
    if info.is_dir():
        return rel
    if info.flag_bits & 0x1:
        raise _invalid(f"archive member {shown} is encrypted; submit an unencrypted archive")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _invalid(f"archive member {shown} uses compression method {info.compress_type}; "
                       "use stored or deflated (the default of every zip tool)")
    return rel


def _unpack_zip(path: str, dest: str, budget: _Budget):
    limits = budget.limits
    try:
        with open(path, "rb") as fh:
            check_zip_directory(fh, limits.max_members)
        zf = zipfile.ZipFile(path)
    except _ZIP_READ_ERRORS as exc:
        raise _invalid(f"{quoted(os.path.basename(path))} is not a readable zip archive: "
                       f"{safe_text(exc, 200)}") from None
    with zf:
        members = []
        for info in zf.infolist():  # check every name before writing anything
            budget.member()
            members.append((info, _check_zip_member(info, limits)))
        for info, rel in members:
            if info.is_dir():
                _make_dirs(dest, rel, is_dir=True)
                continue
            try:
                src = zf.open(info)
            except _ZIP_READ_ERRORS as exc:
                raise _invalid(f"archive member {quoted(rel)} cannot be read: {safe_text(exc, 200)}") from None
            with src:
                _copy_stream(src, dest, rel, budget, _ZIP_READ_ERRORS)


# --- tar --------------------------------------------------------------------------------------

_LONG_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_PAX_LENGTH = re.compile(rb"(\d+) ")
_LONG_DIGITS = re.compile(rb"\d{%d}" % (MAX_PAX_DIGITS + 1))


def _check_pax_records(buf: bytes) -> None:
    """Refuse pax record bytes on which ``tarfile``'s parser is quadratic (seconds per 64 KiB).

    ``tarfile`` matches ``(\\d+) ([^=]+)=`` at each record and searches ``\\d+ hdrcharset=`` over the
    whole buffer: records whose ``=`` lies past their declared end, digit runs of thousands, or
    many ``hdrcharset`` keys make either scan revisit the buffer once per record. Digit runs of at
    most MAX_PAX_DIGITS keep the search within 64 steps a byte. Records must be
    ``"<len> <key>=<value>\\n"`` laid end to end; parsing stops where ``tarfile``'s would.
    """
    if _LONG_DIGITS.search(buf) or buf.count(b"hdrcharset=") > 1:
        raise _invalid(f"archive has a pax header with a number over {MAX_PAX_DIGITS} digits or repeated "
                       "hdrcharset records; archive with a standard tar")
    if b"GNU.sparse" in buf:
        raise _invalid("archive holds a sparse file (GNU.sparse pax header); only plain files are allowed")
    pos = 0
    while True:
        m = _PAX_LENGTH.match(buf, pos)
        if not m:
            return
        eq = buf.find(b"=", m.end())
        if eq <= m.end():  # tarfile's match fails here too: the records end
            return
        length = int(m.group(1))
        end = pos + length
        if length == 0 or eq >= end or end > len(buf) or buf[end - 1] != 0x0A:
            raise _invalid("archive has a pax header with a malformed record; archive with a standard tar")
        pos = end


class _Replay:
    """A file object whose next read returns ``buf`` (already read from ``raw``), then reads ``raw``."""

    def __init__(self, buf: bytes, raw):
        self._buf, self._raw = buf, raw

    def read(self, size=-1):
        if self._buf is not None:
            buf, self._buf = self._buf, None
            return buf
        return self._raw.read(size)

    def __getattr__(self, name):
        return getattr(self._raw, name)


def _charge_header(tf, header: tarfile.TarInfo) -> None:
    kind = "GNU long-name" if header.type in _LONG_TYPES else "pax"
    if header.size > MAX_TAR_HEADER_BYTES:
        raise _invalid(f"archive has a {kind} header of {header.size} bytes; at most "
                       f"{MAX_TAR_HEADER_BYTES // 1024} KiB are allowed (archive with a standard tar)")
    total = getattr(tf, "_harness_header_bytes", 0) + header.size
    if total > MAX_TAR_HEADERS_TOTAL:
        raise _invalid(f"archive's extended (pax/GNU) headers add up to more than "
                       f"{MAX_TAR_HEADERS_TOTAL // 1024**2} MiB")
    tf._harness_header_bytes = total


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that vets GNU long-name/long-link and pax headers before ``tarfile`` reads them
    (it reads each whole into memory, and recurses once per header), and refuses sparse files."""

    def _proc_member(self, tf):
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _invalid(f"archive member {quoted(self.name)} is a sparse file; only plain files are allowed")
        if self.type not in _LONG_TYPES + _PAX_TYPES:
            return super()._proc_member(tf)
        _charge_header(tf, self)
        chain = getattr(tf, "_harness_chain", 0)
        if chain >= MAX_TAR_HEADER_CHAIN:
            raise _invalid(f"archive has more than {MAX_TAR_HEADER_CHAIN} extended headers in a row")
        tf._harness_chain = chain + 1
        try:
            if self.type in _LONG_TYPES:
                return super()._proc_member(tf)
            buf = tf.fileobj.read(self._block(self.size))
            _check_pax_records(buf)
            raw, tf.fileobj = tf.fileobj, _Replay(buf, tf.fileobj)
            try:
                return super()._proc_member(tf)
            finally:
                tf.fileobj = raw
        finally:
            tf._harness_chain = chain


def _tar_mode(path: str) -> str:
    """Only the compression the suffix names: xz/bzip2 decoders would size memory from the header."""
    return "r:gz" if path.lower().endswith((".tar.gz", ".tgz")) else "r:"


def _next_member(tf, path: str):
    try:
        member = tf.next()
    except _TAR_READ_ERRORS as exc:
        raise _invalid(f"archive {quoted(os.path.basename(path))} is corrupt: {safe_text(exc, 200)}") from None
    tf.members.clear()  # tarfile keeps every header it has read; we need only the current one
    return member


def _check_tar_member(member: tarfile.TarInfo, limits: ArchiveLimits) -> str:
    rel = _safe_relpath(member.name, limits)
    shown = quoted(member.name)
    if member.issym() or member.islnk():
        raise _invalid(f"archive member {shown} is a link; only plain files are allowed")
    if not (member.isreg() or member.isdir()):
        raise _invalid(f"archive member {shown} is a device, FIFO or other special file; only plain files are allowed")
    if not rel and not member.isdir():
        raise _invalid(f"archive member {shown} has an empty name")
    return rel


def _unpack_tar(path: str, dest: str, budget: _Budget):
    try:
        tf = tarfile.open(path, mode=_tar_mode(path), tarinfo=_BoundedTarInfo)
    except _TAR_READ_ERRORS as exc:
        raise _invalid(f"{quoted(os.path.basename(path))} is not a readable tar archive "
                       f"({'gzip-compressed' if _tar_mode(path) == 'r:gz' else 'uncompressed'}): "
                       f"{safe_text(exc, 200)}") from None
    with tf:
        while (member := _next_member(tf, path)) is not None:
            budget.member()
            rel = _check_tar_member(member, budget.limits)
            if member.isdir():
                _make_dirs(dest, rel, is_dir=True)
                continue
            try:
                src = tf.extractfile(member)
            except _TAR_READ_ERRORS as exc:
                raise _invalid(f"archive member {quoted(rel)} cannot be read: {safe_text(exc, 200)}") from None
            _copy_stream(src, dest, rel, budget, _TAR_READ_ERRORS)


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
