"""Synthetic representations of factor arrays shared by the metric and parity tests."""

from __future__ import annotations

import numpy as np

KINDS = ("identity", "rotated", "noisy", "entangled", "duplicated", "collapsed", "random")
# and what latent-quantized models (QLAE) and monotone decoders give: DCI's estimator is checked on all
DCI_FAMILIES = KINDS + ("nonlinear", "quantized2", "quantized4", "quantized8", "mixed")


def sample_factors(sizes, n, seed):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, size=n) for s in sizes], axis=1).astype(np.int64)


def represent(kind: str, factors: np.ndarray, sizes, seed: int = 0, num_dims: int = 6) -> np.ndarray:
    """Codes (N, num_dims) of ``kind`` for ``factors``; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    scaled = factors / (np.asarray(sizes) - 1.0) * 2.0 - 1.0  # each factor in [-1, 1]
    k = scaled.shape[1]
    extra = num_dims - k
    base = np.concatenate([scaled, np.zeros((len(factors), max(extra, 0)))], axis=1)[:, :num_dims]
    noise = rng.normal(size=(len(factors), num_dims))
    if kind == "identity":
        return base + 0.01 * noise
    if kind == "rotated":
        rotation, _ = np.linalg.qr(rng.normal(size=(num_dims, num_dims)))
        return (base + 0.01 * noise) @ rotation
    if kind == "noisy":
        return base + 0.4 * noise
    if kind == "entangled":
        mixing = rng.normal(size=(num_dims, num_dims))
        return np.tanh(0.7 * base @ mixing) + 0.05 * noise
    if kind == "duplicated":
        codes = base + 0.01 * noise
        codes[:, k:] = codes[:, :1] + 0.01 * noise[:, k:]  # spare dims copy factor 0
        return codes
    if kind == "collapsed":
        codes = base + 0.05 * noise
        codes[:, k:] = 0.0  # exactly constant dims
        codes[:, 1] = 0.0   # and one factor lost
        return codes
    if kind == "random":
        return noise
    if kind == "nonlinear":  # a monotone warp of each factor's axis
        return np.sinh(2.5 * base) + 0.05 * noise
    if kind.startswith("quantized"):  # each dim one of L levels (latent quantization), a little label noise
        levels = int(kind[len("quantized"):])
        return np.round((np.clip(base + 0.1 * noise, -1, 1) + 1) / 2 * (levels - 1))
    if kind == "mixed":  # half the dims quantized to 4 levels, half continuous
        codes = base + 0.05 * noise
        half = num_dims // 2
        codes[:, :half] = np.round((np.clip(codes[:, :half], -1, 1) + 1) * 1.5)
        return codes
    raise ValueError(kind)


def test_every_kind_has_the_requested_shape_and_is_deterministic():
    factors = sample_factors([3, 5, 7], 200, seed=0)
    for kind in KINDS:
        codes = represent(kind, factors, [3, 5, 7], seed=1)
        assert codes.shape == (200, 6)
        assert np.array_equal(codes, represent(kind, factors, [3, 5, 7], seed=1))


def test_collapsed_has_exactly_constant_dims():
    factors = sample_factors([3, 5, 7], 200, seed=0)
    codes = represent("collapsed", factors, [3, 5, 7])
    assert (codes.var(axis=0) == 0).sum() == 4
