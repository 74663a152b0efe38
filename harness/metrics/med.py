"""MED and top-k MED (Cao, Wang, Zhang, Zheng and Wang, 2022, "An Empirical Study on Disentanglement
of Negative-free Contrastive Learning", NeurIPS): DCI's disentanglement and completeness computed
from mutual information instead of a classifier's feature importances."""

from __future__ import annotations

import warnings

import numpy as np

from harness.metrics import _bootstrap
from harness.metrics._parallel import parallel_map
from harness.metrics._validation import check_pair, check_positive_int
from harness.metrics.dci import _entropy_weighted_score, _in_unit_range
from harness.metrics.mig import _tables
from harness.metrics.modularity import standardize


def _importance_from_mutual_info(mutual_info: np.ndarray) -> np.ndarray:
    """(..., D, K) mutual information, each factor's column scaled to sum to 1 (0 where it is all 0)."""
    total = mutual_info.sum(axis=-2, keepdims=True)
    return np.where(total > 0, mutual_info / np.where(total > 0, total, 1.0), 0.0)


def top_k_dims(importance: np.ndarray, k: int) -> np.ndarray:
    """Top-k MED's selection: code dimensions in decreasing order of their own disentanglement
    (1 - entropy of their row), each given to the factor it is most informative about, until every
    factor has ``k`` (a factor with fewer dimensions keeps what it has). Sorted dimension indices."""
    d, num_factors = importance.shape
    smoothed = importance + 1e-11
    p = smoothed / smoothed.sum(axis=1, keepdims=True)
    per_code = 1.0 - (-(p * np.log(p)).sum(axis=1) / np.log(num_factors))
    owner = np.argmax(importance, axis=1)
    taken = np.zeros(num_factors, dtype=np.int64)
    chosen = []
    for dim in np.argsort(-per_code, kind="stable"):
        if taken[owner[dim]] < k:
            taken[owner[dim]] += 1
            chosen.append(dim)
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _completeness(importance: np.ndarray) -> np.ndarray:
    """Completeness of (..., D, K) importance; over a single dimension (top-k can keep one) each
    factor is wholly in it: 1 where it carries any information, else 0 (the entropy over one
    dimension has no base)."""
    if importance.shape[-2] == 1:
        return (importance.sum(axis=(-2, -1)) > 0).astype(np.float64)
    return _entropy_weighted_score(np.swapaxes(importance, -1, -2))


def _accuracy_one(x_train, y_train, x_test, y_test):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if np.unique(y_train).size < 2:
        return np.full(len(x_train), True), y_test == y_train[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression().fit(x_train, y_train)
    return model.predict(x_train) == y_train, model.predict(x_test) == y_test


def med(codes_train, factors_train, codes_test, factors_test, *, num_bins: int = 20, top_k: int = 1,
        n_jobs: int | None = None, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP, seed: int = 0) -> dict:
    """MED (Mutual information based Entropy Disentanglement) and top-k MED.

    The (D, K) mutual information of the training codes, binned into ``num_bins`` equal-width bins
    per dimension (as MIG), scaled per factor to sum to 1, is the importance matrix; disentanglement
    and completeness are DCI's entropy-weighted scores of it. Top-k MED scores the same matrix
    restricted to ``top_k`` dimensions per factor (:func:`top_k_dims`), which keeps a wide
    representation's many uninformative dimensions (a contrastive model's 512 or 2048) from
    deciding the score. As the authors' code, informativeness is the mean accuracy of a
    ``LogisticRegression()`` per factor on codes standardized by the training split.

    Returns ``{"disentanglement", "completeness", "top_k_disentanglement", "top_k_completeness",
    "informativeness_train", "informativeness_test"}``, intervals for the first four (bootstrap
    over training samples) and for ``informativeness_test`` (over test samples), and
    ``mutual_info_matrix`` (nats).
    """
    codes_train, factors_train, codes_test, factors_test = check_pair(
        codes_train, factors_train, codes_test, factors_test)
    top_k = check_positive_int(top_k, "top_k")
    _, mutual_info, _ = _tables(codes_train, factors_train, num_bins, n_bootstrap, seed)  # (R+1, D, K)
    importance = _importance_from_mutual_info(mutual_info)
    keep = top_k_dims(importance[0], top_k)
    scores = {
        "disentanglement": _entropy_weighted_score(importance),
        "completeness": _completeness(importance),
        "top_k_disentanglement": _entropy_weighted_score(importance[:, keep]),
        "top_k_completeness": _completeness(importance[:, keep]),
    }
    out: dict = {}
    for key, values in scores.items():
        out.update(_bootstrap.add_interval({}, key, _in_unit_range(values[0]),
                                           [_in_unit_range(v) for v in values[1:]], n_bootstrap))
    x_train, x_test = standardize(codes_train, codes_test)
    fits = parallel_map(_accuracy_one, [(x_train, factors_train[:, k], x_test, factors_test[:, k])
                                        for k in range(factors_train.shape[1])], n_jobs)
    correct_test = np.stack([f[1] for f in fits], axis=1).astype(np.float64)
    out["informativeness_train"] = float(np.mean([f[0].mean() for f in fits]))
    replicates = []
    if n_bootstrap:
        weights = _bootstrap.bootstrap_weights(len(codes_test), n_bootstrap, _bootstrap.ci_rng(seed))
        replicates = weights @ correct_test.mean(axis=1) / len(codes_test)
    _bootstrap.add_interval(out, "informativeness_test", correct_test.mean(axis=0).mean(), replicates,
                            n_bootstrap)
    out["mutual_info_matrix"] = mutual_info[0].tolist()
    return out
