"""Models as people export them (#18): input.range, input.layout and fixed batch sizes.

Each convention is checked with real exports of one torch network: exported the usual way
(float32 NCHW in [0, 1], dynamic batch) and exported the other way with the manifest declaring
it, the two must give the same codes and the same scores.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings

import numpy as np
import pytest

import hostile
from harness.errors import SubmissionFailure
from harness.sandbox import Limits, loaders, open_encoder, validate
from harness.sandbox.validation import range_findings, range_probe_images, relative_spread
from harness.submission import load, manifest_problems

torch = pytest.importorskip("torch")

SIDE = 16  # the dummy dataset's images: 16x16x1
LATENT = 4
MS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # torchvision's ImageNet statistics


class Net(torch.nn.Module):
    """A small conv encoder; biases shrunk so that, untrained, its code still varies with the image."""

    def __init__(self, channels=1):
        super().__init__()
        torch.manual_seed(4)
        self.c1 = torch.nn.Conv2d(channels, 8, 4, 2, 1)
        self.c2 = torch.nn.Conv2d(8, 8, 4, 2, 1)
        self.fc = torch.nn.Linear(8 * (SIDE // 4) ** 2, 16)
        self.out = torch.nn.Linear(16, LATENT)
        self.eval()

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.out(torch.relu(self.fc(h.flatten(1))))


class Expects(torch.nn.Module):
    """``net`` as trained on inputs in another convention: ``undo`` maps them back to [0, 1]
    (``x / 255``, ``(x + 1) / 2``, ``x * std + mean``), so the model expects that convention."""

    def __init__(self, net, undo, nhwc=False):
        super().__init__()
        self.net, self.undo, self.nhwc = net, undo, nhwc

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        return self.net(self.undo(x))


def _undo(kind):
    if kind == "255":
        return lambda x: x / 255.0
    if kind == "pm1":
        return lambda x: (x + 1.0) * 0.5
    if kind == "ms":
        mean = torch.tensor(MS["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(MS["std"]).view(1, 3, 1, 1)
        return lambda x: x * std + mean
    return lambda x: x


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def _write(folder, model_file, fmt, *, channels=1, **input_fields) -> str:
    m = hostile.manifest(format=fmt, model=model_file, latent_dim=LATENT,
                         input={"channels": channels, "height": SIDE, "width": SIDE, **input_fields})
    return hostile.write_manifest(folder, m)


def export_onnx(folder, module, *, channels=1, nhwc=False, dynamic=True, default_exporter=False, **input_fields):
    """``dynamic``: a batch axis named "batch"; ``default_exporter``: torch 2.13's plain
    ``torch.onnx.export(m, (x,), f)`` (dynamo, batch 1, external data next to the model)."""
    os.makedirs(folder, exist_ok=True)
    x = torch.rand(1, SIDE, SIDE, channels) if nhwc else torch.rand(1, channels, SIDE, SIDE)
    path = os.path.join(folder, "encoder.onnx")
    with _quiet():
        if default_exporter:
            torch.onnx.export(module, (x,), path)
        else:
            torch.onnx.export(module, (x,), path, dynamo=False, input_names=["x"], output_names=["mean"],
                              dynamic_axes={"x": {0: "batch"}} if dynamic else None)
    return _write(folder, "encoder.onnx", "onnx", channels=channels,
                  **({"layout": "NHWC"} if nhwc else {}), **input_fields)


def export_pt2(folder, module, *, channels=1, example_batch=2, batch_dim=None, **input_fields):
    """``batch_dim``: None exports statically (the example's batch is baked in), else a Dim."""
    os.makedirs(folder, exist_ok=True)
    x = torch.rand(example_batch, channels, SIDE, SIDE)
    with _quiet():
        ep = torch.export.export(module, (x,), dynamic_shapes={"x": {0: batch_dim}} if batch_dim is not None else None)
    torch.export.save(ep, os.path.join(folder, "encoder.pt2"))
    return _write(folder, "encoder.pt2", "torch_export", channels=channels, **input_fields)


def images(n=37, channels=1, seed=3):
    return hostile.images(n, channels=channels, side=SIDE, seed=seed)


def codes_of(folder, x, **kw):
    with open_encoder(load(folder), **kw) as enc:
        return enc.encode(x), enc


def reference(x, channels=1):
    t = torch.from_numpy(x.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    if channels == 3 and t.shape[1] == 1:
        t = t.repeat(1, 3, 1, 1)
    with torch.no_grad():
        return Net(channels)(t).numpy()


@pytest.fixture(scope="module")
def usual(tmp_path_factory):
    """The network exported the usual way: ONNX, [0, 1], NCHW, dynamic batch."""
    return export_onnx(tmp_path_factory.mktemp("usual") / "s", Net())


def _scores(folder):
    from harness.evaluation import evaluate_dataset

    small = {"mig": {"num_train": 120}, "sap": {"num_train": 100, "num_test": 60}}
    entry = evaluate_dataset(folder, "dummy", metrics=["mig", "sap"], metric_params=small, seed=0,
                             sandbox="process", device="cpu")
    return entry["metrics"]


def _assert_same_scores(a, b):
    assert a.keys() == b.keys()
    for name in a:
        for key, value in a[name].items():
            if isinstance(value, float):
                assert value == pytest.approx(b[name][key], abs=1e-6), (name, key)


# --- the manifest ---------------------------------------------------------------------------------

def _with_input(**fields):
    m = hostile.manifest()
    m["input"] = {**m["input"], **fields}
    return m


@pytest.mark.parametrize("value", [[0, 1], [0.0, 1.0], [-1, 1], [0, 255], {"mean": [0.5], "std": [0.5]}])
def test_manifest_accepts_each_range(value):
    assert manifest_problems(_with_input(range=value)) == []


@pytest.mark.parametrize("value,words", [
    ([0, 2], "must be [0, 1], [-1, 1], [0, 255] or {"),
    ("0-255", "must be [0, 1]"),
    (True, "'input.range' is true"),
    ([True, 1], "'input.range' is [true, 1]"),
    ({"mean": [0.5], "std": [0]}, "'input.range.std[0]' is 0; must be between 0.001"),
    ({"mean": [0.5], "std": [-1]}, "'input.range.std[0]' is -1"),
    ({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, "has 3 value(s); the model has 1 channel(s)"),
    ({"mean": [123.675], "std": [58.395]}, "divide 0-255 statistics by 255"),
    ({"mean": ["0.5"], "std": [0.5]}, "'input.range.mean[0]' is \"0.5\"; must be a finite number"),
    ({"mean": [float("nan")], "std": [0.5]}, "must be a finite number"),
    ({"mean": [0.5]}, "missing 'std'"),
    ({"mean": [0.5], "std": [0.5], "scale": 255}, "unknown field(s) 'scale'"),
    ({"mean": [0.5] * 100_000, "std": [0.5]}, "must be a list of 1 or 3 numbers"),
    ({"mean": 0.5, "std": 0.5}, "must be a list of 1 or 3 numbers"),
])
def test_manifest_refuses_bad_ranges_in_one_message_naming_the_field(value, words):
    problems = manifest_problems(_with_input(range=value))
    assert len(problems) == 1 and words in problems[0], problems
    assert len(problems[0]) <= 300 and "\n" not in problems[0]


def test_manifest_layout_and_defaults(tmp_path):
    assert manifest_problems(_with_input(layout="NHWC")) == []
    assert manifest_problems(_with_input(layout="nhwc")) == ["'input.layout' is \"nhwc\"; must be \"NCHW\" or \"NHWC\""]
    sub = load(hostile.good_onnx(tmp_path / "s"))
    assert sub.input_range == [0, 1] and sub.input_layout == "NCHW"
    assert sub.manifest["input"]["range"] == [0, 1] and sub.manifest["input"]["layout"] == "NCHW"
    hostile.write_manifest(tmp_path / "s", _with_input(range=[0.0, 255.0], layout="NHWC"))
    sub = load(tmp_path / "s")
    assert sub.input_range == [0, 255] and sub.summary()["input_layout"] == "NHWC"


def test_manifest_range_over_the_wire_is_bounded(tmp_path):
    folder = hostile.good_onnx(tmp_path / "s")
    m = _with_input(range={"mean": [1e300], "std": [1e-300]})
    hostile.write_manifest(folder, m)
    with pytest.raises(SubmissionFailure) as info:
        load(folder)
    assert info.value.kind == "invalid_submission" and "'input.range.mean[0]'" in info.value.message


# --- the conversion in the child --------------------------------------------------------------------

def test_prepare_batch_applies_each_convention_exactly():
    u8 = np.arange(2 * 1 * 2 * 3, dtype=np.uint8).reshape(2, 1, 2, 3) * 10
    x01 = u8.astype(np.float32) / np.float32(255)
    prep = loaders.prepare_batch
    np.testing.assert_array_equal(prep(u8, channels=1), x01)
    np.testing.assert_array_equal(prep(u8, channels=1, input_range=[0, 255]), u8.astype(np.float32))
    np.testing.assert_allclose(prep(u8, channels=1, input_range=[-1, 1]), 2 * x01 - 1, atol=1e-7)
    ms = loaders.check_range({"mean": [0.25, 0.5, 0.75], "std": [0.5, 0.25, 2.0]}, 3)
    got = prep(u8, channels=3, input_range=ms)  # tiled to 3 channels, then each channel its own
    assert got.shape == (2, 3, 2, 3) and got.dtype == np.float32
    for c, (m, s) in enumerate(zip([0.25, 0.5, 0.75], [0.5, 0.25, 2.0])):
        np.testing.assert_allclose(got[:, c], (x01[:, 0] - m) / s, rtol=1e-6)
    nhwc = np.ascontiguousarray(u8.transpose(0, 2, 3, 1))
    got = prep(nhwc, channels=3, layout="NHWC", input_range=ms)
    assert got.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(got[..., 2], (x01[:, 0] - 0.75) / 2.0, rtol=1e-6)
    for bad in ([0, 2], {"mean": [0.5], "std": [0.0]}, {"mean": [0.5, 0.5], "std": [1, 1]}, "x"):
        with pytest.raises(ValueError):
            loaders.check_range(bad, 1)


def test_in_batches_feeds_exactly_the_accepted_sizes_and_drops_the_padding():
    seen = []

    def forward(x):
        seen.append(x.shape[0])
        return [x.reshape(len(x), -1)[:, :2] * 1.0]

    x = np.arange(7 * 4, dtype=np.float32).reshape(7, 4)
    out = loaders.in_batches(forward, 3, 3)(x)
    assert seen == [3, 3, 3]
    np.testing.assert_array_equal(out[0], x[:, :2])
    seen.clear()
    out = loaders.in_batches(forward, 4, 16)(x[:2])  # at least 4: padded by repeating rows
    assert seen == [4]
    np.testing.assert_array_equal(out[0], x[:2, :2])
    assert loaders.in_batches(forward, 1, None) is forward


# --- point 1: input.range -----------------------------------------------------------------------

@pytest.mark.parametrize("kind,declared", [("255", [0, 255]), ("pm1", [-1, 1])])
def test_declared_range_gives_the_codes_of_the_usual_export(tmp_path, usual, kind, declared):
    folder = export_onnx(tmp_path / kind, Expects(Net(), _undo(kind)), range=declared)
    x = images()
    got, _ = codes_of(folder, x)
    want, _ = codes_of(usual, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(want, reference(x), rtol=1e-5, atol=1e-5)


def test_mean_std_range_on_a_3_channel_model_fed_1_channel_images(tmp_path):
    usual3 = export_onnx(tmp_path / "u3", Net(3), channels=3)
    folder = export_onnx(tmp_path / "ms", Expects(Net(3), _undo("ms")), channels=3, range=MS)
    x = images(9)  # 1-channel images, tiled to 3 before the per-channel normalization
    got, enc = codes_of(folder, x)
    want, _ = codes_of(usual3, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(want, reference(x, channels=3), rtol=1e-5, atol=1e-5)


def test_declared_0_255_pt2_scores_equal_the_usual_export(tmp_path, usual):
    folder = export_pt2(tmp_path / "p", Expects(Net(), _undo("255")), batch_dim=torch.export.Dim("batch"),
                        range=[0, 255])
    _assert_same_scores(_scores(folder), _scores(usual))


def test_validate_warns_when_the_range_was_not_declared(tmp_path, usual):
    undeclared = export_onnx(tmp_path / "u", Expects(Net(), _undo("255")))  # expects [0, 255], says nothing
    report = validate(undeclared)
    assert report["ok"], report["verdict"]
    assert len(report["warnings"]) == 1, report["range_check"]
    warning = report["warnings"][0]
    assert 'declare "range": [0, 255]' in warning and warning in report["notes"]
    assert report["range_check"]["relative_spread"]["[0, 1]"] < 0.005
    declared = export_onnx(tmp_path / "d", Expects(Net(), _undo("255")), range=[0, 255])
    for folder in (declared, usual):  # declared right, or the usual export: no warning
        report = validate(folder)
        assert report["ok"] and report["warnings"] == [], report["warnings"]
        assert report["submission"]["input_range"] in ([0, 1], [0, 255])


def test_range_findings_rules():
    rng = np.random.default_rng(0)
    varied = rng.standard_normal((64, 4)) + 0.3
    flat = 1.0 + 1e-4 * rng.standard_normal((64, 4))
    warnings_, notes, stats = range_findings({"[0, 1]": flat, "[0, 255]": varied, "[-1, 1]": flat * 1.0001},
                                             "[0, 1]")
    assert len(warnings_) == 1 and 'declare "range": [0, 255]' in warnings_[0] and not notes
    # a linear model: the same relative spread in every convention, no warning
    w, _, _ = range_findings({"[0, 1]": varied, "[0, 255]": 255 * varied, "[-1, 1]": 2 * varied - 1}, "[0, 1]")
    assert w == []
    # a model that normalizes its own input: a note, no warning
    w, notes, _ = range_findings({"[0, 1]": varied, "[0, 255]": varied + 1e-6, "[-1, 1]": varied}, "[0, 1]")
    assert w == [] and len(notes) == 1 and "normalize its input itself" in notes[0]
    # a constant code stays constant everywhere: nothing to say
    const = np.ones((64, 4))
    assert range_findings({"[0, 1]": const, "[0, 255]": const, "[-1, 1]": const}, "[0, 1]")[:2] == ([], [])
    assert relative_spread(const) == 0.0
    probes = range_probe_images(8, (3, 5, 7), seed=0)
    assert probes.shape == (8, 5, 7, 3) and probes.dtype == np.uint8
    np.testing.assert_array_equal(probes, range_probe_images(8, (3, 5, 7), seed=0))


# --- point 2: input.layout ------------------------------------------------------------------------

def test_nhwc_model_declared_nhwc_gives_the_codes_of_the_nchw_export(tmp_path, usual):
    folder = export_onnx(tmp_path / "nhwc", Expects(Net(), _undo("01"), nhwc=True), nhwc=True)
    x = images(40)
    got, _ = codes_of(folder, x, limits=Limits(batch_size=16))
    want, _ = codes_of(usual, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    _assert_same_scores(_scores(folder), _scores(usual))


def test_layout_mismatch_says_which_layout_to_declare(tmp_path, usual):
    nhwc = export_onnx(tmp_path / "nhwc", Expects(Net(), _undo("01"), nhwc=True), nhwc=True)
    hostile.write_manifest(nhwc, json.loads(open(os.path.join(usual, "submission.json")).read()))  # says NCHW
    report = validate(nhwc)
    assert not report["ok"] and report["failure"]["kind"] == "invalid_submission"
    message = report["failure"]["message"]
    assert "looks NHWC ([N, 16, 16, 1])" in message
    assert 'declare "layout": "NHWC" in submission.json\'s input' in message
    m = json.loads(open(os.path.join(usual, "submission.json")).read())
    m["input"]["layout"] = "NHWC"
    hostile.write_manifest(tmp_path / "u2", m)
    for name in ("encoder.onnx",):
        with open(os.path.join(usual, name), "rb") as src, open(tmp_path / "u2" / name, "wb") as dst:
            dst.write(src.read())
    report = validate(tmp_path / "u2")
    assert report["failure"]["kind"] == "invalid_submission"
    assert 'looks NCHW ([N, 1, 16, 16]) but submission.json declares NHWC: declare "layout": "NCHW"' in \
        report["failure"]["message"]


def test_pt2_static_shape_mismatch_is_one_line(tmp_path):
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :LATENT]

    folder = export_pt2(tmp_path / "p", Flat(), example_batch=3)
    m = json.loads(open(os.path.join(folder, "submission.json")).read())
    m["input"]["height"] = SIDE * 2
    hostile.write_manifest(folder, m)
    report = validate(folder)
    f = report["failure"]
    assert f["kind"] == "invalid_submission" and "the .pt2 program's input has height=16" in f["message"]
    assert "Traceback" not in json.dumps(report) and "Guard failed" not in json.dumps(report)


# --- point 3: fixed batch sizes ------------------------------------------------------------------

def test_default_onnx_export_has_batch_1_and_scores_equal_the_dynamic_export(tmp_path, usual):
    folder = export_onnx(tmp_path / "b1", Net(), default_exporter=True)
    assert os.path.exists(os.path.join(folder, "encoder.onnx.data"))  # torch 2.13 writes external data
    x = images(11)
    got, enc = codes_of(folder, x)
    assert enc.fixed_batch == 1 and any("fixed batch size of 1" in n for n in enc.notes)
    want, _ = codes_of(usual, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    report = validate(folder)
    assert report["ok"] and report["fixed_batch"] == 1, report["verdict"]


@pytest.mark.slow
def test_static_pt2_scores_equal_and_results_record_the_fixed_batch(tmp_path, usual):
    import jsonschema

    from harness.evaluation import evaluate

    folder = export_pt2(tmp_path / "static", Net(), example_batch=5)
    x = images(23)  # 4 calls of 5, the last padded by 2 repeated images
    got, enc = codes_of(folder, x, limits=Limits(batch_size=12))
    assert enc.fixed_batch == 5 and enc.batch_window == (5, 5)
    want, _ = codes_of(usual, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    small = {"mig": {"num_train": 120}, "sap": {"num_train": 100, "num_test": 60}}
    results = evaluate(folder, datasets=["dummy"], metrics=["mig", "sap"], metric_params=small, sandbox="process",
                       device="cpu", out=tmp_path / "out", progress=False)
    assert results["status"] == "ok", results["failure"]
    sub = results["submission"]
    assert sub["fixed_batch"] == 5 and sub["input_range"] == [0, 1] and sub["input_layout"] == "NCHW"
    notes = results["evaluations"][0]["notes"]
    assert any("fixed batch size 5:" in n and "images/s" in n for n in notes), notes
    schema = json.loads(open(os.path.join(os.path.dirname(__file__), "..", "docs", "results.schema.json")).read())
    jsonschema.Draft202012Validator(schema).validate(results)
    html = (tmp_path / "out" / "report.html").read_text()
    assert "model input: values [0, 1] &middot; NCHW batches &middot; fixed batch size 5" in html
    assert "images/s" in html
    usual_results = evaluate(usual, datasets=["dummy"], metrics=["mig", "sap"], metric_params=small,
                             sandbox="process", device="cpu", progress=False)
    assert usual_results["submission"]["fixed_batch"] is None
    _assert_same_scores(results["evaluations"][0]["metrics"], usual_results["evaluations"][0]["metrics"])


def test_pt2_with_a_bounded_batch_range_is_fed_within_it(tmp_path, usual):
    folder = export_pt2(tmp_path / "r", Net(), example_batch=5, batch_dim=torch.export.Dim("batch", min=4, max=6))
    x = images(13)
    got, enc = codes_of(folder, x, limits=Limits(batch_size=100))
    assert enc.batch_window == (4, 6) and enc.fixed_batch is None
    want, _ = codes_of(usual, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(codes_of(folder, x[:1])[0], want[:1], rtol=1e-5, atol=1e-5)  # padded to 4


def test_fixed_batch_that_cannot_be_chunked_is_refused_with_the_export_call(tmp_path):
    folder = hostile.good_onnx(tmp_path / "big", batch=loaders.MAX_FIXED_BATCH + 1)
    report = validate(folder)
    f = report["failure"]
    assert f["kind"] == "invalid_submission" and "fixed batch size of 4097" in f["message"]
    assert 'dynamic_axes={"x": {0: "batch"}}' in f["message"] and "\n" not in f["message"]


def test_pt2_runtime_shape_guard_is_one_line_without_torch_text(tmp_path):
    folder = export_pt2(tmp_path / "g", Net(), example_batch=2)
    # as a child that could not read the batch size would run it: the guard fires at the first call
    forward, info = loaders.load_torch(os.path.join(folder, "encoder.pt2"), fmt="torch_export", threads=1,
                                       device="cpu", num_outputs=1)
    assert info["batch"] == [1, None]
    with pytest.raises(SubmissionFailure) as exc:
        forward(np.zeros((3, 1, SIDE, SIDE), np.float32))
    assert exc.value.kind == "invalid_submission" and exc.value.detail is None
    assert "torch.export.export(model, (x,), dynamic_shapes=" in exc.value.message
    assert "Guard" not in exc.value.message and "\n" not in exc.value.message
