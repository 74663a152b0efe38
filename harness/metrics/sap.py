"""SAP score (Kumar, Sattigeri and Balakrishnan, 2018, "Variational Inference of Disentangled
Latent Concepts from Unlabeled Observations", ICLR, section 3)."""

from __future__ import annotations

import warnings

import numpy as np

from harness.metrics import _bootstrap
from harness.metrics._parallel import parallel_map
from harness.metrics._validation import check_pair


def _fit_one(code_train, factor_train, code_test):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    if np.unique(factor_train).size < 2:  # one class: every prediction is that class
        return np.full(len(code_test), factor_train[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LinearSVC(C=0.01, class_weight="balanced").fit(code_train[:, None], factor_train)
    return model.predict(code_test[:, None])


def _top_two_gap_over_codes(scores: np.ndarray) -> np.ndarray:
    """Mean over factors of (best - second best) code score; scores (..., D, K)."""
    ordered = np.sort(scores, axis=-2)
    return (ordered[..., -1, :] - ordered[..., -2, :]).mean(axis=-1)


def _squared_correlation(codes, factors, weights):
    """(R, D, K) squared Pearson correlation under multiplicity weights (R, N); 0 for a flat code."""
    total = weights.sum(axis=1, keepdims=True)  # (R, 1)
    mean_c = weights @ codes / total
    mean_f = weights @ factors / total
    cross = np.einsum("rn,nd,nk->rdk", weights, codes, factors) / total[:, :, None]
    cov = cross - mean_c[:, :, None] * mean_f[:, None, :]
    var_c = weights @ codes**2 / total - mean_c**2
    var_f = weights @ factors**2 / total - mean_f**2
    n = total[:, :, None]
    # disentanglement_lib's threshold is on the ddof=1 variance of the code
    flat_code = (var_c * n[:, :, 0] / (n[:, :, 0] - 1) <= 1e-12)[:, :, None] | (var_f <= 0)[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = cov**2 / (var_c[:, :, None] * var_f[:, None, :])
    return np.where(flat_code, 0.0, r2)


def sap(codes_train, factors_train, codes_test, factors_test, *, continuous_factors: bool = False,
        n_jobs: int | None = None, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP,
        seed: int = 0) -> dict:
    """Separated Attribute Predictability (SAP).

    A (D, K) score matrix says how well each single code dimension predicts each factor; the score
    is the mean over factors of the gap between the two best code dimensions.

    - discrete (default, the 2019 challenge's): test accuracy of a
      ``LinearSVC(C=0.01, class_weight="balanced")`` trained on that one code dimension.
      An identity code scores only ~0.19 in this mode: the heavily regularized linear classifier
      cannot split a many-valued factor along one axis. That is the metric, not a bug.
    - continuous: squared Pearson correlation on the training set (0 for a code whose variance is
      <= 1e-12); the test arrays are not used.

    Parameters: samples-first arrays (codes float (N, D) with D >= 2, factors int (N, K));
    ``n_jobs`` threads for the D*K classifier fits; ``n_bootstrap`` replicates for
    ``sap_score_ci95`` (discrete: the test set is resampled with the classifiers fixed;
    continuous: the training set is resampled); ``seed`` of that resampling.

    Returns ``{"sap_score", "sap_score_ci95"}``.
    """
    codes_train, factors_train, codes_test, factors_test = check_pair(
        codes_train, factors_train, codes_test, factors_test, min_dims=2)
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    rng = _bootstrap.ci_rng(seed)
    num_dims, num_factors = codes_train.shape[1], factors_train.shape[1]
    if continuous_factors:
        weights = np.ones((1, len(codes_train)))
        if n_bootstrap:
            weights = np.vstack([weights, _bootstrap.bootstrap_weights(len(codes_train), n_bootstrap, rng)])
        scores = _squared_correlation(codes_train, factors_train.astype(np.float64), weights)
    else:
        pairs = [(codes_train[:, i], factors_train[:, j], codes_test[:, i])
                 for i in range(num_dims) for j in range(num_factors)]
        predictions = parallel_map(_fit_one, pairs, n_jobs)
        correct = np.stack(predictions, axis=1).reshape(len(codes_test), num_dims, num_factors)
        correct = (correct == factors_test[:, None, :]).astype(np.float64)
        weights = np.ones((1, len(codes_test)))
        if n_bootstrap:
            weights = np.vstack([weights, _bootstrap.bootstrap_weights(len(codes_test), n_bootstrap, rng)])
        scores = np.einsum("rn,ndk->rdk", weights, correct) / weights.sum(axis=1)[:, None, None]
    values = _top_two_gap_over_codes(scores)
    return _bootstrap.add_interval({}, "sap_score", values[0], values[1:], n_bootstrap)
