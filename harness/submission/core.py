"""Loading a submission: find the manifest, unpack archives safely, check files, hash the content.

Nothing from the submission is executed or unpickled here; model files are only sniffed as zip
archives (TorchScript and .pt2 files are zips) so that a pickled ``nn.Module`` is refused before
any runtime sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import weakref
import zipfile
from dataclasses import dataclass, field

from harness.errors import SubmissionFailure
from harness.submission import archive
from harness.submission.manifest import MANIFEST_NAME, manifest_problems, normalize

MAX_MANIFEST_BYTES = 1 << 20


def _invalid(message: str, detail: str | None = None) -> SubmissionFailure:
    return SubmissionFailure("invalid_submission", message, detail)


@dataclass
class Submission:
    """A loaded, validated submission: manifest fields, the folder that holds it, a content hash.

    For an archive, ``root`` is a private temporary folder removed by :meth:`close` (or when the
    object is garbage collected); use it as a context manager.
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

    @property
    def model_path(self) -> str:
        return os.path.join(self.root, self.manifest["model"])

    def summary(self) -> dict:
        """The ``submission`` block of results.json."""
        return {"name": self.name, "format": self.format, "sha256": self.sha256}

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def sweep_stale(prefix: str) -> None:
    """Remove ``<tmp>/<prefix><pid>-*`` folders left by processes that died without cleaning up."""
    tmp = tempfile.gettempdir()
    try:
        entries = os.listdir(tmp)
    except OSError:
        return
    for name in entries:
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


def _find_manifest_root(top: str) -> str:
    if os.path.isfile(os.path.join(top, MANIFEST_NAME)):
        return top
    entries = [e for e in os.listdir(top) if not e.startswith(".") and e != "__MACOSX"]
    # An archive of a folder holds the folder: accept exactly one top-level folder.
    if len(entries) == 1 and os.path.isdir(os.path.join(top, entries[0])):
        inner = os.path.join(top, entries[0])
        if os.path.isfile(os.path.join(inner, MANIFEST_NAME)):
            return inner
    raise _invalid(f"no {MANIFEST_NAME} found at the top of the submission; "
                   "put submission.json next to the model file")


def _walk_files(root: str, limits: archive.ArchiveLimits) -> list[str]:
    """Relative paths of every file under root; refuses links, special files, and too much data."""
    files = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                raise _invalid(f"{rel!r} is a symbolic link; submissions must hold plain files only")
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise _invalid(f"{rel!r} is not a regular file (device, FIFO or socket)")
            total += st.st_size
            if total > limits.max_total_bytes or len(files) >= limits.max_members:
                raise _invalid(f"the submission holds more than {limits.max_total_bytes // 1024**2} MiB or "
                               f"{limits.max_members} files; keep only the manifest and the model")
            files.append(rel)
    return sorted(files)


def content_sha256(root: str, files: list[str]) -> str:
    """Hash of the submission's content (paths and bytes), the same for a folder and its archive."""
    total = hashlib.sha256()
    for rel in files:
        h = hashlib.sha256()
        with open(os.path.join(root, rel), "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        total.update(f"{rel.replace(os.sep, '/')}\0{h.hexdigest()}\n".encode())
    return total.hexdigest()


def _read_manifest(root: str) -> dict:
    path = os.path.join(root, MANIFEST_NAME)
    if os.path.getsize(path) > MAX_MANIFEST_BYTES:
        raise _invalid(f"{MANIFEST_NAME} is larger than 1 MiB")
    try:
        with open(path, "rb") as fh:
            manifest = json.loads(fh.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(f"{MANIFEST_NAME} is not valid JSON: {exc}") from None
    problems = manifest_problems(manifest)
    if problems:
        raise _invalid(f"{MANIFEST_NAME}: " + "; ".join(problems), detail="\n".join(problems))
    return normalize(manifest)


def _zip_names(path: str) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def _looks_like_pickle(path: str) -> bool:
    with open(path, "rb") as fh:
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


def _check_model(root: str, manifest: dict, files: list[str]) -> None:
    rel = manifest["model"]
    norm = os.path.normpath(rel)
    if os.path.isabs(rel) or norm.startswith("..") or "\\" in rel:
        raise _invalid(f"'model' must be a relative path inside the submission, got {rel!r}")
    if norm not in files:
        present = ", ".join(f for f in files if f != MANIFEST_NAME)[:300] or "nothing"
        raise _invalid(f"model file {rel!r} named in {MANIFEST_NAME} is missing (found: {present})")
    check_model_file(os.path.join(root, norm), manifest["format"], rel)


def load(path, *, archive_limits: archive.ArchiveLimits = archive.ArchiveLimits()) -> Submission:
    """Load and validate the submission at ``path`` (a folder, .zip, .tar.gz/.tgz or .tar).

    Checks the manifest against the schema (:data:`harness.submission.MANIFEST_SCHEMA`), unpacks
    archives safely into a private temporary folder, refuses links and special files, checks the
    model file exists and is not a pickle, and hashes the content.

    Raises
    ------
    SubmissionFailure
        with kind ``invalid_submission`` and a message saying what to fix.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise _invalid(f"submission {path!r} does not exist")
    tmp = None
    try:
        if os.path.isdir(path):
            top = os.path.realpath(path)
        elif archive.is_archive(path):
            sweep_stale("harness-sub-")
            tmp = tempfile.mkdtemp(prefix=f"harness-sub-{os.getpid()}-")
            archive.unpack(path, tmp, limits=archive_limits)
            top = tmp
        else:
            raise _invalid(f"{path!r} is neither a folder nor a .zip/.tar.gz archive")
        root = _find_manifest_root(top)
        files = _walk_files(root, archive_limits)
        manifest = _read_manifest(root)
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
