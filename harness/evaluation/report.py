"""report.html: one self-contained page (figures embedded as base64 PNG) a participant can read.

Per dataset: the headline table with 95% intervals, every value, the mutual-information matrix
(codes x factors) as a heatmap, the DCI importance matrix as a Hinton diagram, latent response
curves (mean of each code dimension against each factor's values), a decoder-free traversal per
code dimension (real images ordered along it), a factor-traversal montage and the timing; then
the environment. Figures use matplotlib's object API (no pyplot), so the
caller's backend is never touched.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from pathlib import Path

import numpy as np

from harness.errors import InputError
from harness.evaluation.results import to_jsonable

# Colour-blind-safe categorical palette (Okabe & Ito), extended with greys for > 8 code dims.
_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
            "#7f7f7f", "#b8860b", "#8c564b", "#17becf"]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _matrix(value) -> np.ndarray | None:
    """A (D, K) table from results.json (nulls are NaN), or None when absent or not a table."""
    if value is None:
        return None
    try:
        m = np.array([[np.nan if v is None else v for v in row] for row in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return m if m.ndim == 2 and m.size else None


def normalized_mi(mi: np.ndarray, entropies) -> np.ndarray:
    """``MI[code, factor] / H(factor)`` in [0, 1] (what MIG divides by); 0 for a constant factor."""
    mi = np.nan_to_num(np.asarray(mi, dtype=float))
    h = np.nan_to_num(np.asarray(entropies, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(h[None, :] > 0, mi / h[None, :], 0.0)
    return np.clip(values, 0.0, 1.0)


def mi_figure(mi: np.ndarray, factor_names, entropies):
    """Heatmap of MI[code, factor] / H(factor) on a fixed [0, 1] colour scale (reports compare by eye)."""
    values = normalized_mi(mi, entropies)
    d, k = values.shape
    fig = _figure(2.2 + 0.9 * k, 1.1 + 0.34 * d)
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    for i in range(d):
        for j in range(k):
            v = values[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v < 0.6 else "black")
    ax.set_xticks(range(k), factor_names, rotation=30, ha="right")
    ax.set_yticks(range(d), [f"z{i}" for i in range(d)])
    ax.set_xlabel("factor")
    ax.set_ylabel("code dimension")
    fig.colorbar(im, ax=ax, label="MI / H(factor)  (0 to 1, fixed)", shrink=0.9)
    return fig


def mi_heatmap(mi: np.ndarray, factor_names, entropies) -> str:
    return _png(mi_figure(mi, factor_names, entropies))


def hinton_figure(matrix: np.ndarray, factor_names):
    """Hinton diagram of an importance matrix: square area proportional to importance.

    The largest entry fills its cell; each square's side is ``0.92 * sqrt(R / R.max())``.
    """
    from matplotlib.patches import Rectangle

    R = np.clip(np.nan_to_num(np.asarray(matrix, dtype=float)), 0.0, None)
    d, k = R.shape
    fig = _figure(1.8 + 0.75 * k, 1.2 + 0.34 * d)
    ax = fig.add_subplot()
    ax.set_facecolor("#f2f2f2")
    top = R.max() if R.size and R.max() > 0 else 1.0
    for i in range(d):
        for j in range(k):
            side = 0.92 * np.sqrt(R[i, j] / top)
            if side > 0:
                ax.add_patch(Rectangle((j - side / 2, i - side / 2), side, side, color="#0072B2"))
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_ylim(d - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks(range(k), factor_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(d), [f"z{i}" for i in range(d)])
    ax.set_xlabel("factor")
    ax.set_ylabel("code dimension")
    return fig


def hinton(matrix: np.ndarray, factor_names) -> str:
    return _png(hinton_figure(matrix, factor_names))


def figure_sources(evaluation: dict, diag: dict | None) -> dict:
    """Which arrays the MI heatmap and the Hinton diagram draw, and where they come from.

    ``mi``/``entropies``: MIG's own ``mutual_info_matrix`` and ``entropy_per_factor`` when MIG ran
    (``mi_source`` "mig"), else the report's own estimate from ``diag`` ("diagnostics"), else None.
    ``importance``: DCI's own ``importance_matrix`` when DCI ran, else None (no diagram).
    """
    metrics = evaluation.get("metrics") or {}
    out = {"mi": None, "entropies": None, "mi_source": None, "importance": None}
    mig = metrics.get("mig") or {}
    mi, h = _matrix(mig.get("mutual_info_matrix")), mig.get("entropy_per_factor")
    if mi is not None and h is not None and len(h) == mi.shape[1]:
        out.update(mi=mi, entropies=np.array([np.nan if v is None else v for v in h], dtype=float),
                   mi_source="mig")
    elif diag and diag.get("mi") is not None and diag.get("entropies") is not None:
        out.update(mi=np.asarray(diag["mi"], dtype=float), entropies=np.asarray(diag["entropies"], dtype=float),
                   mi_source="diagnostics")
    out["importance"] = _matrix((metrics.get("dci") or {}).get("importance_matrix"))
    return out


def response_plot(curves, factor_names, factor_sizes) -> str:
    """One panel per factor: each code dimension's mean (z-scored over the table) vs the factor's value."""
    from matplotlib.ticker import MaxNLocator

    k = len(curves)
    d = curves[0].shape[1] if k else 0
    cols = min(k, 3)
    rows = int(np.ceil(k / cols)) if k else 1
    fig = _figure(3.4 * cols + 1.3, 2.5 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    # z-score each dimension with the spread of its curve means so small and large codes share an axis
    stacked = np.concatenate(curves) if k else np.zeros((0, d))
    mu = np.nanmean(stacked, axis=0) if len(stacked) else np.zeros(d)
    sd = np.nanstd(stacked, axis=0) if len(stacked) else np.ones(d)
    sd = np.where(sd > 1e-12, sd, 1.0)
    lines = []
    for idx in range(rows * cols):
        ax = axes[idx // cols][idx % cols]
        if idx >= k:
            ax.set_visible(False)
            continue
        curve = (curves[idx] - mu) / sd
        x = np.arange(factor_sizes[idx])
        for j in range(d):
            (line,) = ax.plot(x, curve[:, j], color=_PALETTE[j % len(_PALETTE)], lw=1.4,
                              marker="o" if factor_sizes[idx] <= 8 else None, ms=3)
            if idx == 0:
                lines.append(line)
        ax.set_title(factor_names[idx], fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
        ax.set_xlabel("factor value (index)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean code (z-scored)", fontsize=8)
    if lines:
        fig.legend(lines, [f"z{j}" for j in range(d)], loc="outside right center", fontsize=8, frameon=False)
    return _png(fig)


def montage(images: np.ndarray, factor_names, values) -> str:
    """Rows of a factor traversal: row k sweeps factor k, the other factors fixed."""
    images = np.asarray(images)
    k, steps = images.shape[:2]
    titles = [[str(int(values[r][c])) if c < len(values[r]) else None for c in range(steps)] for r in range(k)]
    fig = _image_grid(images, titles, [str(n) for n in factor_names], 1.6 + 0.8 * steps, 0.25 + 0.8 * k,
                      title_size=6)
    return _png(fig)


def _image_grid(images: np.ndarray, titles, row_labels, width: float, height: float, *, title_size=7,
                header=None):
    """A figure of a (rows, cols, H, W, C) image grid drawn as one mosaic in one axes (a subplot per
    cell made the report's two grids cost 2-3 s of matplotlib layout): a title above each cell
    (None leaves the cell blank), a label left of each row, an optional line per column above all."""
    rows, cols, h, w = images.shape[:4]
    gap_x, gap_y = max(2, w // 16), max(2, h // 16) + int(h * 0.22 * (title_size / 7))
    top = int(h * 0.35) if header else 0
    canvas = np.full((top + rows * (h + gap_y), cols * (w + gap_x) - gap_x, 3), 255, dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            if titles[r][c] is None:
                continue
            y0, x0 = top + r * (h + gap_y) + gap_y, c * (w + gap_x)
            canvas[y0:y0 + h, x0:x0 + w] = images[r, c]  # one channel broadcasts to three
    fig = _figure(width, height)
    ax = fig.add_subplot()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([top + r * (h + gap_y) + gap_y + h / 2 for r in range(rows)], list(row_labels), fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for r in range(rows):
        for c in range(cols):
            if titles[r][c] is not None:
                ax.text(c * (w + gap_x) + w / 2, top + r * (h + gap_y) + gap_y - 1, titles[r][c],
                        ha="center", va="bottom", fontsize=title_size)
    for c, line in enumerate(header or []):
        ax.text(c * (w + gap_x) + w / 2, top - 1, line, ha="center", va="bottom", fontsize=title_size)
    return fig


def dim_traversal_figure(traversal: dict):
    """One row per code dimension: real images at increasing percentiles of that dimension's code."""
    images = np.asarray(traversal["images"])
    dims, values, std = traversal["dims"], np.asarray(traversal["values"]), np.asarray(traversal["std"])
    rows, cols = images.shape[:2]
    titles = [[f"{values[r, c]:.3g}" for c in range(cols)] for r in range(rows)]
    labels = [f"z{int(dims[r])}\nstd {std[r]:.2g}" for r in range(rows)]
    header = [f"{p}th pct" for p in traversal["percentiles"][:cols]]
    return _image_grid(images, titles, labels, 1.5 + 0.78 * cols, 0.5 + 0.84 * rows, header=header)


def dim_traversal(traversal: dict) -> str:
    return _png(dim_traversal_figure(traversal))


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0;background:#fafafa}
main{max-width:1080px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:26px;margin:0 0 4px} h2{font-size:20px;margin:36px 0 8px;padding-top:12px;border-top:2px solid #e5e5e5}
h3{font-size:16px;margin:22px 0 6px} .sub{color:#666;margin:0 0 16px}
table{border-collapse:collapse;margin:8px 0 12px;font-variant-numeric:tabular-nums}
th,td{padding:4px 14px 4px 0;text-align:left;border-bottom:1px solid #eee;vertical-align:top} th{color:#555;font-weight:600}
td.num{text-align:right;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;white-space:nowrap}
.headline td.num:first-of-type{font-weight:700}
.status-ok{color:#0a7d32;font-weight:700} .status-failed{color:#b00020;font-weight:700}
.failure{background:#fff1f1;border-left:4px solid #b00020;padding:10px 14px;margin:12px 0}
td.over{color:#555;font-size:13px}
.note{background:#f4f8ff;border-left:4px solid #0072B2;padding:6px 12px;margin:8px 0;font-size:14px}
.fig{margin:6px 0 4px} .fig img{max-width:100%;height:auto} .cap{color:#555;font-size:13px;margin:2px 0 14px;max-width:80ch}
.grid2{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start} .grid2>div{flex:1 1 420px}
details{margin:6px 0} summary{cursor:pointer;color:#0072B2}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
"""


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"


def _count(value) -> str:
    """An integer with thousands separators (escaped text otherwise)."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return html.escape(str(value))


def _interval(ci) -> str:
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


# What each metric's ``<key>_ci95`` resamples (docs/metrics.md "Intervals"): (metric, key) first, then metric.
_HISTOGRAM = "samples (weights on the joint histogram)"
_TEST = "test samples (models fixed)"
_STABILITY = "boosting rounds of the fitted ensembles: a stability band, not a sampling interval"
_INTERVAL_OVER = {
    "mig": _HISTOGRAM, "mig_sup": _HISTOGRAM, "dcimig": _HISTOGRAM, "jemmig": _HISTOGRAM,
    "unsupervised": _HISTOGRAM, ("modularity_explicitness", "modularity_score"): _HISTOGRAM,
    ("modularity_explicitness", "explicitness_score_test"): _TEST,
    ("infomec", "infom"): _HISTOGRAM, ("infomec", "infoc"): _HISTOGRAM, ("infomec", "infoe"): _TEST,
    "irs": "samples (factor bins and active dimensions fixed)",
    "sap": "test samples (classifiers fixed)", "sap_continuous": "training samples",
    "downstream_logistic_regression": _TEST, "downstream_boosted_trees": _TEST,
    ("dci", "informativeness_test"): _TEST, ("dci", "disentanglement"): _STABILITY,
    ("dci", "completeness"): _STABILITY,
    ("med", "informativeness_test"): _TEST, "med": "training samples (weights on the joint histograms)",
    "beta_vae": "eval points (classifier fixed)", "factor_vae": "eval votes (classifier fixed)",
    "z_max_var": "eval votes (classifier fixed)",
    "dci_es": "test samples (probes fixed)", "regression_informativeness": "test samples (predictors fixed)",
    "flatness": "each factor's traversals", "mcc": "samples",
    "generalization": "evaluation points (readout fixed)",
}


def interval_over(name: str, key: str, params: dict | None = None) -> str:
    """What the 95% interval of ``name``'s ``key`` resamples, in a few words."""
    base = key.split(":", 1)[-1]  # downstream keys carry their training size: "100:mean_test_accuracy"
    text = _INTERVAL_OVER.get((name, base)) or _INTERVAL_OVER.get(name) or "the metric's samples"
    estimator = (params or {}).get("estimator")
    if text == _STABILITY and estimator == "random_forest":
        text = "trees of the fitted forests: a stability band, not a sampling interval"
    return text


def _headline_rows(evaluation: dict, headline: dict) -> list[str]:
    rows = []
    params = evaluation.get("params") or {}
    for name, values in evaluation["metrics"].items():
        keys = headline.get(name) or [k for k in values if not k.endswith("_ci95")][:1]
        for key in keys:
            if key not in values:
                continue
            ci = _interval(values.get(key + "_ci95"))
            over = html.escape(interval_over(name, key, params.get(name))) if ci else ""
            rows.append(f"<tr><td>{html.escape(name)}</td><td><code>{html.escape(key)}</code></td>"
                        f"<td class=num>{_fmt(values[key])}</td>"
                        f"<td class=num>{ci}</td><td class=over>{over}</td></tr>")
    return rows


def _interval_caption(evaluation: dict, headline: dict) -> str:
    """Says what the intervals of the headline table are (and that DCI's D/C ones are not sampling intervals)."""
    params = evaluation.get("params") or {}
    shown = [(name, key) for name, values in evaluation["metrics"].items()
             for key in (headline.get(name) or [k for k in values if not k.endswith("_ci95")][:1])
             if values.get(key + "_ci95") is not None and _interval(values.get(key + "_ci95"))]
    reps = sorted({int((params.get(name) or {}).get("n_bootstrap", 100)) for name, _ in shown})
    count = f"{reps[0]} replicates" if len(reps) == 1 else "replicates as each metric's n_bootstrap"
    text = ("Each interval is a 95% bootstrap interval over the metric's own samples, resampling what the "
            f"last column names ({count}; percentile interval, bias-shifted; docs/metrics.md \"Intervals\"): "
            "how much the score depends on which samples were drawn, for this model. It is not a spread over "
            "training seeds or models.")
    stability = [key for name, key in shown if interval_over(name, key, params.get(name)).endswith(
        "not a sampling interval")]
    if stability:
        text += (" Except DCI's " + " and ".join(html.escape(k) for k in stability) + ": that interval resamples "
                 "the boosting rounds (trees) of the ensembles DCI fitted, with no refit, so it is a stability band "
                 "(how much the importance matrix depends on which trees were grown), not a sampling interval.")
    return f'<p class="cap">{text}</p>'


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def score_notes(evaluation: dict, diag: dict | None = None) -> list[str]:
    """Short HTML notes (escaped) explaining scores that look broken but are not, each only when it applies.

    - FactorVAE ``eval_accuracy`` 0 with ``num_active_dims`` 0: every dimension's std is below the
      absolute ``prune_threshold`` (the largest std seen, from ``diag["factor_vae_std"]``, when known).
    - discrete SAP ran: an ideal identity code scores only ~0.19 on dSprites.
    - MIG ran and a factor has more values than ``num_bins``: the ceiling ln(bins)/ln(K) per factor.
    """
    diag = diag or {}
    metrics, params = evaluation.get("metrics") or {}, evaluation.get("params") or {}
    names = [str(n) for n in evaluation["dataset"]["factor_names"]]
    sizes = [int(k) for k in evaluation["dataset"]["factor_sizes"]]
    notes = []
    fv, fvp = metrics.get("factor_vae") or {}, params.get("factor_vae") or {}
    if _number(fv.get("eval_accuracy")) == 0.0 and _number(fv.get("num_active_dims")) == 0.0:
        threshold = _number(fvp.get("prune_threshold"))
        threshold = 0.05 if threshold is None else threshold
        text = (f"<b>FactorVAE eval_accuracy is 0 because no code dimension counts as active</b> "
                f"(num_active_dims 0): every dimension's standard deviation is below "
                f"<code>prune_threshold</code> = {threshold:g}, so no dimension can vote.")
        std = diag.get("factor_vae_std")
        if std is not None and len(std):
            std = np.asarray(std, dtype=float)
            j = int(np.nanargmax(std)) if np.isfinite(std).any() else 0
            largest = float(std[j]) if np.isfinite(std[j]) else 0.0
            n = fvp.get("num_variance_estimate")
            over = f" over its {int(n):,} variance-estimate observations" if n is not None else ""
            text += f" The largest std seen{over} is {largest:.3g} (z{j})."
            if largest > 0 and threshold > 0:
                factor = 10.0 ** max(1, int(np.ceil(np.log10(threshold / largest * 1.0001))))
                text += (f" The threshold is absolute, not relative to your code's scale: multiplying the codes "
                         f"by {factor:g} (in the exported model) would bring that dimension to "
                         f"{largest * factor:.3g} and make it count.")
            else:
                text += " Every code dimension is constant: no rescaling makes it count."
        else:
            text += (" The threshold is absolute, not relative to your code's scale: rescaling the codes (e.g. "
                     "multiplying them by 10 in the exported model) would make them count.")
        notes.append(text)
    sap, sapp = metrics.get("sap") or {}, params.get("sap") or {}
    if _number(sap.get("sap_score")) is not None and not sapp.get("continuous_factors", False):
        notes.append("<b>SAP (discrete) is low even for an ideal code:</b> a heavily regularized linear SVM "
                     "(C = 0.01) on one code dimension cannot separate a many-valued factor, so an identity code "
                     "(each factor copied into its own dimension) reaches only about 0.19 on dSprites. A known "
                     "property of the metric (docs/metrics.md), not a bug: compare SAP scores with each other, "
                     "not with 1.")
    mig, migp = metrics.get("mig") or {}, params.get("mig") or {}
    bins = int(migp.get("num_bins", 20) or 20)
    if _number(mig.get("discrete_mig")) is not None and sizes and max(sizes) > bins > 1:
        ceilings = [min(1.0, np.log(bins) / np.log(k)) if k > 1 else 1.0 for k in sizes]
        capped = [f"{html.escape(n)} ({k} values) {c:.3f}" for n, k, c in zip(names, sizes, ceilings) if k > bins]
        notes.append(f"<b>MIG cannot reach 1 here:</b> with <code>num_bins</code> = {bins} bins per code, a "
                     f"perfect code of a K-valued factor scores at most ln({bins})/ln(K) when K &gt; {bins} "
                     f"(factors sampled uniformly): {', '.join(capped)}. A perfect code's MIG on this dataset "
                     f"is therefore at most {float(np.mean(ceilings)):.3f} (the mean over factors).")
    return notes


#: reference scores recorded by the repo's own script (submissions/example/score.py; docs/baseline.md)
REFERENCE_SCORES = Path(__file__).resolve().parents[2] / "submissions" / "example" / "scores.json"
#: the dataset those were recorded on: procedural dSprites (a file named dsprites.npz is another dataset)
_REFERENCE_DATASET = ("dsprites", "harness.datasets.dsprites.DSprites")
#: parameters that do not change a metric's value (only its interval, or how many cores compute it)
_VALUE_NEUTRAL = {"n_bootstrap", "n_jobs"}


def _load_reference(path=None) -> dict | None:
    import json

    try:
        record = json.loads(Path(path or REFERENCE_SCORES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("results"), dict) and isinstance(record.get("metrics"), dict)
    return record if ok else None


def reference_table(evaluation: dict, diag: dict | None, path=None) -> dict | None:
    """Recorded reference scores that compare with this evaluation, or why none do.

    ``{"rows": [(metric, key, your value, {label: (value, ci95)})], "labels": [...]}`` when the
    record's dataset, seed and each metric's value-relevant parameters (its defaults, the study
    sizes, as score.py ran them) equal this run's; ``{"rows": [], "why": ...}`` when the record
    exists but does not apply; None when there is no record (an installed package without the repo).
    Values are read from the file, never computed or typed in here.
    """
    from harness import metrics as metrics_mod

    record = _load_reference(path)
    if record is None:
        return None
    metrics, params = evaluation.get("metrics") or {}, evaluation.get("params") or {}
    dataset_class = (diag or {}).get("dataset_class")
    why = None
    if evaluation["dataset"].get("name") != _REFERENCE_DATASET[0]:
        why = "they were recorded on procedural dSprites only"
    elif dataset_class is None:
        why = ("this page was drawn from results.json alone, which does not say whether this dSprites is the "
               "procedural one they were recorded on")
    elif dataset_class != _REFERENCE_DATASET[1]:
        why = "they were recorded on procedural dSprites only, and this is another dataset of that name"
    elif evaluation.get("seed") != record.get("seed"):
        why = f"they were recorded with seed {html.escape(str(record.get('seed')))}, this run used {evaluation.get('seed')}"
    rows, mismatched = [], []
    if why is None:
        for name, key in record["metrics"].items():
            if name not in metrics or metrics[name].get(key) is None:
                continue
            try:
                defaults = dict(metrics_mod.get(name).default_params)
            except (KeyError, InputError):
                continue
            ran = {k: v for k, v in (params.get(name) or {}).items() if k not in _VALUE_NEUTRAL}
            if ran != {k: v for k, v in defaults.items() if k not in _VALUE_NEUTRAL}:
                mismatched.append(name)
                continue
            recorded = {}
            for label, values in record["results"].items():
                if isinstance(values, dict) and f"{name}.{key}" in values:
                    recorded[str(label)] = (values[f"{name}.{key}"], values.get(f"{name}.{key}_ci95"))
            if recorded:
                rows.append((name, key, metrics[name][key], recorded))
        if not rows:
            why = ("they were recorded at the study sizes (each metric's default parameters); this run changed "
                   + ", ".join(html.escape(m) for m in mismatched) if mismatched else
                   "none of the recorded metrics (" + ", ".join(html.escape(str(m)) for m in record["metrics"])
                   + ") ran here")
    labels = list(dict.fromkeys(label for row in rows for label in row[3]))
    return {"rows": rows, "labels": labels, "why": why, "record": record, "mismatched": mismatched}


def _reference_block(evaluation: dict, diag: dict | None) -> str:
    ref = reference_table(evaluation, diag)
    if ref is None:
        return ""
    source = ("<code>submissions/example/scores.json</code>, written by <code>submissions/example/score.py</code> "
              "(provenance in docs/baseline.md)")
    if not ref["rows"]:
        return (f'<p class="cap">No recorded reference row for this run: the repository records reference scores '
                f"in {source}, and {ref['why']}.</p>")
    head = ["metric", "key", "this run"] + [f"recorded: {label}" for label in ref["labels"]]
    rows = []
    for name, key, value, recorded in ref["rows"]:
        cells = "".join(f"<td class=num>{_fmt(recorded[label][0])} {_interval(recorded[label][1])}</td>"
                        if label in recorded else "<td></td>" for label in ref["labels"])
        rows.append(f"<tr><td>{html.escape(name)}</td><td><code>{html.escape(key)}</code></td>"
                    f"<td class=num>{_fmt(value)}</td>{cells}</tr>")
    rec = ref["record"]
    described = ""
    try:  # the example's own manifest says what it is (model, beta, steps)
        import json

        manifest = json.loads((REFERENCE_SCORES.parent / "submission.json").read_text(encoding="utf-8"))
        if isinstance(manifest.get("description"), str):
            described = f" ({html.escape(manifest['description'])})"
    except (OSError, ValueError, AttributeError):
        pass
    return ("<h3>Reference (recorded, not computed in this run)</h3>" + _table(head, rows, "reference")
            + f'<p class="cap">Read your numbers against these. They are the values recorded in {source} on '
            f"{html.escape(str(rec.get('dataset', 'dSprites')))}, seed {html.escape(str(rec.get('seed')))}, with "
            "each metric's study sizes, the same settings as this run: the example submission"
            f"{described}, and the same encoder architecture with random weights "
            "(<code>torch.manual_seed(0)</code>). They were computed by the harness's metric code "
            "when the file was written, not by this run."
            + (f" No reference for {', '.join(html.escape(m) for m in ref['mismatched'])}: this run changed its "
               "parameters from the study sizes." if ref["mismatched"] else "") + "</p>")


def _all_rows(evaluation: dict) -> list[str]:
    factor_names = evaluation["dataset"]["factor_names"]
    params = evaluation.get("params") or {}
    rows = []
    for name, values in evaluation["metrics"].items():
        for key, value in values.items():
            if key.endswith(("_ci95", "_matrix")):  # intervals, and the tables
                continue                                                        # the figures draw
            if key.endswith("_per_factor") and isinstance(value, list):  # one value per factor, named
                shown = "<td>" + " &middot; ".join(f"{html.escape(str(n))} {_fmt(v)}"
                                                   for n, v in zip(factor_names, value)) + "</td>"
            else:
                shown = f"<td class=num>{_fmt(value)}</td>"
            ci = _interval(values.get(key + "_ci95"))
            over = html.escape(interval_over(name, key, params.get(name))) if ci else ""
            rows.append(f"<tr><td>{html.escape(name)}</td><td><code>{html.escape(key)}</code></td>"
                        f"{shown}<td class=num>{ci}</td><td class=over>{over}</td></tr>")
    return rows


def _table(head: list[str], rows: list[str], cls: str = "") -> str:
    ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table class="{cls}"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _figure_block(b64: str, alt: str, caption: str) -> str:
    return f'<div class="fig">{_img(b64, alt)}</div><p class="cap">{caption}</p>'


def _evaluation_section(evaluation: dict, diag: dict | None, headline: dict) -> str:
    ds = evaluation["dataset"]
    names, sizes = ds["factor_names"], ds["factor_sizes"]
    parts = [f"<h2>Dataset <code>{html.escape(ds['name'])}</code></h2>",
             f'<p class="sub">factors: {", ".join(f"{html.escape(n)} ({s})" for n, s in zip(names, sizes))}'
             f" &middot; preset <code>{html.escape(str(evaluation.get('preset')))}</code>"
             f" &middot; seed {evaluation['seed']}</p>"]
    for note in evaluation.get("notes", []):
        parts.append(f'<div class="note">{html.escape(note)}</div>')
    parts.append("<h3>Scores</h3>")
    head = ["metric", "key", "score", "95% interval", "interval resamples"]
    parts.append(_table(head, _headline_rows(evaluation, headline), "headline"))
    parts.append(_interval_caption(evaluation, headline))
    for note in score_notes(evaluation, diag):
        parts.append(f'<div class="note">{note}</div>')
    parts.append(_reference_block(evaluation, diag))
    parts.append("<details><summary>every value</summary>"
                 + _table(head, _all_rows(evaluation)) + "</details>")
    diag = diag or {}
    src = figure_sources(evaluation, diag)
    params = evaluation.get("params") or {}
    if src["mi"] is not None or src["importance"] is not None:
        parts.append('<div class="grid2">')
        if src["mi"] is not None:
            if src["mi_source"] == "mig":
                mp = params.get("mig") or {}
                where = (f"MIG's own matrix (results.json <code>mig.mutual_info_matrix</code> / "
                         f"<code>entropy_per_factor</code>), from its sample of "
                         f"{_count(mp.get('num_train'))} observations, {_count(mp.get('num_bins', 20))} bins per code")
            else:
                where = (f"MIG did not run, so the report estimated it with MIG's estimator (20 bins per code) on "
                         f"{_count(diag.get('mi_samples', 0))} observations the evaluation had encoded")
            parts.append("<div><h3>Mutual information, codes &times; factors</h3>"
                         + _figure_block(mi_heatmap(src["mi"], names, src["entropies"]), "mutual information heatmap",
                                         "Discretized MI between each code dimension and each factor divided by the "
                                         "factor's entropy: MI / H(factor), the quantity MIG compares. The colour scale "
                                         "is fixed to [0, 1] in every report, so two reports compare by eye. A "
                                         "disentangled code has one bright cell per column, each in a different row. "
                                         f"Source: {where}.")
                         + "</div>")
        if src["importance"] is not None:
            dp = params.get("dci") or {}
            parts.append("<div><h3>DCI importance (Hinton diagram)</h3>"
                         + _figure_block(hinton(src["importance"], names), "importance Hinton diagram",
                                         "Square area = how much the classifier predicting the factor relies on the "
                                         "code dimension (each factor's column sums to 1). Disentanglement wants one "
                                         "factor per row, completeness one row per factor. Source: DCI's own "
                                         "importance matrix (results.json <code>dci.importance_matrix</code>, estimator "
                                         f"<code>{html.escape(str(dp.get('estimator', 'default')))}</code>), the one its "
                                         "scores above are computed from.")
                         + "</div>")
        parts.append("</div>")
    if diag.get("curves") is not None:
        parts.append("<h3>Latent response curves</h3>"
                     + _figure_block(response_plot(diag["curves"], names, sizes), "latent response curves",
                                     f"Mean of each code dimension at each value of a factor, over "
                                     f"{diag.get('curve_samples', 0):,} encoded observations, z-scored per dimension. "
                                     "A dimension that tracks one factor rises or falls in that panel and stays flat in "
                                     "the others; what your encoder learned, without a decoder."))
    trav = diag.get("dim_traversal")
    if trav is not None and len(trav["dims"]):
        pct = ", ".join(f"{q}th" for q in trav["percentiles"])
        capped = (f" Showing the {len(trav['dims'])} of {trav['num_dims']} dimensions with the largest variance "
                  "(in dimension order)." if len(trav["dims"]) < trav["num_dims"] else "")
        fresh = (" On this stochastic dataset each image is a fresh render of the same grid point, so its nuisance "
                 "(noise, colour) differs from the one that was encoded." if trav.get("stochastic") else "")
        parts.append("<h3>What each code dimension responds to (decoder-free traversal)</h3>"
                     + _figure_block(dim_traversal(trav), "decoder-free traversal per code dimension",
                                     f"Each row is one code dimension: the real dataset images whose code on that "
                                     f"dimension sits at the {pct} percentile of its values over the "
                                     f"{trav['samples']:,} observations the evaluation encoded (the code value above "
                                     "each image, the dimension's std at the left). What changes along a row is what "
                                     "the dimension responds to, no decoder needed; a row where nothing changes "
                                     f"systematically responds to nothing or to a mix.{capped}{fresh}"))
    if diag.get("montage") is not None:
        images, values = diag["montage"]
        parts.append("<h3>Dataset montage</h3>"
                     + _figure_block(montage(images, names, values), "dataset montage",
                                     "Each row sweeps one factor (values above each image) with the others fixed at a "
                                     "random point of the grid: what the encoder was shown."))
    t = evaluation["timing"]
    rows = [f"<tr><td>rendering (overlaps encoding)</td><td class=num>{_fmt(t.get('render_s', 0), 1)} s</td></tr>",
            f"<tr><td>encoding ({t['images_encoded']:,} images)</td><td class=num>{_fmt(t['encode_s'], 1)} s</td></tr>"]
    rows += [f"<tr><td>metric <code>{html.escape(m)}</code></td><td class=num>{_fmt(s, 1)} s</td></tr>"
             for m, s in t["metrics_s"].items()]
    if "report_s" in t:
        rows.append(f"<tr><td>report figures</td><td class=num>{_fmt(t['report_s'], 1)} s</td></tr>")
    rows.append(f"<tr><th>total</th><th class=num>{_fmt(t['total_s'], 1)} s</th></tr>")
    parts.append("<h3>Timing</h3>" + _table(["stage", "wall time"], rows))
    if "images_requested" in t:
        parts.append(f'<p class="cap">The metrics asked for {t["images_requested"]:,} observations; '
                     f'{t["images_encoded"]:,} were encoded and {t.get("images_from_cache", 0):,} came from the cache '
                     "(on a deterministic dataset each grid point is encoded once).</p>")
    return "".join(parts)


def _input_line(sub: dict, evaluations: list) -> str:
    """One line: the input convention the model was fed, and a fixed batch size with its throughput."""
    from harness.submission.manifest import range_label

    value, layout, fixed = sub.get("input_range"), sub.get("input_layout"), sub.get("fixed_batch")
    if value is None and layout is None and not fixed:
        return ""
    bits = []
    if value is not None:
        try:
            bits.append(f"values {html.escape(range_label(value))}")
        except (KeyError, TypeError, ValueError, IndexError):
            bits.append("values as declared")
    if layout:
        bits.append(f"{html.escape(str(layout))} batches")
    if fixed:
        n = sum(e["timing"].get("images_encoded", 0) for e in evaluations)
        s = sum(e["timing"].get("encode_s", 0) for e in evaluations)
        rate = f", {n / s:,.0f} images/s" if n and s > 0 else ""
        bits.append(f"fixed batch size {int(fixed)}: fed {int(fixed)} image(s) per model call{rate} "
                    "(a dynamic batch axis lets the harness feed 1,024 per call)")
    return f'<p class="sub">model input: {" &middot; ".join(bits)}</p>'


def render_report(results: dict, diagnostics: list | None = None, *, headline: dict | None = None) -> str:
    """The report as an HTML string. ``diagnostics[i]`` holds the arrays for ``results['evaluations'][i]``."""
    results = to_jsonable(results)
    headline = headline or {}
    sub = results["submission"]
    title = f"harness evaluation: {sub.get('name') or 'submission'}"
    status = results["status"]
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
             f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_CSS}</style></head><body><main>",
             f"<h1>{html.escape(title)}</h1>",
             f'<p class="sub">status <span class="status-{status}">{status}</span> &middot; format '
             f"<code>{html.escape(str(sub.get('format')))}</code> &middot; sha256 "
             f"<code>{html.escape((sub.get('sha256') or 'n/a')[:16])}</code> &middot; generated "
             f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>"]
    line = _input_line(sub, results["evaluations"])
    if line:
        parts.append(line)
    if results.get("failure"):
        f = results["failure"]
        detail = f"<pre>{html.escape(f['detail'])}</pre>" if f.get("detail") else ""
        parts.append(f'<div class="failure"><b>{html.escape(f["kind"])}</b>: {html.escape(f["message"])}{detail}</div>')
    diagnostics = diagnostics or []
    for i, evaluation in enumerate(results["evaluations"]):
        parts.append(_evaluation_section(evaluation, diagnostics[i] if i < len(diagnostics) else None, headline))
    env = results["environment"]
    rows = []
    for k, v in env.items():
        if v is None or v == []:  # device, sandbox: set once a model runs
            shown = "<i>not reached: the submission failed before its model ran</i>" if results.get("failure") \
                else "<i>none</i>"
        else:
            shown = f"<code>{html.escape(', '.join(v) if isinstance(v, list) else str(v))}</code>"
        rows.append(f"<tr><td>{html.escape(k)}</td><td>{shown}</td></tr>")
    parts.append("<h2>Environment</h2>" + _table(["", ""], rows))
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(results: dict, path, diagnostics: list | None = None, *, headline: dict | None = None) -> Path:
    path = Path(path)
    path.write_text(render_report(results, diagnostics, headline=headline), encoding="utf-8")
    return path


def text_table(results: dict, headline: dict | None = None) -> str:
    """The headline scores as plain text, one block per dataset (what ``harness evaluate`` prints)."""
    headline = headline or {}
    lines = []
    for evaluation in results["evaluations"]:
        ds = evaluation["dataset"]
        t = evaluation["timing"]
        lines.append(f"{ds['name']}  (preset {evaluation.get('preset')}, seed {evaluation['seed']}, "
                     f"{t['images_encoded']:,} images encoded, {t['total_s']:.1f} s)")
        rows = [("metric", "key", "score", "95% interval")]
        for name, values in evaluation["metrics"].items():
            keys = headline.get(name) or [k for k in values if not k.endswith("_ci95")][:1]
            for key in keys:
                if key in values:
                    rows.append((name, key, _fmt(values[key]), _interval(values.get(key + "_ci95"))))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            lines.append("  " + "  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]),
                                           r[2].rjust(widths[2]), r[3]]).rstrip())
        for note in evaluation.get("notes", []):
            lines.append(f"  note: {note}")
    return "\n".join(lines)
