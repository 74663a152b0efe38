"""The GroundTruthDataset protocol (DESIGN 3.3) and a base class that implements the index math."""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class GroundTruthDataset(Protocol):
    """A factor-labelled image dataset.

    Observations are uint8 ``(N, H, W, C)``; metrics convert to float32 in [0, 1].
    Indices enumerate the factor grid in C order (last factor varies fastest).
    Stochastic datasets draw a nuisance per sample from the ``rng`` given to
    :meth:`observations`; deterministic ones ignore it.
    """

    name: str
    factor_names: list[str]
    factor_sizes: list[int]
    observation_shape: tuple[int, int, int]
    stochastic: bool

    @property
    def num_observations(self) -> int: ...

    def index_to_factors(self, idx) -> np.ndarray: ...

    def factors_to_index(self, factors) -> np.ndarray: ...

    def observations(self, idx, rng: np.random.Generator | None = None) -> np.ndarray: ...

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def index_of_factors(self, factors, rng: np.random.Generator | None = None) -> np.ndarray: ...


#: Seed used when a method that needs randomness is called with ``rng=None``.
DEFAULT_SEED = 0

#: Value in a factor array passed to ``index_of_factors`` meaning "any value of this factor".
ANY = -1


def cache_dir() -> str:
    """The folder for files derived once and reused: ``$HARNESS_CACHE``, else ``~/.cache/harness``."""
    return os.environ.get("HARNESS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "harness")


def as_generator(rng: np.random.Generator | None) -> np.random.Generator:
    """``rng`` itself, or a fresh ``np.random.default_rng(DEFAULT_SEED)`` when it is None."""
    if rng is None:
        return np.random.default_rng(DEFAULT_SEED)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator or None, got {type(rng).__name__}")
    return rng


def check_factor_array(factors, sizes, name: str, *, allow_any: bool = False) -> np.ndarray:
    """Validate an ``(n, K)`` factor array against ``sizes``; ``ANY`` (-1) allowed if ``allow_any``."""
    factors = np.asarray(factors)
    if factors.ndim == 1:
        factors = factors[None, :]
    if factors.ndim != 2 or factors.shape[1] != len(sizes):
        raise ValueError(f"{name}: factors must have shape (n, {len(sizes)}), got {factors.shape}")
    if factors.size and not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"{name}: factors must be integers, got dtype {factors.dtype}")
    factors = factors.astype(np.int64, copy=False)
    low = ANY if allow_any else 0
    if factors.size and ((factors < low).any() or (factors >= np.asarray(sizes)).any()):
        raise IndexError(f"{name}: factor value out of range for sizes {list(sizes)}")
    return factors


class GridDataset:
    """Base class for datasets whose observations form a full factor grid.

    Subclasses set ``name``, ``factor_names``, ``factor_sizes``, ``observation_shape`` and
    implement :meth:`render` (uint8 images for an ``(n, K)`` factor array).
    """

    name: str = ""
    factor_names: list[str] = []
    factor_sizes: list[int] = []
    observation_shape: tuple[int, int, int] = (0, 0, 0)
    stochastic: bool = False
    source: str = "procedural"

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    @property
    def num_observations(self) -> int:
        return int(np.prod(self.factor_sizes, dtype=np.int64))

    def index_to_factors(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_observations):
            raise IndexError(f"{self.name}: index out of range [0, {self.num_observations})")
        return np.stack(np.unravel_index(idx, self.factor_sizes), axis=-1).astype(np.int64)

    def factors_to_index(self, factors) -> np.ndarray:
        factors = np.asarray(factors, dtype=np.int64)
        if factors.shape[-1] != self.num_factors:
            raise ValueError(f"{self.name}: factors must have {self.num_factors} columns, got shape {factors.shape}")
        sizes = np.asarray(self.factor_sizes)
        if factors.size and ((factors < 0).any() or (factors >= sizes).any()):
            raise IndexError(f"{self.name}: factor value out of range for sizes {self.factor_sizes}")
        return np.ravel_multi_index(tuple(np.moveaxis(factors, -1, 0)), self.factor_sizes).astype(np.int64)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, s, size=n) for s in self.factor_sizes], axis=-1).astype(np.int64)

    def index_of_factors(self, factors, rng: np.random.Generator | None = None) -> np.ndarray:
        """Observation index for each row of ``factors`` (n, K): the one path for intervention metrics.

        An entry ``ANY`` (-1) means "any value": it is drawn uniformly from ``rng`` (one block for
        the whole call; ``rng=None`` uses ``np.random.default_rng(DEFAULT_SEED)``). Without ``ANY``
        entries this is :meth:`factors_to_index`. File-backed subsets override it to pick a random
        existing row matching the fixed entries.
        """
        factors = check_factor_array(factors, self.factor_sizes, self.name, allow_any=True)
        wildcard = factors == ANY
        if wildcard.any():
            draws = as_generator(rng).integers(0, np.asarray(self.factor_sizes), size=factors.shape)
            factors = np.where(wildcard, draws, factors)
        return self.factors_to_index(factors)

    @property
    def full_grid(self) -> bool:
        """True: every factor combination exists and indices enumerate the grid in C order."""
        return True

    def observations(self, idx, rng: np.random.Generator | None = None) -> np.ndarray:
        return self.render(self.index_to_factors(np.atleast_1d(idx)), rng)

    def render(self, factors: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={s}" for n, s in zip(self.factor_names, self.factor_sizes))
        return f"<{type(self).__name__} {self.name!r} {sizes} shape={self.observation_shape}>"
