"""Percentile bootstrap intervals, drawn from an explicit seed.

Replicates are multiplicity weights (R, N): how often each sample appears in a resample of size N.
Metrics that are sums over samples (histograms, accuracies, votes) evaluate every replicate from
precomputed per-sample quantities, without refitting anything.
"""

from __future__ import annotations

import numpy as np

DEFAULT_N_BOOTSTRAP = 100
# Offsets the interval stream from the metric's own random choices under the same seed.
_CI_STREAM = 0xC195


def ci_rng(seed) -> np.random.Generator:
    return np.random.default_rng([_CI_STREAM, int(seed)])


def bootstrap_weights(num_samples: int, num_replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(R, N) float multiplicities of a with-replacement resample of size N."""
    draws = rng.integers(0, num_samples, size=(num_replicates, num_samples))
    offsets = (np.arange(num_replicates) * num_samples)[:, None]
    counts = np.bincount((draws + offsets).reshape(-1), minlength=num_replicates * num_samples)
    return counts.reshape(num_replicates, num_samples).astype(np.float64)


def bootstrap_indices(num_samples: int, num_replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(R, N) row indices of with-replacement resamples (for metrics that need actual rows)."""
    return rng.integers(0, num_samples, size=(num_replicates, num_samples))


def interval(replicates, estimate: float, bounds: tuple[float, float] | None = (0.0, 1.0)) -> list[float]:
    """95% bias-shifted percentile interval [lo, hi] around ``estimate``.

    Plug-in estimators (histogram mutual information above all) are biased, and a resample, which
    repeats points, is biased further; a plain percentile interval can then miss the estimate
    altogether. Shifting the replicates by their mean's offset from the estimate keeps the
    bootstrap's spread and centres it on the value we report. NaN replicates are ignored.
    """
    values = np.asarray(replicates, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0 or not np.isfinite(estimate):
        return [float("nan"), float("nan")]
    values = values - (values.mean() - estimate)
    lo, hi = np.percentile(values, [2.5, 97.5])
    if bounds is not None:  # the shift may cross a score's natural range
        lo, hi = np.clip([lo, hi], *bounds)
    return [float(lo), float(hi)]


def add_interval(out: dict, key: str, estimate: float, replicates, n_bootstrap: int,
                 bounds: tuple[float, float] | None = (0.0, 1.0)) -> dict:
    """Set ``out[key]`` and, when ``n_bootstrap`` > 0, ``out[key + "_ci95"]``."""
    out[key] = float(estimate)
    if n_bootstrap:
        out[key + "_ci95"] = interval(replicates, estimate, bounds)
    return out


def check_n_bootstrap(n_bootstrap) -> int:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap: expected an integer >= 0 (0 turns intervals off), got {n_bootstrap!r}")
    return int(n_bootstrap)
