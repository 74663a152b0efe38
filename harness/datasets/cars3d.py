"""Cars3D (Reed, Zhang, Zhang & Lee, "Deep Visual Analogy-Making", NeurIPS 2015), read as disentanglement_lib reads it.

The folder is ``data/cars`` of ``nips2015-analogy-data.tar.gz`` (http://www.scottreed.info):
one MATLAB file ``car_*_mesh.mat`` per car model, whose ``im`` is uint8 (128, 128, 3, 24, 4):
height, width, RGB, azimuth, elevation.

As in disentanglement_lib (DL, ``data/ground_truth/cars3d.py``): factors elevation 4, azimuth 24,
object type 183 (one per file), in that order (object type fastest); each image resized to 64x64
by Pillow's Lanczos filter ("ANTIALIAS"; DL calls ``thumbnail``, which on a square image larger
than 64 is the same resize; the tests check it). One difference: DL numbers the cars in directory-listing
order, which the file system decides; here they are numbered in sorted file-name order, and
``factor_values["object_type"]`` names each one's file (the two angles have only indices). Any
number of car files from 1 to MAX_CARS is accepted (the published folder has 183); images must be
square, 8..512 pixels (smaller than 64 are enlarged, where DL's ``thumbnail`` would fail).

The 64x64 images are resized once into a uint8 ``.npy`` in the cache folder (``$HARNESS_CACHE``,
default ``~/.cache/harness``; 216 MB for 183 cars) and memory-mapped from there.
"""

from __future__ import annotations

import fnmatch
import os

import numpy as np

from harness.datasets.files import FileGrid, cached_images, files_tag, open_regular
from harness.errors import InputError

FILE_PATTERN = "car_*_mesh.mat"
MAX_CARS = 1000
MAX_FILE_BYTES = 64 << 20  # a published file is about 4.7 MB
MAX_SIDE = 512
SIZE = 64
AZIMUTHS, ELEVATIONS = 24, 4
CACHE_VERSION = "cars3d-1"


def is_cars3d_name(name: str) -> bool:
    return fnmatch.fnmatchcase(name, FILE_PATTERN)


def find_files(folder: str) -> list[str]:
    """The sorted ``car_*_mesh.mat`` paths in ``folder``: regular files only, at most MAX_CARS."""
    names = sorted(n for n in os.listdir(folder) if is_cars3d_name(n))
    if not names:
        raise InputError(f"{folder}: no Cars3D files ({FILE_PATTERN})")
    if len(names) > MAX_CARS:
        raise InputError(f"{folder}: {len(names):,} {FILE_PATTERN} files; at most {MAX_CARS:,} (the published set has 183)")
    paths = [os.path.join(folder, n) for n in names]
    for p in paths:
        if os.path.islink(p):
            raise InputError(f"{p} is a symbolic link: dataset files are never followed through links; copy the file")
    return paths


def _resize(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    lanczos = getattr(Image, "Resampling", Image).LANCZOS
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((SIZE, SIZE), lanczos), dtype=np.uint8)


def read_car(path: str) -> np.ndarray:
    """``im`` of one car file, checked: uint8 (S, S, 3, 24, 4). Never reads a variable it has not sized."""
    import scipy.io

    fp, _ = open_regular(path, max_bytes=MAX_FILE_BYTES)
    with fp:
        try:
            variables = {name: (tuple(shape), cls) for name, shape, cls in scipy.io.whosmat(fp)}
        except Exception as exc:  # any parse failure of a foreign or damaged file is the file's problem
            raise InputError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {str(exc)[:120]})") from None
        if "im" not in variables:
            raise InputError(f"{path}: no variable 'im' (found {', '.join(sorted(variables)) or 'none'}); not a Cars3D file")
        shape, cls = variables["im"]
        if (len(shape) != 5 or shape[2:] != (3, AZIMUTHS, ELEVATIONS) or shape[0] != shape[1]
                or not 8 <= shape[0] <= MAX_SIDE or cls != "uint8"):
            raise InputError(f"{path}: 'im' is {cls} {shape}; expected uint8 (S, S, 3, {AZIMUTHS}, {ELEVATIONS}) "
                             f"with 8 <= S <= {MAX_SIDE} (published: 128)")
        fp.seek(0)
        try:
            im = scipy.io.loadmat(fp, variable_names=["im"])["im"]
        except Exception as exc:
            raise InputError(f"{path}: cannot read 'im' ({type(exc).__name__}: {str(exc)[:120]}); the file is damaged") from None
    if im.dtype != np.uint8 or im.shape != shape:
        raise InputError(f"{path}: 'im' read as {im.dtype} {im.shape}, declared uint8 {shape}; the file is damaged")
    return im


def _fill(paths: list[str], out: np.ndarray):
    """Resize each car's 96 images into grid rows (elevation, azimuth, object), object fastest."""
    n = len(paths)
    for obj, path in enumerate(paths):
        im = read_car(path)
        for azimuth in range(AZIMUTHS):
            for elevation in range(ELEVATIONS):
                out[(elevation * AZIMUTHS + azimuth) * n + obj] = _resize(im[:, :, :, azimuth, elevation])


def open_cars3d(folder: str) -> FileGrid:
    """The Cars3D folder as DL's grid: elevation 4, azimuth 24, object type (one per file), 64x64x3."""
    paths = find_files(folder)
    from PIL import __version__ as pillow_version

    tag = files_tag(paths, CACHE_VERSION, pillow_version)
    store = cached_images(f"cars3d.{tag}.npy", np.uint8, (ELEVATIONS * AZIMUTHS * len(paths), SIZE, SIZE, 3),
                          lambda out: _fill(paths, out))
    values = {"object_type": [os.path.basename(p)[: -len("_mesh.mat")] for p in paths]}  # the angles have only indices
    note = None if len(paths) == 183 else f"{len(paths)} car files (the published set has 183)"
    return FileGrid(name="cars3d", factor_names=["elevation", "azimuth", "object_type"],
                    factor_sizes=[ELEVATIONS, AZIMUTHS, len(paths)], observation_shape=(SIZE, SIZE, 3), store=store,
                    source=f"folder: {folder}", factor_values=values, note=note)
