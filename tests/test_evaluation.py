"""harness.evaluation: the encode-once plan, the code cache, evaluate()/evaluate_dataset and results.json.

Everything runs for real on the tiny 'dummy' dataset (120 grid points, 16x16x1) with an ONNX
encoder written in a fixture, through onnxruntime and the process sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness import datasets
from harness.evaluation.plan import Timing, build_code_table
from helpers_evaluation import FAST, SMALL, band_weights, numpy_encoder

REPO = Path(__file__).resolve().parents[1]


# -- a tiny ONNX encoder for the dummy dataset ------------------------------------------------------

def write_onnx_submission(root: Path, *, name: str = "tiny", latent_dim: int = 4, weights=None,
                          emit_nan: bool = False) -> Path:
    """A real ONNX submission: Flatten -> MatMul -> Add (-> Sqrt(-|.|-1) = NaN when ``emit_nan``)."""
    root.mkdir(parents=True, exist_ok=True)
    w, b = weights if weights is not None else band_weights(latent_dim)
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["mean" if not emit_nan else "lin"])]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    if emit_nan:
        nodes += [helper.make_node("Abs", ["lin"], ["a"]), helper.make_node("Neg", ["a"], ["n"]),
                  helper.make_node("Sub", ["n", "one"], ["m"]), helper.make_node("Sqrt", ["m"], ["mean"])]
        inits.append(numpy_helper.from_array(np.ones(1, np.float32), "one"))
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N", latent_dim])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, root / "encoder.onnx")
    manifest = {"name": name, "format": "onnx", "model": "encoder.onnx",
                "input": {"channels": 1, "height": 16, "width": 16}, "latent_dim": latent_dim,
                "outputs": ["mean"]}
    (root / "submission.json").write_text(json.dumps(manifest))
    return root


def assert_float32_codes_close(actual, images, encode):
    """Codes of ``encode`` (a numpy_encoder) computed in another batching agree to float32 rounding.

    BLAS picks its kernel (and so its summation order) by batch size and CPU (OpenBLAS's Haswell
    and SkylakeX kernels differ; ``OPENBLAS_CORETYPE`` changes it), so bitwise equality is not
    promised. Each code is a float32 sum of K products: either result is within K * eps * sum|x||w|
    of the exact value (the standard dot-product error bound), so two results are within twice that.
    A wrong row (the plan's real failure mode) is off by the whole code, ~1e-1 here.
    """
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0
    k = x.shape[1]
    magnitude = np.abs(x) @ np.abs(encode.weights)
    atol = 2 * k * np.finfo(np.float32).eps * magnitude
    expected = x @ encode.weights + encode.bias
    assert np.all(np.abs(np.asarray(actual) - expected) <= atol), \
        f"codes differ by {np.max(np.abs(np.asarray(actual) - expected)):.3g}, over float32 rounding"


class Request:
    """The two fields of an ObservationRequest the plan reads (indices, observation_seed)."""

    def __init__(self, indices, observation_seed):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.observation_seed = observation_seed


@pytest.fixture(scope="module")
def submission(tmp_path_factory):
    return write_onnx_submission(tmp_path_factory.mktemp("sub") / "tiny")


# -- plan: encode once -----------------------------------------------------------------------------

def test_deterministic_plan_encodes_each_unique_index_once():
    ds = datasets.load("dummy")
    rng = np.random.default_rng(1)
    requests = {"a": Request(rng.integers(0, 120, 400), 11), "b": Request(rng.integers(0, 120, 300), 12)}
    encode = numpy_encoder()
    table, timing = build_code_table(ds, requests, encode, chunk_size=17, batch_size=5)
    unique = np.unique(np.concatenate([r.indices for r in requests.values()]))
    assert timing.images_requested == 700
    assert timing.images_encoded == len(unique) == sum(encode.calls)
    assert max(encode.calls) <= 5
    for name, request in requests.items():
        assert_float32_codes_close(table.lookup(name, request), ds.observations(request.indices), encode)


@pytest.mark.parametrize("name", ["noisy_dsprites", "color_dsprites"])
def test_stochastic_plan_renders_each_sample_in_chunks_like_the_whole_request(name):
    ds = datasets.load(name)
    rng = np.random.default_rng(2)
    idx = rng.integers(0, ds.num_observations, 50)
    requests = {"a": Request(idx, 5), "b": Request(idx, 6)}  # same indices, different nuisances
    w = np.random.default_rng(0).integers(-3, 4, size=(64 * 64 * 3, 3))

    def encode(images):  # integer arithmetic: equal codes mean equal pixels, whatever the batching
        return np.asarray(images, np.int64).reshape(len(images), -1) @ w

    table, timing = build_code_table(ds, requests, encode, chunk_size=7, batch_size=3)
    assert timing.images_encoded == 100  # every sample is its own on a stochastic dataset
    for key, request in requests.items():
        whole = encode(ds.observations(request.indices, rng=np.random.default_rng(request.observation_seed)))
        np.testing.assert_array_equal(table.lookup(key, request), whole)
    assert not np.allclose(table.lookup("a", requests["a"]), table.lookup("b", requests["b"]))


def test_cache_rerun_encodes_only_new_indices(tmp_path):
    from harness.evaluation.cache import DatasetCache

    ds = datasets.load("dummy")
    first = {"m": Request(np.arange(0, 60), 0)}
    second = {"m": Request(np.arange(30, 100), 1), "n": Request(np.array([5, 99, 119]), 2)}
    sha = "ab" * 32
    enc1 = numpy_encoder()
    build_code_table(ds, first, enc1, cache=DatasetCache(tmp_path, sha, ds))
    enc2 = numpy_encoder()
    table, timing = build_code_table(ds, second, enc2, cache=DatasetCache(tmp_path, sha, ds))
    assert timing.images_encoded == sum(enc2.calls) == len(np.setdiff1d(np.r_[30:100, 119], np.arange(60)))
    assert timing.images_from_cache == 31  # 30..59 and 5 were encoded by the first run
    for key, request in second.items():
        assert_float32_codes_close(table.lookup(key, request), ds.observations(request.indices), enc2)
    # another submission hash shares nothing
    enc3 = numpy_encoder()
    _, timing3 = build_code_table(ds, second, enc3, cache=DatasetCache(tmp_path, "cd" * 32, ds))
    assert timing3.images_from_cache == 0


def test_cache_ignores_a_corrupt_file(tmp_path):
    from harness.evaluation.cache import DatasetCache

    ds = datasets.load("dummy")
    cache = DatasetCache(tmp_path, "ef" * 32, ds)
    cache.grid_path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable cache"):
        table, timing = build_code_table(ds, {"m": Request([1, 2, 3], 0)}, numpy_encoder(), cache=cache)
    assert timing.images_encoded == 3
    assert DatasetCache(tmp_path, "ef" * 32, ds).lookup(np.array([1, 2, 3]))[0].tolist() == [1, 2, 3]


def test_cache_stochastic_requests(tmp_path):
    from harness.evaluation.cache import DatasetCache

    ds = datasets.load("noisy_dsprites")
    req = {"m": Request([3, 3, 700], 9)}
    w = np.ones((64 * 64 * 3, 2), np.float32)

    def encode(images):
        return np.asarray(images, np.float32).reshape(len(images), -1) @ w

    t1, _ = build_code_table(ds, req, encode, cache=DatasetCache(tmp_path, "aa" * 32, ds))
    t2, timing = build_code_table(ds, req, encode, cache=DatasetCache(tmp_path, "aa" * 32, ds))
    assert timing.images_encoded == 0 and timing.images_from_cache == 3
    np.testing.assert_array_equal(t1.lookup("m", req["m"]), t2.lookup("m", req["m"]))


# -- evaluate(): plan equivalence, results.json, failures, CLI -----------------------------------

def _small(names):
    return {n: SMALL[n] for n in names if n in SMALL}


def _schema_validator():
    import jsonschema

    schema = json.loads((REPO / "docs" / "results.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# The plan encodes each unique index in its own batches, a metric alone in request order: float32
# products then round differently (~1e-7). R^2 of a near-exact linear fit (the dummy encoder is
# linear in the factors) is 1 - SSE/SST with SSE at that rounding level, so it moves by ~1e-6.
_ROUNDING_LEVEL_KEYS = {"r2_train": 1e-5, "r2_test": 1e-5, "r2_per_factor": 1e-5, "r2_test_ci95": 1e-5,
                        **{f"r2_{part}{end}": 1e-5 for part in ("held_out", "iid")  # generalization
                           for end in ("", "_ci95", "_per_factor")}}


def _assert_same_values(got: dict, expected: dict):
    assert set(got) == set(expected)
    for key, value in expected.items():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            assert got[key] is None or np.isnan(got[key]), key
        else:
            np.testing.assert_allclose(np.asarray(got[key], dtype=float), np.asarray(value, dtype=float),
                                       rtol=1e-6, atol=_ROUNDING_LEVEL_KEYS.get(key, 1e-9), err_msg=key)


def projection_encoder(num_pixels: int, latent_dim: int = 4, seed: int = 0):
    """A fixed random projection of any image size (for datasets other than dummy)."""
    w = np.random.default_rng(seed).normal(size=(num_pixels, latent_dim)).astype(np.float32) / np.sqrt(num_pixels)

    def encode(images):
        return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0 @ w

    return encode


# LogisticRegressionCV (10 Cs x 5 folds per factor) costs a minute even at toy sizes and samples like
# every array metric; the other downstream metric covers that sampling path.
_SLOW = {"downstream_logistic_regression"}
# On a stochastic dataset every sample is rendered (64x64x3 with noise): two metrics, fewer votes.
_NOISY = {"mig": SMALL["mig"],
          "factor_vae": {"num_train": 100, "num_eval": 50, "num_variance_estimate": 200, "batch_size": 8, **FAST}}


@pytest.mark.parametrize("dataset,preset", [("dummy", "challenge"), ("dummy", "full"), ("noisy_dsprites", "challenge")])
def test_plan_scores_equal_each_metric_run_alone(dataset, preset):
    """The encode-once plan gives every metric exactly what running it alone would."""
    from harness.evaluation import resolve_metrics, run_dataset
    from harness.evaluation.results import to_jsonable

    ds = datasets.load(dataset)
    names = [spec.name for spec, _ in resolve_metrics(preset) if spec.name not in _SLOW]
    if ds.stochastic:
        specs = resolve_metrics(preset, list(_NOISY), _NOISY)
    else:
        specs = resolve_metrics(preset, names, _small(names))
    if dataset == "dummy":
        make_encoder = numpy_encoder
    else:
        make_encoder = lambda: projection_encoder(int(np.prod(ds.observation_shape)))  # noqa: E731
    entry, _ = run_dataset(ds, specs, make_encoder(), seed=3, preset=preset, with_diagnostics=False)
    timing = entry["timing"]
    if ds.stochastic:
        assert timing["images_encoded"] == timing["images_requested"]  # every sample is its own
    else:
        assert timing["images_encoded"] <= ds.num_observations  # each grid point at most once
    for spec, params in specs:
        request = spec.sample(ds, seed=3, **params)
        alone = spec.score(request, make_encoder()(request.observations(ds)), seed=3, **params)
        _assert_same_values(entry["metrics"][spec.name], to_jsonable(alone))


CHALLENGE_SMALL = ["--param", "factor_vae.num_train=300", "--param", "factor_vae.num_eval=200",
                   "--param", "factor_vae.num_variance_estimate=500", "--param", "factor_vae.batch_size=16",
                   "--param", "dci.num_train=300", "--param", "dci.num_test=200",
                   "--param", "sap.num_train=300", "--param", "sap.num_test=200",
                   "--param", "mig.num_train=500", "--param", "irs.num_train=500"]


def _run_cli(*args, cwd=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "harness", "evaluate", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_evaluate_through_the_sandbox_writes_schema_valid_results(submission, tmp_path):
    """evaluate() end to end: process sandbox, real onnxruntime, results.json + report.html, cache."""
    from harness.evaluation import evaluate

    validator = _schema_validator()
    params = _small(["factor_vae", "dci", "sap", "mig", "irs"])
    cache = tmp_path / "cache"
    results = evaluate(submission, datasets=["dummy"], preset="challenge", metric_params=params, seed=0,
                       out=tmp_path / "out", cache=cache, progress=False)
    assert results["status"] == "ok", results["failure"]
    validator.validate(results)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    validator.validate(on_disk)
    assert on_disk == results
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
    ev = results["evaluations"][0]
    assert ev["dataset"]["name"] == "dummy" and ev["seed"] == 0 and ev["preset"] == "challenge"
    assert set(ev["metrics"]) == {"factor_vae", "dci", "sap", "mig", "irs"}
    assert results["submission"]["name"] == "tiny" and len(results["submission"]["sha256"]) == 64
    assert results["environment"]["sandbox"] and results["environment"]["device"] == "cpu"
    assert 0 < ev["timing"]["images_encoded"] <= 120

    # the sandboxed ONNX model gives the same scores as the same encoder in numpy, in-process
    from harness.evaluation import resolve_metrics, run_dataset

    local, _ = run_dataset(datasets.load("dummy"), resolve_metrics("challenge", None, params), numpy_encoder(),
                           seed=0, with_diagnostics=False)
    for name, values in local["metrics"].items():
        _assert_same_values(ev["metrics"][name], values)

    # a rerun with another seed finds every grid point in the cache
    again = evaluate(submission, datasets=["dummy"], preset="challenge", metric_params=params, seed=1,
                     cache=cache, progress=False)
    assert again["evaluations"][0]["timing"]["images_encoded"] == 0
    assert again["evaluations"][0]["timing"]["images_from_cache"] > 0


def test_evaluate_dataset_is_one_grading_job(submission, tmp_path):
    from harness.errors import SubmissionFailure
    from harness.evaluation import evaluate_dataset

    entry = evaluate_dataset(submission, "dummy", preset="challenge", metrics=["mig", "sap"],
                             metric_params=_small(["mig", "sap"]), seed=0, sandbox="process", device="cpu",
                             limits=None)
    _schema_validator().validate({"schema": "harness.results/1", "status": "ok", "failure": None,
                                  "submission": {"name": None, "format": None, "sha256": None},
                                  "evaluations": [entry],
                                  "environment": {"harness": "x", "python": "x", "numpy": "x", "scikit_learn": "x",
                                                  "torch": None, "onnxruntime": None, "device": None,
                                                  "sandbox": []}})
    assert list(entry["metrics"]) == ["mig", "sap"]
    bad = write_onnx_submission(tmp_path / "nan", name="nan", emit_nan=True)
    with pytest.raises(SubmissionFailure) as info:
        evaluate_dataset(bad, "dummy", preset="challenge", metrics=["mig"], metric_params=_small(["mig"]))
    assert info.value.kind == "bad_output"


def test_cli_scores_prints_the_table_and_writes_outputs(submission, tmp_path):
    out = tmp_path / "out"
    proc = _run_cli(submission, "--dataset", "dummy", "--out", out, *CHALLENGE_SMALL)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    _schema_validator().validate(results)
    lines = proc.stdout.splitlines()
    for name, key in [("factor_vae", "eval_accuracy"), ("dci", "disentanglement"), ("sap", "sap_score"),
                      ("mig", "discrete_mig"), ("irs", "irs")]:
        row = next(line for line in lines if line.split()[:2] == [name, key])
        value = results["evaluations"][0]["metrics"][name][key]
        assert f"{value:.3f}" in row and "[" in row  # value and its 95% interval
    assert str(out / "report.html") in proc.stdout
    assert "\r" not in proc.stderr  # no progress bars when stderr is not a terminal


def test_cli_default_out_is_a_new_folder_named_after_the_submission(submission, tmp_path):
    proc = _run_cli(submission, "--dataset", "dummy", "--metric", "mig", "--param", "mig.num_train=300",
                    "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)  # --json: stdout is exactly results.json
    written = next(line.split(":", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("results:"))
    # beside the submission (not in a git work tree), named after it, never reusing a folder
    assert Path(written).parent.parent == Path(submission).resolve().parent
    assert Path(written).parent.name.startswith("tiny-results")
    assert json.loads(Path(written).read_text()) == results
    assert list(results["evaluations"][0]["metrics"]) == ["mig"]


def test_cli_failing_submission_exits_nonzero_with_kind_and_message(tmp_path):
    bad = write_onnx_submission(tmp_path / "nan", name="nan", emit_nan=True)
    out = tmp_path / "out"
    proc = _run_cli(bad, "--dataset", "dummy", "--metric", "mig", "--param", "mig.num_train=300", "--out", out)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("failed: bad_output: output 'mean' holds")
    assert "Traceback" not in proc.stderr
    results = json.loads((out / "results.json").read_text())
    _schema_validator().validate(results)
    assert results["status"] == "failed" and results["failure"]["kind"] == "bad_output"
    assert "bad_output" in (out / "report.html").read_text()

    (tmp_path / "nan" / "submission.json").write_text("{not json")
    proc = _run_cli(tmp_path / "nan", "--dataset", "dummy", "--metric", "mig", "--out", tmp_path / "out2")
    assert proc.returncode == 1 and "failed: invalid_submission" in proc.stderr
    _schema_validator().validate(json.loads((tmp_path / "out2" / "results.json").read_text()))


@pytest.mark.parametrize("args,message", [
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--metric", "nope"], "unknown metric 'nope'"),
    (["--param", "mig.num_train"], "bad --param"),
    (["--metric", "mig", "--param", "sap.num_train=5"], "not being run"),
    (["--metric", "mig", "--param", "mig.bins=5"], "metric mig: unknown parameter(s) bins"),
    (["--metric", "factor_vae", "--param", "factor_vae.num_variance_estimate=1", "--dataset", "dummy"],
     "metric factor_vae: num_variance_estimate"),
])
def test_cli_bad_input_is_one_line_and_exit_2(submission, tmp_path, args, message):
    from click.testing import CliRunner

    from harness.cli import cli

    result = CliRunner().invoke(cli, ["evaluate", str(submission), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_cli_missing_submission_is_bad_input(tmp_path):
    proc = _run_cli(tmp_path / "missing", "--out", tmp_path / "o")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: submission not found: {str(tmp_path / 'missing')!r}"


def test_constant_encoder_is_scored_not_failed(tmp_path):
    """DESIGN 3.2: a constant code is not a failure. Every metric gives values, or null values with a
    note saying why (never a traceback, never a failed submission)."""
    from harness.evaluation import evaluate

    zero = (np.zeros((256, 4), np.float32), np.full(4, 0.5, np.float32))
    sub = write_onnx_submission(tmp_path / "const", name="const", weights=zero)
    names = ["factor_vae", "dci", "mig"]
    results = evaluate(sub, datasets=["dummy"], metrics=names, metric_params=_small(names), progress=False,
                       out=tmp_path / "out")
    assert results["status"] == "ok"
    _schema_validator().validate(results)
    ev = results["evaluations"][0]
    assert ev["metrics"]["factor_vae"]["num_active_dims"] == 0
    assert ev["metrics"]["mig"]["discrete_mig"] == 0.0
    for name in names:
        if any(v is None for v in ev["metrics"][name].values()):
            assert any(note.startswith(f"metric {name} could not be computed") for note in ev["notes"])


def test_default_out_dir_never_reuses_a_folder(tmp_path):
    from harness.evaluation import default_out_dir

    assert default_out_dir("subs/team-x.tar.gz", parent=tmp_path) == tmp_path / "team-x-results"
    (tmp_path / "team-x-results").mkdir()
    assert default_out_dir("subs/team-x/", parent=tmp_path) == tmp_path / "team-x-results-2"


def test_default_out_dir_is_beside_the_submission_unless_that_is_a_git_work_tree(tmp_path, monkeypatch):
    from harness.evaluation import default_out_dir

    outside = tmp_path / "plain" / "mine"
    outside.mkdir(parents=True)
    assert default_out_dir(outside) == tmp_path / "plain" / "mine-results"
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "subs" / "mine").mkdir(parents=True)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert default_out_dir(repo / "subs" / "mine") == Path("mine-results")  # the current directory


def test_a_failed_submissions_report_says_why_device_and_sandbox_are_empty(tmp_path):
    from harness.evaluation.report import render_report
    from harness.evaluation.results import new_results

    results = new_results({"name": "x", "format": "onnx", "sha256": None})
    results["status"] = "failed"
    results["failure"] = {"kind": "invalid_submission", "message": "bad manifest", "detail": None}
    results["environment"].update({"device": None, "sandbox": []})
    page = render_report(results)
    assert "None" not in page.split("<h2>Environment</h2>")[1]
    assert page.count("not reached: the submission failed before its model ran") == 2


def test_progress_off_a_terminal_is_a_plain_line_every_few_seconds():
    import io

    from harness.evaluation.evaluate import LineProgress, _auto_progress

    assert _auto_progress(None) == "lines"  # pytest's stderr is not a terminal
    assert _auto_progress(False) is None and _auto_progress(True) == "bar"
    out = io.StringIO()
    bar = LineProgress(1000, "encoding dsprites", "img", every=0.0, file=out)
    bar.set_postfix_str("mig")
    bar.update(250)
    bar.close()
    assert out.getvalue() == "encoding dsprites: 250/1,000 img (25%) [mig], 0 s\n"
    quiet = io.StringIO()
    bar = LineProgress(1000, "x", "img", every=3600.0, file=quiet)
    bar.update(999)
    assert quiet.getvalue() == "" and "\r" not in out.getvalue()
