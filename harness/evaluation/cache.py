"""``--cache DIR``: codes kept by (submission hash, dataset, grid index).

Layout: ``DIR/<submission sha256>/<dataset fingerprint>.npz`` holds ``indices`` (sorted, unique)
and ``codes`` for a deterministic dataset, so a rerun with another seed or another metric encodes
only indices it has not seen. Stochastic datasets draw a nuisance per sample, so a code belongs to
a whole request (its indices and observation seed): ``<fingerprint>-request-<hash>.npy``.

The dataset fingerprint hashes the factor structure *and* the pixels of a few fixed
observations, so a changed renderer or a different file never reuses stale codes. Files are
written atomically (temporary file + rename); a corrupt or mismatched file is ignored and
rewritten. Two processes filling the same file at once lose some entries, never correctness.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from harness.errors import InputError

_PROBES = 8


def dataset_fingerprint(dataset) -> str:
    """A short hash of a dataset's structure and the pixels of a few fixed observations."""
    h = hashlib.sha256()
    h.update(repr((dataset.name, list(dataset.factor_sizes), tuple(dataset.observation_shape),
                   bool(getattr(dataset, "stochastic", False)))).encode())
    n = int(dataset.num_observations)
    probes = np.unique(np.linspace(0, n - 1, num=min(_PROBES, n)).astype(np.int64))
    images = dataset.observations(probes, rng=np.random.default_rng(0))
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:24]


def _request_hash(request) -> str:
    h = hashlib.sha256()
    h.update(repr(request.observation_seed).encode())
    h.update(np.ascontiguousarray(np.asarray(request.indices, dtype=np.int64)).tobytes())
    return h.hexdigest()[:24]


def _atomic_save(path: Path, save) -> None:
    """``save(file)`` into a temporary file beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            save(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class DatasetCache:
    """Cached codes of one submission on one dataset."""

    def __init__(self, root, submission_sha256: str, dataset):
        root = Path(root)
        try:
            self.dir = root / submission_sha256
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot use cache directory {str(root)!r}: {exc.strerror or exc}") from None
        self.fingerprint = dataset_fingerprint(dataset)
        self.grid_path = self.dir / f"{self.fingerprint}.npz"
        self._indices: np.ndarray | None = None
        self._codes: np.ndarray | None = None

    # -- deterministic datasets: one table per dataset ------------------------------------------
    def _load_grid(self) -> None:
        if self._indices is not None:
            return
        self._indices, self._codes = np.zeros(0, np.int64), None
        if not self.grid_path.exists():
            return
        try:
            with np.load(self.grid_path, allow_pickle=False) as data:
                indices, codes = data["indices"].astype(np.int64), data["codes"].astype(np.float32)
            if indices.ndim != 1 or codes.ndim != 2 or len(indices) != len(codes):
                raise ValueError("shapes do not match")
            self._indices, self._codes = indices, codes
        except Exception as exc:  # a broken cache file is only a lost speed-up
            warnings.warn(f"ignoring unreadable cache file {self.grid_path}: {exc}", stacklevel=2)

    def lookup(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The subset of sorted unique ``wanted`` indices that is cached, and their codes."""
        self._load_grid()
        if self._codes is None or not len(self._indices):
            return np.zeros(0, np.int64), None
        hit = np.isin(wanted, self._indices, assume_unique=True)
        found = wanted[hit]
        return found, self._codes[np.searchsorted(self._indices, found)]

    def store(self, indices: np.ndarray, codes: np.ndarray) -> None:
        """Add codes of new ``indices`` (not already cached) and write the table."""
        self._load_grid()
        codes = np.asarray(codes, dtype=np.float32)
        if self._codes is not None and self._codes.shape[1:] != codes.shape[1:]:
            self._indices, self._codes = np.zeros(0, np.int64), None  # the model changed shape: start over
        if self._codes is None:
            all_idx, all_codes = np.asarray(indices, np.int64), codes
        else:
            all_idx = np.concatenate([self._indices, indices])
            all_codes = np.concatenate([self._codes, codes])
        order = np.argsort(all_idx, kind="stable")
        self._indices, self._codes = all_idx[order], all_codes[order]
        _atomic_save(self.grid_path, lambda f: np.savez(f, indices=self._indices, codes=self._codes))

    # -- stochastic datasets: one file per request ----------------------------------------------
    def _request_path(self, request) -> Path:
        return self.dir / f"{self.fingerprint}-request-{_request_hash(request)}.npy"

    def lookup_request(self, request) -> np.ndarray | None:
        path = self._request_path(request)
        if not path.exists():
            return None
        try:
            codes = np.load(path, allow_pickle=False)
            if codes.ndim != 2 or len(codes) != np.asarray(request.indices).size:
                raise ValueError("shape does not match the request")
            return codes.astype(np.float32)
        except Exception as exc:
            warnings.warn(f"ignoring unreadable cache file {path}: {exc}", stacklevel=2)
            return None

    def store_request(self, request, codes: np.ndarray) -> None:
        path = self._request_path(request)
        _atomic_save(path, lambda f: np.save(f, np.asarray(codes, dtype=np.float32)))
