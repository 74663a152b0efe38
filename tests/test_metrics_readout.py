"""The generalization readout (harness.metrics.readout) and its metric `generalization`: a code
that carries the factors beyond the training range keeps its R^2 on the held-out part, one that
does not loses it; the metric plans from a split, runs end to end, and refuses bad splits in one line."""

from __future__ import annotations

import numpy as np
import pytest

from harness import datasets, metrics
from harness.datasets.splits import builtin_split, parse_split, resolve_split
from harness.errors import InputError
from harness.evaluation.evaluate import resolve_metrics
from harness.grading.challenge import parse_challenge
from harness.metrics import generalization_readout


def _split_factors(split_table, n_fit=4000, n_eval=2000, seed=0):
    """Factors of fitted, in-distribution and held-out points of a dSprites split (no images needed)."""
    ds = datasets.load("dsprites")
    split = parse_split(split_table) if isinstance(split_table, dict) else builtin_split(split_table, ds)
    parts = split.parts(ds)
    rng = np.random.default_rng(seed)
    train = split.sample(ds, n_fit + n_eval, rng, parts=parts)
    rng.shuffle(train)
    held = split.sample(ds, n_eval, rng, part="held_out", parts=parts)
    f = ds.index_to_factors
    return ds, f(train[:n_fit]), f(train[n_fit:]), f(held)


def _linear_code(factors, rng, sizes):
    mixing = np.random.default_rng(42).normal(size=(factors.shape[1], 8))
    return (factors / np.asarray(sizes)) @ mixing + 0.01 * rng.normal(size=(len(factors), 8))


def test_a_code_that_extrapolates_keeps_its_r2_on_the_held_out_part():
    ds, fit, iid, held = _split_factors("extrapolation")
    rng = np.random.default_rng(1)
    code = lambda f: _linear_code(f, rng, ds.factor_sizes)  # noqa: E731
    out = generalization_readout(code(fit), fit, code(held), held, code(iid), iid, predictor="linear",
                                 categorical=[0], n_bootstrap=20)
    assert out["r2_iid"] > 0.99 and out["r2_held_out"] > 0.99
    assert abs(out["r2_held_out"] - out["r2_iid"]) < 0.01
    assert out["r2_held_out_per_factor"][0] is None and out["r2_iid_per_factor"][0] is None  # shape: categorical
    lo, hi = out["r2_held_out_ci95"]
    assert lo <= out["r2_held_out"] <= hi <= 1.0


def test_a_code_that_saturates_outside_the_training_range_does_not():
    # posX 16..31 never seen in training; the code stops moving at the last trained value, 15
    table = {"kind": "extrapolation", "factor": "posX", "held_out": "16..31"}
    ds, fit, iid, held = _split_factors(table)
    rng = np.random.default_rng(1)

    def code(f):
        clipped = f.copy()
        clipped[:, 3] = np.minimum(clipped[:, 3], 15)
        return _linear_code(clipped, rng, ds.factor_sizes)

    for predictor in ("linear", "mlp"):
        out = generalization_readout(code(fit), fit, code(held), held, code(iid), iid, predictor=predictor,
                                     categorical=[0], n_bootstrap=0)
        assert out["r2_iid_per_factor"][3] > 0.98, predictor  # in distribution posX is read perfectly
        assert out["r2_held_out_per_factor"][3] < 0, predictor  # beyond it: worse than the held-out mean
        assert out["r2_held_out"] < out["r2_iid"] - 0.2, predictor
        assert out["r2_held_out_per_factor"][1] > 0.95, predictor  # the factors still in range stay readable
        assert "r2_held_out_ci95" not in out


def test_a_lookup_table_code_fits_training_values_only():
    # a code that tabulates each trained orientation value (random vectors) and has nothing for the others
    table = {"kind": "interpolation", "factor": "orientation", "held_out": "10..29"}
    ds, fit, iid, held = _split_factors(table)
    table_rng = np.random.default_rng(3)
    lookup = table_rng.normal(size=(40, 6))
    lookup[10:30] = 0.0  # never trained on: the table has no entry

    def code(f):
        return np.concatenate([lookup[f[:, 2]], f[:, [1, 3, 4]] / 31.0], axis=1)

    out = generalization_readout(code(fit), fit, code(held), held, code(iid), iid, predictor="mlp",
                                 categorical=[0], n_bootstrap=0, seed=0)
    assert out["r2_iid_per_factor"][2] > 0.9
    assert out["r2_held_out_per_factor"][2] < 0.2


def test_the_mlp_readout_is_seeded():
    ds, fit, iid, held = _split_factors("random", n_fit=1500, n_eval=500)
    rng = np.random.default_rng(1)
    codes = [_linear_code(f, rng, ds.factor_sizes) for f in (fit, held, iid)]
    a = generalization_readout(codes[0], fit, codes[1], held, codes[2], iid, predictor="mlp", seed=3, n_bootstrap=0)
    b = generalization_readout(codes[0], fit, codes[1], held, codes[2], iid, predictor="mlp", seed=3, n_bootstrap=0)
    assert a == b
    assert a["r2_held_out"] > 0.9  # random split: the held-out part is in distribution too


def test_bad_inputs_are_value_errors():
    ds, fit, iid, held = _split_factors("random", n_fit=200, n_eval=100)
    codes = np.random.default_rng(0).normal(size=(len(fit), 3))
    with pytest.raises(ValueError, match="predictor: expected one of linear, mlp"):
        generalization_readout(codes, fit, codes[:100], held, predictor="forest")
    with pytest.raises(ValueError, match="factors_test: has 100 samples but codes_test has 50"):
        generalization_readout(codes, fit, codes[:50], held)
    out = generalization_readout(codes, fit, codes[:100], held, predictor="linear", n_bootstrap=0)
    assert out["r2_iid"] is None and out["r2_iid_per_factor"] == [None] * 5  # no in-distribution set given


# -- the registered metric ------------------------------------------------------------------------

def _band_code(images):
    """Dummy's bands: factor k sets the brightness of rows 5k..5k+4, so the band means are the factors."""
    x = np.asarray(images, dtype=np.float64)[..., 0]
    return np.stack([x[:, 5 * k:5 * k + 5].mean(axis=(1, 2)) for k in range(3)], axis=1)


def test_the_metric_end_to_end_on_dummy():
    ds = datasets.load("dummy")
    spec = metrics.get("generalization")
    assert "full" in spec.presets and "challenge" not in spec.presets
    params = dict(split="extrapolation", num_train=300, num_iid=100, num_test=200, predictor="linear", n_bootstrap=10)
    request = spec.sample(ds, seed=0, **params)
    a, b = 300, 400
    split = builtin_split("extrapolation", ds)
    held = split.held_out_mask(ds, request.factors)
    assert not held[:b].any() and held[b:].all()  # fitted and in-distribution rows from training, the rest held out
    assert not set(request.indices[:a].tolist()) & set(request.indices[a:b].tolist())  # never test on a fitted point
    out = spec(ds, _band_code, seed=0, **params)
    assert set(out) == set(spec.output_keys(params))
    assert out["r2_held_out"] > 0.99 and out["r2_iid"] > 0.99  # the band code is linear in every factor
    assert out["held_out_fraction"] == pytest.approx(0.6)  # 1 - 3/4 * 4/5 * 4/6
    np.testing.assert_array_equal(spec.sample(ds, seed=0, **params).indices, request.indices)  # from the seed alone


def test_the_metric_on_dsprites_with_a_custom_split():
    ds = datasets.load("dsprites")
    spec = metrics.get("generalization")
    table = {"kind": "composition", "name": "no big hearts", "held_out": [{"shape": 2, "scale": "4..5"}]}

    def encode(images):  # horizontal and vertical centre of mass, and the area: position extrapolates
        x = np.asarray(images, dtype=np.float64)[..., 0] / 255
        area = x.sum(axis=(1, 2)) + 1e-9
        grid = np.arange(64)
        return np.stack([(x.sum(1) * grid).sum(1) / area, (x.sum(2) * grid).sum(1) / area, area], axis=1)

    out = spec(ds, encode, seed=0, split=table, num_train=1000, num_iid=300, num_test=300, predictor="linear",
               n_bootstrap=0)
    assert out["held_out_fraction"] == pytest.approx(1 / 3 * 2 / 6)
    assert out["r2_held_out_per_factor"][3] > 0.95 and out["r2_iid_per_factor"][3] > 0.95  # posX
    request = spec.sample(ds, seed=0, split=table, num_train=1000, num_iid=300, num_test=300)
    f = request.factors
    assert ((f[1300:, 0] == 2) & (f[1300:, 1] >= 4)).all() and not ((f[:1300, 0] == 2) & (f[:1300, 1] >= 4)).any()


BAD_PARAMS = [
    ("diagonal", "split must be a built-in split"),
    (3, "split must be a built-in split"),
    ({"kind": "composition", "held_out": [{"posX": 3}]}, r"split table \(composition\): held_out\[0\] names one"),
    ({"kind": "random", "test_fraction": 2}, r"split table \(random\): test_fraction must be a number"),
]


@pytest.mark.parametrize("value,message", BAD_PARAMS, ids=[str(i) for i in range(len(BAD_PARAMS))])
def test_a_bad_split_param_is_one_line_before_anything_runs(value, message):
    with pytest.raises(InputError, match=f"metric generalization: {message}") as info:
        resolve_metrics(None, ["generalization"], {"generalization": {"split": value}})
    assert "\n" not in str(info.value)


def test_a_split_naming_a_missing_factor_stops_the_plan_in_one_line():
    spec = metrics.get("generalization")
    with pytest.raises(InputError, match="split 'custom extrapolation' on dummy: no factor 'posX'; its factors: a, b, c"):
        spec.sample(datasets.load("dummy"), seed=0, split={"kind": "extrapolation", "factor": "posX", "held_out": 3})


CHALLENGE = '''name = "ood"
[splits.public]
datasets = ["dsprites"]
[metrics]
names = ["generalization"]
[metrics.params.generalization]
predictor = "linear"
split = {{kind = "extrapolation", name = "right edge", held_out = {held_out}}}
[ranking]
values = ["generalization.r2_held_out"]
'''


def test_a_challenge_file_defines_its_own_split():
    challenge = parse_challenge(CHALLENGE.format(held_out='{posX = "24..31", scale = 5}'), path="ood.toml")
    split = challenge.metric_params["generalization"]["split"]
    assert split == {"kind": "extrapolation", "name": "right edge", "held_out": {"posX": "24..31", "scale": 5}}
    [(spec, params)] = resolve_metrics(None, ["generalization"], challenge.metric_params)
    request = spec.sample(datasets.load("dsprites"), seed=challenge.seed, **{**params, "num_train": 100,
                                                                            "num_iid": 10, "num_test": 10})
    assert request.structure["split"]["name"] == "right edge"
    assert not np.isin(request.factors[:110, 3], range(24, 32)).any()
    with pytest.raises(InputError, match=r"ood.toml: line 8: \[metrics.params.generalization\] split: split table "
                                         r"\(extrapolation\): held_out.posX: a value is an integer"):
        parse_challenge(CHALLENGE.format(held_out='{posX = "24-31"}'), path="ood.toml")


def test_the_example_challenge_s_commented_split_parses():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "examples" / "challenge.toml").read_text()
    start = text.index("# [metrics.params.generalization]")
    block = [line[2:] for line in text[start:].splitlines()[:3]]  # the table, uncommented
    challenge = parse_challenge(CHALLENGE.split("[metrics.params")[0] + "\n".join(block)
                                + '\n[ranking]\nvalues = ["generalization.r2_held_out"]\n', path="example.toml")
    split = challenge.metric_params["generalization"]["split"]
    assert split["kind"] == "composition"
    ds = datasets.load("dsprites")
    train, test = resolve_split(split, ds).parts(ds)
    assert len(test) == ds.num_observations // 3 // 3  # hearts (1 of 3) at the two largest scales (2 of 6)
