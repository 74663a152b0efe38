"""``evaluate`` (a participant's whole evaluation) and ``evaluate_dataset`` (one grading job).

Per dataset: every metric's ``sample`` says which observations it needs (from the seed alone);
the plan encodes each unique observation once through the sandboxed encoder; every metric's
``score`` reads its rows from the code table. The scores equal running each metric alone with
the same seed.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from harness.datasets.montage import traversal_indices
from harness.errors import InputError, SubmissionFailure
from harness.evaluation import diagnostics as diag_mod
from harness.evaluation.plan import DEFAULT_CHUNK_SIZE, Timing, build_code_table, table_rows

#: the most memory one dataset's code table may take (float32 rows x latent_dim), checked before encoding
CODE_TABLE_BUDGET_MB = 4096
from harness.evaluation.results import environment, new_results, to_jsonable, write_results

#: rows used for the report's mutual-information matrix when MIG did not run (MIG's own sample size)
_DIAG_ROWS = 10_000
_MONTAGE_COLUMNS = 8
#: the report's decoder-free traversal: images at these percentiles of each code dimension, for at
#: most this many dimensions (the ones with the largest variance)
TRAVERSAL_PERCENTILES = (5, 20, 35, 50, 65, 80, 95)
TRAVERSAL_MAX_DIMS = 16


# -- metrics: preset + names + params ----------------------------------------------------------

def resolve_metrics(preset: str | None, metrics=None, metric_params: dict | None = None) -> list[tuple]:
    """``[(MetricSpec, params)]`` to run: the preset's metrics (or ``metrics``, in that order),
    each with its default params, then the preset's params, then ``metric_params[name]``.
    """
    from harness import metrics as metrics_mod

    metric_params = dict(metric_params or {})
    preset_params: dict = {}
    if preset is not None:
        names_in_preset, preset_params = _preset(metrics_mod, preset)
    if metrics:
        names = list(dict.fromkeys(metrics))
    elif preset is not None:
        names = names_in_preset
    else:
        raise InputError("give a preset or at least one metric")
    unknown = [n for n in metric_params if n not in names]
    if unknown:
        raise InputError(f"parameters given for metric(s) not being run: {', '.join(unknown)}")
    out = []
    for name in names:
        try:
            spec = metrics_mod.get(name)
        except (KeyError, InputError):
            raise InputError(f"unknown metric {name!r}; known metrics: {', '.join(metrics_mod.names())}") from None
        params = dict(getattr(spec, "default_params", {}) or {})
        unknown = sorted(set(metric_params.get(name, {})) - set(params))
        if params and unknown:  # caught here, before any output folder or encoder exists
            raise InputError(f"metric {name}: unknown parameter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(params))}")
        params.update(preset_params.get(name, {}))
        params.update(metric_params.get(name, {}))
        if hasattr(spec, "validate"):  # values in range, before any output folder or encoder exists
            params = spec.validate(params)
        out.append((spec, params))
    return out


def _preset(metrics_mod, preset: str) -> tuple[list[str], dict]:
    """(metric names, per-metric params) of a preset, as the metrics package defines it."""
    try:
        p = metrics_mod.preset(preset)
    except (KeyError, InputError):
        raise InputError(f"unknown preset {preset!r}; known presets: {', '.join(metrics_mod.presets())}") from None
    if isinstance(p, dict):
        return list(p), {k: dict(v or {}) for k, v in p.items()}
    return list(p), {}


# -- progress -----------------------------------------------------------------------------------

class LineProgress:
    """Progress off a terminal (a pipe, a CI log, a batch job): one plain line every ``every``
    seconds, no carriage returns. The tqdm calls the evaluator makes: update, set_postfix_str, close."""

    def __init__(self, total, desc: str, unit: str, *, every: float = 10.0, file=None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.file = file or sys.stderr
        self.n, self.postfix = 0, ""
        self.start = self.last = time.monotonic()

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
            what = f" [{self.postfix}]" if self.postfix else ""
            print(f"{self.desc}: {self.n:,}/{self.total:,} {self.unit}{share}{what}, {now - self.start:.0f} s",
                  file=self.file, flush=True)

    def set_postfix_str(self, text):
        self.postfix = str(text)

    def close(self):
        pass


def _progress_factory(mode, desc: str, unit: str):
    """``"bar"``: a tqdm bar (a terminal); ``"lines"``: :class:`LineProgress`; falsy: none."""
    if not mode:
        return None
    if mode == "lines":
        return lambda total: LineProgress(total, desc, unit)
    from tqdm.auto import tqdm

    def make(total):
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr, leave=False,
                    dynamic_ncols=True)

    return make


def _auto_progress(progress):
    """None: a bar on a terminal, a line every ~10 s elsewhere; True/False as given."""
    if progress is None:
        return "bar" if sys.stderr.isatty() else "lines"
    return "bar" if progress else None


# -- one dataset --------------------------------------------------------------------------------

def _load_dataset(dataset):
    from harness import datasets

    if isinstance(dataset, (str, os.PathLike)):
        return datasets.load(dataset)
    return dataset


def dataset_info(dataset) -> dict:
    return {"name": dataset.name, "factor_names": list(dataset.factor_names),
            "factor_sizes": [int(s) for s in dataset.factor_sizes],
            "observation_shape": [int(s) for s in dataset.observation_shape],
            "stochastic": bool(getattr(dataset, "stochastic", False))}


def run_dataset(dataset, specs: list[tuple], encode, *, seed: int = 0, preset: str | None = None,
                cache=None, progress: bool = False, notes=(), with_diagnostics: bool = True,
                chunk_size: int = DEFAULT_CHUNK_SIZE, batch_size: int = 2048, code_dim: int | None = None,
                max_table_mb: int = CODE_TABLE_BUDGET_MB) -> tuple[dict, dict | None]:
    """Plan, encode once with ``encode`` (any uint8 NHWC -> (N, D) callable), score.

    ``code_dim`` (the submission's latent_dim): the code table's size is checked against
    ``max_table_mb`` before anything is encoded. Returns the ``evaluations`` entry and the
    report's arrays (None without diagnostics).
    """
    t_start = time.perf_counter()
    metric_s: dict[str, float] = {}
    requests = {}
    for spec, params in specs:
        t0 = time.perf_counter()
        try:
            requests[spec.name] = spec.sample(dataset, seed=seed, **params)
        except InputError:
            raise
        except ValueError as exc:  # sizes and seed are the caller's input: one line, not a traceback
            raise InputError(f"metric {spec.name}: {exc}") from None
        metric_s[spec.name] = time.perf_counter() - t0

    if code_dim:
        need_mb = table_rows(dataset, requests) * int(code_dim) * 4 / 2**20
        if need_mb > max_table_mb:
            raise InputError(f"{dataset.name}: the codes of this plan would take {need_mb:,.0f} MB "
                             f"(latent_dim {code_dim}), over the {max_table_mb:,} MB budget: lower the metrics' "
                             "sizes or [limits] max_latent_dim")
    timing = Timing()
    t_table = time.perf_counter()
    table, timing = build_code_table(
        dataset, requests, encode, cache=cache, chunk_size=chunk_size, batch_size=batch_size, timing=timing,
        progress_factory=_progress_factory(progress, f"encoding {dataset.name}", "img"))
    table_s = time.perf_counter() - t_table

    values, problems = {}, []
    bar = _progress_factory(progress, "scoring", "metric")
    bar = bar(len(specs)) if bar else None
    try:
        for spec, params in specs:
            if bar is not None:
                bar.set_postfix_str(spec.name)
            t0 = time.perf_counter()
            codes = table.lookup(spec.name, requests[spec.name])
            try:
                values[spec.name] = spec.score(requests[spec.name], codes, seed=seed, **params)
            except (InputError, SubmissionFailure):
                raise
            except Exception as exc:  # a metric bug on these codes: keep the other scores, say what broke
                values[spec.name] = spec.null_values(params)  # the declared shape, every value null
                problems.append(f"metric {spec.name} could not be computed on these codes "
                                f"({type(exc).__name__}: {exc}); its values are null")
            metric_s[spec.name] += time.perf_counter() - t0
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    report_arrays = None
    t_diag = time.perf_counter()
    if with_diagnostics:
        try:
            report_arrays = _diagnostics(dataset, table, requests, values, seed)
        except Exception as exc:  # figures are a convenience: never lose the scores over them
            problems.append(f"report figures could not be drawn ({type(exc).__name__}: {exc})")
    entry = {
        "dataset": dataset_info(dataset),
        "preset": preset,
        "seed": int(seed),
        "metrics": to_jsonable(values),
        "params": to_jsonable({spec.name: params for spec, params in specs}),
        "notes": [str(n) for n in notes] + problems,
        "timing": {
            "encode_s": round(timing.encode_s, 4),
            "code_table_s": round(table_s, 4),
            "metrics_s": {k: round(v, 4) for k, v in metric_s.items()},
            "total_s": round(time.perf_counter() - t_start, 4),
            "images_encoded": int(timing.images_encoded),
            "render_s": round(timing.render_s, 4),
            "report_s": round(time.perf_counter() - t_diag, 4),
            "images_requested": int(timing.images_requested),
            "images_from_cache": int(timing.images_from_cache),
        },
    }
    return entry, report_arrays


def _diagnostics(dataset, table, requests: dict, values: dict, seed: int) -> dict:
    """Arrays for the report, from codes already encoded (plus a few dozen images rendered by index).

    The MI heatmap and the Hinton diagram draw the metrics' own matrices from ``values``
    (report.figure_sources); only when MIG did not produce one is an MI matrix estimated here.
    """
    rng = np.random.default_rng([seed, 0x5E907])  # its own stream: never disturbs a metric's draws
    if table.stochastic:
        codes = np.concatenate([table.per_request[name] for name in requests])
        factors = dataset.index_to_factors(np.concatenate(
            [np.asarray(requests[name].indices, dtype=np.int64).ravel() for name in requests]))
        indices = np.concatenate([np.asarray(requests[name].indices, dtype=np.int64).ravel() for name in requests])
    else:
        codes, indices = table.codes, table.indices
        factors = dataset.index_to_factors(indices)
    # which dataset class: the report's recorded reference values hold for procedural dSprites only
    out: dict = {"curve_samples": len(codes), "dataset_class": f"{type(dataset).__module__}.{type(dataset).__qualname__}"}
    if not len(codes):
        return out
    out["curves"] = diag_mod.response_curves(codes, factors, dataset.factor_sizes)
    if (values.get("mig") or {}).get("mutual_info_matrix") is None:  # MIG did not run (or failed): estimate
        rows = rng.choice(len(codes), size=min(_DIAG_ROWS, len(codes)), replace=False)
        out["mi"] = diag_mod.mutual_info_matrix(codes[rows], factors[rows])
        out["entropies"] = diag_mod.factor_entropies(factors[rows])
        out["mi_samples"] = len(rows)
    fv = requests.get("factor_vae")
    if fv is not None and "num_variance_estimate" in (getattr(fv, "structure", None) or {}):
        # each dimension's std over FactorVAE's own variance-estimate rows (ddof=1, as the metric):
        # the report explains a score of 0 with no active dimension by the largest of these
        n = int(fv.structure["num_variance_estimate"])
        if table.stochastic:
            rows_fv = table.per_request["factor_vae"][:n]
        else:
            rows_fv = table.codes[np.searchsorted(table.indices, np.asarray(fv.indices, dtype=np.int64).ravel()[:n])]
        if len(rows_fv) > 1:
            out["factor_vae_std"] = np.asarray(rows_fv, dtype=np.float64).std(axis=0, ddof=1)
    out["dim_traversal"] = dimension_traversal(dataset, codes, indices, seed=seed)
    # the datasets' own traversal: it also handles labelled subsets (only existing combinations)
    rows = traversal_indices(dataset, max_columns=_MONTAGE_COLUMNS, rng=np.random.default_rng(seed))
    steps = max(len(indices) for _, _, indices in rows)
    shape = tuple(dataset.observation_shape)
    images = np.zeros((len(rows), steps) + shape, dtype=np.uint8)
    for r, (_, _, indices) in enumerate(rows):
        if len(indices):
            images[r, :len(indices)] = dataset.observations(indices, rng=np.random.default_rng(seed))
    out["montage"] = (images, [shown for _, shown, _ in rows])
    return out


def dimension_traversal(dataset, codes: np.ndarray, indices: np.ndarray, *, seed: int = 0,
                        percentiles=TRAVERSAL_PERCENTILES, max_dims: int = TRAVERSAL_MAX_DIMS) -> dict:
    """Decoder-free traversal: per code dimension, the encoded observations whose code on that
    dimension sits at ``percentiles`` of its values, rendered from the dataset by grid index.

    ``codes[i]`` is the code of grid index ``indices[i]``. At most ``max_dims`` dimensions, those
    with the largest variance, in dimension order. Returns ``{"dims", "std", "values" (dims x
    percentiles), "indices", "images" (dims x percentiles x H x W x C), "percentiles",
    "num_dims", "samples", "stochastic"}``.
    """
    codes = np.asarray(codes, dtype=np.float64)
    indices = np.asarray(indices, dtype=np.int64)
    n, d = codes.shape
    std = codes.std(axis=0)
    dims = np.sort(np.argsort(-std, kind="stable")[:max_dims])
    pos = np.round(np.asarray(percentiles, dtype=np.float64) / 100.0 * (n - 1)).astype(np.int64)
    rows = np.stack([np.argpartition(codes[:, j], pos)[pos] for j in dims]) if len(dims) else np.zeros((0, len(pos)), np.int64)
    picked = indices[rows]
    images = dataset.observations(picked.ravel(), rng=np.random.default_rng(seed)) if picked.size else \
        np.zeros((0,) + tuple(dataset.observation_shape), dtype=np.uint8)
    return {"dims": dims, "std": std[dims], "values": codes[rows, dims[:, None]] if len(dims) else np.zeros((0, len(pos))),
            "indices": picked, "images": np.asarray(images).reshape(picked.shape + tuple(dataset.observation_shape)),
            "percentiles": tuple(percentiles), "num_dims": d, "samples": n,
            "stochastic": bool(getattr(dataset, "stochastic", False))}


# -- sandboxed sessions -------------------------------------------------------------------------

def _load_submission(submission, limits=None):
    from harness import submission as submission_mod

    if isinstance(submission, (str, os.PathLike)):
        path = Path(submission)
        if not path.exists():
            raise InputError(f"submission not found: {str(path)!r}")
        caps = {"max_latent_dim": limits.max_latent_dim} if limits is not None else {}
        return submission_mod.load(path, **caps)
    return submission


def _limits(limits):
    if limits is None or not isinstance(limits, dict):
        return limits
    from harness.sandbox import Limits

    return Limits(**limits)


@contextmanager
def open_session(submission, *, sandbox: str = "process", device: str = "auto", limits=None):
    """The sandboxed encoder for ``submission`` (``sandbox='none'`` runs it in-process, trusted)."""
    from harness import sandbox as sandbox_mod

    kwargs = {"backend": sandbox, "device": device}
    limits = _limits(limits)
    if limits is not None:
        kwargs["limits"] = limits
    with sandbox_mod.open_encoder(submission, **kwargs) as session:
        yield session


def evaluate_dataset(submission, dataset, *, preset: str | None = "challenge", metrics=None, metric_params=None,
                     seed: int = 0, sandbox: str = "process", device: str = "auto", limits=None,
                     cache=None, progress=None) -> dict:
    """Score one submission on one dataset: the ``evaluations`` entry of results.json (DESIGN 3.5).

    Parameters
    ----------
    submission : path or :class:`harness.submission.Submission`
    dataset : registered name, file path, or a GroundTruthDataset
    preset, metrics, metric_params, seed : as :func:`evaluate`
    sandbox, device, limits : passed to :func:`harness.sandbox.open_encoder`
    cache : directory for codes kept by (submission hash, dataset, index), or None

    Raises
    ------
    harness.errors.SubmissionFailure
        The submission failed (its kind says how); nothing is scored.
    harness.errors.InputError
        Unknown dataset/metric/preset, bad parameters.
    """
    entry, _ = _evaluate_dataset(submission, dataset, preset=preset, metrics=metrics, metric_params=metric_params,
                                 seed=seed, sandbox=sandbox, device=device, limits=limits, cache=cache,
                                 progress=progress, with_diagnostics=False)
    return entry


def _evaluate_dataset(submission, dataset, *, preset, metrics, metric_params, seed, sandbox, device, limits,
                      cache, progress, with_diagnostics):
    from harness.evaluation.cache import DatasetCache

    specs = resolve_metrics(preset, metrics, metric_params)
    ds = _load_dataset(dataset)
    with ExitStack() as stack:
        limits = _limits(limits)
        sub = _load_submission(submission, limits)
        if sub is not submission and hasattr(sub, "close"):
            stack.callback(sub.close)  # an unpacked archive's temporary folder
        session = stack.enter_context(open_session(sub, sandbox=sandbox, device=device, limits=limits))
        dcache = DatasetCache(cache, sub.sha256, ds) if cache else None
        entry, arrays = run_dataset(ds, specs, session.encode, seed=seed, preset=preset, cache=dcache,
                                    code_dim=sub.latent_dim, progress=_auto_progress(progress),
                                    notes=getattr(session, "notes", []), with_diagnostics=with_diagnostics)
        _note_fixed_batch(entry, session)
        return entry, arrays


def _note_fixed_batch(entry: dict, session) -> None:
    """A fixed-batch model is fed one batch of its size per call: say how fast that went."""
    fixed = getattr(session, "fixed_batch", None)
    t = entry["timing"]
    if not fixed or not t.get("images_encoded"):
        return
    n, seconds = t["images_encoded"], t["encode_s"]
    rate = f"{n / seconds:,.0f} images/s" if seconds > 0 else "too fast to time"
    limits = getattr(session, "limits", None)
    per_call = getattr(limits, "batch_size", 1024)
    entry["notes"].append(f"fixed batch size {fixed}: {n:,} images encoded in {seconds:.1f} s ({rate}) in "
                          f"{-(-n // fixed):,} model calls of {fixed}; with a dynamic batch axis the harness "
                          f"feeds {per_call:,} images per call")


# -- the whole evaluation -----------------------------------------------------------------------

def _submission_info(sub) -> dict:
    return {"name": sub.name, "format": sub.format, "sha256": sub.sha256,
            "input_range": getattr(sub, "input_range", [0, 1]), "input_layout": getattr(sub, "input_layout", "NCHW"),
            "fixed_batch": None}


def evaluate(submission_path, *, datasets=("dsprites",), preset: str | None = "challenge", metrics=None,
             metric_params: dict | None = None, seed: int = 0, out=None, sandbox: str = "process",
             device: str = "auto", limits=None, cache=None, progress=None) -> dict:
    """Evaluate a submission on each dataset; return the results dict (DESIGN 3.5).

    Parameters
    ----------
    submission_path : directory, .zip or .tar.gz holding ``submission.json`` and the model.
    datasets : registered names or dataset files, default ``("dsprites",)`` (procedural).
    preset : ``"challenge"`` (the 2019 leaderboard's five metrics), ``"dlib"`` or ``"full"``.
    metrics : metric names to run instead of the whole preset (the preset's params still apply).
    metric_params : ``{metric: {param: value}}`` overrides, e.g. smaller sample sizes.
    seed : every metric's seed (2019 used 0); recorded in the results.
    out : directory to write ``results.json`` and ``report.html`` to (created); None writes nothing.
    sandbox : ``"process"`` (default), ``"bwrap"``, ``"docker"`` or ``"none"`` (in-process, trusted).
    device : ``"auto"``, ``"cpu"`` or ``"cuda"``.
    limits : :class:`harness.sandbox.Limits` (or a dict of its fields), or None for the defaults.
    cache : directory for codes kept by (submission hash, dataset, index); a rerun encodes only
        what it has not seen.
    progress : progress bars on stderr; None shows them when stderr is a terminal.

    A failing submission does not raise: the results say ``"status": "failed"`` with the failure's
    kind and message (and keep evaluations finished before it). Bad input raises InputError.
    """
    specs = resolve_metrics(preset, metrics, metric_params)  # bad input fails before any work
    loaded = [_load_dataset(d) for d in (datasets or ())]
    if not loaded:
        raise InputError("give at least one dataset")
    if isinstance(submission_path, (str, os.PathLike)) and not Path(submission_path).exists():
        raise InputError(f"submission not found: {str(submission_path)!r}")
    out_dir = _prepare_out(out)
    progress = _auto_progress(progress)

    results = new_results()
    report_arrays: list = []
    headline = {spec.name: list(getattr(spec, "headline", []) or []) for spec, _ in specs}
    layers, used_device = [], None
    try:
        with ExitStack() as stack:
            limits = _limits(limits)
            sub = _load_submission(submission_path, limits)
            if sub is not submission_path and hasattr(sub, "close"):
                stack.callback(sub.close)
            results["submission"] = _submission_info(sub)
            session = stack.enter_context(open_session(sub, sandbox=sandbox, device=device, limits=limits))
            layers = list(getattr(session, "layers", []) or [])
            results["submission"]["fixed_batch"] = getattr(session, "fixed_batch", None)
            used_device = (getattr(session, "info", None) or {}).get("device") or device  # "auto" resolved
            from harness.evaluation.cache import DatasetCache

            session_notes = list(getattr(session, "notes", []))  # e.g. unsandboxed, CUDA fallback
            for ds in loaded:
                dcache = DatasetCache(cache, sub.sha256, ds) if cache else None
                seen = len(getattr(session, "notes", []))
                entry, arrays = run_dataset(ds, specs, session.encode, seed=seed, preset=preset, cache=dcache,
                                            code_dim=sub.latent_dim,
                                            progress=progress)
                # notes raised while encoding this dataset (e.g. channel tiling) belong to it alone
                entry["notes"] = session_notes + list(getattr(session, "notes", []))[seen:] + entry["notes"]
                _note_fixed_batch(entry, session)
                results["evaluations"].append(entry)
                report_arrays.append(arrays)
    except SubmissionFailure as failure:
        results["status"] = "failed"
        results["failure"] = failure.to_dict()
    results["environment"] = environment(device=used_device, sandbox_layers=layers)
    results = to_jsonable(results)
    if out_dir is not None:
        from harness.evaluation.report import write_report

        write_results(results, out_dir / "results.json")
        write_report(results, out_dir / "report.html", report_arrays, headline=headline)
    return results


def _prepare_out(out) -> Path | None:
    if out is None:
        return None
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {str(out)!r}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise InputError(f"output directory {str(out)!r} is not writable")
    return out


def _in_git_work_tree(path: Path) -> bool:
    return any((p / ".git").exists() for p in [path, *path.parents])


def default_out_dir(submission_path, *, parent=None) -> Path:
    """A new folder named after the submission: ``<name>-results``, then ``-2``, ``-3``, ...

    Beside the submission, unless that lies in a git work tree (results written there would be
    untracked clutter in someone's repository): then in the current directory (``parent``)."""
    if parent is None:
        beside = Path(str(submission_path).rstrip("/\\")).resolve().parent
        parent = "." if _in_git_work_tree(beside) else beside
    stem = Path(str(submission_path).rstrip("/\\")).name or "submission"
    for suffix in (".tar.gz", ".tgz", ".zip"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    base = Path(parent) / f"{stem}-results"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
