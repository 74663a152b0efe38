"""Intervention metrics: BetaVAE, FactorVAE and Z-max-var scores, which need observations with factors fixed.

Each is split into ``sample_*`` (which grid indices to encode, decided from the seed alone) and
``score_*`` (the score from the codes of those indices), so an evaluator can encode the union of
every metric's observations once; ``beta_vae`` / ``factor_vae`` chain the two with an ``encode``.
Fixed-factor draws go through ``dataset.index_of_factors`` and so work on full grids and on
labelled subsets alike.
"""

from __future__ import annotations

import warnings

import numpy as np

from harness.metrics import _bootstrap
from harness.metrics._validation import check_codes, check_positive_int
from harness.metrics.request import ObservationRequest, encode_request, request_rngs

ANY = -1  # harness.datasets.ANY: "any value" in index_of_factors


def _index_of_factors(dataset, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lookup = getattr(dataset, "index_of_factors", None)
    if lookup is not None:
        return np.asarray(lookup(factors, rng), dtype=np.int64)
    # Protocol-only datasets without the lookup: a full grid, draw the free factors ourselves.
    sizes = np.asarray(dataset.factor_sizes)
    draws = rng.integers(0, sizes, size=factors.shape)
    return np.asarray(dataset.factors_to_index(np.where(factors == ANY, draws, factors)), dtype=np.int64)


def _check_sizes(**sizes) -> dict:
    return {name: check_positive_int(value, name) for name, value in sizes.items()}


# --- BetaVAE ---------------------------------------------------------------------------------------

def sample_beta_vae(dataset, *, seed: int, batch_size: int = 64, num_train: int = 10000,
                    num_eval: int = 5000) -> ObservationRequest:
    """Observations for BetaVAE: per point a factor k, and two batches of ``batch_size`` that agree
    on factor k only. Rows: train points then eval points; per point ``batch_size`` rows of the
    first batch then ``batch_size`` rows of the second."""
    sizes = _check_sizes(batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    rng, observation_seed = request_rngs(seed)
    num_points = sizes["num_train"] + sizes["num_eval"]
    batch = sizes["batch_size"]
    num_factors = len(dataset.factor_sizes)
    labels = rng.integers(0, num_factors, size=num_points)
    first = dataset.sample_factors(num_points * batch, rng).reshape(num_points, batch, num_factors)
    second = np.full_like(first, ANY)
    rows = np.arange(num_points)
    second[rows, :, labels] = first[rows, :, labels]
    idx_first = _index_of_factors(dataset, first.reshape(-1, num_factors), rng).reshape(num_points, batch)
    idx_second = _index_of_factors(dataset, second.reshape(-1, num_factors), rng).reshape(num_points, batch)
    indices = np.concatenate([idx_first, idx_second], axis=1).reshape(-1)
    return ObservationRequest(
        metric="beta_vae", indices=indices, observation_seed=observation_seed,
        structure={"labels": labels, "num_train": sizes["num_train"], "num_eval": sizes["num_eval"],
                   "batch_size": batch})


def score_beta_vae(request: ObservationRequest, codes, *, seed: int = 0,
                   n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP) -> dict:
    """BetaVAE score from the codes of ``request.indices`` (row for row)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    s = request.structure
    codes = check_codes(codes, "codes", min_samples=len(request.indices))
    if len(codes) != len(request.indices):
        raise ValueError(f"codes: expected {len(request.indices)} rows (one per request index), got {len(codes)}")
    batch, num_train = s["batch_size"], s["num_train"]
    pairs = codes.reshape(len(s["labels"]), 2, batch, codes.shape[1])
    features = np.abs(pairs[:, 0] - pairs[:, 1]).mean(axis=1)
    labels = np.asarray(s["labels"])
    x_train, y_train = features[:num_train], labels[:num_train]
    x_eval, y_eval = features[num_train:], labels[num_train:]
    if np.unique(y_train).size < 2:
        correct_train = np.ones(len(y_train), dtype=bool)
        correct_eval = y_eval == y_train[0]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(random_state=seed).fit(x_train, y_train)
        correct_train = model.predict(x_train) == y_train
        correct_eval = model.predict(x_eval) == y_eval
    out = {"train_accuracy": float(correct_train.mean())}
    return _with_vote_interval(out, "eval_accuracy", correct_eval, n_bootstrap, seed)


def beta_vae(dataset, encode, *, seed: int, batch_size: int = 64, num_train: int = 10000,
             num_eval: int = 5000, n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP) -> dict:
    """BetaVAE disentanglement score (Higgins et al., 2017, "beta-VAE: Learning Basic Visual
    Concepts with a Constrained Variational Framework", ICLR), as disentanglement_lib computes it.

    Per point: a factor k drawn uniformly, two batches of ``batch_size`` observations sharing only
    factor k, feature = mean over the batch of |z1 - z2|, label k. A ``LogisticRegression`` trained
    on ``num_train`` points is scored on ``num_eval`` fresh points.

    ``encode``: uint8 NHWC batch -> (N, D) codes. ``seed`` fixes every draw. Returns
    ``{"train_accuracy", "eval_accuracy", "eval_accuracy_ci95"}`` (interval: bootstrap over eval
    points, classifier fixed).
    """
    request = sample_beta_vae(dataset, seed=seed, batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    return score_beta_vae(request, encode_request(request, dataset, encode), seed=seed, n_bootstrap=n_bootstrap)


# --- FactorVAE -------------------------------------------------------------------------------------

def sample_factor_vae(dataset, *, seed: int, batch_size: int = 64, num_train: int = 10000,
                      num_eval: int = 5000, num_variance_estimate: int = 10000) -> ObservationRequest:
    """Observations for FactorVAE: ``num_variance_estimate`` random observations, then per vote a
    factor k and a batch of ``batch_size`` observations sharing one value of factor k."""
    return _sample_variance_votes("factor_vae", dataset, seed, batch_size, num_train, num_eval,
                                  num_variance_estimate, fix_only_the_label=True)


def sample_z_max_var(dataset, *, seed: int, batch_size: int = 64, num_train: int = 10000,
                     num_eval: int = 5000, num_variance_estimate: int = 10000) -> ObservationRequest:
    """Observations for Z-max-var: ``num_variance_estimate`` random observations, then per vote a
    factor k and a batch of ``batch_size`` observations sharing the values of every factor but k."""
    return _sample_variance_votes("z_max_var", dataset, seed, batch_size, num_train, num_eval,
                                  num_variance_estimate, fix_only_the_label=False)


def _sample_variance_votes(metric, dataset, seed, batch_size, num_train, num_eval, num_variance_estimate, *,
                           fix_only_the_label: bool) -> ObservationRequest:
    sizes = _check_sizes(batch_size=batch_size, num_train=num_train, num_eval=num_eval,
                         num_variance_estimate=num_variance_estimate)
    if sizes["batch_size"] < 2:
        raise ValueError("batch_size: expected an integer >= 2 (a batch variance needs two codes)")
    if sizes["num_variance_estimate"] < 2:
        raise ValueError("num_variance_estimate: expected an integer >= 2")
    rng, observation_seed = request_rngs(seed)
    num_votes = sizes["num_train"] + sizes["num_eval"]
    batch = sizes["batch_size"]
    num_factors = len(dataset.factor_sizes)
    variance_idx = rng.integers(0, dataset.num_observations, size=sizes["num_variance_estimate"])
    labels = rng.integers(0, num_factors, size=num_votes)
    values = dataset.sample_factors(num_votes, rng)
    votes = np.arange(num_votes)
    if fix_only_the_label:  # FactorVAE: factor k fixed, the others free
        fixed = np.full((num_votes, batch, num_factors), ANY, dtype=np.int64)
        fixed[votes, :, labels] = values[votes, labels][:, None]
    else:  # Z-max-var: every factor but k fixed, k free
        fixed = np.repeat(values[:, None, :], batch, axis=1)
        fixed[votes, :, labels] = ANY
    vote_idx = _index_of_factors(dataset, fixed.reshape(-1, num_factors), rng)
    return ObservationRequest(
        metric=metric, indices=np.concatenate([variance_idx.astype(np.int64), vote_idx]),
        observation_seed=observation_seed,
        structure={"labels": labels, "num_train": sizes["num_train"], "num_eval": sizes["num_eval"],
                   "batch_size": batch, "num_variance_estimate": sizes["num_variance_estimate"],
                   "num_factors": num_factors})


def score_factor_vae(request: ObservationRequest, codes, *, seed: int = 0, prune_threshold: float = 0.05,
                     n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP) -> dict:
    """FactorVAE score from the codes of ``request.indices`` (row for row)."""
    return _score_variance_votes(request, codes, np.argmin, seed, prune_threshold, n_bootstrap)


def score_z_max_var(request: ObservationRequest, codes, *, seed: int = 0, prune_threshold: float = 0.05,
                    n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP) -> dict:
    """Z-max-var score from the codes of ``request.indices`` (row for row)."""
    return _score_variance_votes(request, codes, np.argmax, seed, prune_threshold, n_bootstrap)


def _score_variance_votes(request, codes, choose, seed, prune_threshold, n_bootstrap) -> dict:
    """Each vote's batch: ``choose`` (argmin or argmax) over the active dimensions' variance scaled
    by the global one; a majority-vote classifier (dimension -> factor) from the training votes."""
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    try:
        prune_threshold = float(prune_threshold)
    except (TypeError, ValueError):
        raise ValueError(f"prune_threshold: expected a number >= 0, got {prune_threshold!r}") from None
    if not prune_threshold >= 0:
        raise ValueError(f"prune_threshold: expected a number >= 0, got {prune_threshold!r}")
    s = request.structure
    codes = check_codes(codes, "codes", min_samples=len(request.indices))
    if len(codes) != len(request.indices):
        raise ValueError(f"codes: expected {len(request.indices)} rows (one per request index), got {len(codes)}")
    num_var, batch, num_train = s["num_variance_estimate"], s["batch_size"], s["num_train"]
    global_variance = codes[:num_var].var(axis=0, ddof=1)
    active = np.sqrt(global_variance) >= prune_threshold
    labels = np.asarray(s["labels"])
    if not active.any():
        out = {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
        if n_bootstrap:
            out["eval_accuracy_ci95"] = [0.0, 0.0]
        out["eval_accuracy_per_factor"] = _per_factor(np.zeros(len(labels) - num_train, bool),
                                                      labels[num_train:], s["num_factors"])
        return out
    votes_codes = codes[num_var:].reshape(len(labels), batch, codes.shape[1])[:, :, active]
    local_variance = votes_codes.var(axis=1, ddof=1)
    chosen = choose(local_variance / global_variance[active], axis=1)  # index among active dims
    num_active = int(active.sum())
    train_votes = np.zeros((s["num_factors"], num_active), dtype=np.int64)
    np.add.at(train_votes, (labels[:num_train], chosen[:num_train]), 1)
    classifier = np.argmax(train_votes, axis=0)  # majority factor of each active dim
    correct_train = classifier[chosen[:num_train]] == labels[:num_train]
    correct_eval = classifier[chosen[num_train:]] == labels[num_train:]
    out = {"train_accuracy": float(correct_train.mean())}
    _with_vote_interval(out, "eval_accuracy", correct_eval, n_bootstrap, seed)
    out["num_active_dims"] = num_active
    out["eval_accuracy_per_factor"] = _per_factor(correct_eval, labels[num_train:], s["num_factors"])
    return out


def _per_factor(correct: np.ndarray, labels: np.ndarray, num_factors: int) -> list:
    """Accuracy of the votes that fixed each factor (None where no eval vote fixed it)."""
    return [float(correct[labels == k].mean()) if (labels == k).any() else None for k in range(num_factors)]


def factor_vae(dataset, encode, *, seed: int, batch_size: int = 64, num_train: int = 10000,
               num_eval: int = 5000, num_variance_estimate: int = 10000, prune_threshold: float = 0.05,
               n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP) -> dict:
    """FactorVAE disentanglement score (Kim and Mnih, 2018, "Disentangling by Factorising", ICML),
    as disentanglement_lib computes it.

    Codes are scaled by their global standard deviation (ddof=1, from ``num_variance_estimate``
    observations); dimensions with std < ``prune_threshold`` (0.05, the study's setting) are
    inactive. Per vote: a factor k fixed over a batch of ``batch_size`` observations; the active
    dimension with the smallest scaled variance votes for k. A majority-vote classifier (dimension
    -> factor) from ``num_train`` votes is scored on ``num_eval`` fresh votes.

    Returns ``{"train_accuracy", "eval_accuracy", "eval_accuracy_ci95", "num_active_dims",
    "eval_accuracy_per_factor"}``; ``num_active_dims`` is the true count (disentanglement_lib
    reports every dimension). The interval resamples eval votes with the classifier fixed.
    ``eval_accuracy_per_factor`` (one entry per factor, None where no eval vote fixed it) shows
    which factors have no code of their own: their votes miss.
    """
    request = sample_factor_vae(dataset, seed=seed, batch_size=batch_size, num_train=num_train,
                                num_eval=num_eval, num_variance_estimate=num_variance_estimate)
    return score_factor_vae(request, encode_request(request, dataset, encode), seed=seed,
                            prune_threshold=prune_threshold, n_bootstrap=n_bootstrap)


def z_max_var(dataset, encode, *, seed: int, batch_size: int = 64, num_train: int = 10000,
              num_eval: int = 5000, num_variance_estimate: int = 10000, prune_threshold: float = 0.05,
              n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP) -> dict:
    """Z-max-var score (Kim, Wang, Sahu and Pavlovic, 2019, "Relevance Factor VAE: Learning and
    Identifying Disentangled Factors", arXiv:1902.01568): FactorVAE's vote turned around.

    Per vote: every factor but k fixed over a batch of ``batch_size`` observations (k varies); the
    active dimension with the *largest* variance scaled by its global one votes for k. Pruning,
    the majority-vote classifier, the sizes and the returned keys are FactorVAE's
    (:func:`factor_vae`). The accuracy is reported as it is; the Ubisoft La Forge implementation
    (Carbonneau et al., 2020) rescales it by default to (accuracy - 1/K) / (1 - 1/K).
    """
    request = sample_z_max_var(dataset, seed=seed, batch_size=batch_size, num_train=num_train,
                               num_eval=num_eval, num_variance_estimate=num_variance_estimate)
    return score_z_max_var(request, encode_request(request, dataset, encode), seed=seed,
                           prune_threshold=prune_threshold, n_bootstrap=n_bootstrap)


def _with_vote_interval(out: dict, key: str, correct: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    correct = np.asarray(correct, dtype=np.float64)
    replicates = []
    if n_bootstrap and len(correct):
        weights = _bootstrap.bootstrap_weights(len(correct), n_bootstrap, _bootstrap.ci_rng(seed))
        replicates = weights @ correct / len(correct)
    return _bootstrap.add_interval(out, key, correct.mean() if len(correct) else float("nan"),
                                   replicates, n_bootstrap)
