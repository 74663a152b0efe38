"""Dataset registry: ``load(name_or_path, **options)`` and ``names()``."""

from __future__ import annotations

import os
from typing import Callable

from harness.errors import InputError

_REGISTRY: dict[str, Callable] = {}

#: File extensions that ``load`` treats as dataset files (see harness.datasets.files).
FILE_EXTENSIONS = (".npz", ".h5", ".hdf5")


def register(name: str, factory: Callable) -> None:
    """Register a dataset factory under ``name`` (called with the options given to :func:`load`)."""
    _REGISTRY[name] = factory


def names() -> list[str]:
    """Names of the registered (procedural) datasets."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def load(name_or_path, **options):
    """Load a dataset by registered name or from a file path.

    Names: see :func:`names`. Paths ending in ``.npz`` (original dSprites, MPI3D) or ``.h5`` /
    ``.hdf5`` (DeepMind 3dshapes, organizer format) are dispatched on their keys by
    :func:`harness.datasets.files.open_file`. Raises :class:`harness.errors.InputError` for an
    unknown name or a missing or corrupt file.
    """
    _ensure_builtins()
    key = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) else str(name_or_path)
    if key in _REGISTRY:
        try:
            return _REGISTRY[key](**options)
        except TypeError as exc:
            raise InputError(f"dataset {key!r}: bad option ({exc})") from None
    if key.lower().endswith(FILE_EXTENSIONS) or os.sep in key or os.path.exists(key):
        from harness.datasets.files import open_file

        return open_file(key, **options)
    raise InputError(
        f"unknown dataset {key!r}; known datasets: {', '.join(sorted(_REGISTRY))} "
        f"(or a file path ending in {', '.join(FILE_EXTENSIONS)})"
    )


def _ensure_builtins() -> None:
    if _REGISTRY:
        return
    from harness.datasets import dsprites
    from harness.datasets.shapes3d import Shapes3D
    from harness.datasets.dummy import Dummy

    register("dummy", Dummy)
    register("dsprites", dsprites.DSprites)
    register("color_dsprites", dsprites.ColorDSprites)
    register("noisy_dsprites", dsprites.NoisyDSprites)
    register("scream_dsprites", dsprites.ScreamDSprites)
    register("shapes3d", Shapes3D)
