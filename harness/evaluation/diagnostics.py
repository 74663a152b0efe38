"""Arrays behind the report's figures, computed from codes the evaluation already has.

None of these encode anything new except the montage's few dozen images: the mutual-information
matrix and the DCI importances use the codes of the metrics' own samples, the response curves use
every code in the table.
"""

from __future__ import annotations

import numpy as np

from harness.metrics import _info


def mutual_info_matrix(codes: np.ndarray, factors: np.ndarray, *, num_bins: int = 20) -> np.ndarray:
    """``MI[code, factor]`` in nats, codes discretized as MIG does (Chen et al. 2018).

    The metrics' own estimator, so the heatmap shows exactly what MIG compares.
    """
    return _info.mutual_info_from_counts(_info.code_factor_counts(codes, factors, num_bins))[0]


def factor_entropies(factors: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each factor column, the normalizer MIG divides by."""
    labels, cards = _info.encode_labels(factors)
    return _info.label_entropy(labels, int(cards.max()))


def importance_matrix(codes_train: np.ndarray, factors_train: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """``R[code, factor]``: per factor, the normalized impurity importances of a random forest.

    A display approximation of DCI's matrix (Eastwood & Williams 2018) with a small forest
    (one multi-class model per factor, unlike per-class boosting) so the report stays cheap; the
    DCI *scores* come from the metric's own estimator.
    """
    from sklearn.ensemble import RandomForestClassifier

    codes_train = np.asarray(codes_train, dtype=np.float64)
    factors_train = np.asarray(factors_train)
    num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
    R = np.zeros((num_codes, num_factors))
    for k in range(num_factors):
        y = factors_train[:, k]
        if len(np.unique(y)) < 2:
            continue
        model = RandomForestClassifier(n_estimators=10, max_depth=8, random_state=seed, n_jobs=1)
        model.fit(codes_train, y)
        imp = np.abs(model.feature_importances_)
        R[:, k] = imp / imp.sum() if imp.sum() > 0 else 0.0
    return R


def response_curves(codes: np.ndarray, factors: np.ndarray, factor_sizes) -> list[np.ndarray]:
    """For each factor k, a ``(factor_sizes[k], D)`` array: mean code at each value of factor k.

    Values never observed give NaN rows (gaps in the plotted curve).
    """
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors, dtype=np.int64)
    curves = []
    for k, size in enumerate(factor_sizes):
        counts = np.bincount(factors[:, k], minlength=size).astype(np.float64)
        sums = np.stack([np.bincount(factors[:, k], weights=codes[:, j], minlength=size)
                         for j in range(codes.shape[1])], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            curves.append(sums / counts[:, None])
    return curves
