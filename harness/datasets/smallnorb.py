"""SmallNORB (LeCun, Huang & Bottou, CVPR 2004) from the NYU files, read as disentanglement_lib reads it.

Files (https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/), in one folder, plain or gzipped as
downloaded (``.mat`` or ``.mat.gz``)::

    smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat,info}.mat
    smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,cat,info}.mat

Each is a NYU "binary matrix": int32 magic (the element type: 0x1E3D4C55 bytes, 0x1E3D4C54 int32,
...), int32 ndim, then max(3, ndim) int32 dims (a matrix of fewer than 3 dimensions still stores
3, the unused ones 1), then the elements in C order; all little-endian. ``dat`` is uint8
(N, 2, 96, 96), two cameras per row; ``cat`` int32 (N,), the category; ``info`` int32 (N, 4):
instance, elevation 0..8, azimuth 0, 2, ..., 34, lighting 0..5.

What disentanglement_lib (DL, ``data/ground_truth/norb.py``) does, and this loader with it:
both halves concatenated (48,600 images = category 5 x instance 10 x elevation 9 x azimuth 18 x
lighting 6, each once); azimuth halved to 0..17; the first camera's image; resized to 64x64 by
Pillow's Lanczos filter ("ANTIALIAS") on 32-bit integer pixels (DL reads the bytes as int8,
which Pillow takes to mode "I"). DL keeps the result as float, Lanczos overshoot outside [0, 1]
included; here it is stored as uint8, so those few pixels are clipped to 0 / 255. The factors
are category, elevation, azimuth, lighting (DL's ``latent_factor_indices = [0, 2, 3, 4]``) and
the instance is drawn uniformly per sample: the dataset is stochastic, 4,860 grid points.
``instance="factor"`` makes the instance a fifth factor instead (deterministic, 48,600 points).

The 64x64 images are resized once, streaming, into a uint8 ``.npy`` in the cache folder
(``$HARNESS_CACHE``, default ``~/.cache/harness``; 199 MB) and memory-mapped from there.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import struct
import zlib

import numpy as np

from harness.datasets.base import GridDataset, as_generator
from harness.datasets.files import FileGrid, cached_images, files_tag, open_regular
from harness.errors import InputError

BYTE_MATRIX, INT_MATRIX = 0x1E3D4C55, 0x1E3D4C54
MATRIX_TYPES = {
    0x1E3D4C51: np.dtype("<f4"),  # single precision
    0x1E3D4C53: np.dtype("<f8"),  # double precision
    0x1E3D4C54: np.dtype("<i4"),  # integer
    0x1E3D4C55: np.dtype("u1"),   # byte
    0x1E3D4C56: np.dtype("<i2"),  # short
}  # 0x1E3D4C52 ("packed") has no published layout: refused
MAX_NDIM = 16
MAX_SIDE = 512  # image height/width accepted in a dat file (the published files: 96)

ALL_NAMES = ["category", "instance", "elevation", "azimuth", "lighting"]
ALL_SIZES = [5, 10, 9, 18, 6]
GRID_SIZE = int(np.prod(ALL_SIZES))  # 48,600
SIZE = 64
FACTOR_VALUES = {  # the NYU readme's names; instance and lighting have only indices
    "category": ["animal", "human", "airplane", "truck", "car"],
    "elevation": [f"{30 + 5 * i} deg" for i in range(9)],  # from the horizontal
    "azimuth": [f"{20 * i} deg" for i in range(18)],
}
SPLITS = ("training", "testing")
PARTS = ("dat", "cat", "info")
FILE_PATTERN = re.compile(r"^smallnorb-(?P<stem>[0-9x]+)-(?P<split>training|testing)-(?P<part>dat|cat|info)\.mat(?P<gz>\.gz)?$")
CACHE_VERSION = "smallnorb-1"


def is_smallnorb_name(name: str) -> bool:
    return FILE_PATTERN.match(name) is not None


def _lanczos():
    from PIL import Image

    return getattr(Image, "Resampling", Image).LANCZOS


def resize_like_dl(image: np.ndarray) -> np.ndarray:
    """One uint8 (H, W) image to uint8 (64, 64): Pillow Lanczos on 32-bit pixels, as DL, then clipped."""
    from PIL import Image

    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.int32)).resize((SIZE, SIZE), _lanczos())
    return np.clip(np.asarray(resized), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- binary matrices


@contextlib.contextmanager
def _damage_is_input(path: str):
    """A gzip member that fails to decompress or to match its checksum, a failed read: one line."""
    try:
        yield
    except (EOFError, zlib.error, OSError) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path}: damaged or unreadable ({type(exc).__name__}: {str(exc)[:120]}); download it again") from None


class _Matrix:
    """An open binary matrix: element type, dims and a stream positioned at the first element."""

    def __init__(self, path: str, *, max_bytes: int):
        self.path = path
        raw, self.file_size = open_regular(path, max_bytes=max_bytes)
        self.gzipped = path.endswith(".gz")
        self.fp = gzip.GzipFile(fileobj=raw, mode="rb") if self.gzipped else raw
        self._raw = raw
        try:
            self._read_header()
        except BaseException:
            self.close()
            raise

    def close(self):
        self.fp.close()
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read_exact(self, n: int) -> bytes:
        chunks, left = [], n
        with _damage_is_input(self.path):
            while left:
                block = self.fp.read(min(left, 1 << 24))
                if not block:
                    raise InputError(f"{self.path}: truncated: the header declares {self.nbytes:,} bytes of data, the file ends before")
                chunks.append(block)
                left -= len(block)
        return b"".join(chunks)

    def _read_header(self):
        head = self.read_exact_header(8)
        magic, ndim = struct.unpack("<Ii", head)
        if magic not in MATRIX_TYPES:
            raise InputError(f"{self.path}: not a NORB binary matrix (magic 0x{magic:08X}; "
                             f"expected one of {', '.join(f'0x{m:08X}' for m in sorted(MATRIX_TYPES))})")
        if not 1 <= ndim <= MAX_NDIM:
            raise InputError(f"{self.path}: header declares {ndim} dimensions (1..{MAX_NDIM} expected): not a NORB binary matrix")
        stored = max(3, ndim)  # fewer than 3 dims still store 3
        dims = struct.unpack(f"<{stored}i", self.read_exact_header(4 * stored))[:ndim]
        if any(d < 1 for d in dims):
            raise InputError(f"{self.path}: header dims {list(dims)} must be positive")
        self.magic, self.dtype, self.dims = magic, MATRIX_TYPES[magic], tuple(dims)
        self.header_len = 8 + 4 * stored
        self.nbytes = math.prod(dims) * self.dtype.itemsize

    def read_exact_header(self, n: int) -> bytes:
        with _damage_is_input(self.path):
            data = self.fp.read(n)
        if len(data) < n:
            raise InputError(f"{self.path}: truncated inside its header ({len(data)} of {n} bytes): not a NORB binary matrix")
        return data

    def expect(self, magic: int, shape_desc: str, ok: bool):
        """Refuse a wrong element type or shape, then check the file holds exactly the declared data."""
        if self.magic != magic:
            raise InputError(f"{self.path}: holds a {_type_name(self.magic)} matrix; expected {_type_name(magic)} elements")
        if not ok:
            raise InputError(f"{self.path}: dims {list(self.dims)}; expected {shape_desc}")
        if not self.gzipped and self.file_size != self.header_len + self.nbytes:
            what = "truncated" if self.file_size < self.header_len + self.nbytes else "longer than its header declares"
            raise InputError(f"{self.path}: {what}: {self.file_size:,} bytes, the header declares "
                             f"{self.header_len + self.nbytes:,}; download it again")

    def check_end(self):
        if self.gzipped:
            with _damage_is_input(self.path):
                extra = self.fp.read(1)
            if extra:
                raise InputError(f"{self.path}: more data than its header declares ({self.nbytes:,} bytes)")


def _type_name(magic: int) -> str:
    return {BYTE_MATRIX: "byte", INT_MATRIX: "int32", 0x1E3D4C51: "float32", 0x1E3D4C53: "float64",
            0x1E3D4C56: "int16"}.get(magic, f"0x{magic:08X}")


# --------------------------------------------------------------------------- the folder


def find_files(folder: str) -> dict[tuple[str, str], str]:
    """``{(split, part): path}`` for the six SmallNORB files in ``folder``; InputError if any is missing."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for name in sorted(os.listdir(folder)):
        m = FILE_PATTERN.match(name)
        if m:
            key = (m["split"], m["part"])
            stem = m["stem"]
            # an unpacked copy next to the download is the same file: prefer the uncompressed one
            if stem not in found.setdefault(key, {}) or not m["gz"]:
                found[key][stem] = os.path.join(folder, name)
    out, missing = {}, []
    for split in SPLITS:
        stems = {s for part in PARTS for s in found.get((split, part), {})}
        if len(stems) > 1:
            raise InputError(f"{folder}: SmallNORB {split} files of different sets ({', '.join(sorted(stems))}): keep one")
        for part in PARTS:
            paths = found.get((split, part), {})
            if not paths:
                missing.append(f"*-{split}-{part}.mat")
            else:
                out[(split, part)] = next(iter(paths.values()))
    if missing:
        raise InputError(f"{folder}: SmallNORB needs the training and testing dat, cat and info files "
                         f"(smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat, ...; .mat or .mat.gz); missing {', '.join(missing)}")
    return out


def _read_labels(cat_path: str, info_path: str) -> np.ndarray:
    """(N, 5) factors of one half: category, instance, elevation, azimuth / 2, lighting; ranges checked."""
    with _Matrix(cat_path, max_bytes=1 << 26) as cat:
        n = cat.dims[0]
        cat.expect(INT_MATRIX, f"(N,) with N <= {GRID_SIZE:,}", len(cat.dims) == 1 and n <= GRID_SIZE)
        category = np.frombuffer(cat.read_exact(cat.nbytes), dtype="<i4").astype(np.int64)
        cat.check_end()
    with _Matrix(info_path, max_bytes=1 << 26) as info:
        info.expect(INT_MATRIX, f"({n:,}, 4) (the rows of {os.path.basename(cat_path)})", info.dims == (n, 4))
        rest = np.frombuffer(info.read_exact(info.nbytes), dtype="<i4").astype(np.int64).reshape(n, 4)
        info.check_end()
    factors = np.column_stack([category, rest])
    odd = np.flatnonzero(factors[:, 3] % 2)
    if len(odd):
        raise InputError(f"{info_path}: azimuth {factors[odd[0], 3]} at row {odd[0]}; SmallNORB azimuths are 0, 2, ..., 34")
    factors[:, 3] //= 2
    for k, (name, size) in enumerate(zip(ALL_NAMES, ALL_SIZES)):
        bad = np.flatnonzero((factors[:, k] < 0) | (factors[:, k] >= size))
        if len(bad):
            src = cat_path if k == 0 else info_path
            raw = factors[bad[0], k] * (2 if k == 3 else 1)
            raise InputError(f"{src}: {name} {raw} at row {bad[0]}; outside SmallNORB's range")
    return factors


def _grid_positions(folder: str, factors: list[np.ndarray]) -> list[np.ndarray]:
    """Each half's rows as positions in the 5-factor grid; InputError unless both cover it exactly once."""
    keys = [np.ravel_multi_index(tuple(f.T), ALL_SIZES) for f in factors]
    counts = np.bincount(np.concatenate(keys), minlength=GRID_SIZE)
    for bad, what in ((counts == 0, "missing"), (counts > 1, "present more than once")):
        if bad.any():
            combo = np.unravel_index(int(np.flatnonzero(bad)[0]), ALL_SIZES)
            desc = ", ".join(f"{n}={int(v)}" for n, v in zip(ALL_NAMES, combo))
            raise InputError(f"{folder}: SmallNORB combination {desc} is {what} ({int(bad.sum())} such) in the training "
                             f"and testing files together; each of the {GRID_SIZE:,} must appear once")
    return keys


def _fill(files: dict, positions: list[np.ndarray], out: np.ndarray, *, block_bytes: int = 1 << 24):
    """Stream each half's dat file, resize its first camera's images and write them at their grid positions."""
    for split, pos in zip(SPLITS, positions):
        n = len(pos)
        with _Matrix(files[(split, "dat")], max_bytes=1 << 36) as dat:
            dims = dat.dims
            dat.expect(BYTE_MATRIX, f"({n:,}, 2, H, W) with H, W <= {MAX_SIDE} ({n:,} = the rows of its cat file)",
                       len(dims) == 4 and dims[0] == n and dims[1] == 2 and max(dims[2:]) <= MAX_SIDE)
            h, w = dims[2], dims[3]
            block = max(1, block_bytes // (2 * h * w))  # rows per read: a bounded buffer
            for a in range(0, n, block):
                rows = min(block, n - a)
                pairs = np.frombuffer(dat.read_exact(rows * 2 * h * w), dtype=np.uint8).reshape(rows, 2, h, w)
                out[pos[a : a + rows]] = np.stack([resize_like_dl(img) for img in pairs[:, 0]])
            dat.check_end()


def open_smallnorb(folder: str, *, instance: str = "nuisance"):
    """The SmallNORB folder as DL's 4-factor stochastic dataset, or with ``instance="factor"`` 5 factors."""
    if instance not in ("nuisance", "factor"):
        raise InputError(f"SmallNORB option instance={instance!r}: use 'nuisance' (DL: drawn per sample) or 'factor'")
    files = find_files(folder)
    factors = [_read_labels(files[(s, "cat")], files[(s, "info")]) for s in SPLITS]
    positions = _grid_positions(folder, factors)
    from PIL import __version__ as pillow_version

    tag = files_tag([files[k] for k in sorted(files)], CACHE_VERSION, pillow_version)
    store = cached_images(f"smallnorb.{tag}.npy", np.uint8, (GRID_SIZE, SIZE, SIZE),
                          lambda out: _fill(files, positions, out))
    source = f"folder: {folder}"
    if instance == "factor":
        return FileGrid(name="smallnorb_instances", factor_names=ALL_NAMES, factor_sizes=ALL_SIZES,
                        observation_shape=(SIZE, SIZE, 1), store=store, source=source, factor_values=FACTOR_VALUES)
    return SmallNORB(store, source)


class SmallNORB(GridDataset):
    """DL's SmallNORB: category 5, elevation 9, azimuth 18, lighting 6; the instance (10) drawn per sample.

    *Randomness.* ``observations(idx, rng)`` draws one raw 64-bit word per requested sample
    (``rng.integers(0, 2**64, dtype=uint64)``); the instance is that word modulo 10. So a request
    split into chunks with one generator gives the same images as one call (docs/datasets.md).
    """

    name = "smallnorb"
    factor_names = ["category", "elevation", "azimuth", "lighting"]
    factor_sizes = [5, 9, 18, 6]
    observation_shape = (SIZE, SIZE, 1)
    stochastic = True
    factor_values = FACTOR_VALUES

    def __init__(self, store, source: str):
        self._store = store
        self.source = source

    def observations(self, idx, rng: np.random.Generator | None = None) -> np.ndarray:
        factors = self.index_to_factors(np.atleast_1d(np.asarray(idx, dtype=np.int64)))
        words = as_generator(rng).integers(0, 2**64, size=len(factors), dtype=np.uint64)
        instance = (words % np.uint64(ALL_SIZES[1])).astype(np.int64)
        rows = np.ravel_multi_index((factors[:, 0], instance, factors[:, 1], factors[:, 2], factors[:, 3]), ALL_SIZES)
        return self._store.read(rows)
