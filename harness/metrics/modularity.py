"""Modularity and explicitness (Ridgeway and Mozer, 2018, "Learning Deep Disentangled Embeddings
With the F-Statistic Loss", NeurIPS)."""

from __future__ import annotations

import warnings

import numpy as np

from harness.metrics import _auc, _bootstrap, _info
from harness.metrics._parallel import parallel_map
from harness.metrics._validation import check_pair, check_positive_int


def modularity_from_mutual_info(mutual_info: np.ndarray) -> np.ndarray:
    """Modularity from (..., D, K) mutual information: per code ``1 - (sum m^2 - max m^2) /
    (max m^2 (K - 1))`` (0 when the code carries no information), averaged over codes."""
    squared = np.square(mutual_info)
    peak = squared.max(axis=-1)
    rest = squared.sum(axis=-1) - peak
    num_factors = mutual_info.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_code = 1.0 - rest / (peak * (num_factors - 1.0))
    return np.where(peak == 0.0, 0.0, per_code).mean(axis=-1)


def standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale by the training mean and (ddof=0) std; a constant code keeps scale 1 (it becomes 0)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def _explicitness_one(x_train, y_train, x_test, y_test, weights_test):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(y_train)
    if classes.size < 2:  # one class: nothing to rank; an uninformative score of 0.5
        return np.array([0.5]), np.full(len(weights_test), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression().fit(x_train, y_train)
    train = _auc.macro_ovr_auc(model.predict_proba(x_train), y_train, model.classes_,
                               np.ones((1, len(x_train))))
    test = _auc.macro_ovr_auc(model.predict_proba(x_test), y_test, model.classes_, weights_test)
    return train, test


def modularity_explicitness(codes_train, factors_train, codes_test, factors_test, *, num_bins: int = 20,
                            n_jobs: int | None = None, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP,
                            seed: int = 0) -> dict:
    """Modularity and explicitness.

    - modularity: from the (D, K) mutual information of the training codes, binned into
      ``num_bins`` equal-width bins per dimension (as MIG), how much each code dimension depends on
      one factor only; averaged over code dimensions. Needs K >= 2 factors.
    - explicitness: per factor, a ``LogisticRegression()`` on training codes standardized by the
      training mean and std; one-vs-rest macro ROC-AUC on train and test; averaged over factors.
      A constant code dimension is kept as zeros (disentanglement_lib divides by its zero std and
      crashes). Classes absent from the test set are skipped in its AUC.

    ``n_bootstrap`` replicates give ``modularity_score_ci95`` (training samples resampled) and
    ``explicitness_score_test_ci95`` (test samples resampled, classifiers fixed).

    Returns ``{"modularity_score", "explicitness_score_train", "explicitness_score_test"}`` and the
    two intervals.
    """
    codes_train, factors_train, codes_test, factors_test = check_pair(
        codes_train, factors_train, codes_test, factors_test)
    if factors_train.shape[1] < 2:
        raise ValueError(f"factors_train: modularity needs at least 2 factors, got {factors_train.shape[1]}")
    num_bins = check_positive_int(num_bins, "num_bins", minimum=2)
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    rng = _bootstrap.ci_rng(seed)

    weights_train = _bootstrap.bootstrap_weights(len(codes_train), n_bootstrap, rng) if n_bootstrap else None
    mi = _info.mutual_info_from_counts(_info.code_factor_counts(codes_train, factors_train, num_bins, weights_train))
    modularity = modularity_from_mutual_info(mi)

    x_train, x_test = standardize(codes_train, codes_test)
    weights_test = np.ones((1, len(codes_test)))
    if n_bootstrap:
        weights_test = np.vstack([weights_test, _bootstrap.bootstrap_weights(len(codes_test), n_bootstrap, rng)])
    fits = parallel_map(_explicitness_one,
                        [(x_train, factors_train[:, k], x_test, factors_test[:, k], weights_test)
                         for k in range(factors_train.shape[1])], n_jobs)
    train = np.array([f[0][0] for f in fits])
    test = np.stack([f[1] for f in fits], axis=1)  # (R, K)
    test_mean = np.nanmean(test, axis=1)

    out = _bootstrap.add_interval({}, "modularity_score", modularity[0], modularity[1:], n_bootstrap)
    out["explicitness_score_train"] = float(np.nanmean(train))
    return _bootstrap.add_interval(out, "explicitness_score_test", test_mean[0], test_mean[1:], n_bootstrap)
