"""One-vs-rest ROC-AUC with bootstrap multiplicity weights, from a single sort per class.

AUC is the weighted Mann-Whitney statistic: the chance that a positive outranks a negative, ties
counting one half. Sorting once and accumulating weights lets every replicate reuse that order.
"""

from __future__ import annotations

import numpy as np


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC per replicate: scores (N,), positive bool (N,), weights (R, N) -> (R,); NaN if a side is empty."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    pos = positive[order]
    w = weights[:, order]
    w_pos = np.where(pos, w, 0.0)
    w_neg = np.where(pos, 0.0, w)
    # tie groups: negatives tied with a positive count one half
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    group = np.cumsum(np.r_[False, sorted_scores[1:] != sorted_scores[:-1]])
    neg_per_group = np.add.reduceat(w_neg, starts, axis=1)  # (R, G)
    neg_below_group = np.cumsum(neg_per_group, axis=1) - neg_per_group
    credit = neg_below_group[:, group] + 0.5 * neg_per_group[:, group]  # (R, N)
    total_pos = w_pos.sum(axis=1)
    total_neg = w_neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (w_pos * credit).sum(axis=1) / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


def macro_ovr_auc(probabilities: np.ndarray, labels: np.ndarray, classes: np.ndarray,
                  weights: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest AUC over the classes present among ``labels`` -> (R,)."""
    per_class = []
    for column, cls in enumerate(classes):
        positive = labels == cls
        if positive.any() and not positive.all():
            per_class.append(weighted_auc(probabilities[:, column], positive, weights))
    if not per_class:
        return np.full(len(weights), np.nan)
    return np.nanmean(np.stack(per_class, axis=1), axis=1)
