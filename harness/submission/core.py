"""Loading a submission: find the manifest, unpack archives safely, check files, hash the content.

Nothing from the submission is executed or unpickled here; model files are only sniffed as zip
archives (TorchScript and .pt2 files are zips) so that a pickled ``nn.Module`` is refused before
any runtime sees it.

A folder submission belongs to someone who may change it while we read it. Every file in it is
opened without following a link in any component of its path (``O_NOFOLLOW`` one directory fd at a
time), without blocking (a FIFO swapped in cannot hang us) and checked with ``fstat`` to be a
regular file with one link; :func:`copy_tree_nofollow` copies it the same way for the sandbox.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
import weakref
import zipfile
from dataclasses import dataclass, field

from harness.errors import SubmissionFailure
from harness.submission import archive
from harness.submission.manifest import (DEFAULT_MAX_LATENT_DIM, DEFAULT_RANGE, MANIFEST_NAME, ManifestSyntaxError,
                                         manifest_problems, normalize, parse_manifest)
from harness.text import quoted, safe_text

MAX_MANIFEST_BYTES = 1 << 20
#: Entries a TorchScript/.pt2 zip may list (one per tensor and code file; far more than any model).
MAX_MODEL_ZIP_ENTRIES = 100_000

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1 << 20


def _invalid(message: str, detail: str | None = None) -> SubmissionFailure:
    return SubmissionFailure("invalid_submission", message, detail)


@dataclass
class Submission:
    """A loaded, validated submission: manifest fields, the folder that holds it, a content hash.

    For an archive, ``root`` is a private temporary folder removed by :meth:`close` (or when the
    object is garbage collected); use it as a context manager. ``files`` are '/'-separated paths
    relative to ``root``, sorted; copy them with :func:`copy_tree_nofollow`, never by path.
    """

    source: str
    root: str
    manifest: dict
    sha256: str
    files: list = field(default_factory=list)
    _cleanup: object = field(default=None, repr=False)

    name = property(lambda self: self.manifest["name"])
    format = property(lambda self: self.manifest["format"])
    latent_dim = property(lambda self: self.manifest["latent_dim"])
    outputs = property(lambda self: list(self.manifest["outputs"]))
    has_logvar = property(lambda self: "logvar" in self.manifest["outputs"])
    input_shape = property(lambda self: (self.manifest["input"]["channels"], self.manifest["input"]["height"],
                                         self.manifest["input"]["width"]))
    #: ``input.range`` as normalized: ``[0, 1]``, ``[-1, 1]``, ``[0, 255]`` or ``{"mean": [...], "std": [...]}``
    input_range = property(lambda self: self.manifest["input"].get("range", list(DEFAULT_RANGE)))
    #: ``input.layout``: ``"NCHW"`` or ``"NHWC"``
    input_layout = property(lambda self: self.manifest["input"].get("layout", "NCHW"))

    @property
    def model_path(self) -> str:
        return os.path.join(self.root, self.manifest["model"])

    def summary(self) -> dict:
        """The ``submission`` block of results.json."""
        return {"name": self.name, "format": self.format, "sha256": self.sha256,
                "input_range": self.input_range, "input_layout": self.input_layout}

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stale_entries(folder: str, prefix: str) -> list[str]:
    """Names ``<prefix><pid>-*`` in ``folder`` whose owning process ``pid`` no longer exists."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    stale = []
    for name in entries:
        pid = name[len(prefix):].split("-", 1)[0] if name.startswith(prefix) else ""
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            stale.append(name)
    return stale


def sweep_stale(prefix: str) -> None:
    """Remove ``<tmp>/<prefix><pid>-*`` folders left by processes that died without cleaning up."""
    tmp = tempfile.gettempdir()
    for name in stale_entries(tmp, prefix):
        shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


# --- opening files without following links ----------------------------------------------------

def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symbolic link"
    if exc.errno == errno.ENOTDIR:
        return "has a symbolic link or a file where a folder was on its path"
    if exc.errno == errno.ENOENT:
        return "has disappeared"
    return f"cannot be opened ({os.strerror(exc.errno) if exc.errno else safe_text(exc, 100)})"


def _changed(rel: str, why: str) -> SubmissionFailure:
    return _invalid(f"{quoted(rel)} {why}; a submission must hold plain files only and stay unchanged "
                    "while it is read and graded")


def _open_root(root: str) -> int:
    """A directory fd for ``root`` itself, refused if ``root`` is now a symbolic link."""
    try:
        return os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise _changed(os.path.basename(root) or root, _why(exc)) from None


def _check_plain(fd: int, rel: str) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _changed(rel, "is not a regular file (device, FIFO, socket or folder)")
    if st.st_nlink != 1:
        raise _changed(rel, f"has {st.st_nlink} hard links (copy the file instead of linking it)")
    return st


def _open_plain(root_fd: int, rel: str) -> int:
    """An fd for the regular file ``rel`` under the directory ``root_fd``: every component opened
    with O_NOFOLLOW relative to the previous one, so no link anywhere in the path is followed; the
    file must be regular with exactly one link (a hard link could be someone else's file)."""
    parts = rel.split("/")
    dfd = root_fd
    try:
        for part in parts[:-1]:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=dfd)
            if dfd != root_fd:
                os.close(dfd)
            dfd = nfd
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dfd)
    except OSError as exc:
        raise _changed(rel, _why(exc)) from None
    finally:
        if dfd != root_fd:
            os.close(dfd)
    try:
        _check_plain(fd, rel)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def open_nofollow(root: str, rel: str):
    """``open(root/rel, "rb")`` that follows no symbolic link in ``rel`` (nor ``root`` itself) and
    accepts only a regular file with one link; raises ``invalid_submission`` otherwise."""
    root_fd = _open_root(root)
    try:
        fh = os.fdopen(_open_plain(root_fd, rel), "rb")
    finally:
        os.close(root_fd)
    with fh:
        yield fh


def _open_regular_path(path: str):
    """``open(path, "rb")`` refusing a link, FIFO or device in the last component (non-blocking)."""
    try:
        fd = os.open(path, _FILE_FLAGS)
    except OSError as exc:
        raise _changed(os.path.basename(path), _why(exc)) from None
    try:
        _check_plain(fd, os.path.basename(path))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


# --- walking a submission ---------------------------------------------------------------------

def _find_manifest_root(top: str) -> str:
    """``top`` or its one top-level folder, whichever holds submission.json (never through a link)."""
    if os.path.lexists(os.path.join(top, MANIFEST_NAME)):
        return top
    # An archive of a folder holds the folder: accept exactly one top-level folder.
    entries = []
    with os.scandir(top) as it:
        for entry in it:
            if not entry.name.startswith(".") and entry.name != "__MACOSX":
                entries.append(entry)
                if len(entries) > 1:
                    break
    if len(entries) == 1 and entries[0].is_dir(follow_symlinks=False):
        inner = os.path.join(top, entries[0].name)
        if os.path.lexists(os.path.join(inner, MANIFEST_NAME)):
            return inner
    raise _invalid(f"no {MANIFEST_NAME} found at the top of the submission; "
                   "put submission.json next to the model file")


class _WalkBudget:
    def __init__(self, limits: archive.ArchiveLimits):
        self.limits = limits
        self.entries = 0
        self.bytes = 0

    def add(self, size: int) -> None:
        self.entries += 1
        self.bytes += size
        if self.bytes > self.limits.max_total_bytes or self.entries > self.limits.max_members:
            raise _invalid(f"the submission holds more than {self.limits.max_total_bytes // 1024**2} MiB or "
                           f"{self.limits.max_members} files and folders; keep only the manifest and the model")


def _walk_dir(dfd: int, prefix: str, budget: _WalkBudget, files: list) -> None:
    with os.scandir(dfd) as it:
        for entry in it:
            rel = prefix + entry.name
            problem = archive.path_problem(rel, budget.limits)
            if problem:
                raise _invalid(f"{quoted(rel)} {problem}")
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise _invalid(f"{quoted(rel)} is a symbolic link; submissions must hold plain files only")
            if stat.S_ISDIR(st.st_mode):
                budget.add(0)
                try:
                    sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dfd)
                except OSError as exc:
                    raise _changed(rel, _why(exc)) from None
                try:
                    _walk_dir(sub, rel + "/", budget, files)
                finally:
                    os.close(sub)
                continue
            if not stat.S_ISREG(st.st_mode):
                raise _invalid(f"{quoted(rel)} is not a regular file (device, FIFO or socket)")
            if st.st_nlink != 1:
                raise _invalid(f"{quoted(rel)} has {st.st_nlink} hard links; a submission must hold its own "
                               "files (copy the file instead of linking it)")
            budget.add(st.st_size)
            files.append(rel)


def _walk_files(root: str, limits: archive.ArchiveLimits) -> list[str]:
    """'/'-separated relative paths of every file under root, sorted; refuses links (symbolic and
    hard), special files, unsafe names, too deep or long paths, and too much data. The walk goes
    through directory fds opened with O_NOFOLLOW, so a folder swapped for a link is refused; the
    recursion is bounded by ``limits.max_depth``."""
    files: list[str] = []
    root_fd = _open_root(root)
    try:
        _walk_dir(root_fd, "", _WalkBudget(limits), files)
    finally:
        os.close(root_fd)
    return sorted(files)


# --- hashing and copying ----------------------------------------------------------------------

class _ContentHash:
    """The content hash: sha256 over ``path NUL sha256(bytes) LF`` for each file in order."""

    def __init__(self):
        self._total = hashlib.sha256()

    def add(self, rel: str, file_hex: str) -> None:
        self._total.update(f"{rel}\0{file_hex}\n".encode())

    def hexdigest(self) -> str:
        return self._total.hexdigest()


def content_sha256(root: str, files: list[str]) -> str:
    """Hash of the submission's content (paths and bytes), the same for a folder and its archive.

    Files are opened as :func:`open_nofollow` does, so a link swapped in after the walk is refused
    rather than hashed.
    """
    total = _ContentHash()
    root_fd = _open_root(root)
    try:
        for rel in files:
            with os.fdopen(_open_plain(root_fd, rel), "rb") as fh:
                h = hashlib.sha256()
                for chunk in iter(lambda: fh.read(_CHUNK), b""):
                    h.update(chunk)
            total.add(rel, h.hexdigest())
    finally:
        os.close(root_fd)
    return total.hexdigest()


def _checked_rel(rel: str) -> str:
    parts = rel.split("/")
    if os.path.isabs(rel) or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a plain relative path: {rel!r}")
    return rel


def _dest_dir(dest_fd: int, parts: list[str]) -> int:
    """A new fd for the folder ``parts`` under ``dest_fd``, made 0o755 (by fd) where missing."""
    dfd = os.dup(dest_fd)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=dfd)
            except FileExistsError:
                pass
            nfd = os.open(part, _DIR_FLAGS, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
            os.fchmod(dfd, 0o755)
    except BaseException:
        os.close(dfd)
        raise
    return dfd


def _copy_one(src_fd: int, dest_fd: int, rel: str, budget: list) -> str:
    """Copy ``rel`` from ``src_fd`` to ``dest_fd`` (a new 0o644 file); return the bytes' sha256."""
    parts = rel.split("/")
    with os.fdopen(_open_plain(src_fd, rel), "rb") as src:
        dfd = _dest_dir(dest_fd, parts[:-1])
        try:
            out_fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                             dir_fd=dfd)
        finally:
            os.close(dfd)
        with os.fdopen(out_fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)
            h = hashlib.sha256()
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    raise _changed(rel, "has grown past the size limit")
                h.update(chunk)
                out.write(chunk)
    return h.hexdigest()


def copy_tree_nofollow(src_root: str, files, dest_root: str, *,
                       max_total_bytes: int = archive.ArchiveLimits().max_total_bytes,
                       expect_sha256: str | None = None) -> str:
    """Copy exactly ``files`` ('/'-separated paths relative to ``src_root``) into the new folder
    ``dest_root``, following no link; return the content hash of what was copied.

    The source may belong to a participant who swaps a file for a symbolic link, a hard link, a
    FIFO or a folder between :func:`load` and this copy: every source component is opened with
    O_NOFOLLOW through directory fds, every file checked after opening (regular, one link), and
    anything changed raises ``invalid_submission``, with ``dest_root`` removed. Destination
    folders are made 0o755 and files 0o644 through their fds (never chmod by path, which would
    follow a link). With ``expect_sha256`` (``Submission.sha256``) the copy must hash the same, so
    what is graded is exactly what was loaded. ``src_root`` itself must not be a link (use
    ``Submission.root``, which :func:`load` resolves); ``dest_root`` must not exist.
    """
    rels = [_checked_rel(rel) for rel in files]
    os.mkdir(dest_root, 0o755)
    try:
        budget = [max_total_bytes]
        total = _ContentHash()
        src_fd = _open_root(src_root)
        try:
            dest_fd = os.open(dest_root, _DIR_FLAGS)
            try:
                os.fchmod(dest_fd, 0o755)
                for rel in rels:
                    total.add(rel, _copy_one(src_fd, dest_fd, rel, budget))
            finally:
                os.close(dest_fd)
        finally:
            os.close(src_fd)
        sha = total.hexdigest()
        if expect_sha256 is not None and sha != expect_sha256:
            raise _invalid("the submission changed after it was loaded (its content hash differs); "
                           "leave it unchanged while it is graded")
    except BaseException:
        shutil.rmtree(dest_root, ignore_errors=True)
        raise
    return sha


# --- the manifest and the model file -----------------------------------------------------------

def _read_manifest(root: str, max_latent_dim: int) -> dict:
    with open_nofollow(root, MANIFEST_NAME) as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise _invalid(f"{MANIFEST_NAME} is larger than 1 MiB")
    try:
        manifest = parse_manifest(data)
    except ManifestSyntaxError as exc:
        raise _invalid(f"{MANIFEST_NAME} {exc}") from None
    problems = manifest_problems(manifest, max_latent_dim=max_latent_dim)
    if problems:
        raise _invalid(f"{MANIFEST_NAME}: " + "; ".join(problems), detail="\n".join(problems))
    return normalize(manifest)


def _zip_names(path: str) -> list[str] | None:
    """Member names of the zip at ``path``; None if it is not a zip (bounded: see check_zip_directory)."""
    with _open_regular_path(path) as fh:
        try:
            archive.check_zip_directory(fh, MAX_MODEL_ZIP_ENTRIES, what="the model archive")
            with zipfile.ZipFile(fh) as zf:
                return zf.namelist()
        except archive._ZIP_READ_ERRORS:
            return None


def _looks_like_pickle(path: str) -> bool:
    with _open_regular_path(path) as fh:
        head = fh.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


_NEVER_UNPICKLE = ("we never unpickle submissions (a pickle can run any code); "
                   "export with torch.jit.save(torch.jit.script(model)) for torchscript, "
                   "torch.export.save(...) for torch_export, or torch.onnx.export for onnx")


def check_model_file(path: str, fmt: str, rel: str) -> None:
    """Cheap structural checks that need no runtime (and never unpickle)."""
    if os.path.getsize(path) == 0:
        raise _invalid(f"model file {rel!r} is empty")
    if fmt == "onnx":
        if _looks_like_pickle(path):
            raise _invalid(f"model file {rel!r} is a Python pickle, not ONNX; {_NEVER_UNPICKLE}")
        return
    names = _zip_names(path)
    if names is None:
        if _looks_like_pickle(path):
            raise _invalid(f"model file {rel!r} is a Python pickle; {_NEVER_UNPICKLE}")
        raise _invalid(f"model file {rel!r} is not a {fmt} archive (torch writes a zip); "
                       f"is 'format' right?")
    if fmt == "torchscript":
        if not any("/code/" in n or n.startswith("code/") for n in names):
            if any(n.endswith("data.pkl") for n in names):
                raise _invalid(f"model file {rel!r} is a pickled nn.Module saved with torch.save, "
                               f"not TorchScript; {_NEVER_UNPICKLE}")
            raise _invalid(f"model file {rel!r} is a zip but not a TorchScript archive (no code/)")
    elif fmt == "torch_export":
        if not any(n.endswith("serialized_exported_program.json") or n.endswith(".json") and "/models/" in n
                   for n in names):
            if any(n.endswith("data.pkl") for n in names):
                raise _invalid(f"model file {rel!r} is a pickled nn.Module saved with torch.save, "
                               f"not a torch.export program; {_NEVER_UNPICKLE}")
            raise _invalid(f"model file {rel!r} is a zip but not a torch.export .pt2 archive")
        from harness.submission.formats import check_pt2  # its JSON reaches code torch generates and runs
        check_pt2(path, rel)


def _check_model(root: str, manifest: dict, files: list[str]) -> None:
    rel = manifest["model"]
    norm = os.path.normpath(rel)
    if os.path.isabs(rel) or norm.startswith("..") or "\\" in rel:
        raise _invalid(f"'model' must be a relative path inside the submission, got {quoted(rel)}")
    if norm not in files:
        present = safe_text(", ".join(f for f in files if f != MANIFEST_NAME), 300) or "nothing"
        raise _invalid(f"model file {quoted(rel)} named in {MANIFEST_NAME} is missing (found: {present})")
    # check_model_file shows ``rel`` in its messages: hand it the printable, bounded form
    check_model_file(os.path.join(root, norm), manifest["format"], safe_text(rel, 200))


def load(path, *, archive_limits: archive.ArchiveLimits = archive.ArchiveLimits(),
         max_latent_dim: int = DEFAULT_MAX_LATENT_DIM) -> Submission:
    """Load and validate the submission at ``path`` (a folder, .zip, .tar.gz/.tgz or .tar).

    Checks the manifest against the schema (:data:`harness.submission.MANIFEST_SCHEMA`), unpacks
    archives safely into a private temporary folder, refuses links (symbolic and hard) and special
    files, checks the model file exists and is not a pickle, and hashes the content.

    Parameters
    ----------
    archive_limits : ArchiveLimits
        Caps on members, bytes, path depth and length (folders and archives alike).
    max_latent_dim : int, default DEFAULT_MAX_LATENT_DIM (256)
        The challenge's cap on ``latent_dim``; a larger one is refused.

    Raises
    ------
    SubmissionFailure
        with kind ``invalid_submission`` and a one-line message saying what to fix.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise _invalid(f"submission {quoted(path)} does not exist")
    tmp = None
    try:
        if os.path.isdir(path):
            top = os.path.realpath(path)
        elif archive.is_archive(path):
            sweep_stale("harness-sub-")
            tmp = os.path.realpath(tempfile.mkdtemp(prefix=f"harness-sub-{os.getpid()}-"))
            archive.unpack(path, tmp, limits=archive_limits)
            top = tmp
        else:
            raise _invalid(f"{quoted(path)} is neither a folder nor a .zip/.tar.gz archive")
        root = _find_manifest_root(top)
        files = _walk_files(root, archive_limits)
        manifest = _read_manifest(root, max_latent_dim)
        _check_model(root, manifest, files)
        sha = content_sha256(root, files)
    except BaseException:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    sub = Submission(source=os.path.abspath(path), root=root, manifest=manifest, sha256=sha, files=files)
    if tmp:
        sub._cleanup = weakref.finalize(sub, shutil.rmtree, tmp, True)
    return sub
