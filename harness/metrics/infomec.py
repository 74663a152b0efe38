"""InfoMEC: InfoM (modularity), InfoE (explicitness), InfoC (compactness) (Hsu, Dorrell,
Whittington, Wu and Finn, 2023, "Disentanglement via Latent Quantization", NeurIPS, section 5)."""

from __future__ import annotations

import warnings

import numpy as np

from harness.metrics import _bootstrap, _info
from harness.metrics._parallel import parallel_map
from harness.metrics._validation import check_pair, check_positive_int
from harness.metrics.modularity import standardize


def _concentration(nmi: np.ndarray, axis: int) -> np.ndarray:
    """How much of each row's (or column's) information sits in its largest entry, rescaled so a
    uniform spread gives 0 and a single entry 1: ``(max / sum - 1/n) / (1 - 1/n)``; NaN where the
    sum is 0 (a latent or source with no information: left out of the mean)."""
    n = nmi.shape[axis]
    total = nmi.sum(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = nmi.max(axis=axis) / total
    return np.where(total > 0, (ratio - 1.0 / n) / (1.0 - 1.0 / n), np.nan)


def _explicitness_one(x_train, y_train, x_test, y_test, weights_test):
    """Normalized predictive information of the factor in the codes, as the authors compute it:
    ``(H_null - CE) / H_null`` with CE the cross-entropy of an unpenalized, class-balanced
    multinomial logistic regression (lbfgs, 100 iterations) and H_null that of the same model on no
    input (the balanced prior); here on the test set, per bootstrap replicate of it."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(y_train)
    if classes.size < 2:
        return np.full(len(weights_test), np.nan)

    def per_sample_log_loss(x_fit, x_eval):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=np.inf, class_weight="balanced", max_iter=100, tol=1e-4).fit(x_fit, y_train)
        proba = np.clip(model.predict_proba(x_eval), 1e-15, 1.0)  # sklearn's log_loss clips at eps as well
        proba /= proba.sum(axis=1, keepdims=True)
        column = np.minimum(np.searchsorted(classes, y_test), classes.size - 1)
        known = classes[column] == y_test  # a test class never seen in training: the clipped floor
        return np.where(known, -np.log(proba[np.arange(len(y_test)), column]), -np.log(1e-15))

    model_loss = per_sample_log_loss(x_train, x_test)
    null_loss = per_sample_log_loss(np.zeros_like(x_train), np.zeros_like(x_test))
    ce = weights_test @ model_loss / weights_test.sum(axis=1)
    h = weights_test @ null_loss / weights_test.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(np.where(h > 0, (h - ce) / h, np.nan), 0.0, 1.0)


def active_latents(codes: np.ndarray, *, discrete_latents: bool) -> np.ndarray:
    """The authors' pruning rule: a discrete latent is active when it takes more than one value, a
    continuous one when its range exceeds 1/20 of the widest latent's."""
    ranges = codes.max(axis=0) - codes.min(axis=0)
    return ranges > 0 if discrete_latents else ranges > ranges.max() / 20


def _label_encode(codes: np.ndarray) -> np.ndarray:
    """Each column's values as 0..L-1 (discrete latents: every value its own bin)."""
    return np.stack([np.unique(codes[:, j], return_inverse=True)[1] for j in range(codes.shape[1])],
                    axis=1).astype(np.float64)


def infomec(codes_train, factors_train, codes_test, factors_test, *, num_bins: int = 20,
            discrete_latents: bool = False, n_jobs: int | None = None,
            n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP, seed: int = 0) -> dict:
    """InfoM, InfoE and InfoC (Hsu, Dorrell, Whittington, Wu and Finn, 2023, "Disentanglement via
    Latent Quantization", NeurIPS), with the authors' estimator choices except where noted.

    From the normalized mutual information ``NMI[j, k] = I(z_j; v_k) / H(v_k)`` of the training
    codes and factors, over the *active* latents (:func:`active_latents`, the authors' rule):

    - ``infom`` (modularity): per active latent, ``(max_k NMI / sum_k NMI - 1/K) / (1 - 1/K)``,
      averaged over the active latents;
    - ``infoc`` (compactness): per factor, ``(max_j NMI / sum_j NMI - 1/A) / (1 - 1/A)`` over the A
      active latents, averaged over the factors that carry information (the authors' mean is NaN
      when a factor has none);
    - ``infoe`` (explicitness): per factor, ``(H_null - CE) / H_null`` of an unpenalized,
      class-balanced logistic regression on the codes (standardized; one-hot with
      ``discrete_latents``) against the same model without input; evaluated on the test set (the
      authors evaluate on the data they fit).

    ``discrete_latents`` (quantized codes): each distinct value is its own bin, so the MI is the
    exact plug-in one, as the authors compute it. Otherwise the codes are cut into ``num_bins``
    equal-width bins; the authors use scikit-learn's nearest-neighbour MI estimator
    (``mutual_info_classif``, 10 neighbours, random jitter) there, which this does not (binned MI is
    deterministic and resamples cheaply for the intervals; docs/metrics.md).

    Needs D >= 2 code dimensions and K >= 2 factors. Intervals: ``infom``/``infoc`` resample the
    training set, ``infoe`` the test set (models fixed).
    """
    codes_train, factors_train, codes_test, factors_test = check_pair(
        codes_train, factors_train, codes_test, factors_test, min_dims=2)
    if factors_train.shape[1] < 2:
        raise ValueError(f"factors_train: InfoMEC needs at least 2 factors, got {factors_train.shape[1]}")
    num_bins = check_positive_int(num_bins, "num_bins", minimum=2)
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    rng = _bootstrap.ci_rng(seed)

    active = active_latents(codes_train, discrete_latents=discrete_latents)
    if not active.any():
        active[:] = True  # every latent constant: nothing to prune to; the scores come out 0
    binned = _label_encode(codes_train) if discrete_latents else codes_train
    bins = max(2, int(binned.max(axis=0).max()) + 1) if discrete_latents else num_bins
    weights = _bootstrap.bootstrap_weights(len(codes_train), n_bootstrap, rng) if n_bootstrap else None
    counts = _info.code_factor_counts(binned[:, active], factors_train, bins, weights)
    mi = _info.mutual_info_from_counts(counts)  # (R, A, K)
    h = _info.entropy_from_counts(counts[:, 0].sum(axis=-2))  # (R, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        nmi = np.where(h[:, None, :] > 0, mi / np.where(h[:, None, :] > 0, h[:, None, :], 1.0), 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no latent (or factor) carries information
        infom = np.nanmean(_concentration(nmi, axis=2), axis=1)
        infoc = np.nanmean(_concentration(nmi, axis=1), axis=1) if active.sum() > 1 else np.ones(len(nmi))

    if discrete_latents:
        from sklearn.preprocessing import OneHotEncoder

        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(codes_train)
        x_train, x_test = encoder.transform(codes_train), encoder.transform(codes_test)
    else:
        x_train, x_test = standardize(codes_train, codes_test)
    weights_test = np.ones((1, len(codes_test)))
    if n_bootstrap:
        weights_test = np.vstack([weights_test, _bootstrap.bootstrap_weights(len(codes_test), n_bootstrap, rng)])
    per_factor = parallel_map(_explicitness_one, [(x_train, factors_train[:, k], x_test, factors_test[:, k],
                                                   weights_test) for k in range(factors_train.shape[1])], n_jobs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicate: no factor varied
        infoe = np.nanmean(np.stack(per_factor, axis=1), axis=1)

    out: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _bootstrap.add_interval(out, "infom", np.nan_to_num(infom[0]), np.nan_to_num(infom[1:]), n_bootstrap)
        _bootstrap.add_interval(out, "infoe", np.nan_to_num(infoe[0]), np.nan_to_num(infoe[1:]), n_bootstrap)
        _bootstrap.add_interval(out, "infoc", np.nan_to_num(infoc[0]), np.nan_to_num(infoc[1:]), n_bootstrap)
    out["num_active_latents"] = int(active.sum())
    return out
