"""Generalization of a readout: fit codes -> factors on a split's training part, score R^2 on its
held-out part beside an in-distribution test set (Schott et al., 2022, "Visual representation
learning does not generalize strongly within the same domain", ICLR; Montero et al., 2021, "The
role of disentanglement in generalisation", ICLR). The splits: harness.datasets.splits."""

from __future__ import annotations

import warnings

import numpy as np

from harness.metrics import _bootstrap
from harness.metrics._parallel import parallel_map
from harness.metrics._validation import check_codes, check_factors, check_pair
from harness.metrics.modularity import standardize
from harness.metrics.regression import _r2

PREDICTORS = ("linear", "mlp")
#: the MLP readout: two hidden ReLU layers, Adam, early stopping on a tenth of the fitted points
MLP_HIDDEN = (64, 64)
MLP_MAX_EPOCHS = 200
MLP_BATCH = 256


def _fit(predictor: str, x_train, y_train, seed: int):
    """A fitted multi-output readout (inputs and targets already standardized)."""
    if predictor == "linear":
        from sklearn.linear_model import LinearRegression

        return LinearRegression().fit(x_train, y_train)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    model = MLPRegressor(hidden_layer_sizes=MLP_HIDDEN, activation="relu", solver="adam", learning_rate_init=1e-3,
                         batch_size=min(MLP_BATCH, len(x_train)), max_iter=MLP_MAX_EPOCHS,
                         early_stopping=len(x_train) >= 20, validation_fraction=0.1, n_iter_no_change=10,
                         random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x_train, y_train if y_train.shape[1] > 1 else y_train[:, 0])


def _predict(model, x) -> np.ndarray:
    return np.asarray(model.predict(x), dtype=np.float64).reshape(len(x), -1)


def generalization_readout(codes_train, factors_train, codes_test, factors_test, codes_iid=None, factors_iid=None,
                           *, predictor: str = "linear", categorical=(),
                           n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP, seed: int = 0) -> dict:
    """R^2 of a readout fitted on one part of a split, on its held-out part and in distribution.

    One readout from all codes to every continuous factor's value index (linearly spaced values:
    R^2 does not depend on their scale) is fitted on ``codes_train`` / ``factors_train``, inputs and
    targets standardized by those points. ``predictor``: ``"linear"`` (least squares) or ``"mlp"``
    (scikit-learn's MLPRegressor, hidden layers :data:`MLP_HIDDEN` of ReLU units, Adam at 1e-3,
    batches of 256, at most 200 epochs, early stopping when a random tenth of the fitted points
    stops improving for 10 epochs, seeded by ``seed``; about 2 s on 10,000 points; its fit moves
    by ~1e-4 when the codes move by float32 rounding, the linear one only at that level). R^2 = 1 -
    SSE/SST on each evaluation set against that set's own mean, as Schott et al. score it.

    ``codes_test`` / ``factors_test``: the held-out part (out of distribution). ``codes_iid`` /
    ``factors_iid``: points drawn from the same part as the training points but never fitted on;
    without them the ``r2_iid`` keys are None. ``categorical``: factor columns left out (None per
    factor); a factor constant in the fitted points or in an evaluation set is left out too.

    Returns ``{"r2_held_out", "r2_iid"}`` (means over the factors scored) with ``_ci95`` intervals
    (the evaluation set resampled, the readout fixed) and ``"r2_held_out_per_factor"``,
    ``"r2_iid_per_factor"``. A code that carries the factors the same way beyond the training
    range scores ``r2_held_out`` near ``r2_iid``; one that only tabulates the values it was
    trained on falls far below it (R^2 can be negative: worse than the held-out mean).
    """
    codes_train, factors_train, codes_test, factors_test = check_pair(
        codes_train, factors_train, codes_test, factors_test)
    with_iid = codes_iid is not None or factors_iid is not None
    if with_iid:
        codes_iid = check_codes(codes_iid, "codes_iid", min_samples=1)
        factors_iid = check_factors(factors_iid, "factors_iid", num_samples=len(codes_iid), samples_name="codes_iid")
        if codes_iid.shape[1] != codes_train.shape[1] or factors_iid.shape[1] != factors_train.shape[1]:
            raise ValueError(f"codes_iid / factors_iid: expected {codes_train.shape[1]} code dimensions and "
                             f"{factors_train.shape[1]} factors, got {codes_iid.shape[1]} and {factors_iid.shape[1]}")
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor: expected one of {', '.join(PREDICTORS)}, got {predictor!r}")
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    skip = {int(k) for k in categorical}
    evaluation_sets = [factors_test] + ([factors_iid] if with_iid else [])
    scored = [k for k in range(factors_train.shape[1])
              if k not in skip and all(np.ptp(f[:, k]) > 0 for f in [factors_train] + evaluation_sets)]
    if not scored:
        raise ValueError("factors: no continuous factor varies in the fitted points and every evaluation set; "
                         "nothing to regress")

    y_train = factors_train[:, scored].astype(np.float64)
    y_mean, y_std = y_train.mean(axis=0), y_train.std(axis=0)
    x_train, x_test = standardize(codes_train, codes_test)
    model = parallel_map(_fit, [(predictor, x_train, (y_train - y_mean) / y_std, seed)], None)[0]

    out: dict = {}
    rng = _bootstrap.ci_rng(seed)
    for key, x, factors in (("r2_held_out", x_test, factors_test),
                            ("r2_iid", standardize(codes_train, codes_iid)[1] if with_iid else None, factors_iid)):
        if x is None:
            out[key] = None
            if n_bootstrap:
                out[key + "_ci95"] = None
            out[key + "_per_factor"] = [None] * factors_train.shape[1]
            continue
        predicted = _predict(model, x) * y_std + y_mean
        targets = factors[:, scored].astype(np.float64)
        r2 = np.array([_r2(targets[:, j], predicted[:, j]) for j in range(len(scored))])
        replicates = []
        if n_bootstrap:
            weights = _bootstrap.bootstrap_weights(len(x), n_bootstrap, rng)
            replicates = np.mean([_r2(targets[:, j], predicted[:, j], weights) for j in range(len(scored))], axis=0)
        _bootstrap.add_interval(out, key, r2.mean(), replicates, n_bootstrap, bounds=(-np.inf, 1.0))
        per_factor = dict(zip(scored, r2.tolist()))
        out[key + "_per_factor"] = [per_factor.get(k) for k in range(factors_train.shape[1])]
    return out
