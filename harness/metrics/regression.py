"""Regression informativeness: how much of each continuous factor's variance the codes explain
(R^2), beside the classification accuracy DCI and downstream report. Eastwood and Williams (2018,
ICLR) defined DCI's informativeness as a regression error; disentanglement_lib reports accuracy."""

from __future__ import annotations

import numpy as np

from harness.metrics import _bootstrap
from harness.metrics._parallel import parallel_map
from harness.metrics._validation import check_pair
from harness.metrics.modularity import standardize

PREDICTORS = ("linear", "boosted_trees")
# Factors whose value index is a category, not a quantity: left out of the mean (by name, as the
# built-in and file datasets call them; a challenge can name others).
CATEGORICAL_FACTORS = ("shape", "object_shape", "object_color", "background_color", "color")


def _fit_predict(predictor, x_train, y_train, x_test, seed):
    if predictor == "linear":
        from sklearn.linear_model import LinearRegression

        model = LinearRegression()
    else:
        import lightgbm

        # the boosting settings of DCI and downstream (100 rounds, rate 0.1, depth 3)
        model = lightgbm.LGBMRegressor(n_estimators=100, learning_rate=0.1, max_depth=3, num_leaves=8,
                                       min_child_samples=1, reg_lambda=0.0, n_jobs=1, random_state=seed,
                                       deterministic=True, force_row_wise=True, verbose=-1)
    model.fit(x_train, y_train)
    return model.predict(x_train), model.predict(x_test)


def _r2(y, predicted, weights=None):
    """1 - SSE / SST, with sample multiplicities ``weights`` (R, N) for bootstrap replicates."""
    if weights is None:
        return 1.0 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2)
    total = weights.sum(axis=1, keepdims=True)
    mean = (weights @ y)[:, None] / total
    sst = np.sum(weights * (y[None, :] - mean) ** 2, axis=1)
    sse = weights @ ((y - predicted) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 0, 1.0 - sse / sst, np.nan)


def regression_informativeness(codes_train, factors_train, codes_test, factors_test, *,
                               predictor: str = "linear", categorical=(), n_jobs: int | None = None,
                               n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP, seed: int = 0) -> dict:
    """R^2 of each factor predicted from the codes (regression informativeness).

    Per factor, ``predictor`` (``"linear"``: least squares on codes standardized by the training
    split; ``"boosted_trees"``: LightGBM regression, 100 rounds, rate 0.1, depth 3) regresses the
    factor's value index (linearly spaced values: R^2 does not depend on their scale) on the codes;
    R^2 = 1 - SSE/SST on the test split. ``categorical``: factor columns that are categories, left
    out (None per factor); a factor constant in the test split is left out too.

    Returns ``{"r2_train", "r2_test", "r2_test_ci95", "r2_per_factor"}``: the means over the factors
    scored and the test R^2 of each. R^2 is at most 1 and can be negative (worse than predicting
    the mean); the interval resamples the test set with the predictors fixed.
    """
    codes_train, factors_train, codes_test, factors_test = check_pair(
        codes_train, factors_train, codes_test, factors_test)
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor: expected one of {', '.join(PREDICTORS)}, got {predictor!r}")
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    skip = {int(k) for k in categorical}
    scored = [k for k in range(factors_train.shape[1])
              if k not in skip and np.ptp(factors_train[:, k]) > 0 and np.ptp(factors_test[:, k]) > 0]
    if not scored:
        raise ValueError("factors: no continuous factor varies in both splits; nothing to regress")
    x_train, x_test = standardize(codes_train, codes_test)
    fits = parallel_map(_fit_predict, [(predictor, x_train, factors_train[:, k].astype(np.float64), x_test, seed)
                                       for k in scored], n_jobs)
    train = np.array([_r2(factors_train[:, k].astype(np.float64), f[0]) for k, f in zip(scored, fits)])
    test = np.array([_r2(factors_test[:, k].astype(np.float64), f[1]) for k, f in zip(scored, fits)])
    replicates = []
    if n_bootstrap:
        weights = _bootstrap.bootstrap_weights(len(codes_test), n_bootstrap, _bootstrap.ci_rng(seed))
        replicates = np.mean([_r2(factors_test[:, k].astype(np.float64), f[1], weights)
                              for k, f in zip(scored, fits)], axis=0)
    out = {"r2_train": float(train.mean())}
    _bootstrap.add_interval(out, "r2_test", test.mean(), replicates, n_bootstrap, bounds=(-np.inf, 1.0))
    per_factor = dict(zip(scored, test.tolist()))
    out["r2_per_factor"] = [per_factor.get(k) for k in range(factors_train.shape[1])]
    return out
