"""Downstream prediction of factors from codes, as disentanglement_lib's downstream task
(Locatello et al., 2019, "Challenging Common Assumptions in the Unsupervised Learning of
Disentangled Representations", ICML, section 6): how well a simple predictor recovers each factor
from few labels."""

from __future__ import annotations

import warnings

import numpy as np

from harness.metrics import _bootstrap
from harness.metrics._parallel import parallel_map
from harness.metrics._validation import check_pair

PREDICTORS = ("logistic_regression", "boosted_trees")
ESTIMATORS = ("lightgbm", "gbt")


def _fit_predict(predictor, estimator, x_train, y_train, x_test, seed):
    from sklearn.exceptions import ConvergenceWarning

    classes = np.unique(y_train)
    if classes.size < 2:  # a single label seen: predict it
        return np.full(len(x_train), classes[0]), np.full(len(x_test), classes[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # folds with missing classes at 10 points
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.9 deprecations in LogisticRegressionCV
        if predictor == "logistic_regression":
            model = _logistic_regression_cv(y_train, seed)
        elif estimator == "gbt":
            from sklearn.ensemble import GradientBoostingClassifier

            model = GradientBoostingClassifier()
        else:
            import lightgbm

            model = lightgbm.LGBMClassifier(n_estimators=100, learning_rate=0.1, max_depth=3, num_leaves=8,
                                            min_child_samples=1, min_child_weight=1e-3, reg_lambda=0.0,
                                            n_jobs=1, verbose=-1, deterministic=True, random_state=seed)
        model.fit(x_train, y_train)
    return model.predict(x_train), model.predict(x_test)


def _logistic_regression_cv(y_train, seed):
    """disentanglement_lib's ``LogisticRegressionCV(Cs=10, cv=KFold(5))``; with fewer than five
    samples of some fold, fewer folds (the study's 10-point runs would otherwise fail to split)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import KFold

    return LogisticRegressionCV(Cs=10, cv=KFold(n_splits=min(5, len(y_train))))


def downstream(codes_train, factors_train, codes_test, factors_test, *, predictor: str = "logistic_regression",
               estimator: str = "lightgbm", n_jobs: int | None = None,
               n_bootstrap: int = _bootstrap.DEFAULT_N_BOOTSTRAP, seed: int = 0) -> dict:
    """Per-factor accuracy of a predictor trained on codes.

    ``predictor``: ``"logistic_regression"`` (``LogisticRegressionCV(Cs=10, cv=KFold(5))`` as
    disentanglement_lib) or ``"boosted_trees"`` (``estimator="gbt"``: sklearn's
    ``GradientBoostingClassifier()`` as disentanglement_lib; ``"lightgbm"``: the same settings in
    LightGBM, much faster). Codes are used as given (no scaling), as disentanglement_lib does.

    Returns ``{"mean_train_accuracy", "mean_test_accuracy", "min_train_accuracy",
    "min_test_accuracy", "train_accuracy_per_factor", "test_accuracy_per_factor"}`` and
    ``mean_test_accuracy_ci95`` (test set resampled, predictors fixed).
    """
    codes_train, factors_train, codes_test, factors_test = check_pair(
        codes_train, factors_train, codes_test, factors_test, min_samples=1)
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor: expected one of {', '.join(PREDICTORS)}, got {predictor!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    n_bootstrap = _bootstrap.check_n_bootstrap(n_bootstrap)
    fits = parallel_map(_fit_predict, [(predictor, estimator, codes_train, factors_train[:, k], codes_test, seed)
                                       for k in range(factors_train.shape[1])], n_jobs)
    train = np.array([np.mean(f[0] == factors_train[:, k]) for k, f in enumerate(fits)])
    correct = np.stack([f[1] == factors_test[:, k] for k, f in enumerate(fits)], axis=1).astype(np.float64)
    test = correct.mean(axis=0)
    replicates = []
    if n_bootstrap:
        weights = _bootstrap.bootstrap_weights(len(codes_test), n_bootstrap, _bootstrap.ci_rng(seed))
        replicates = weights @ correct.mean(axis=1) / len(codes_test)
    out = {"mean_train_accuracy": float(train.mean())}
    _bootstrap.add_interval(out, "mean_test_accuracy", test.mean(), replicates, n_bootstrap)
    out["min_train_accuracy"] = float(train.min())
    out["min_test_accuracy"] = float(test.min())
    out["train_accuracy_per_factor"] = train.tolist()
    out["test_accuracy_per_factor"] = test.tolist()
    return out
