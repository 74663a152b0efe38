"""Arrays behind the report's figures, computed from codes the evaluation already has.

None of these encode anything new except the montage's few dozen images: the mutual-information
matrix and the DCI importances use the codes of the metrics' own samples, the response curves use
every code in the table.
"""

from __future__ import annotations

import numpy as np


def discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Per column, ``num_bins`` equal-width bins over that column's own range (DESIGN 4)."""
    codes = np.asarray(codes, dtype=np.float64)
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1][:-1]
        out[:, j] = np.digitize(codes[:, j], edges)
    return out


def mutual_info_matrix(codes: np.ndarray, factors: np.ndarray, *, num_bins: int = 20) -> np.ndarray:
    """``MI[code, factor]`` in nats, codes discretized as MIG does (Chen et al. 2018)."""
    from sklearn.metrics import mutual_info_score

    discrete = discretize(codes, num_bins)
    factors = np.asarray(factors)
    return np.array([[mutual_info_score(factors[:, k], discrete[:, j]) for k in range(factors.shape[1])]
                     for j in range(discrete.shape[1])])


def factor_entropies(factors: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each factor column, the normalizer MIG divides by."""
    from sklearn.metrics import mutual_info_score

    factors = np.asarray(factors)
    return np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def importance_matrix(codes_train: np.ndarray, factors_train: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """``R[code, factor]``: per factor, the normalized split-gain importances of a boosted classifier.

    A display approximation of DCI's matrix (Eastwood & Williams 2018), with LightGBM instead of
    the metric's own estimator so the report stays cheap; the DCI *scores* come from the metric.
    """
    import lightgbm

    codes_train = np.asarray(codes_train, dtype=np.float64)
    factors_train = np.asarray(factors_train)
    num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
    R = np.zeros((num_codes, num_factors))
    for k in range(num_factors):
        y = factors_train[:, k]
        if len(np.unique(y)) < 2:
            continue
        model = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=15, learning_rate=0.2,
                                        importance_type="gain", random_state=seed, n_jobs=1, verbose=-1)
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


def traversal_indices(dataset, *, seed: int, steps: int = 8) -> tuple[np.ndarray, list[np.ndarray]]:
    """Grid indices for a montage: row k sweeps factor k over ``steps`` values, the rest fixed.

    Returns the indices (K, steps) and, per row, the factor values shown.
    """
    rng = np.random.default_rng(seed)
    base = dataset.sample_factors(1, rng)[0]
    rows, values = [], []
    for k, size in enumerate(dataset.factor_sizes):
        vals = np.unique(np.linspace(0, size - 1, num=min(steps, size)).round().astype(np.int64))
        vals = np.pad(vals, (0, steps - len(vals)), mode="edge")
        f = np.repeat(base[None, :], steps, axis=0)
        f[:, k] = vals
        rows.append(dataset.factors_to_index(f))
        values.append(vals)
    return np.stack(rows), values
