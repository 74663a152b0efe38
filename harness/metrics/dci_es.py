"""DCI-ES's explicitness and size (Eastwood, Nicolicioiu, von Kuegelgen, Kekic, Traeuble, Dittadi
and Schoelkopf, 2023, "DCI-ES: An Extended Disentanglement Framework with Connections to
Identifiability", ICLR): how *easily* the factors are read from the codes, and how small the code is.
Disentanglement and completeness are DCI's (:func:`harness.metrics.dci`)."""

from __future__ import annotations

import numpy as np

from harness.metrics import _bootstrap
from harness.metrics._parallel import parallel_map
from harness.metrics._validation import check_pair

DEFAULT_CAPACITIES = (1, 2, 3, 4, 5, 6, 7, 8)


def _losses_by_capacity(x_train, y_train, x_test, y_test, capacities, seed):
    """(C, N_test) squared errors of each probe (a regression tree of that depth) and (N_test,) the
    baseline's (the training mean: the capacity-0 probe), on the factor's value index."""
    from sklearn.tree import DecisionTreeRegressor

    y_train, y_test = y_train.astype(np.float64), y_test.astype(np.float64)
    losses = [(DecisionTreeRegressor(max_depth=int(depth), random_state=seed).fit(x_train, y_train)
               .predict(x_test) - y_test) ** 2 for depth in capacities]
    return np.stack(losses), (y_test - y_train.mean()) ** 2


def explicitness_from_curve(capacities, losses, baseline_loss, lowest_loss=0.0) -> float:
    """1 - AULCC / Z: the area between the loss-capacity curve (made non-increasing: a larger probe
    can always do what a smaller one did) and the lowest possible loss, over the rectangle between
    the baseline loss and the lowest loss across the capacity range. 1: the smallest probe already
    reaches the lowest loss; 0: no probe beats the baseline. NaN where the baseline is already the
    lowest loss (nothing to explain)."""
    x = np.asarray(capacities, dtype=np.float64)
    y = np.minimum.accumulate(np.minimum(np.asarray(losses, dtype=np.float64), baseline_loss))
    height = baseline_loss - lowest_loss
    if height <= 0:
        return float("nan")
    above = y - lowest_loss
    area = np.sum(0.5 * (above[1:] + above[:-1]) * np.diff(x))
    return float(np.clip(1.0 - area / (height * (x[-1] - x[0])), 0.0, 1.0))


def dci_es(codes_train, factors_train, codes_test, factors_test, *, capacities=DEFAULT_CAPACITIES,
           n_jobs: int | None = None, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP, seed: int = 0) -> dict:
    """DCI-ES explicitness (E) and size (S).

    Explicitness: per factor, probes of growing capacity, regression trees of depth ``capacities``
    (default 1..8: up to 256 leaves), are fitted on the training codes to the factor's value index
    (as the paper, a regression: the loss falls with every split, also on a 40-valued factor);
    their test mean squared error against capacity is the loss-capacity curve, the baseline the
    error of predicting the training mean, the lowest loss 0 (every factor is a function of the
    image). E = 1 - AULCC / Z (:func:`explicitness_from_curve`), averaged over
    the factors that vary. A code read by one split per factor value scores near 1; the same
    information rotated, which a tree needs many splits to undo, scores lower, even where a big
    enough probe recovers it all (where DCI's informativeness is 1).

    Size: S = K / D, the number of factors over the code dimensions (1 where the code has one
    dimension per factor, or fewer).

    Returns ``{"explicitness", "explicitness_ci95", "explicitness_per_factor", "size"}``; the
    interval resamples the test set with the probes fixed.
    """
    codes_train, factors_train, codes_test, factors_test = check_pair(
        codes_train, factors_train, codes_test, factors_test)
    if (not isinstance(capacities, (list, tuple)) or len(capacities) < 2
            or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in capacities)
            or list(capacities) != sorted(set(capacities))):
        raise ValueError(f"capacities: expected at least two increasing tree depths >= 1, got {capacities!r}")
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    num_factors = factors_train.shape[1]
    fits = parallel_map(_losses_by_capacity, [(codes_train, factors_train[:, k], codes_test, factors_test[:, k],
                                              list(capacities), seed) for k in range(num_factors)], n_jobs)
    weights = (_bootstrap.bootstrap_weights(len(codes_test), n_bootstrap, _bootstrap.ci_rng(seed))
               if n_bootstrap else np.zeros((0, len(codes_test))))
    per_factor, replicates = [], []
    for losses, baseline in fits:
        per_factor.append(explicitness_from_curve(capacities, losses.mean(axis=1), baseline.mean()))
        replicates.append([explicitness_from_curve(capacities, losses @ w / w.sum(), baseline @ w / w.sum())
                           for w in weights])
    per_factor = np.asarray(per_factor)
    scored = np.isfinite(per_factor)
    if not scored.any():
        raise ValueError("factors: every factor is constant in the test split; nothing to measure")
    replicates = np.nanmean(np.asarray(replicates)[scored], axis=0) if n_bootstrap else []
    out = _bootstrap.add_interval({}, "explicitness", per_factor[scored].mean(), replicates, n_bootstrap)
    out["explicitness_per_factor"] = [float(v) if np.isfinite(v) else None for v in per_factor]
    out["size"] = float(min(1.0, num_factors / codes_train.shape[1]))
    return out
