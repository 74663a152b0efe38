"""Observation plans: what a metric needs encoded, decided from its seed alone."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The stream that picks indices and the stream of stochastic nuisances are separate children of
# the metric's seed, so both are reproducible from the seed and neither shifts the other.
_INDEX_STREAM, _OBSERVATION_STREAM = 0, 1


def request_rngs(seed) -> tuple[np.random.Generator, int]:
    """(generator for choosing indices, ``observation_seed``) derived from a metric's ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    index_rng = np.random.default_rng([int(seed), _INDEX_STREAM])
    observation_seed = int(np.random.SeedSequence([int(seed), _OBSERVATION_STREAM]).generate_state(1)[0])
    return index_rng, observation_seed


@dataclass
class ObservationRequest:
    """The observations one metric needs.

    ``indices``: int64 (N,) indices into the dataset, in the order ``score`` expects the codes.
    ``observation_seed``: seeds ``np.random.default_rng`` for the nuisances of a stochastic
    dataset (every row of a stochastic request is its own sample, even when indices repeat).
    ``structure``: what the metric needs to read the codes back (split sizes, vote labels, ...).
    ``factors``: the factors of each index, when the metric needs them (array metrics).
    """

    metric: str
    indices: np.ndarray
    observation_seed: int
    structure: dict = field(default_factory=dict)
    factors: np.ndarray | None = None

    def __post_init__(self):
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.indices)

    def observations(self, dataset) -> np.ndarray:
        """uint8 (N, H, W, C) images of every index, rendered with the request's own generator."""
        return dataset.observations(self.indices, rng=np.random.default_rng(self.observation_seed))

    def iter_observations(self, dataset, chunk_size: int = 8192):
        """The same images as :meth:`observations`, in consecutive chunks (bounded memory)."""
        rng = np.random.default_rng(self.observation_seed)
        for start in range(0, len(self.indices), chunk_size):
            yield dataset.observations(self.indices[start:start + chunk_size], rng=rng)


def encode_request(request: ObservationRequest, dataset, encode, *, chunk_size: int = 8192) -> np.ndarray:
    """Codes (N, D) of a request's observations through ``encode`` (uint8 NHWC -> (n, D)).

    On a deterministic dataset each distinct index is encoded once (FactorVAE and BetaVAE draw
    many repeats on small grids); a stochastic dataset's rows are all distinct samples.
    """
    if getattr(dataset, "stochastic", False):
        parts = [np.asarray(encode(images)) for images in request.iter_observations(dataset, chunk_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0))
    unique, inverse = np.unique(request.indices, return_inverse=True)
    parts = []
    for start in range(0, len(unique), chunk_size):
        parts.append(np.asarray(encode(dataset.observations(unique[start:start + chunk_size]))))
    codes = np.concatenate(parts) if parts else np.zeros((0, 0))
    if codes.ndim != 2 or len(codes) != len(unique):
        raise ValueError(f"encode: expected a (n, D) array per batch, got shape {codes.shape} for {len(unique)} images")
    return codes[inverse.reshape(-1)]
