"""File-backed datasets: original dSprites .npz, MPI3D .npz, DeepMind 3dshapes.h5, organizer HDF5,
and folders: SmallNORB's NYU files (:mod:`harness.datasets.smallnorb`), Cars3D's MATLAB files
(:mod:`harness.datasets.cars3d`).

Nothing is read whole: images stay on disk and rows are read on demand, through a memory map
(uncompressed .npz members, contiguous HDF5 datasets) or h5py reads grouped into short
contiguous runs (chunked HDF5). A compressed .npz member cannot be read at random, so it is
extracted once, streaming, to an uncompressed .npy in the cache folder (``$HARNESS_CACHE`` or
``~/.cache/harness``) and memory-mapped from there.

Organizer format (``harness datasets export`` writes it, ``harness datasets check`` validates it):
an HDF5 file with ``images`` uint8 (N, H, W, C), ``factors`` int (N, K) and attributes
``factor_names`` (K strings) and ``factor_sizes`` (K ints). Rows in C order over the full grid make
a grid dataset; any other set of distinct labelled rows makes a :class:`LabelledSubset`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import stat
import warnings
import zipfile
import zlib

import numpy as np

from harness.datasets.base import ANY, GridDataset, as_generator, cache_dir, check_factor_array
from harness.errors import InputError

ORGANIZER_KEYS = "datasets 'images' uint8 (N,H,W,C) and 'factors' int (N,K), attributes 'factor_names', 'factor_sizes'"
DSPRITES_KEYS = "'imgs', 'latents_classes', 'latents_values', 'metadata'"
MPI3D_SIZES = {
    460_800: [4, 4, 2, 3, 3, 40, 40],  # 2019 challenge toy / realistic files, and MPI3D-complex
    1_036_800: [6, 6, 2, 3, 3, 40, 40],  # public toy / realistic / real files
}
MPI3D_NAMES = ["object_color", "object_shape", "object_size", "camera_height", "background_color", "horizontal_axis", "vertical_axis"]
# (images, colours, shapes) per variant, as github.com/rr-learning/disentanglement_dataset's README
# names them (its 2019 revisions for the challenge files, the current one for the others)
MPI3D_VARIANTS = {
    "public": (1_036_800, ["white", "green", "red", "blue", "brown", "olive"],
               ["cone", "cube", "cylinder", "hexagonal", "pyramid", "sphere"]),
    "challenge2019": (460_800, ["green", "red", "blue", "brown"], ["cone", "cube", "hexagonal prism", "sphere"]),
    "complex": (460_800, ["yellow", "green", "olive", "red"], ["coffee-cup", "tennis-ball", "croissant", "beer-cup"]),
}
_MPI3D_SIMULATED = {"toy", "realistic", "sim"}  # name tokens of rendered sets: never MPI3D-complex (real images)
SHAPES3D_NAMES = ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
SHAPES3D_SIZES = [10, 10, 10, 8, 4, 15]


def _expected(path: str) -> str:
    if path.lower().endswith(".npz"):
        return f"an original dSprites .npz (keys {DSPRITES_KEYS}) or an MPI3D .npz (key 'images')"
    return f"a DeepMind 3dshapes.h5 (keys 'images', 'labels') or an organizer HDF5 ({ORGANIZER_KEYS})"


# --------------------------------------------------------------------------- image stores


class _MemmapImages:
    """Rows of an uncompressed array at ``offset`` in ``path``, mapped on demand (picklable)."""

    def __init__(self, path, offset, dtype, shape, *, scale=1):
        self.path, self.offset, self.dtype, self.shape, self.scale = path, offset, np.dtype(dtype), tuple(shape), scale
        self._map = None

    def __getstate__(self):
        return {**self.__dict__, "_map": None}

    def read(self, idx: np.ndarray) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        rows = np.asarray(self._map[idx])
        if rows.ndim == 3:  # (n, H, W) -> (n, H, W, 1)
            rows = rows[..., None]
        return rows * np.uint8(self.scale) if self.scale != 1 else rows


class _H5Images:
    """Rows of an HDF5 dataset, read in short contiguous runs (the file opens lazily; picklable)."""

    MAX_GAP = 8  # read through gaps up to this many rows rather than issue another read
    MAX_SPAN = 1024  # rows per read, bounds the temporary buffer

    def __init__(self, path, key):
        self.path, self.key = path, key
        self._file = None

    def __getstate__(self):
        return {**self.__dict__, "_file": None}

    def read(self, idx: np.ndarray) -> np.ndarray:
        import h5py

        if self._file is None:
            self._file = h5py.File(self.path, "r")
        dset = self._file[self.key]
        uniq, inverse = np.unique(idx, return_inverse=True)
        out = np.empty((len(uniq),) + dset.shape[1:], dtype=dset.dtype)
        if len(uniq):
            gap_break = np.diff(uniq) > self.MAX_GAP
            group = np.concatenate([[0], np.cumsum(gap_break)])
            starts = np.flatnonzero(np.concatenate([[True], gap_break]))
            # split long runs so that no read spans more than MAX_SPAN rows
            group = group * (dset.shape[0] // self.MAX_SPAN + 2) + (uniq - uniq[starts[group]]) // self.MAX_SPAN
            bounds = np.flatnonzero(np.diff(group)) + 1
            for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(uniq)]])):
                lo, hi = int(uniq[a]), int(uniq[b - 1]) + 1
                out[a:b] = dset[lo:hi][uniq[a:b] - lo]
        if len(uniq) == len(idx) and (len(idx) < 2 or (np.diff(idx) > 0).all()):
            return out  # already sorted and distinct: no reordering copy
        return out[inverse.reshape(-1)]


def _h5_store(path, dset):
    """A memory map for a contiguous uncompressed dataset, else chunked h5py reads."""
    offset = dset.id.get_offset() if dset.chunks is None and dset.compression is None else None
    if offset is not None:
        return _MemmapImages(path, offset, dset.dtype, dset.shape)
    return _H5Images(path, dset.name)


# --------------------------------------------------------------------------- datasets


class FileGrid(GridDataset):
    """A full factor grid stored in a file, rows in C order (last factor fastest)."""

    def __init__(self, *, name, factor_names, factor_sizes, observation_shape, store, source,
                 factor_values: dict[str, list[str]] | None = None, note: str | None = None):
        self.name = name
        self.factor_names = list(factor_names)
        self.factor_sizes = [int(s) for s in factor_sizes]
        self.observation_shape = tuple(int(d) for d in observation_shape)
        self.source = source
        self._store = store
        if factor_values is not None:  # value names per factor, where the file's publisher named them
            self.factor_values = {k: list(v) for k, v in factor_values.items()}
        self.note = note  # what the loader assumed, for `harness datasets check`

    def observations(self, idx, rng: np.random.Generator | None = None) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        self.index_to_factors(idx)  # range check
        return self._store.read(idx)


class LabelledSubset:
    """A labelled subset of a factor grid: rows with distinct factor combinations.

    Indices are row numbers. :meth:`index_of_factors` (the path intervention metrics use) returns
    a uniformly random existing row matching the fixed entries of each request (``ANY`` = -1
    leaves a factor free) and raises :class:`InputError` when no row matches.
    """

    stochastic = False
    full_grid = False

    def __init__(self, *, name, factor_names, factor_sizes, observation_shape, factors, store, source):
        self.name = name
        self.factor_names = list(factor_names)
        self.factor_sizes = [int(s) for s in factor_sizes]
        self.observation_shape = tuple(int(d) for d in observation_shape)
        self.source = source
        self._factors = factors
        self._store = store
        self._lookup: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    @property
    def num_observations(self) -> int:
        return len(self._factors)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={s}" for n, s in zip(self.factor_names, self.factor_sizes))
        return f"<LabelledSubset {self.name!r} {self.num_observations} rows of {sizes}>"

    def _check_rows(self, idx) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_observations):
            raise IndexError(f"{self.name}: row index out of range [0, {self.num_observations})")
        return idx

    def index_to_factors(self, idx) -> np.ndarray:
        return self._factors[self._check_rows(idx)]

    def observations(self, idx, rng: np.random.Generator | None = None) -> np.ndarray:
        return self._store.read(self._check_rows(idx))

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Factors of ``n`` rows drawn uniformly (with replacement) from the existing rows."""
        return self._factors[as_generator(rng).integers(0, self.num_observations, size=n)]

    def _table(self, fixed: tuple) -> tuple[np.ndarray, np.ndarray]:
        """Rows sorted by the key of the ``fixed`` columns: (sorted keys, row order)."""
        if fixed not in self._lookup:
            cols = list(fixed)
            keys = np.ravel_multi_index(tuple(self._factors[:, cols].T), [self.factor_sizes[c] for c in cols])
            order = np.argsort(keys, kind="stable")
            self._lookup[fixed] = (keys[order], order)
        return self._lookup[fixed]

    def _groups(self, factors: np.ndarray):
        """Per pattern of fixed columns: (request mask, first, count, row order) into its sorted table."""
        fixed_mask = factors != ANY
        for pattern in np.unique(fixed_mask, axis=0):
            sel = (fixed_mask == pattern).all(axis=1)
            cols = [int(c) for c in np.flatnonzero(pattern)]
            if not cols:
                n = int(sel.sum())
                yield sel, np.zeros(n, np.int64), np.full(n, self.num_observations), np.arange(self.num_observations)
                continue
            keys, order = self._table(tuple(cols))
            want = np.ravel_multi_index(tuple(factors[sel][:, cols].T), [self.factor_sizes[c] for c in cols])
            lo = np.searchsorted(keys, want, side="left")
            hi = np.searchsorted(keys, want, side="right")
            yield sel, lo, hi - lo, order

    def _rows(self, factors: np.ndarray, fraction: np.ndarray) -> np.ndarray:
        """Row ``floor(fraction * count)`` among each request's matches; InputError if none match."""
        rows = np.empty(len(factors), dtype=np.int64)
        for sel, first, count, order in self._groups(factors):
            if (count == 0).any():
                raise self._missing(factors[sel], count)
            rows[sel] = order[first + np.minimum((fraction[sel] * count).astype(np.int64), count - 1)]
        return rows

    def _missing(self, factors, count):
        bad = factors[np.flatnonzero(count == 0)[0]]
        desc = ", ".join(f"{n}={'any' if v == ANY else v}" for n, v in zip(self.factor_names, bad))
        n_bad = int((count == 0).sum())
        return InputError(f"{self.name}: no row with {desc} ({n_bad} requested combination(s) missing from this labelled subset)")

    def find_rows(self, factors) -> np.ndarray:
        """All rows matching one factor combination (``ANY`` entries match anything), in row order."""
        factors = check_factor_array(factors, self.factor_sizes, self.name, allow_any=True)[:1]
        for _, first, count, order in self._groups(factors):
            return np.sort(order[first[0] : first[0] + count[0]])

    def index_of_factors(self, factors, rng: np.random.Generator | None = None) -> np.ndarray:
        """A random existing row per request matching its fixed factors; one ``rng`` block per call."""
        factors = check_factor_array(factors, self.factor_sizes, self.name, allow_any=True)
        return self._rows(factors, as_generator(rng).random(len(factors)))

    def factors_to_index(self, factors) -> np.ndarray:
        """The row of each exact factor combination; :class:`InputError` if one is not in the subset."""
        factors = check_factor_array(factors, self.factor_sizes, self.name)
        return self._rows(factors, np.zeros(len(factors)))


# --------------------------------------------------------------------------- npz helpers


_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "tuple"),
    ("__builtin__", "tuple"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a dataset file cannot run code."""

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _npy_header(fp):
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)


def _npz_member(zf: zipfile.ZipFile, key: str, path: str) -> zipfile.ZipInfo:
    try:
        return zf.getinfo(key + ".npy")
    except KeyError:
        raise InputError(f"{path}: missing key {key!r} (found {', '.join(_npz_keys(zf))})") from None


@contextlib.contextmanager
def _damage_is_input(path: str, key: str):
    """A member that fails to decompress or to match its checksum is a damaged file: one line."""
    try:
        yield
    except (zlib.error, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: {key!r} is damaged ({type(exc).__name__}: {str(exc)[:120]}); "
                         "the file is corrupt or incomplete: download it again") from None


def _npz_keys(zf):
    return sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))


def _npz_small(zf, key, path):
    """A small member (labels, metadata) read fully; object arrays through the safe unpickler."""
    info = _npz_member(zf, key, path)
    with _damage_is_input(path, key), zf.open(info) as fp:
        shape, fortran, dtype = _npy_header(fp)
        if dtype.hasobject:
            try:
                return _ArrayUnpickler(fp, encoding="latin1").load()
            except Exception as exc:  # any unpickling problem is a corrupt or hostile file
                raise InputError(f"{path}: cannot read {key!r}: {exc}") from None
        data = fp.read()
    try:
        arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    except ValueError:
        raise InputError(f"{path}: {key!r} is truncated") from None
    return arr


def open_regular(path: str, *, max_bytes: int):
    """``path`` opened for binary reading, refusing links, non-regular files and files over ``max_bytes``.

    ``O_NOFOLLOW`` makes the check and the open one step, so a file swapped for a link in between
    is refused too. Returns ``(file object, size)``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if os.path.islink(path):
            raise InputError(f"{path} is a symbolic link: dataset files are never followed through links; copy the file") from None
        raise InputError(f"cannot open {path}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputError(f"{path} is not a regular file")
    if st.st_size > max_bytes:
        os.close(fd)
        raise InputError(f"{path}: {st.st_size:,} bytes, more than the {max_bytes:,} this file can hold; it is not the expected file")
    return os.fdopen(fd, "rb"), st.st_size


def files_tag(paths, *extra) -> str:
    """A short hash of files' absolute paths, sizes and modification times (and ``extra``): a cache key."""
    parts = []
    for p in paths:
        st = os.lstat(p)
        parts.append(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts + [str(e) for e in extra]).encode()).hexdigest()[:16]


def cached_images(filename: str, dtype, shape, fill) -> "_MemmapImages":
    """A memory-mapped ``.npy`` in the cache folder, written once by ``fill(out)`` (a writable memmap).

    Written to a temporary file and renamed, so a failed or interrupted fill leaves nothing that
    would be taken for the data next time.
    """
    target = os.path.join(cache_dir(), filename)
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.{os.getpid()}.part"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        try:
            fill(out)
            out.flush()
        except BaseException:
            del out
            os.unlink(tmp)
            raise
        del out
        os.replace(tmp, target)
    with open(target, "rb") as fp:
        shape_found, _, dtype_found = _npy_header(fp)
        offset = fp.tell()
    if tuple(shape_found) != tuple(shape) or dtype_found != np.dtype(dtype):
        raise InputError(f"cache file {target} does not match its dataset: delete it and load again")
    return _MemmapImages(target, offset, dtype, shape)


def _npz_images(path: str, zf: zipfile.ZipFile, key: str, *, scale=1) -> tuple[_MemmapImages, tuple]:
    """A memory-mapped store for a big member; compressed members are extracted to the cache once."""
    info = _npz_member(zf, key, path)
    with _damage_is_input(path, key), zf.open(info) as fp:
        shape, fortran, dtype = _npy_header(fp)
        header_len = fp.tell()
    if fortran or dtype.hasobject or len(shape) not in (3, 4):
        raise InputError(f"{path}: {key!r} must be a C-order uint8 array (N,H,W[,C]), got shape {shape} dtype {dtype}")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as raw:  # data offset = local header + name + extra + npy header
            raw.seek(info.header_offset)
            local = raw.read(30)
            name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        offset = info.header_offset + 30 + name_len + extra_len + header_len
        return _MemmapImages(path, offset, dtype, shape, scale=scale), shape
    st = os.stat(path)
    tag = hashlib.sha256(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{key}".encode()).hexdigest()[:16]
    target = os.path.join(cache_dir(), f"{os.path.basename(path)}.{key}.{tag}.npy")
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.{os.getpid()}.part"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        flat = out.reshape(-1)
        try:
            with _damage_is_input(path, key), zf.open(info) as fp:
                _npy_header(fp)
                pos, step = 0, 1 << 24
                while pos < flat.size:  # stream 16 MiB at a time
                    block = fp.read(min(step, (flat.size - pos) * dtype.itemsize))
                    if not block:
                        raise InputError(f"{path}: {key!r} is truncated")
                    n = len(block) // dtype.itemsize
                    flat[pos : pos + n] = np.frombuffer(block, dtype=dtype, count=n)
                    pos += n
            out.flush()
        except BaseException:
            del out, flat
            os.unlink(tmp)  # a half-extracted cache file would be taken for the data next time
            raise
        del out, flat
        os.replace(tmp, target)
    with open(target, "rb") as fp:
        _npy_header(fp)
        offset = fp.tell()
    return _MemmapImages(target, offset, dtype, shape, scale=scale), shape


def _check_grid_order(classes: np.ndarray, sizes, path, what):
    grid = np.stack(np.unravel_index(np.arange(len(classes)), sizes), axis=-1)
    if classes.shape != grid.shape or not np.array_equal(classes, grid):
        raise InputError(f"{path}: {what} are not the full grid in C order (last factor fastest) for sizes {list(sizes)}")


def open_dsprites_npz(path: str, zf: zipfile.ZipFile) -> FileGrid:
    meta = _npz_small(zf, "metadata", path)
    meta = meta.item() if isinstance(meta, np.ndarray) else meta
    if not isinstance(meta, dict) or "latents_sizes" not in meta:
        raise InputError(f"{path}: 'metadata' must be a dict with 'latents_sizes' and 'latents_names'")
    meta = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in meta.items()}
    all_sizes = [int(s) for s in np.asarray(meta["latents_sizes"]).ravel()]
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta.get("latents_names", [])]
    if len(names) != len(all_sizes):
        names = [f"factor{k}" for k in range(len(all_sizes))]
    keep = [k for k, s in enumerate(all_sizes) if s > 1]  # 'color' has one value: not a factor
    sizes = [all_sizes[k] for k in keep]
    classes = _npz_small(zf, "latents_classes", path)
    if classes.ndim != 2 or classes.shape[1] != len(all_sizes):
        raise InputError(f"{path}: 'latents_classes' must have shape (N, {len(all_sizes)}), got {classes.shape}")
    store, shape = _npz_images(path, zf, "imgs")
    n = int(np.prod(sizes))
    if shape[0] != n or len(classes) != n:
        raise InputError(f"{path}: metadata sizes {all_sizes} give {n} images but 'imgs' has {shape[0]} and 'latents_classes' {len(classes)}")
    _check_grid_order(classes[:, keep], sizes, path, "'latents_classes'")
    store.scale = 1
    if store.read(np.arange(min(n, 64))).max() <= 1:  # the original stores 0/1 pixels
        store.scale = 255
    obs = shape[1:] if len(shape) == 4 else shape[1:] + (1,)
    return FileGrid(name="dsprites_original", factor_names=[names[k] for k in keep], factor_sizes=sizes,
                    observation_shape=obs, store=store, source=f"file: {path}")


def mpi3d_factor_values(variant: str) -> dict[str, list[str]]:
    """Value names of the five named MPI3D factors in ``variant`` (the two axes have only indices)."""
    _, colours, shapes = MPI3D_VARIANTS[variant]
    return {"object_color": list(colours), "object_shape": list(shapes), "object_size": ["small", "large"],
            "camera_height": ["top", "center", "bottom"], "background_color": ["purple", "sea green", "salmon"]}


def mpi3d_variant(num_images: int, file_name: str, variant: str | None = None) -> tuple[str, str | None]:
    """``(variant, note)`` of an MPI3D file: from ``variant`` if given, else the image count and the name.

    1,036,800 images are the public sets. 460,800 are the 2019 challenge's (4 colours, 4 shapes)
    or MPI3D-complex (other objects): "complex"/"complicated" in the name (the published file is
    ``real3d_complicated_shapes_ordered.npz``) says complex; "toy", "realistic", "sim", "2019",
    "challenge" or "heldout" says 2019 (rendered: complex has only real images). With neither,
    the 2019 layout is assumed and ``note`` says so: the factor sizes are the same, only the
    value names differ, so the scores do not depend on the choice.
    """
    if variant is not None:
        if variant not in MPI3D_VARIANTS:
            raise InputError(f"MPI3D option variant={variant!r}: use one of {', '.join(MPI3D_VARIANTS)}")
        expected = MPI3D_VARIANTS[variant][0]
        if num_images != expected:
            raise InputError(f"{file_name}: MPI3D variant {variant!r} has {expected:,} images, the file {num_images:,}")
        return variant, None
    if num_images not in MPI3D_SIZES:
        raise InputError(f"{file_name}: MPI3D 'images' has {num_images:,} images; expected 460,800 (2019 files and "
                         "MPI3D-complex: 4 colours, 4 shapes) or 1,036,800 (public files: 6, 6)")
    if num_images == 1_036_800:
        return "public", None
    base = os.path.basename(file_name).lower()
    if "complex" in base or "complicated" in base:
        return "complex", None
    tokens = set(re.split(r"[^a-z0-9]+", base))
    if tokens & _MPI3D_SIMULATED or any(word in base for word in ("2019", "challenge", "heldout")):
        return "challenge2019", None
    return "challenge2019", (
        f"{os.path.basename(file_name)}: 460,800 MPI3D images and no name hint: taken as the 2019 challenge set "
        "(colours green, red, blue, brown; shapes cone, cube, hexagonal prism, sphere); for MPI3D-complex "
        "load it with variant='complex' (the sizes, hence the scores, are the same)")


def open_mpi3d_npz(path: str, zf: zipfile.ZipFile, *, variant: str | None = None) -> FileGrid:
    store, shape = _npz_images(path, zf, "images")
    if len(shape) != 4:
        raise InputError(f"{path}: MPI3D 'images' must be (N,H,W,C), got {shape}")
    variant, note = mpi3d_variant(shape[0], path, variant)
    if note:
        warnings.warn(note, stacklevel=3)
    tokens = set(re.split(r"[^a-z0-9]+", os.path.basename(path).lower()))
    render = "complex" if variant == "complex" else next((t for t in ("toy", "realistic", "real") if t in tokens), None)
    return FileGrid(name=f"mpi3d_{render}_original" if render else "mpi3d_original", factor_names=MPI3D_NAMES,
                    factor_sizes=MPI3D_SIZES[shape[0]], observation_shape=shape[1:], store=store,
                    source=f"file: {path} (MPI3D {variant})", factor_values=mpi3d_factor_values(variant), note=note)


# --------------------------------------------------------------------------- hdf5


def _attr_list(f, key, path):
    if key not in f.attrs:
        raise InputError(f"{path}: missing attribute {key!r} (organizer format: {ORGANIZER_KEYS})")
    value = np.atleast_1d(f.attrs[key])
    return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]


def open_shapes3d_h5(path: str, f) -> FileGrid:
    images, labels = f["images"], f["labels"]
    n = int(np.prod(SHAPES3D_SIZES))
    if images.ndim != 4 or images.dtype != np.uint8:
        raise InputError(f"{path}: 'images' must be uint8 (N,H,W,C), got {images.dtype} {images.shape}")
    if images.shape[0] != n or labels.shape != (n, 6):
        raise InputError(f"{path}: 3dshapes needs {n:,} images and labels (N, 6); got images {images.shape}, labels {labels.shape}")
    values = labels[...]
    classes = np.stack([np.unique(col, return_inverse=True)[1].reshape(-1) for col in values.T], axis=-1)
    _check_grid_order(classes, SHAPES3D_SIZES, path, "'labels'")
    return FileGrid(name="shapes3d_original", factor_names=SHAPES3D_NAMES, factor_sizes=SHAPES3D_SIZES,
                    observation_shape=images.shape[1:], store=_h5_store(path, images), source=f"file: {path}")


def open_organizer_h5(path: str, f):
    """Validate an organizer HDF5 file and open it as a grid (FileGrid) or a LabelledSubset."""
    for key in ("images", "factors"):
        if key not in f:
            raise InputError(f"{path}: missing dataset {key!r} (organizer format: {ORGANIZER_KEYS})")
    names = [str(n) for n in _attr_list(f, "factor_names", path)]
    raw_sizes = _attr_list(f, "factor_sizes", path)
    try:
        sizes = [int(s) for s in raw_sizes]
    except (TypeError, ValueError):
        raise InputError(f"{path}: attribute 'factor_sizes' must be integers") from None
    images, factors_ds = f["images"], f["factors"]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise InputError(f"{path}: 'images' must be uint8 (N,H,W,C), got {images.dtype} {images.shape}")
    if factors_ds.ndim != 2 or not np.issubdtype(factors_ds.dtype, np.integer):
        raise InputError(f"{path}: 'factors' must be an integer (N,K) array, got {factors_ds.dtype} {factors_ds.shape}")
    if len(names) != len(sizes) or factors_ds.shape[1] != len(sizes):
        raise InputError(f"{path}: shape mismatch: {len(names)} factor_names, {len(sizes)} factor_sizes, 'factors' has {factors_ds.shape[1]} columns")
    if factors_ds.shape[0] != images.shape[0]:
        raise InputError(f"{path}: shape mismatch: {images.shape[0]} images but {factors_ds.shape[0]} factor rows")
    if any(s < 1 for s in sizes):
        raise InputError(f"{path}: factor_sizes must be positive, got {sizes}")
    if images.shape[0] == 0:
        raise InputError(f"{path}: no images")
    factors = factors_ds[...].astype(np.int64)
    low, high = factors.min(axis=0), factors.max(axis=0)
    for k, (name, size) in enumerate(zip(names, sizes)):
        if low[k] < 0 or high[k] >= size:
            row = int(np.flatnonzero((factors[:, k] < 0) | (factors[:, k] >= size))[0])
            raise InputError(f"{path}: label out of range: factor {name!r} (size {size}) has value {factors[row, k]} at row {row}")
    if float(np.prod([float(s) for s in sizes])) >= 2.0**62:
        raise InputError(f"{path}: factor grid too large ({sizes})")
    keys = np.ravel_multi_index(tuple(factors.T), sizes)
    grid_size = int(np.prod(sizes))
    name = str(f.attrs.get("name", os.path.splitext(os.path.basename(path))[0]))
    if isinstance(f.attrs.get("name"), bytes):
        name = f.attrs["name"].decode()
    if len(keys) == grid_size and np.array_equal(keys, np.arange(grid_size)):
        return FileGrid(name=name, factor_names=names, factor_sizes=sizes, observation_shape=images.shape[1:],
                        store=_h5_store(path, images), source=f"file: {path}")
    sorted_keys = np.sort(keys)
    dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if len(dup):
        combo = np.unravel_index(sorted_keys[dup[0]], sizes)
        rows = np.flatnonzero(keys == sorted_keys[dup[0]])[:2].tolist()
        desc = ", ".join(f"{n}={int(v)}" for n, v in zip(names, combo))
        raise InputError(f"{path}: duplicated factor combination {desc} at rows {rows[0]} and {rows[1]} ({len(dup)} duplicates)")
    return LabelledSubset(name=name, factor_names=names, factor_sizes=sizes, observation_shape=images.shape[1:],
                          factors=factors, store=_h5_store(path, images), source=f"file: {path}")


# --------------------------------------------------------------------------- entry points


FOLDER_KINDS = "a SmallNORB folder (smallnorb-*-{training,testing}-{dat,cat,info}.mat[.gz]) or a Cars3D folder (car_*_mesh.mat)"
MAX_FOLDER_ENTRIES = 100_000


def _options(kind: str, options: dict, allowed: tuple[str, ...] = ()) -> dict:
    extra = sorted(set(options) - set(allowed))
    if extra:
        takes = f"takes only {', '.join(f'{a}=' for a in allowed)}" if allowed else "takes no options"
        raise InputError(f"{kind} {takes}; got {', '.join(extra)}")
    return options


def open_folder(path: str, **options):
    """A dataset folder, recognised by its file names: SmallNORB's six files or Cars3D's car files."""
    from harness.datasets import cars3d, smallnorb

    try:
        with os.scandir(path) as entries:
            names = []
            for entry in entries:
                names.append(entry.name)
                if len(names) > MAX_FOLDER_ENTRIES:
                    raise InputError(f"{path}: more than {MAX_FOLDER_ENTRIES:,} entries; expected {FOLDER_KINDS}")
    except OSError as exc:
        raise InputError(f"cannot list folder {path}: {exc.strerror or exc}") from None
    norb = any(smallnorb.is_smallnorb_name(n) for n in names)
    cars = any(cars3d.is_cars3d_name(n) for n in names)
    if norb and cars:
        raise InputError(f"{path}: holds both SmallNORB and Cars3D files; give each dataset its own folder")
    if norb:
        return smallnorb.open_smallnorb(path, **_options("a SmallNORB folder", options, ("instance",)))
    if cars:
        return cars3d.open_cars3d(path, **_options("a Cars3D folder", options))
    raise InputError(f"{path} is a folder without dataset files: expected {FOLDER_KINDS}, or a dataset file, {_expected(path)}")


def open_file(path, **options):
    """Open a dataset file or folder, dispatching on names, extension and keys. See the module docstring.

    Options: ``variant=`` for an MPI3D file (:func:`mpi3d_variant`), ``instance=`` for a SmallNORB
    folder (:mod:`harness.datasets.smallnorb`); other files take none.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return open_folder(path, **options)
    if not os.path.isfile(path):
        raise InputError(f"no such file {path}: expected {_expected(path)}")
    if path.lower().endswith(".npz"):
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"{path}: not a readable .npz file ({exc})") from None
        with zf:
            keys = _npz_keys(zf)
            if "imgs" in keys:
                return open_dsprites_npz(path, zf, **_options("a dSprites file", options))
            if "images" in keys:
                return open_mpi3d_npz(path, zf, **_options("an MPI3D file", options, ("variant",)))
            raise InputError(f"{path}: found keys {keys}; expected {_expected(path)}")
    _options("an HDF5 dataset file", options)
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc}); expected {_expected(path)}") from None
    with f:
        if "factors" in f or "factor_names" in f.attrs:
            return open_organizer_h5(path, f)
        if "images" in f and "labels" in f:
            return open_shapes3d_h5(path, f)
        raise InputError(f"{path}: found keys {sorted(f.keys())}; expected {_expected(path)}")


def check_file(path, **options) -> str:
    """Open and validate a dataset file or folder; a one-line summary, or :class:`InputError` saying what is wrong.

    What the loader had to assume (an MPI3D variant, an unusual number of cars) ends the line.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same words end the summary line
        ds = open_file(path, **options)
    sizes = ", ".join(f"{n}={s}" for n, s in zip(ds.factor_names, ds.factor_sizes))
    kind = "full grid" if ds.full_grid else f"labelled subset of {int(np.prod(ds.factor_sizes)):,} grid points"
    if ds.stochastic:
        kind += ", stochastic"
    ds.observations(np.array([0, ds.num_observations - 1]))  # the image rows are readable
    shape = "x".join(map(str, ds.observation_shape))
    note = getattr(ds, "note", None)
    return f"{ds.name}: {ds.num_observations:,} images {shape}, {kind}; factors {sizes}" + (f"; NOTE: {note}" if note else "")


def export_organizer(dataset, out, *, subset: int | None = None, seed: int = 0, batch: int = 4096) -> dict:
    """Write ``dataset`` to the organizer HDF5 format; ``subset`` = N distinct random grid points.

    The subset indices (sorted) come from ``np.random.default_rng(seed)``; stochastic nuisances
    from a second generator seeded with ``seed`` too, rendered in batches (same images as one call).
    Written to a temporary file and renamed, so a failed export leaves nothing half-written.
    """
    import h5py

    from harness import __version__

    out = os.fspath(out)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise InputError(f"cannot write {out}: folder {parent} does not exist")
    total = dataset.num_observations
    if subset is None:
        indices = np.arange(total, dtype=np.int64)
    else:
        if not 1 <= subset <= total:
            raise InputError(f"--subset must be between 1 and {total:,} for {dataset.name}, got {subset}")
        indices = np.sort(np.random.default_rng(seed).choice(total, size=subset, replace=False))
    n = len(indices)
    nuisance_rng = np.random.default_rng(seed)
    tmp = f"{out}.{os.getpid()}.part"
    try:
        with h5py.File(tmp, "w") as f:
            images = f.create_dataset("images", shape=(n, *dataset.observation_shape), dtype=np.uint8,
                                      chunks=(min(n, 64), *dataset.observation_shape))
            f.create_dataset("factors", data=dataset.index_to_factors(indices).astype(np.int32))
            f.attrs["factor_names"] = list(dataset.factor_names)
            f.attrs["factor_sizes"] = np.asarray(dataset.factor_sizes, dtype=np.int64)
            f.attrs["name"] = dataset.name if subset is None else f"{dataset.name}_subset{subset}_seed{seed}"
            f.attrs["source"] = f"harness {__version__} export of {dataset.name} ({getattr(dataset, 'source', '')})"
            f.attrs["seed"] = seed
            f.attrs["stochastic"] = bool(dataset.stochastic)
            for a in range(0, n, batch):
                images[a : a + batch] = dataset.observations(indices[a : a + batch], nuisance_rng)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"num_rows": n, "full_grid": subset is None or subset == total and bool(np.all(indices == np.arange(total)))}
