"""Unsupervised scores of a code distribution: Gaussian total correlation, Gaussian Wasserstein
correlation and mean pairwise mutual information between code dimensions (as reported by
Locatello et al., 2019, "Challenging Common Assumptions in the Unsupervised Learning of
Disentangled Representations", ICML)."""

from __future__ import annotations

import numpy as np

from harness.metrics import _bootstrap, _info
from harness.metrics._validation import check_codes, check_positive_int


def _weighted_covariance(codes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(R, D, D) covariance (ddof=1 with respect to the resample size) under weights (R, N)."""
    total = weights.sum(axis=1)
    mean = weights @ codes / total[:, None]
    second = np.einsum("rn,nd,ne->rde", weights, codes, codes)
    return (second - total[:, None, None] * mean[:, :, None] * mean[:, None, :]) / (total - 1.0)[:, None, None]


def gaussian_total_correlation(cov: np.ndarray) -> np.ndarray:
    """KL between N(0, C) and the product of its marginals: 0.5 (sum log diag C - log det C).

    Constant dimensions (zero variance) are independent of everything and left out; with them
    disentanglement_lib's formula gives NaN.
    """
    cov = np.asarray(cov, dtype=np.float64)
    out = np.empty(cov.shape[:-2])
    for index in np.ndindex(out.shape):
        c = cov[index]
        keep = np.diag(c) > 0
        c = c[np.ix_(keep, keep)]
        if c.size == 0:
            out[index] = 0.0
            continue
        sign, logdet = np.linalg.slogdet(c)
        out[index] = 0.5 * (np.sum(np.log(np.diag(c))) - (logdet if sign > 0 else -np.inf))
    return out


def gaussian_wasserstein_correlation(cov: np.ndarray) -> np.ndarray:
    """Squared 2-Wasserstein distance between N(0, C) and N(0, diag C):
    ``2 tr C - 2 tr sqrt(C diag C)``; the square root's trace is the sum of the square roots of the
    eigenvalues of the symmetric ``diag(C)^1/2 C diag(C)^1/2``."""
    cov = np.asarray(cov, dtype=np.float64)
    diag = np.diagonal(cov, axis1=-2, axis2=-1)
    root = np.sqrt(diag)
    symmetric = cov * root[..., :, None] * root[..., None, :]
    eigenvalues = np.clip(np.linalg.eigvalsh(symmetric), 0.0, None)
    return 2.0 * diag.sum(axis=-1) - 2.0 * np.sqrt(eigenvalues).sum(axis=-1)


def unsupervised(codes, *, num_bins: int = 20, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP,
                 seed: int = 0) -> dict:
    """Unsupervised scores of codes (N, D), D >= 2; no factors needed.

    - ``gaussian_total_correlation``: of a Gaussian with the codes' covariance (ddof=1);
    - ``gaussian_wasserstein_correlation`` and its ``_norm`` (divided by ``tr C``; 0 when every
      dimension is constant);
    - ``mutual_info_score``: mean mutual information (nats) over ordered pairs of distinct code
      dimensions, each binned into ``num_bins`` equal-width bins.

    Lower is more factorized for all four. Each comes with a ``_ci95`` bootstrap interval over
    samples when ``n_bootstrap`` > 0.
    """
    codes = check_codes(codes, "codes", min_dims=2)
    num_bins = check_positive_int(num_bins, "num_bins", minimum=2)
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    weights = np.ones((1, len(codes)))
    if n_bootstrap:
        weights = np.vstack([weights, _bootstrap.bootstrap_weights(len(codes), n_bootstrap,
                                                                   _bootstrap.ci_rng(seed))])
    cov = _weighted_covariance(codes, weights)
    cov[0] = np.cov(codes, rowvar=False)  # the estimate itself exactly as numpy computes it
    total_correlation = gaussian_total_correlation(cov)
    wasserstein = gaussian_wasserstein_correlation(cov)
    trace = np.trace(cov, axis1=-2, axis2=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        wasserstein_norm = np.where(trace > 0, wasserstein / trace, 0.0)

    binned = _info.histogram_discretize(codes, num_bins)
    num_dims = codes.shape[1]
    mi = _info.mutual_info_matrix(binned, num_bins, binned, num_bins,
                                  weights if n_bootstrap else None)
    if not n_bootstrap:
        mi = mi[None]
    mi = mi * (1.0 - np.eye(num_dims))
    mutual_info = mi.sum(axis=(-2, -1)) / (num_dims**2 - num_dims)

    out: dict = {}
    unbounded = (0.0, np.inf)
    for key, values in (("gaussian_total_correlation", total_correlation),
                        ("gaussian_wasserstein_correlation", wasserstein),
                        ("gaussian_wasserstein_correlation_norm", wasserstein_norm),
                        ("mutual_info_score", mutual_info)):
        _bootstrap.add_interval(out, key, values[0], values[1:], n_bootstrap, bounds=unbounded)
    return out
