"""InfoMEC: InfoM (modularity), InfoE (explicitness), InfoC (compactness) (Hsu, Dorrell,
Whittington, Wu and Finn, 2023, "Disentanglement via Latent Quantization", NeurIPS, section 5)."""

from __future__ import annotations

import warnings

import numpy as np

from harness.metrics import _bootstrap, _info
from harness.metrics._parallel import parallel_map
from harness.metrics._validation import check_pair, check_positive_int
from harness.metrics.modularity import standardize


def _concentration(nmi: np.ndarray, axis: int) -> np.ndarray:
    """How much of each row's (or column's) information sits in its largest entry, rescaled so a
    uniform spread gives 0 and a single entry 1: ``(max / sum - 1/n) / (1 - 1/n)``; NaN where the
    sum is 0 (a latent or source with no information: left out of the mean)."""
    n = nmi.shape[axis]
    total = nmi.sum(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = nmi.max(axis=axis) / total
    return np.where(total > 0, (ratio - 1.0 / n) / (1.0 - 1.0 / n), np.nan)


def _explicitness_one(x_train, y_train, x_test, y_test, weights_test):
    """Normalized predictive information of a logistic regression: 1 - test cross-entropy / H(y)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(y_train)
    _, counts = np.unique(y_test, return_counts=True)
    entropy = float(-(counts / counts.sum() * np.log(counts / counts.sum())).sum())
    if classes.size < 2 or entropy == 0.0:
        return np.full(len(weights_test), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    proba = np.full((len(x_test), classes.size), 1e-12)
    proba[:, :] = np.clip(model.predict_proba(x_test), 1e-12, 1.0)
    column = np.searchsorted(classes, y_test)
    known = (column < classes.size) & (classes[np.minimum(column, classes.size - 1)] == y_test)
    log_loss = np.where(known, -np.log(proba[np.arange(len(y_test)), np.minimum(column, classes.size - 1)]),
                        -np.log(1e-12))
    cross_entropy = weights_test @ log_loss / weights_test.sum(axis=1)
    # entropy of the resampled labels, per replicate
    labels, inverse = np.unique(y_test, return_inverse=True)
    onehot = np.eye(len(labels))[inverse]
    p = weights_test @ onehot / weights_test.sum(axis=1, keepdims=True)
    h = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(1.0 - cross_entropy / h, 0.0, 1.0)


def infomec(codes_train, factors_train, codes_test, factors_test, *, num_bins: int = 20,
            n_jobs: int | None = None, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP, seed: int = 0) -> dict:
    """InfoM, InfoE and InfoC.

    From the normalized mutual information ``NMI[j, k] = I(z_j; v_k) / H(v_k)`` of training codes
    (``num_bins`` equal-width bins per dimension) and factors:

    - ``infom`` (modularity): per code dimension, the concentration of its information on one
      factor, ``(max_k NMI / sum_k NMI - 1/K) / (1 - 1/K)``, averaged over the code dimensions that
      carry information (the paper prunes inactive latents; here a dimension with zero NMI to every
      factor is the inactive one);
    - ``infoc`` (compactness): per factor, the same concentration over code dimensions, averaged
      over factors;
    - ``infoe`` (explicitness): per factor, the normalized predictive information of a logistic
      regression on standardized codes, ``1 - CE_test / H(v_k)``, averaged over factors.

    Needs D >= 2 code dimensions and K >= 2 factors. Intervals: ``infom``/``infoc`` resample the
    training set, ``infoe`` the test set (models fixed).
    """
    codes_train, factors_train, codes_test, factors_test = check_pair(
        codes_train, factors_train, codes_test, factors_test, min_dims=2)
    if factors_train.shape[1] < 2:
        raise ValueError(f"factors_train: InfoMEC needs at least 2 factors, got {factors_train.shape[1]}")
    num_bins = check_positive_int(num_bins, "num_bins", minimum=2)
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    rng = _bootstrap.ci_rng(seed)

    weights = _bootstrap.bootstrap_weights(len(codes_train), n_bootstrap, rng) if n_bootstrap else None
    counts = _info.code_factor_counts(codes_train, factors_train, num_bins, weights)
    mi = _info.mutual_info_from_counts(counts)  # (R, D, K)
    h = _info.entropy_from_counts(counts[:, 0].sum(axis=-2))  # (R, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        nmi = np.where(h[:, None, :] > 0, mi / np.where(h[:, None, :] > 0, h[:, None, :], 1.0), 0.0)
    infom = np.nanmean(_concentration(nmi, axis=2), axis=1)
    infoc = np.nanmean(_concentration(nmi, axis=1), axis=1)

    x_train, x_test = standardize(codes_train, codes_test)
    weights_test = np.ones((1, len(codes_test)))
    if n_bootstrap:
        weights_test = np.vstack([weights_test, _bootstrap.bootstrap_weights(len(codes_test), n_bootstrap, rng)])
    per_factor = parallel_map(_explicitness_one, [(x_train, factors_train[:, k], x_test, factors_test[:, k],
                                                   weights_test) for k in range(factors_train.shape[1])], n_jobs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicate: no factor varied
        infoe = np.nanmean(np.stack(per_factor, axis=1), axis=1)

    out: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _bootstrap.add_interval(out, "infom", np.nan_to_num(infom[0]), np.nan_to_num(infom[1:]), n_bootstrap)
        _bootstrap.add_interval(out, "infoe", np.nan_to_num(infoe[0]), np.nan_to_num(infoe[1:]), n_bootstrap)
        _bootstrap.add_interval(out, "infoc", np.nan_to_num(infoc[0]), np.nan_to_num(infoc[1:]), n_bootstrap)
    return out
