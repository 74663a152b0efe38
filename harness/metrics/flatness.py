"""Flatness (Michlo, 2021, disent's ``metric_flatness``, from github.com/nmichlo/msc-research): how
straight and evenly spaced a factor's traversal is in code space. Needs only the encoder:
traversals of real observations, no decoder."""

from __future__ import annotations

import numpy as np

from harness.metrics import _bootstrap
from harness.metrics._validation import check_codes, check_positive_int
from harness.metrics.request import ObservationRequest, encode_request, request_rngs

DEFAULT_REPEATS = 1024  # disent's default (its "fast" setting is 128: about +-0.003)
_CHUNK = 64  # traversals whose pairwise distances are held at once


def sample_flatness(dataset, *, seed: int, repeats: int = DEFAULT_REPEATS) -> ObservationRequest:
    """Per factor f and repeat: the other factors drawn at random, f over all its values in order.
    Rows: factor 0's ``repeats`` traversals, then factor 1's, ..."""
    repeats = check_positive_int(repeats, "repeats")
    if not getattr(dataset, "full_grid", True):
        raise ValueError("flatness traverses every value of each factor with the others fixed, which needs "
                         "every factor combination; this dataset is a labelled subset: leave flatness out")
    rng, observation_seed = request_rngs(seed)
    sizes = [int(s) for s in dataset.factor_sizes]
    blocks = []
    for f, size in enumerate(sizes):
        base = dataset.sample_factors(repeats, rng)  # (repeats, K)
        traversal = np.repeat(base[:, None, :], size, axis=1)
        traversal[:, :, f] = np.arange(size)[None, :]
        blocks.append(traversal.reshape(-1, len(sizes)))
    factors = np.concatenate(blocks).astype(np.int64)
    indices = np.asarray(dataset.index_of_factors(factors, rng), dtype=np.int64)
    return ObservationRequest(metric="flatness", indices=indices, observation_seed=observation_seed,
                              factors=factors, structure={"repeats": repeats, "factor_sizes": sizes})


def _width_and_mean_step(traversals: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Per traversal (R, S, D): the largest distance between two of its codes, and the mean of its
    S - 1 shortest steps between neighbours (the cycle closed, its longest step dropped: a cyclic
    factor such as orientation wraps around), both in the ``p``-norm."""
    widths, steps = [], []
    for start in range(0, len(traversals), _CHUNK):
        z = traversals[start:start + _CHUNK]
        pairwise = np.linalg.norm(z[:, :, None, :] - z[:, None, :, :], ord=p, axis=-1)
        widths.append(pairwise.max(axis=(1, 2)))
        step = np.linalg.norm(np.roll(z, -1, axis=1) - z, ord=p, axis=-1)  # (R, S)
        steps.append(np.sort(step, axis=1)[:, :-1].mean(axis=1))
    return np.concatenate(widths), np.concatenate(steps)


def flatness_from_traversals(traversals, *, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP,
                             seed: int = 0) -> dict:
    """Flatness from each factor's traversal codes, ``traversals[f]`` of shape (repeats, size_f, D).

    Per factor: flatness = (mean width, L2) / ((size - 1) x mean step, L1), as disent's headline
    ``ave_flatness`` mixes the norms; ``flatness_l1`` and ``flatness_l2`` use one norm for both. 1: the
    traversal is a straight line of equal steps; lower: it bends or doubles back. 0 where the codes
    do not move. Factors of one value are left out (None). Averaged over factors.

    Returns ``{"flatness", "flatness_ci95", "flatness_l1", "flatness_l2", "flatness_per_factor"}``;
    the interval resamples each factor's traversals.
    """
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    rng = _bootstrap.ci_rng(seed)
    scores = {"flatness": [], "flatness_l1": [], "flatness_l2": []}
    replicates, per_factor = [], []
    for codes in traversals:
        codes = np.asarray(codes, dtype=np.float64)
        repeats, size = codes.shape[:2]
        if size < 2:
            per_factor.append(None)
            continue
        width = {p: _width_and_mean_step(codes, p) for p in (1, 2)}
        weights = (_bootstrap.bootstrap_weights(repeats, n_bootstrap, rng) if n_bootstrap
                   else np.zeros((0, repeats)))

        def ratio(widths, steps, w=None):
            top = widths.mean() if w is None else w @ widths / repeats
            bottom = (size - 1) * (steps.mean() if w is None else w @ steps / repeats)
            return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), 0.0)

        main = float(ratio(width[2][0], width[1][1]))
        scores["flatness"].append(main)
        scores["flatness_l1"].append(float(ratio(width[1][0], width[1][1])))
        scores["flatness_l2"].append(float(ratio(width[2][0], width[2][1])))
        replicates.append(ratio(width[2][0], width[1][1], weights))
        per_factor.append(main)
    if not scores["flatness"]:
        raise ValueError("factors: every factor has a single value; nothing to traverse")
    out = _bootstrap.add_interval({}, "flatness", np.mean(scores["flatness"]),
                                  np.mean(replicates, axis=0) if n_bootstrap else [], n_bootstrap, bounds=None)
    out["flatness_l1"] = float(np.mean(scores["flatness_l1"]))
    out["flatness_l2"] = float(np.mean(scores["flatness_l2"]))
    out["flatness_per_factor"] = per_factor
    return out


def score_flatness(request: ObservationRequest, codes, *, seed: int = 0,
                   n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP) -> dict:
    """Flatness from the codes of ``request.indices`` (row for row)."""
    codes = check_codes(codes, "codes", min_samples=len(request.indices))
    if len(codes) != len(request.indices):
        raise ValueError(f"codes: expected {len(request.indices)} rows (one per request index), got {len(codes)}")
    repeats, sizes = request.structure["repeats"], request.structure["factor_sizes"]
    bounds = np.cumsum([0] + [repeats * s for s in sizes])
    traversals = [codes[a:b].reshape(repeats, size, -1) for a, b, size in zip(bounds[:-1], bounds[1:], sizes)]
    return flatness_from_traversals(traversals, n_bootstrap=n_bootstrap, seed=seed)


def flatness(dataset, encode, *, seed: int, repeats: int = DEFAULT_REPEATS,
             n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP) -> dict:
    """Flatness of ``encode``'s codes along each factor's traversals (:func:`flatness_from_traversals`):
    ``repeats`` traversals per factor, the other factors drawn at random."""
    request = sample_flatness(dataset, seed=seed, repeats=repeats)
    return score_flatness(request, encode_request(request, dataset, encode), seed=seed, n_bootstrap=n_bootstrap)
