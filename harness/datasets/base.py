"""The GroundTruthDataset protocol (DESIGN 3.3) and a base class that implements the index math."""

from __future__ import annotations

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

    def observations(self, idx, rng: np.random.Generator | None = None) -> np.ndarray:
        return self.render(self.index_to_factors(np.atleast_1d(idx)), rng)

    def render(self, factors: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={s}" for n, s in zip(self.factor_names, self.factor_sizes))
        return f"<{type(self).__name__} {self.name!r} {sizes} shape={self.observation_shape}>"
