"""Arrays behind the report's figures, computed from codes the evaluation already has.

None of these encode anything: the response curves use every code in the table; the
mutual-information matrix is only estimated here when MIG did not run (the report otherwise draws
MIG's own ``mutual_info_matrix``, and DCI's own ``importance_matrix``, from results.json).
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
