"""Dataset registry: ``load(name_or_path, **options)`` and ``names()``."""

from __future__ import annotations

from typing import Callable

from harness.errors import InputError

_REGISTRY: dict[str, Callable] = {}


def register(name: str, factory: Callable) -> None:
    """Register a dataset factory under ``name`` (called with the options given to :func:`load`)."""
    _REGISTRY[name] = factory


def names() -> list[str]:
    """Names of the registered (procedural) datasets."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def load(name_or_path, **options):
    """Load a dataset by registered name or from a file path."""
    _ensure_builtins()
    key = str(name_or_path)
    if key in _REGISTRY:
        return _REGISTRY[key](**options)
    raise InputError(f"unknown dataset {key!r}; known datasets: {', '.join(sorted(_REGISTRY))} (or give a file path)")


def _ensure_builtins() -> None:
    if _REGISTRY:
        return
    from harness.datasets.dummy import Dummy

    register("dummy", Dummy)
