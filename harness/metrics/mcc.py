"""Mean correlation coefficient (MCC), the score of identifiability work: Hyvarinen and Morioka,
2016, "Unsupervised Feature Extraction by Time-Contrastive Learning and Nonlinear ICA", NeurIPS;
Khemakhem, Kingma, Monti and Hyvarinen, 2020, "Variational Autoencoders and Nonlinear ICA: A
Unifying Framework", AISTATS (section 6)."""

from __future__ import annotations

import numpy as np

from harness.metrics import _bootstrap
from harness.metrics._validation import check_codes, check_factors

CORRELATIONS = ("pearson", "spearman")


def _ranks(x: np.ndarray) -> np.ndarray:
    """Column-wise average ranks (ties share their mean rank), as Spearman's coefficient needs."""
    from scipy.stats import rankdata

    return rankdata(x, axis=0)


def _abs_correlation(codes, factors, weights):
    """(R, D, K) |Pearson correlation| under multiplicity weights (R, N); 0 where either side is flat."""
    total = weights.sum(axis=1, keepdims=True)
    mean_c, mean_f = weights @ codes / total, weights @ factors / total
    cov = np.einsum("rn,nd,nk->rdk", weights, codes, factors) / total[:, :, None] - mean_c[:, :, None] * mean_f[:, None, :]
    var_c = weights @ codes**2 / total - mean_c**2
    var_f = weights @ factors**2 / total - mean_f**2
    flat = (var_c <= 1e-12 * np.maximum(1.0, mean_c**2))[:, :, None] | (var_f <= 0)[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(cov) / np.sqrt(var_c[:, :, None] * var_f[:, None, :])
    return np.where(flat, 0.0, np.clip(r, 0.0, 1.0))


def _matched(corr: np.ndarray) -> np.ndarray:
    """Per factor, the |correlation| of the code dimension the Hungarian assignment gives it (one
    dimension per factor, the total maximal); 0 for a factor left without one (D < K)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(corr, maximize=True)
    out = np.zeros(corr.shape[1])
    out[cols] = corr[rows, cols]
    return out


def mcc(codes, factors, *, correlation: str = "pearson", n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP,
        seed: int = 0) -> dict:
    """Mean correlation coefficient between factors and the code dimensions matched to them.

    The (D, K) absolute correlations between code dimensions and factors; the Hungarian assignment
    (``scipy.optimize.linear_sum_assignment``) gives each factor its own code dimension so that
    the total is largest; MCC is the mean over the factors of the matched correlation (a factor
    left without a dimension, when D < K, counts 0). It measures identifiability up to permutation
    and sign (``pearson``: up to scaling; ``spearman``, on ranks: up to any monotone map), not how
    the other dimensions behave. Factors constant in the sample are left out.

    Parameters
    ----------
    codes : float array (N, D).
    factors : int array (N, K).
    correlation : ``"pearson"`` (default) or ``"spearman"``.
    n_bootstrap : replicates for ``mcc_ci95`` (samples resampled; ranks fixed from the full sample).
    seed : seed of that resampling.

    Returns ``{"mcc", "mcc_ci95", "mcc_per_factor"}``.
    """
    codes = check_codes(codes, "codes")
    factors = check_factors(factors, "factors", num_samples=len(codes))
    if correlation not in CORRELATIONS:
        raise ValueError(f"correlation: expected one of {', '.join(CORRELATIONS)}, got {correlation!r}")
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    keep = factors.max(axis=0) > factors.min(axis=0)
    if not keep.any():
        raise ValueError("factors: every factor is constant in this sample; nothing to measure")
    x, y = codes, factors[:, keep].astype(np.float64)
    if correlation == "spearman":
        x, y = _ranks(x), _ranks(y)
    weights = np.ones((1, len(x)))
    if n_bootstrap:
        weights = np.vstack([weights, _bootstrap.bootstrap_weights(len(x), n_bootstrap, _bootstrap.ci_rng(seed))])
    matched = np.stack([_matched(c) for c in _abs_correlation(x, y, weights)])  # (R, K kept)
    per_factor = np.full(factors.shape[1], np.nan)
    per_factor[keep] = matched[0]
    out = _bootstrap.add_interval({}, "mcc", matched[0].mean(), matched[1:].mean(axis=1), n_bootstrap)
    out["mcc_per_factor"] = [None if np.isnan(v) else float(v) for v in per_factor]
    return out
