"""Metric parameters: every one has a constraint, the defaults meet them, and a bad value is one
clear line (exit 2) before anything is encoded: from `--param`, from a challenge file, from Python."""

from __future__ import annotations

import subprocess
from pathlib import Path
import sys

import pytest

from harness import metrics
from harness.errors import InputError
from harness.evaluation.evaluate import resolve_metrics
from harness.grading.challenge import parse_challenge


@pytest.mark.parametrize("name", metrics.names())
def test_every_parameter_has_a_constraint_its_default_meets(name):
    spec = metrics.get(name)
    for param, value in spec.default_params.items():
        assert spec.constraint(param).problem(value) is None, (name, param, value)
    for preset, params in spec.preset_params.items():
        spec.validate(params)


BAD = [
    ("mig", "num_bins", 0, "num_bins must be an integer >= 2"),
    ("mig", "num_bins", 2.5, "num_bins must be an integer"),
    ("dci", "estimator", "xgboost", "estimator must be one of 'lightgbm', 'gbt'"),
    ("dci", "n_jobs", 0, "n_jobs must be None, -1"),
    ("dci", "num_train", -5, "num_train must be an integer >= 1"),
    ("sap", "continuous_factors", "yes", "continuous_factors must be one of False, True"),
    ("irs", "diff_quantile", 1.5, "diff_quantile must be a number > 0 and <= 1"),
    ("factor_vae", "batch_size", 1, "batch_size must be an integer >= 2"),
    ("factor_vae", "prune_threshold", -0.1, "prune_threshold must be a number >= 0"),
    ("downstream_boosted_trees", "train_sizes", [10, 0], "train_sizes must be a non-empty list"),
    ("downstream_boosted_trees", "predictor", "svm", "predictor must be one of"),
    ("mig", "n_bootstrap", True, "n_bootstrap must be an integer"),
]


@pytest.mark.parametrize("metric,param,value,message", BAD, ids=[f"{m}.{p}={v!r}" for m, p, v, _ in BAD])
def test_a_bad_value_is_refused_by_name(metric, param, value, message):
    with pytest.raises(InputError, match=f"metric {metric}: {message}"):
        resolve_metrics(None, [metric], {metric: {param: value}})


def test_the_challenge_file_names_the_line_of_a_bad_value():
    text = ('name = "x"\n[splits.public]\ndatasets = ["dummy"]\n[metrics]\npreset = "challenge"\n'
            '[metrics.params.mig]\nnum_bins = 0\n')
    with pytest.raises(InputError, match=r"line 7: \[metrics.params.mig\] num_bins: num_bins must be an integer >= 2"):
        parse_challenge(text)


def test_cli_param_out_of_range_stops_before_encoding(tmp_path):
    out = tmp_path / "results"
    res = subprocess.run([sys.executable, "-m", "harness", "evaluate", str(Path(__file__).resolve().parents[1] / "submissions" / "example"), "--dataset", "dummy",
                          "--param", "dci.estimator=xgboost", "--out", str(out)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip() == ("error: metric dci: estimator must be one of 'lightgbm', 'gbt', 'random_forest', "
                                  "'lasso', got 'xgboost'")
    assert not out.exists()


def test_fits_run_with_one_blas_thread_each():
    """n_jobs is the cores the fits use in all: inside a fit, BLAS and OpenMP have one thread."""
    import lightgbm  # noqa: F401 - its OpenMP runtime loaded, as in a real evaluation
    from threadpoolctl import threadpool_info

    from harness.metrics._parallel import parallel_map

    def threads(_):
        return {i["internal_api"]: i["num_threads"] for i in threadpool_info()}

    seen = parallel_map(threads, [(0,), (1,)], 2)
    assert all(set(s.values()) <= {1} for s in seen), seen
