"""Dataset registry: ``load(name_or_path, **options)``, ``names()``, ``describe(name)``, ``register()``.

Built-in datasets are listed eagerly as ``"module:attribute"`` targets and imported on first
use, so ``names()`` imports nothing and registering a dataset of one's own never hides them.
Options given to :func:`load` are checked against the factory's signature before it is called:
an unknown or missing option is the user's mistake (:class:`InputError`), while a ``TypeError``
raised inside a factory is a bug and propagates as itself.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from typing import Callable

from harness.errors import InputError

#: File extensions that ``load`` treats as dataset files (see harness.datasets.files).
FILE_EXTENSIONS = (".npz", ".h5", ".hdf5")

#: name -> "module:attribute" of the factory, imported on first use.
BUILTINS = {
    "dummy": "harness.datasets.dummy:Dummy",
    "dsprites": "harness.datasets.dsprites:DSprites",
    "dsprites_noshape": "harness.datasets.dsprites:DSpritesNoShape",
    "color_dsprites": "harness.datasets.dsprites:ColorDSprites",
    "noisy_dsprites": "harness.datasets.dsprites:NoisyDSprites",
    "scream_dsprites": "harness.datasets.dsprites:ScreamDSprites",
    "shapes3d": "harness.datasets.shapes3d:Shapes3D",
    "mpi3d_toy": "harness.datasets.mpi3d:MPI3DToy",
    "xyobject": "harness.datasets.xy:XYObject",
    "xysquares": "harness.datasets.xy:XYSquares",
}

# name -> a factory, or the "module:attribute" string of one not imported yet
_REGISTRY: dict[str, Callable | str] = dict(BUILTINS)


def register(name: str, factory: Callable | str, *, replace: bool = False) -> None:
    """Register a dataset factory under ``name``; :func:`load` calls it with the user's options.

    ``factory`` is a callable (usually a class) or a ``"module:attribute"`` string imported on
    first use. A name already registered (built-in or not) is refused with ``ValueError`` unless
    ``replace=True``, so two datasets never silently share a name; ``replace=True`` is for
    re-running a notebook cell or deliberately overriding a built-in in one's own process.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"dataset name must be a non-empty string without surrounding spaces, got {name!r}")
    if os.sep in name or "/" in name or name.lower().endswith(FILE_EXTENSIONS):
        raise ValueError(f"dataset name {name!r} looks like a file path; load() would read it as one")
    if isinstance(factory, str):
        if factory.count(":") != 1 or not all(factory.split(":")):
            raise ValueError(f"dataset {name!r}: a factory string must be 'module:attribute', got {factory!r}")
    elif not callable(factory):
        raise ValueError(f"dataset {name!r}: factory must be callable or 'module:attribute', got {factory!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(
            f"dataset name {name!r} is already registered ({_describe_target(_REGISTRY[name])}); "
            f"choose another name, or pass replace=True to replace it"
        )
    _REGISTRY[name] = factory


def names() -> list[str]:
    """Names of the registered datasets, built-in and registered, sorted. Imports nothing."""
    return sorted(_REGISTRY)


def _resolve(name: str) -> Callable:
    """The factory registered under ``name``, importing its module on first use."""
    if name not in _REGISTRY:
        raise InputError(_unknown(name))
    target = _REGISTRY[name]
    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module), attribute)
        _REGISTRY[name] = target
    return target


@dataclass(frozen=True)
class DatasetInfo:
    """What ``harness datasets list`` shows: read from class attributes, nothing rendered."""

    name: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    observation_shape: tuple[int, ...]
    stochastic: bool
    source: str

    @property
    def num_observations(self) -> int:
        count = 1
        for size in self.factor_sizes:
            count *= size
        return count


def describe(name: str) -> DatasetInfo:
    """Factor names and sizes, image shape, kind and source of the registered dataset ``name``.

    Read from the factory's class attributes (with default options) where it declares them, so
    that listing datasets builds no caches, textures or files; a factory that declares none (a
    plain function) is called without options and its result is read instead.
    """
    source = _resolve(name)
    if not _declares_factors(source):
        source = load(name)
    return DatasetInfo(
        name=name,
        factor_names=tuple(str(n) for n in source.factor_names),
        factor_sizes=tuple(int(s) for s in source.factor_sizes),
        observation_shape=tuple(int(d) for d in source.observation_shape),
        stochastic=bool(getattr(source, "stochastic", False)),
        source=str(getattr(source, "source", "")),
    )


def load(name_or_path, **options):
    """Load a dataset by registered name or from a file path.

    Names: see :func:`names`. Paths ending in ``.npz`` (original dSprites, MPI3D) or ``.h5`` /
    ``.hdf5`` (DeepMind 3dshapes, organizer format) are dispatched on their keys by
    :func:`harness.datasets.files.open_file`. Raises :class:`harness.errors.InputError` for an
    unknown name, an option the dataset does not take (or a required one missing), or a missing
    or corrupt file.
    """
    key = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) else str(name_or_path)
    if key in _REGISTRY:
        make = _resolve(key)
        _check_options(key, make, options)
        return make(**options)
    if key.lower().endswith(FILE_EXTENSIONS) or os.sep in key or os.path.exists(key):
        from harness.datasets.files import open_file

        return open_file(key, **options)
    raise InputError(_unknown(key))


def _unknown(key: str) -> str:
    return (
        f"unknown dataset {key!r}; known datasets: {', '.join(names())} "
        f"(or a file path ending in {', '.join(FILE_EXTENSIONS)})"
    )


def _describe_target(target) -> str:
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"


def _declares_factors(obj) -> bool:
    sizes = getattr(obj, "factor_sizes", None)
    shape = getattr(obj, "observation_shape", None)
    return isinstance(sizes, (list, tuple)) and len(sizes) > 0 and isinstance(shape, (list, tuple)) \
        and isinstance(getattr(obj, "factor_names", None), (list, tuple))


def _check_options(name: str, make: Callable, options: dict) -> None:
    """InputError naming the dataset, the bad option and the accepted ones, before ``make`` runs."""
    try:
        signature = inspect.signature(make)
    except (TypeError, ValueError):  # no introspectable signature (a C callable): let it decide
        return
    params = signature.parameters.values()
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    listing = f"accepted options: {', '.join(accepted)}" if accepted else "it takes no options"
    unknown = [o for o in options if o not in accepted]
    if unknown and not takes_any:
        plural = "s" if len(unknown) > 1 else ""
        raise InputError(f"dataset {name!r}: unknown option{plural} {', '.join(map(repr, unknown))}; {listing}")
    missing = [p.name for p in params if p.default is p.empty and p.name not in options
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise InputError(
            f"dataset {name!r}: missing required option{plural} {', '.join(map(repr, missing))}; {listing}"
        )
