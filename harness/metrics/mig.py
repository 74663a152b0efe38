"""Mutual-information-gap family on discretized codes: MIG, MIG-sup, DCIMIG, JEMMIG.

All four share one joint histogram of every (code dim, factor) pair: codes are discretized into
``num_bins`` equal-width bins per dimension (disentanglement_lib's histogram discretizer), factors
are used as given, and mutual information is in nats.
"""

from __future__ import annotations

import numpy as np

from harness.metrics import _bootstrap, _info
from harness.metrics._validation import check_codes, check_factors, check_positive_int


def _tables(codes, factors, num_bins, n_bootstrap, seed, *, min_dims=1, min_factors=1):
    codes = check_codes(codes, "codes", min_dims=min_dims)
    factors = check_factors(factors, "factors", num_samples=len(codes), min_factors=min_factors)
    num_bins = check_positive_int(num_bins, "num_bins", minimum=2)
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    weights = (_bootstrap.bootstrap_weights(len(codes), n_bootstrap, _bootstrap.ci_rng(seed))
               if n_bootstrap else None)
    counts = _info.code_factor_counts(codes, factors, num_bins, weights)  # (R+1, D, K, A, B)
    mi = _info.mutual_info_from_counts(counts)  # (R+1, D, K)
    h_factor = _info.entropy_from_counts(counts[:, 0].sum(axis=-2))  # (R+1, K)
    return counts, mi, h_factor


def _with_interval(name: str, values: np.ndarray, n_bootstrap: int) -> dict:
    return _bootstrap.add_interval({}, name, values[0], values[1:], n_bootstrap)


def _informative(h_factor: np.ndarray) -> np.ndarray:
    """Factors that vary in the sample; a constant factor carries no information to capture."""
    keep = h_factor[0] > 0
    if not keep.any():
        raise ValueError("factors: every factor is constant in this sample; nothing to measure")
    return keep


def _top_two_gap(values: np.ndarray, axis: int) -> np.ndarray:
    ordered = np.sort(values, axis=axis)
    return np.take(ordered, -1, axis=axis) - np.take(ordered, -2, axis=axis)


def mig(codes, factors, *, num_bins: int = 20, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP,
        seed: int = 0) -> dict:
    """Mutual Information Gap (Chen et al., 2018, "Isolating Sources of Disentanglement in VAEs").

    Per factor, the gap between the two code dimensions with the highest mutual information,
    divided by the factor's entropy; averaged over factors. Codes are binned into ``num_bins``
    equal-width bins per dimension, so a perfect code of a 32-valued factor scores at most
    ln(20)/ln(32) ~ 0.864 with 20 bins.

    Parameters
    ----------
    codes : float array (N, D), D >= 2.
    factors : int array (N, K).
    num_bins : bins per code dimension (default 20, as disentanglement_lib's study).
    n_bootstrap : bootstrap replicates for ``discrete_mig_ci95`` (0: no interval).
    seed : seed of the bootstrap resampling.

    Returns ``{"discrete_mig", "discrete_mig_ci95", "mutual_info_matrix", "entropy_per_factor"}``: the
    (D, K) mutual information in nats behind the score and each factor's entropy (what the report
    draws). Factors that are constant in the sample are left out of the average (disentanglement_lib
    returns NaN).
    """
    _, mi, h_factor = _tables(codes, factors, num_bins, n_bootstrap, seed, min_dims=2)
    keep = _informative(h_factor)
    gaps = _top_two_gap(mi[:, :, keep], axis=1) / h_factor[:, keep]
    out = _with_interval("discrete_mig", gaps.mean(axis=1), n_bootstrap)
    out["mutual_info_matrix"] = mi[0].tolist()
    out["entropy_per_factor"] = h_factor[0].tolist()
    return out


def mig_sup(codes, factors, *, num_bins: int = 20, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP,
            seed: int = 0) -> dict:
    """MIG-sup (Li et al., 2020, "Progressive Learning and Disentanglement of Hierarchical
    Representations", ICLR): MIG's complement, rewarding each code dimension for depending on one
    factor only.

    Per code dimension, the gap between its two highest normalized mutual informations
    ``I(z_j; v_k) / H(v_k)`` over factors; averaged over code dimensions. Needs K >= 2 factors.
    Returns ``{"mig_sup", "mig_sup_ci95"}``.
    """
    _, mi, h_factor = _tables(codes, factors, num_bins, n_bootstrap, seed, min_factors=2)
    keep = _informative(h_factor)
    normalized = np.zeros_like(mi)
    normalized[:, :, keep] = mi[:, :, keep] / h_factor[:, None, keep]
    return _with_interval("mig_sup", _top_two_gap(normalized, axis=2).mean(axis=1), n_bootstrap)


def dcimig(codes, factors, *, num_bins: int = 20, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP,
           seed: int = 0) -> dict:
    """DCIMIG (Sepliarskaia, Kiseleva and de Rijke, 2019, "Evaluating Disentangled
    Representations", arXiv:1910.05587).

    Each code dimension j is assigned to the factor it is most informative about, with gap
    ``D_j = I(z_j; v_(1)) - I(z_j; v_(2))``; each factor keeps the largest gap among the codes
    assigned to it (0 if none); the score is the sum of those gaps over the sum of factor entropies.
    Needs K >= 2 factors. Returns ``{"dcimig", "dcimig_ci95"}``.
    """
    _, mi, h_factor = _tables(codes, factors, num_bins, n_bootstrap, seed, min_factors=2)
    keep = _informative(h_factor)
    mi = mi[:, :, keep]
    gaps = _top_two_gap(mi, axis=2)  # (R, D)
    owner = np.argmax(mi, axis=2)  # (R, D)
    num_factors = mi.shape[2]
    best = np.zeros((mi.shape[0], num_factors))
    rows = np.repeat(np.arange(mi.shape[0]), mi.shape[1])
    np.maximum.at(best, (rows, owner.reshape(-1)), gaps.reshape(-1))
    score = best.sum(axis=1) / h_factor[:, keep].sum(axis=1)
    return _with_interval("dcimig", score, n_bootstrap)


def jemmig(codes, factors, *, num_bins: int = 20, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP,
           seed: int = 0) -> dict:
    """JEMMIG, histogram estimator (Do and Tran, 2020, "Theory and Evaluation Metrics for Learning
    Disentangled Representations", ICLR).

    Per factor v_k with best code z_i and runner-up z_j:
    ``JEMMIG_k = H(z_i, v_k) - I(z_i; v_k) + I(z_j; v_k)``, normalized by ``H(v_k) + log(num_bins)``
    so it lies in [0, 1] (0 is best). We report ``jemmig = 1 - mean_k JEMMIG_k`` so that, like every
    other score here, higher is better. Needs D >= 2 code dimensions.
    Returns ``{"jemmig", "jemmig_ci95"}``.
    """
    counts, mi, h_factor = _tables(codes, factors, num_bins, n_bootstrap, seed, min_dims=2)
    keep = _informative(h_factor)
    h_joint = _info.joint_entropy_from_counts(counts)[:, :, keep]  # (R, D, K')
    mi = mi[:, :, keep]
    order = np.argsort(-mi, axis=1, kind="stable")
    best = np.take_along_axis(mi, order[:, :1], axis=1)[:, 0]
    second = np.take_along_axis(mi, order[:, 1:2], axis=1)[:, 0]
    joint_best = np.take_along_axis(h_joint, order[:, :1], axis=1)[:, 0]
    normalized = (joint_best - best + second) / (h_factor[:, keep] + np.log(num_bins))
    score = 1.0 - np.clip(normalized, 0.0, 1.0).mean(axis=1)
    return _with_interval("jemmig", score, n_bootstrap)
