"""report.html: valid HTML, self-contained, every embedded image decodes; the text table."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from harness import datasets
from harness.evaluation import resolve_metrics, run_dataset
from harness.evaluation.report import render_report, text_table
from harness.evaluation.results import environment, new_results
from helpers_evaluation import SMALL, numpy_encoder

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class StrictParser(HTMLParser):
    """html.parser is lenient: track open elements so a missing or crossed end tag fails the test."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.images, self.external, self.alts = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
            self.alts.append(attrs.get("alt", ""))
        for key in ("src", "href"):
            value = attrs.get(key)
            if value and not value.startswith(("data:", "#")):
                self.external.append(value)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _decode_all(images):
    decoded = []
    for src in images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        img.load()
        decoded.append(img)
    return decoded


@pytest.fixture(scope="module")
def scored():
    ds = datasets.load("dummy")
    specs = resolve_metrics("challenge", None, {k: v for k, v in SMALL.items() if k in
                                                 ("factor_vae", "dci", "sap", "mig", "irs")})
    entry, arrays = run_dataset(ds, specs, numpy_encoder(), seed=0, preset="challenge")
    results = new_results({"name": "tiny <b>", "format": "onnx", "sha256": "0" * 64})
    results["evaluations"].append(entry)
    results["environment"] = environment(device="cpu", sandbox_layers=["none"])
    headline = {spec.name: list(spec.headline) for spec, _ in specs}
    return results, arrays, headline


def test_report_is_valid_self_contained_html_whose_images_decode(scored):
    results, arrays, headline = scored
    page = render_report(results, [arrays], headline=headline)
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert parser.external == []  # self-contained: nothing fetched
    images = _decode_all(parser.images)
    assert len(images) == 5  # MI heatmap, Hinton diagram, response curves, dimension traversal, montage
    assert all(img.size[0] > 100 and img.size[1] > 50 for img in images)
    assert "tiny &lt;b&gt;" in page  # names are escaped
    for name in headline:
        assert f"<td>{name}</td>" in page
    # the FactorVAE per-factor accuracies are named by factor, not printed as a raw list
    per_factor = results["evaluations"][0]["metrics"]["factor_vae"]["eval_accuracy_per_factor"]
    first = results["evaluations"][0]["dataset"]["factor_names"][0]
    assert f"{first} {per_factor[0]:.3f}" in page and str(per_factor) not in page


def test_failed_report_shows_the_failure(scored):
    results, _, _ = scored
    failed = dict(results, status="failed", evaluations=[],
                  failure={"kind": "bad_output", "message": "output 'mean' holds 3 NaN", "detail": None})
    page = render_report(failed)
    parser = StrictParser()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    assert "bad_output" in page and "holds 3 NaN" in page


def test_text_table_lists_every_headline_value_with_its_interval(scored):
    results, _, headline = scored
    text = text_table(results, headline)
    for name, keys in headline.items():
        for key in keys:
            line = next(l for l in text.splitlines() if l.split()[:2] == [name, key])
            value = results["evaluations"][0]["metrics"][name][key]
            assert f"{value:.3f}" in line
            if results["evaluations"][0]["metrics"][name].get(key + "_ci95"):
                assert "[" in line


def test_figures_follow_the_codes():
    """The MI heatmap's data: a code that copies a factor carries that factor's information, a
    constant code none."""
    from harness.evaluation import diagnostics

    rng = np.random.default_rng(0)
    factors = rng.integers(0, 5, size=(2000, 2))
    codes = np.stack([factors[:, 0] + 0.01 * rng.random(2000), np.zeros(2000)], axis=1)
    mi = diagnostics.mutual_info_matrix(codes, factors)
    h = diagnostics.factor_entropies(factors)
    assert mi[0, 0] == pytest.approx(h[0], rel=1e-9)
    assert mi[0, 1] < 0.02 and mi[1].max() == 0.0
    curves = diagnostics.response_curves(codes, factors, [5, 5])
    np.testing.assert_allclose(curves[0][:, 0], np.arange(5), atol=0.01)


def _nested(value):
    return np.array([[np.nan if v is None else v for v in row] for row in value], dtype=float)


def test_hinton_draws_the_dci_metrics_own_importance_matrix(scored):
    """#18: the diagram is the metric's matrix (no separate forest), square area proportional to it."""
    from harness.evaluation.report import figure_sources, hinton_figure

    results, arrays, _ = scored
    evaluation = results["evaluations"][0]
    assert "importance" not in arrays  # the report no longer fits its own model
    R = _nested(evaluation["metrics"]["dci"]["importance_matrix"])
    src = figure_sources(evaluation, arrays)
    np.testing.assert_array_equal(src["importance"], R)
    fig = hinton_figure(src["importance"], evaluation["dataset"]["factor_names"])
    drawn = np.zeros_like(R)
    for patch in fig.axes[0].patches:
        x, y = patch.get_xy()
        side = patch.get_width()
        drawn[int(round(y + side / 2)), int(round(x + side / 2))] = (side / 0.92) ** 2 * R.max()
    np.testing.assert_allclose(drawn, R, atol=1e-12)
    page = render_report(results, [arrays])
    assert "dci.importance_matrix" in page and "random forest" not in page
    # from results.json alone (the service's report page): both matrices are still drawn
    parser = StrictParser()
    parser.feed(render_report(results))
    assert [alt for alt in parser.alts] == ["mutual information heatmap", "importance Hinton diagram"]


def test_mi_heatmap_is_migs_own_matrix_else_estimated_and_says_which(scored):
    from harness.evaluation.report import figure_sources

    results, arrays, _ = scored
    evaluation = results["evaluations"][0]
    mig = evaluation["metrics"]["mig"]
    src = figure_sources(evaluation, arrays)
    assert src["mi_source"] == "mig" and "mi" not in arrays  # nothing recomputed when MIG ran
    np.testing.assert_array_equal(src["mi"], _nested(mig["mutual_info_matrix"]))
    np.testing.assert_array_equal(src["entropies"], np.asarray(mig["entropy_per_factor"], dtype=float))
    assert "mig.mutual_info_matrix" in render_report(results, [arrays])

    # MIG not run: the report estimates the matrix itself, and the caption says so
    ds = datasets.load("dummy")
    specs = resolve_metrics(None, ["irs"], {"irs": SMALL["irs"]})
    entry, arrays2 = run_dataset(ds, specs, numpy_encoder(), seed=0)
    assert arrays2["mi"].shape == (4, 3)
    src = figure_sources(entry, arrays2)
    assert src["mi_source"] == "diagnostics" and src["importance"] is None
    other = dict(results, evaluations=[entry])
    page = render_report(other, [arrays2])
    assert "MIG did not run" in page and "importance Hinton diagram" not in page


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_mi_colour_scale_is_fixed_to_0_1_whatever_the_codes(scale):
    """#18: two reports compare by eye: MI / H(factor) on [0, 1], whatever the codes' information."""
    from harness.evaluation import diagnostics
    from harness.evaluation.report import mi_figure

    rng = np.random.default_rng(1)
    factors = rng.integers(0, 6, size=(3000, 2))
    # a noisy copy of factor a and pure noise: the largest normalized MI is well below 1 here
    codes = np.stack([factors[:, 0] + 3 * rng.standard_normal(3000), rng.standard_normal(3000)], axis=1) * scale
    mi, h = diagnostics.mutual_info_matrix(codes, factors), diagnostics.factor_entropies(factors)
    fig = mi_figure(mi, ["a", "b"], h)
    image = fig.axes[0].images[0]
    assert (mi / h[None, :]).max() < 0.5
    assert image.get_clim() == (0.0, 1.0)
    np.testing.assert_allclose(image.get_array(), np.clip(mi / h[None, :], 0, 1))
    colorbar = fig.axes[1]
    assert "MI / H(factor)" in colorbar.get_ylabel()


def _row(page: str, name: str, key: str) -> str:
    start = page.index(f"<tr><td>{name}</td><td><code>{key}</code></td>")
    return page[start:page.index("</tr>", start)]


def test_intervals_say_what_they_resample(scored):
    """#18: a bootstrap over each metric's samples (which ones, per docs/metrics.md), and DCI's
    disentanglement/completeness a stability band over boosting rounds, not a sampling interval."""
    from harness.evaluation.report import interval_over

    results, arrays, headline = scored
    page = render_report(results, [arrays], headline=headline)
    assert "seed-to-seed" not in page
    assert "95% bootstrap interval" in page and "20 replicates" in page  # SMALL's n_bootstrap
    assert "eval votes" in _row(page, "factor_vae", "eval_accuracy")
    assert "test samples" in _row(page, "sap", "sap_score")
    assert "joint histogram" in _row(page, "mig", "discrete_mig")
    dci = _row(page, "dci", "disentanglement")
    assert "boosting rounds" in dci and "not a sampling interval" in dci
    assert "stability band" in page.split("every value")[0]  # the caption under the headline table
    assert interval_over("dci", "informativeness_test") == "test samples (models fixed)"
    assert interval_over("downstream_boosted_trees", "100:mean_test_accuracy") == "test samples (models fixed)"
    # without DCI in the headline the caption does not mention a stability band
    no_dci = {k: v for k, v in headline.items() if k != "dci"}
    evaluation = dict(results["evaluations"][0])
    evaluation["metrics"] = {k: v for k, v in evaluation["metrics"].items() if k != "dci"}
    page = render_report(dict(results, evaluations=[evaluation]), [arrays], headline=no_dci)
    assert "stability band" not in page


def _with(evaluation: dict, **changes) -> dict:
    import copy

    out = copy.deepcopy(evaluation)
    for path, value in changes.items():
        *head, last = path.split("__")
        node = out
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def test_factor_vae_note_appears_exactly_when_no_dimension_is_active():
    """#18: eval_accuracy 0 with num_active_dims 0 is explained, with the largest std seen and a rescale."""
    from harness.evaluation.report import score_notes

    ds = datasets.load("dummy")
    specs = resolve_metrics(None, ["factor_vae"], {"factor_vae": SMALL["factor_vae"]})
    base = numpy_encoder()
    for scale, expect in ((1.0, False), (0.1, True)):  # the largest std: 0.32, then 0.032
        def encode(images, scale=scale):
            return base(images) * scale

        entry, arrays = run_dataset(ds, specs, encode, seed=0)
        fv = entry["metrics"]["factor_vae"]
        assert (fv["num_active_dims"] == 0) is expect
        notes = [n for n in score_notes(entry, arrays) if "FactorVAE" in n]
        assert bool(notes) is expect
        if expect:
            assert fv["eval_accuracy"] == 0.0
            std = arrays["factor_vae_std"]
            assert std.max() < 0.05
            assert f"{std.max():.3g} (z{int(np.argmax(std))})" in notes[0]
            assert "absolute" in notes[0] and "multiplying the codes by 10 " in notes[0]
            page = render_report(dict(new_results({"name": "x", "format": "onnx", "sha256": "0" * 64}),
                                      evaluations=[entry], environment={}), [arrays])
            assert "no code dimension counts as active" in page
            # without the report arrays the note still says what to do
            assert "rescaling the codes" in [n for n in score_notes(entry, None) if "FactorVAE" in n][0]


def test_sap_and_mig_ceiling_notes_appear_exactly_when_they_apply(scored):
    from harness.evaluation.report import score_notes

    results, arrays, _ = scored
    evaluation = results["evaluations"][0]  # dummy: factor sizes 4, 5, 6; discrete SAP; MIG with 20 bins
    notes = score_notes(evaluation, arrays)
    assert any("0.19 on dSprites" in n for n in notes)
    assert not any("MIG cannot reach 1" in n for n in notes)  # every factor has <= 20 values
    assert not any("FactorVAE" in n for n in notes)
    # continuous SAP, or no SAP: no SAP note
    assert not any("SAP" in n for n in score_notes(_with(evaluation, params__sap__continuous_factors=True)))
    no_sap = _with(evaluation)
    del no_sap["metrics"]["sap"]
    assert not any("SAP" in n for n in score_notes(no_sap))
    # fewer bins than a factor has values: the ceiling from the run's num_bins and the factor sizes
    notes = score_notes(_with(evaluation, params__mig__num_bins=4))
    mig = next(n for n in notes if "MIG cannot reach 1" in n)
    assert f"b (5 values) {np.log(4) / np.log(5):.3f}" in mig and f"c (6 values) {np.log(4) / np.log(6):.3f}" in mig
    assert "a (4 values)" not in mig
    assert f"at most {np.mean([1, np.log(4) / np.log(5), np.log(4) / np.log(6)]):.3f}" in mig
    # dSprites' sizes with the study's 20 bins: 0.864 for the 32-valued positions
    dsprites = _with(evaluation, dataset__factor_names=["shape", "scale", "orientation", "posX", "posY"],
                     dataset__factor_sizes=[3, 6, 40, 32, 32])
    mig = next(n for n in score_notes(dsprites) if "MIG cannot reach 1" in n)
    assert "posX (32 values) 0.864" in mig and "orientation (40 values) 0.812" in mig
    # MIG's value null (it could not be computed): no ceiling note
    assert not any("MIG" in n for n in score_notes(_with(dsprites, metrics__mig__discrete_mig=None)))


def _dsprites_evaluation(**params):
    specs = resolve_metrics("challenge", ["factor_vae", "mig", "dci"])
    ran = {spec.name: dict(p, **params.get(spec.name, {})) for spec, p in specs}
    return {"dataset": {"name": "dsprites", "factor_names": ["shape", "scale", "orientation", "posX", "posY"],
                        "factor_sizes": [3, 6, 40, 32, 32]},
            "seed": 0, "params": ran,
            "metrics": {"factor_vae": {"eval_accuracy": 0.41, "num_active_dims": 6}, "mig": {"discrete_mig": 0.07},
                        "dci": {"disentanglement": 0.2}}}


PROCEDURAL = {"dataset_class": "harness.datasets.dsprites.DSprites"}


def test_reference_rows_are_the_recorded_scores_and_only_where_they_compare():
    """#18: the reference values are read from submissions/example/scores.json (score.py's record),
    shown only for procedural dSprites, seed 0, at the study sizes (n_bootstrap/n_jobs aside)."""
    import json

    from harness.evaluation.report import REFERENCE_SCORES, reference_table

    record = json.loads(REFERENCE_SCORES.read_text())
    ref = reference_table(_dsprites_evaluation(factor_vae={"n_jobs": 1}, mig={"n_bootstrap": 20}), PROCEDURAL)
    assert ref["why"] is None
    assert [(name, key) for name, key, _, _ in ref["rows"]] == list(record["metrics"].items())
    for name, key, value, recorded in ref["rows"]:
        assert set(recorded) == set(record["results"])
        for label, (v, ci) in recorded.items():
            assert v == record["results"][label][f"{name}.{key}"]
            assert ci == record["results"][label].get(f"{name}.{key}_ci95")
    page = render_report(dict(new_results({"name": "x", "format": "onnx", "sha256": "0" * 64}),
                              evaluations=[dict(_dsprites_evaluation(), timing={"encode_s": 1, "metrics_s": {},
                                                                                "total_s": 1, "images_encoded": 1})],
                              environment={}), [PROCEDURAL])
    example = record["results"]["example (encoder.onnx)"]
    assert f"{example['mig.discrete_mig']:.3f}" in page and "scores.json" in page and "not computed in this run" in page

    # not comparable: other sizes, another seed, another dataset (or a dSprites file), no record
    for evaluation, diag, why in ((_dsprites_evaluation(factor_vae={"num_train": 500}, mig={"num_bins": 10}),
                                   PROCEDURAL, "changed factor_vae, mig"),
                                  (dict(_dsprites_evaluation(), seed=1), PROCEDURAL, "seed 0"),
                                  (_dsprites_evaluation(), {"dataset_class": "harness.datasets.files.NpzDataset"},
                                   "procedural dSprites"),
                                  (_dsprites_evaluation(), None, "results.json alone")):
        ref = reference_table(evaluation, diag)
        assert ref["rows"] == [] and why in ref["why"]
    ref = reference_table(_dsprites_evaluation(factor_vae={"num_train": 500}), PROCEDURAL)
    assert [name for name, *_ in ref["rows"]] == ["mig"]  # the metric at study sizes still compares
    assert ref["mismatched"] == ["factor_vae"]
    assert reference_table(_dsprites_evaluation(), PROCEDURAL, path="/nonexistent/scores.json") is None


def test_report_arrays_name_the_dataset_class(scored):
    _, arrays, _ = scored
    ds = datasets.load("dummy")
    assert arrays["dataset_class"] == f"{type(ds).__module__}.{type(ds).__qualname__}"
    assert arrays["dataset_class"] != PROCEDURAL["dataset_class"]
    dsprites = datasets.load("dsprites")  # the class the recorded reference was scored on
    assert f"{type(dsprites).__module__}.{type(dsprites).__qualname__}" == PROCEDURAL["dataset_class"]


def test_dimension_traversal_has_one_row_per_capped_dimension_of_real_images():
    """#18: per code dimension, the encoded observations at its 5th..95th percentiles, rendered by index;
    at most 16 dimensions (the largest variance), one figure row each."""
    from harness.evaluation.evaluate import TRAVERSAL_MAX_DIMS, TRAVERSAL_PERCENTILES, dimension_traversal
    from harness.evaluation.report import dim_traversal_figure

    ds = datasets.load("dummy")
    rng = np.random.default_rng(0)
    indices = np.sort(rng.choice(120, size=100, replace=False))
    scale = np.arange(1, 21, dtype=float)[::-1].copy()
    scale[[3, 17]] = [100.0, 50.0]  # z3 and z17 vary most; z16..z19 least (but z17)
    codes = rng.standard_normal((100, 20)) * scale
    t = dimension_traversal(ds, codes, indices, seed=0)
    expected = np.sort(np.argsort(-codes.std(axis=0))[:TRAVERSAL_MAX_DIMS])
    np.testing.assert_array_equal(t["dims"], expected)
    assert 17 in t["dims"] and 19 not in t["dims"] and t["num_dims"] == 20
    assert t["images"].shape == (TRAVERSAL_MAX_DIMS, len(TRAVERSAL_PERCENTILES), 16, 16, 1)
    for r, j in enumerate(t["dims"]):
        column = codes[:, j]
        # each picked observation's code is the dimension's value at that percentile
        want = np.sort(column)[np.round(np.array(TRAVERSAL_PERCENTILES) / 100 * 99).astype(int)]
        np.testing.assert_array_equal(t["values"][r], want)
        rows = np.searchsorted(indices, t["indices"][r])
        np.testing.assert_array_equal(codes[rows, j], want)
        assert np.all(np.diff(t["values"][r]) >= 0)
    np.testing.assert_array_equal(t["images"].reshape(-1, 16, 16, 1), ds.observations(t["indices"].ravel()))
    fig = dim_traversal_figure(t)  # one mosaic: a row label per dimension, a value above each cell
    (ax,) = fig.axes
    labels = [tick.get_text().split("\n")[0] for tick in ax.get_yticklabels()]
    assert labels == [f"z{j}" for j in t["dims"]]
    cell_titles = [text.get_text() for text in ax.texts][:TRAVERSAL_MAX_DIMS * len(TRAVERSAL_PERCENTILES)]
    assert cell_titles == [f"{v:.3g}" for v in np.asarray(t["values"]).ravel()]
    # fewer dimensions than the cap: every one, and the report says nothing about a cap
    t4 = dimension_traversal(ds, codes[:, :4], indices)
    assert list(t4["dims"]) == [0, 1, 2, 3] and t4["images"].shape[0] == 4


def test_report_shows_the_traversal_and_says_when_dimensions_are_capped(scored):
    results, arrays, headline = scored
    trav = arrays["dim_traversal"]
    assert list(trav["dims"]) == [0, 1, 2, 3]  # the band encoder's 4 dims
    page = render_report(results, [arrays], headline=headline)
    assert "decoder-free traversal" in page and "largest variance" not in page
    capped = dict(arrays, dim_traversal=dict(trav, num_dims=40))
    assert "Showing the 4 of 40 dimensions with the largest variance" in render_report(results, [capped])


def test_traversal_on_a_stochastic_dataset_says_its_images_are_fresh_renders():
    ds = datasets.load("noisy_dsprites")
    w = np.random.default_rng(0).standard_normal((int(np.prod(ds.observation_shape)), 3)).astype(np.float32) / 64

    def encode(images):
        return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0 @ w

    specs = resolve_metrics(None, ["mig"], {"mig": SMALL["mig"]})
    entry, arrays = run_dataset(ds, specs, encode, seed=0)
    trav = arrays["dim_traversal"]
    assert trav["stochastic"] and trav["images"].shape[:2] == (3, 7) and trav["samples"] == 500
    results = dict(new_results({"name": "x", "format": "onnx", "sha256": "0" * 64}), evaluations=[entry],
                   environment={})
    assert "fresh render of the same grid point" in render_report(results, [arrays])
