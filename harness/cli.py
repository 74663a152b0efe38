"""The ``harness`` command line: a thin click layer that parses, calls the library and prints.

Bad input raises :class:`harness.errors.InputError` in the library; here it becomes one line on
stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import sys
import warnings

import click

from harness import __version__
from harness.errors import InputError
from harness.text import safe_lines


def _echo(message="", **kwargs):
    """Every line the CLI prints: names, a model's exception text and failure messages come from
    participants and may hold terminal escapes (a fake VALID line, a retitled window)."""
    click.echo(safe_lines(str(message)), **kwargs)


@contextlib.contextmanager
def _bad_input_is_one_line():
    """Bad input is one line on stderr and exit code 2, whether the library refused it (InputError)
    or click did (an unknown option, a value not among the choices)."""
    try:
        yield
    except InputError as exc:
        _echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.NoArgsIsHelpError:
        raise  # a group called alone shows its help
    except click.UsageError as exc:
        where = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
        _echo(f"error: {exc.format_message()}{where}", err=True)
        sys.exit(2)


class _Group(click.Group):
    def make_context(self, *args, **kwargs):  # harness's own options
        with _bad_input_is_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):  # every subcommand: its options, then the library
        with _bad_input_is_one_line():
            return super().invoke(ctx)


class LibraryChoice(click.Choice):
    """A click.Choice over a constant of the library, ``"module:NAME"``, read when the option is
    first parsed or shown: the CLI imports neither torch nor the metric suite before a command needs it.
    ``extra`` choices are the CLI's own (``none``: no export)."""

    def __init__(self, constant: str, *extra: str):
        self.constant, self.extra, self.case_sensitive = constant, extra, True

    @functools.cached_property
    def choices(self) -> tuple:
        module, name = self.constant.split(":")
        return tuple(getattr(importlib.import_module(module), name)) + self.extra


SANDBOXES = LibraryChoice("harness.sandbox.backends:BACKENDS")  # 'none' included: in-process, trusted models
SANDBOXED = LibraryChoice("harness.grading.challenge:BACKENDS")  # the isolating ones, as a challenge may name
DEVICES = LibraryChoice("harness.sandbox.session:DEVICES")
PRESETS = LibraryChoice("harness.metrics.registry:PRESETS")


def _parse_params(ctx, option, pairs, *, per_metric: bool) -> dict:
    """Every command's --param: ``NAME=VALUE`` pairs (repeated) -> ``{NAME: VALUE}``, or with ``per_metric``
    ``METRIC.NAME=VALUE`` pairs -> ``{METRIC: {NAME: VALUE}}``. A value is read as JSON when it is JSON
    (2000, 0.5, [10, 100]), else kept as text; the library checks the names and the values."""
    params: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        metric, dot, name = (part.strip() for part in key.partition("."))
        if not sep or not key.strip() or (per_metric and not (metric and dot and name)):
            raise InputError(f"bad --param {pair!r}: write {option.metavar}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.strip()
        if per_metric:
            params.setdefault(metric, {})[name] = value
        else:
            params[key.strip()] = value
    return params


def _param_option(*, per_metric: bool, help: str):
    metavar = "METRIC.NAME=VALUE" if per_metric else "NAME=VALUE"
    return click.option("--param", "params", multiple=True, metavar=metavar, help=help,
                        callback=functools.partial(_parse_params, per_metric=per_metric))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def cli():
    """Grade learned representations for disentanglement (NeurIPS 2019 challenge metrics)."""
    _quiet_third_party()
    warnings.formatwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the user reads it: one line, without the source location (which is ours or a
    library's, never the user's)."""
    return f"WARNING: {message}\n"


def _quiet_third_party():
    """Drop what third-party libraries say that tells the user nothing, each message by name (adding
    the same filter twice is a no-op)."""
    logging.getLogger("torch.onnx._internal.exporter._registration").addFilter(_not_torchvision_missing)


def _not_torchvision_missing(record: logging.LogRecord) -> bool:
    """torch's ONNX exporter logs a warning for every torchvision op it skips when torchvision is not
    installed; no encoder here needs torchvision."""
    return not record.getMessage().startswith("torchvision is not installed")


def main():
    cli(prog_name="harness")


# --- datasets commands (issue 2) ---


@cli.group("datasets")
def datasets_group():
    """List, preview, export and check factor-labelled datasets."""


@datasets_group.command("list")
def datasets_list():
    """Registered datasets: name, factors with sizes, image shape, source."""
    from harness import datasets

    for name in datasets.names():
        try:
            ds = datasets.describe(name)  # class attributes: no caches rendered, no files read
        except InputError as exc:  # e.g. a factory that needs options: one line, the others still listed
            _echo(f"{name:16s} (not described: {exc})")
            continue
        factors = ", ".join(f"{f}={s}" for f, s in zip(ds.factor_names, ds.factor_sizes))
        shape = "x".join(str(d) for d in ds.observation_shape)
        kind = "stochastic" if ds.stochastic else "deterministic"
        _echo(f"{name:16s} {ds.num_observations:>9,d} images {shape:8s} {kind:13s} {factors}  [{ds.source}]")
    _echo("files: original dSprites .npz, MPI3D .npz, DeepMind 3dshapes.h5, organizer .h5; folders: SmallNORB, Cars3D (harness datasets check PATH)")


@datasets_group.command("show")
@click.argument("name")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--columns", default=10, show_default=True, help="Most values shown per factor.")
@click.option("--seed", default=0, show_default=True, help="Seed for stochastic nuisances.")
def datasets_show(name, out, columns, seed):
    """Write a montage of NAME (or a dataset file): one row per factor, the others fixed."""
    from harness import datasets
    from harness.datasets.montage import save_montage

    if columns < 1:
        raise InputError("--columns must be at least 1")
    if not out.lower().endswith(".png"):
        raise InputError(f"--out {out!r}: the montage is a PNG; give a path ending in .png")
    path = save_montage(datasets.load(name), out, max_columns=columns, seed=seed)
    _echo(f"wrote {path}")


@datasets_group.command("export")
@click.argument("name")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Organizer HDF5 file to write.")
@click.option("--subset", type=int, default=None, help="Export N distinct random grid points instead of the full grid.")
@click.option("--seed", default=0, show_default=True, help="Seed for the subset and stochastic nuisances.")
def datasets_export(name, out, subset, seed):
    """Export NAME to the organizer HDF5 format (images, factors, factor_names, factor_sizes)."""
    from harness import datasets
    from harness.datasets.files import export_organizer

    info = export_organizer(datasets.load(name), out, subset=subset, seed=seed)
    _echo(f"wrote {out}: {info['num_rows']:,d} images, {'full grid' if info['full_grid'] else 'subset'}")


@datasets_group.command("check")
@click.argument("path", type=click.Path())
def datasets_check(path):
    """Validate a dataset file or folder (organizer HDF5, an original file, SmallNORB or Cars3D folder); exit 2 with the reason if bad."""
    from harness.datasets.files import check_file

    info = check_file(path)
    _echo(f"ok: {path}: {info}")

# --- metrics commands (issue 3) ---

@cli.group("metrics")
def metrics_group():
    """The metric suite: what each metric reports and which presets run it."""


@metrics_group.command("list")
@click.option("--preset", "preset_name", type=PRESETS, default=None, help="Only the metrics of this preset.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def metrics_list(preset_name, as_json):
    """List metrics: name, output keys (headline first, starred), presets, citation."""
    from harness import metrics as metrics_mod

    names = metrics_mod.names() if preset_name is None else list(metrics_mod.preset(preset_name))
    specs = [metrics_mod.get(n) for n in names]
    if as_json:
        _echo(json.dumps([{"name": s.name, "keys": list(s.keys), "headline": list(s.headline),
                                 "presets": list(s.presets), "citation": s.citation,
                                 "default_params": {k: (list(v) if isinstance(v, tuple) else v)
                                                    for k, v in s.default_params.items()}} for s in specs],
                               indent=2))
        return
    for s in specs:
        keys = [f"*{k}" for k in s.headline] + [k for k in s.keys if k not in s.headline]
        _echo(f"{s.name}  [{', '.join(s.presets)}]")
        _echo(f"    keys: {', '.join(keys)}")
        _echo(f"    {s.citation}")

# --- validate / doctor commands (issue 4) ---

def _limit_options(command):
    """The sandbox limits of a command, in one spelling everywhere: --wall-seconds and --memory-mb, as
    the challenge file's [limits] names them (--time-limit and --memory-limit stay as hidden aliases),
    handed to the command as one ``limits`` argument (a harness.sandbox.Limits)."""

    @functools.wraps(command)
    def with_limits(*args, wall_seconds, time_limit_alias, memory_mb, memory_limit_alias, **kwargs):
        from harness.sandbox import Limits

        given = {"wall_seconds": _one_of(wall_seconds, time_limit_alias, "--wall-seconds/--time-limit"),
                 "memory_mb": _one_of(memory_mb, memory_limit_alias, "--memory-mb/--memory-limit")}
        return command(*args, limits=Limits(**{k: v for k, v in given.items() if v is not None}), **kwargs)

    seconds, megabytes = click.FloatRange(min=0, min_open=True), click.IntRange(min=256)
    options = [
        click.option("--wall-seconds", type=seconds, default=None, metavar="S",
                     help="Wall seconds the model may take to load and for each encode call.  [default: 300]"),
        click.option("--time-limit", "time_limit_alias", type=seconds, default=None, hidden=True),
        click.option("--memory-mb", type=megabytes, default=None, metavar="MB",
                     help="Address-space limit of the model process.  [default: 8192]"),
        click.option("--memory-limit", "memory_limit_alias", type=megabytes, default=None, hidden=True),
    ]
    for option in reversed(options):
        with_limits = option(with_limits)
    return with_limits


def _one_of(value, alias, name):
    if value is not None and alias is not None and value != alias:
        raise InputError(f"{name} given twice with different values ({value} and {alias})")
    return value if value is not None else alias


@cli.command("validate")
@click.argument("submission", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--sandbox", type=SANDBOXES, default="process",
              show_default=True, help="Isolation backend; 'none' runs the model in this process, UNSANDBOXED.")
@click.option("--device", type=DEVICES, default="cpu", show_default=True)
@_limit_options
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
def validate_command(submission, as_json, sandbox, device, limits, threads):
    """Check SUBMISSION (folder, .zip or .tar.gz): manifest, safe unpacking, loading in the sandbox,
    probe batches of 1 and 257 images. Exit 0 when valid, 1 when not, 3 when the failure is on our
    side (infra_error), as for evaluate."""
    import dataclasses

    from harness.sandbox import validate

    report = validate(submission, backend=sandbox, device=device, limits=dataclasses.replace(limits, threads=threads))
    if as_json:
        _echo(json.dumps(report, indent=2))
    else:
        for check in report["checks"]:
            _echo(f"  [{'ok' if check['ok'] else 'FAIL'}] {check['name']}: {check['message']}")
        for note in report["notes"]:
            _echo(f"  note: {note}")
        if report["failure"] and report["failure"].get("detail"):
            detail = report["failure"]["detail"].strip().splitlines()[-5:]
            _echo("  detail (last lines):\n    " + "\n    ".join(detail))
        _echo(report["verdict"])
    failure = report["failure"] or {}
    sys.exit(0 if report["ok"] else 3 if failure.get("kind") == "infra_error" else 1)


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--backend", "backends", multiple=True, type=SANDBOXED,
              help="Backends to probe (repeat).  [default: process, bwrap]")
def doctor_command(as_json, backends):
    """Which sandbox layers work on this machine, and why others do not.

    Starts a real sandboxed child per backend and runs hostile checks inside it, then a probe model
    of each format (onnx, torchscript, torch_export) through it. With --backend, exits 3 when a
    named backend cannot run a model of every format (0 otherwise)."""

    from harness.sandbox.doctor import diagnose

    report = diagnose(backends or ("process", "bwrap"))
    failing = [name for name, res in report["backends"].items()
               if backends and any(m["ok"] is False for m in (res.get("models") or {None: {"ok": False}}).values())]
    if as_json:
        _echo(json.dumps(report, indent=2))
        sys.exit(3 if failing else 0)
    _echo("machine:")
    for key, value in report["machine"].items():
        _echo(f"  {key}: {value}")
    for name, res in report["backends"].items():
        _echo(f"backend {name}:")
        if not res.get("available"):
            _echo(f"  unavailable: {res.get('reason')}")
            continue
        if res.get("error"):
            _echo(f"  ERROR: {res['error']}")
            continue
        for line in res["report"]:
            _echo(f"  {line}")
        for check, outcome in res["checks"].items():
            state = "contained" if outcome["contained"] else "NOT CONTAINED"
            _echo(f"  check {check}: {state} ({outcome['detail']})")
        _echo(f"  applied: {', '.join(res['layers'])}")
        if res.get("image"):
            image = res["image"]
            _echo(f"  image: {image['name']} ({(image['id'] or '?')[:19]}), built for "
                  f"{', '.join(image['formats']) if image['formats'] else 'unknown formats (not harness docker build)'}")
        for fmt, outcome in res["models"].items():
            state = {True: "ok", False: "FAIL", None: "skipped"}[outcome["ok"]]
            took = f" in {outcome['seconds']} s" if outcome.get("seconds") is not None else ""
            _echo(f"  model {fmt}: {state}{took}: {outcome['message']}")
        ready = res["ready"]
        _echo(f"  verdict: {'READY for ' + ', '.join(ready) if ready else 'NOT READY: it runs no model'}"
              + ("" if len(ready) == len(res["models"]) else
                 f"; not for {', '.join(f for f in res['models'] if f not in ready)}"))
    sys.exit(3 if failing else 0)


@cli.group("docker")
def docker_group():
    """The docker backend's image."""


@docker_group.command("build")
@click.option("--tag", default=None, help="Image name.  [default: harness-grader:latest, the backend's default]")
@click.option("--with-torch", is_flag=True, help="Include torch: the image then runs torchscript and torch_export "
              "models too (about 1 GB more).")
@click.option("--python", "python", default=None, metavar="PATH",
              help="Interpreter whose environment to package (a venv's python works).  [default: this one]")
@click.option("--no-check", is_flag=True, help="Skip running a probe model of each format in the new image.")
def docker_build_command(tag, with_torch, python, no_check):
    """Build the docker backend's image offline, from an installed Python environment.

    No registry is needed: the interpreter, its stdlib, the model runtimes (numpy, onnx, onnxruntime,
    pyseccomp; torch with --with-torch) with everything they require and the shared libraries they
    load go into an image through `docker import`. Then a probe model of each format it is built
    for runs in it through the docker backend. Exit 0 when it runs them all, 3 when not (or when no
    engine is reachable)."""
    import os

    from harness.sandbox import docker
    from harness.sandbox.doctor import model_checks

    tag = tag or docker.DEFAULT_IMAGE
    try:
        image = docker.build_image_from_host(tag, python=python or sys.executable, with_torch=with_torch)
    except OSError as exc:
        _echo(f"error: cannot build {tag}: {exc}", err=True)
        sys.exit(3)
    _echo(f"built {tag} ({image['id'][:19]}, {image['size_mb']} MB) from {image['python']}: "
          f"{len(image['distributions'])} distributions; for {', '.join(image['formats'])}")
    if tag != docker.image_name():
        _echo(f"note: the docker backend uses {docker.image_name()!r}; set HARNESS_DOCKER_IMAGE={tag} to use this one")
    if no_check:
        return
    os.environ["HARNESS_DOCKER_IMAGE"] = tag
    results = model_checks("docker", formats=image["formats"])
    for fmt, outcome in results.items():
        _echo(f"  model {fmt}: {'ok' if outcome['ok'] else 'FAIL'}: {outcome['message']}")
    sys.exit(0 if all(o["ok"] for o in results.values()) else 3)

# --- evaluate command (issue 5) ---

@cli.command("evaluate")
@click.argument("submission", type=click.Path())
@click.option("--dataset", "datasets", multiple=True, metavar="NAME|FILE",
              help="Dataset name or file; repeat for several. Default: dsprites (procedural).")
@click.option("--preset", type=PRESETS, default="challenge", show_default=True,
              help="Metric suite: challenge = the 2019 leaderboard's five.")
@click.option("--metric", "metrics", multiple=True, metavar="NAME", help="Run only these metrics (repeat).")
@_param_option(per_metric=True, help="Override a metric parameter, e.g. factor_vae.num_train=2000 (repeat).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every metric (2019 used 0).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder. Default: a new <submission>-results beside the submission (in the current folder when the submission is in a git work tree).")
@click.option("--sandbox", type=SANDBOXES, default="process",
              show_default=True, help="Isolation backend; none runs the model in-process (trusted models only).")
@click.option("--device", type=DEVICES, default="auto", show_default=True)
@_limit_options
@click.option("--cache", type=click.Path(file_okay=False), metavar="DIR",
              help="Keep codes by (submission, dataset, index): a rerun encodes only what is new.")
@click.option("--json", "as_json", is_flag=True, help="Print results.json to stdout; no table, no progress bars.")
def evaluate_command(submission, datasets, preset, metrics, params, seed, out, sandbox, device, limits, cache,
                     as_json):
    """Score SUBMISSION (folder, .zip or .tar.gz) and write results.json and report.html.

    Exit status: 0 scored, 1 the submission failed (kind and message on stderr), 2 bad input,
    3 an infrastructure failure on our side.
    """
    from harness.evaluation import evaluate, resolve_metrics
    from harness.evaluation.evaluate import default_out_dir
    from harness.evaluation.report import text_table

    specs = resolve_metrics(preset, list(metrics) or None, params)
    out_dir = out or default_out_dir(submission)
    results = evaluate(submission, datasets=list(datasets) or ["dsprites"], preset=preset,
                       metrics=list(metrics) or None, metric_params=params, seed=seed, out=out_dir,
                       sandbox=sandbox, device=device, limits=limits, cache=cache,
                       progress=False if as_json else None)
    if as_json:
        _echo(json.dumps(results, indent=2))
    else:
        headline = {spec.name: list(getattr(spec, "headline", []) or []) for spec, _ in specs}
        if results["evaluations"]:
            _echo(text_table(results, headline))
    # where it went, always (with --json on stderr, so that stdout stays exactly results.json)
    _echo(f"results: {out_dir}/results.json\nreport:  {out_dir}/report.html", err=as_json)
    failure = results["failure"]
    if failure:
        _echo(f"failed: {failure['kind']}: {failure['message']}", err=True)
        said = [line.strip() for line in (failure.get("detail") or "").splitlines() if line.strip()]
        if said:  # the participant's own run: show what their model said (boards never do)
            _echo(f"  last line of the detail: {said[-1][:300]}", err=True)
        sys.exit(3 if failure["kind"] == "infra_error" else 1)

# --- train / export commands (issue 6) ---


def _progress_lines(total: int, initial: int, desc: str):
    """Training progress off a terminal (a pipe, a CI log, a batch job): a plain line every ~10 s, as
    evaluate prints, instead of a bar redrawn with carriage returns."""
    from harness.evaluation.evaluate import LineProgress

    lines = LineProgress(total, desc, "steps")
    lines.n = initial  # a resumed run counts on from its checkpoint
    return lines


@cli.command("train")
@click.option("--model", type=LibraryChoice("harness.baseline.losses:MODELS"), default="beta_vae", show_default=True,
              help="A model of the beta-VAE family.")
@click.option("--dataset", default="dsprites", show_default=True, metavar="NAME|FILE",
              help="A registered dataset or a dataset file (streamed, never loaded whole).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder: checkpoint, log, loss curve and the exported submission.")
@click.option("--steps", default=10000, show_default=True, type=click.IntRange(min=1), help="Total training steps.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--lr", default=1e-4, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Adam learning rate.")
@click.option("--beta", type=float, default=None, help="beta of beta_vae / beta_tcvae (study default 4).")
@_param_option(per_metric=False,
               help="Override a model hyperparameter, e.g. gamma=20, c_max=25, lambda_od=10 (repeat).")
@click.option("--latent-dim", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--init", "weight_init", type=LibraryChoice("harness.baseline.models:WEIGHT_INITS"), default="glorot",
              show_default=True,
              help="Layer init: glorot (disentanglement_lib's) or torch (PyTorch's default).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds data order, init and sampling noise.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: torch's choice).")
@click.option("--checkpoint-every", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--format", "export_format", type=LibraryChoice("harness.baseline.export:FORMATS", "none"),
              default="onnx", show_default=True, help="Submission format exported at the end (none: no export).")
@click.option("--with-logvar", is_flag=True, help="Export (mean, logvar) instead of the mean only.")
@click.option("--name", default=None, help="Submission name (default MODEL-DATASET).")
@click.option("--no-resume", is_flag=True, help="Start over even if --out holds a checkpoint.")
@click.option("--no-progress", is_flag=True, help="No progress bar (nor, off a terminal, progress lines).")
def train_command(model, dataset, out, steps, batch_size, lr, beta, params, latent_dim, weight_init, seed, device, threads,
                  checkpoint_every, export_format, with_logvar, name, no_resume, no_progress):
    """Train a reference beta-VAE-family model and export it as a submission.

    Interrupt with Ctrl-C (or SIGTERM) at any time: the state is checkpointed, and the same command resumes.
    """
    from harness.baseline.training import CHECKPOINT_NAME, train

    overrides = dict(params)
    if beta is not None:
        overrides["beta"] = beta
    try:
        result = train(model, dataset, out=out, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                       latent_dim=latent_dim, weight_init=weight_init, params=overrides, device=device, threads=threads,
                       checkpoint_every=checkpoint_every, resume=not no_resume,
                       progress=False if no_progress else True if sys.stderr.isatty() else _progress_lines,
                       export_format=None if export_format == "none" else export_format,
                       with_logvar=with_logvar, name=name)
    except KeyboardInterrupt:
        _echo(f"\ninterrupted: state saved to {out}/{CHECKPOINT_NAME}; run the same command to resume", err=True)
        sys.exit(130)
    _echo(f"trained {model} on {dataset} to step {result.step} in {result.train_seconds:.0f} s "
               f"(CPU {result.cpu_seconds:.0f} s); loss curve {result.plot}")
    if result.submission:
        _echo(f"submission: {result.submission.parent}  (score it: harness evaluate {result.submission.parent})")


@cli.command("export")
@click.argument("source", metavar="CHECKPOINT|MODULE:CALLABLE")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Submission folder to write.")
@click.option("--format", "export_format", type=LibraryChoice("harness.baseline.export:FORMATS"), default="onnx",
              show_default=True)
@click.option("--with-logvar", is_flag=True, help="Export (mean, logvar); the encoder must return both.")
@click.option("--name", default=None, help="Submission name.")
@click.option("--input-shape", default=None, metavar="C,H,W",
              help="Input the encoder expects (needed for MODULE:CALLABLE), e.g. 1,64,64.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="safetensors state_dict to load into MODULE:CALLABLE's encoder.")
def export_command(source, out, export_format, with_logvar, name, input_shape, weights):
    """Export an encoder as a verified submission (model file + submission.json).

    SOURCE is a `harness train` checkpoint (a checkpoint.safetensors file or its run folder), or
    your own encoder as `package.module:callable` returning an nn.Module that maps float32 NCHW
    images in [0, 1] to the code (or to (mean, logvar)). The export is checked against PyTorch to
    1e-4 on several batch sizes and by the submission validator before this returns.
    """
    import os

    from harness.baseline import export as export_mod

    checkpoint = os.path.join(source, "checkpoint.safetensors") if os.path.isdir(source) else source
    if os.path.isfile(checkpoint):
        if input_shape or weights:
            raise InputError("--input-shape and --weights are for MODULE:CALLABLE sources, not checkpoints")
        result = export_mod.export_checkpoint(checkpoint, out, format=export_format, with_logvar=with_logvar,
                                              name=name)
    else:
        if ":" not in source:
            raise InputError(f"{source!r} is neither a checkpoint file nor a 'module:callable' spec")
        if not input_shape:
            raise InputError("--input-shape C,H,W is required when exporting MODULE:CALLABLE")
        try:
            shape = tuple(int(v) for v in input_shape.split(","))
        except ValueError:
            raise InputError(f"--input-shape must be three integers C,H,W, got {input_shape!r}") from None
        if len(shape) != 3:
            raise InputError(f"--input-shape must be three integers C,H,W, got {input_shape!r}")
        encoder = export_mod.load_encoder_factory(source, weights=weights)
        result = export_mod.export_encoder(encoder, out, input_shape=shape, format=export_format,
                                           with_logvar=with_logvar, name=name or "my-encoder")
    _echo(f"exported {result.model_path} with {result.exporter}; max |exported - torch| = "
               f"{result.max_abs_diff:.2g} on batches {', '.join(map(str, export_mod.VERIFY_BATCHES))}; "
               f"checks passed: {', '.join(result.validated_by)}")

# --- grade / status / leaderboard commands (issue 7) ---


@cli.command("grade")
@click.argument("submissions", nargs=-1, required=True, type=click.Path())
@click.option("--challenge", "challenge_path", required=True, type=click.Path(), help="Challenge file (TOML).")
@click.option("--db", required=True, type=click.Path(), help="SQLite grading store (created if missing).")
@click.option("--workers", default=1, show_default=True, type=int, help="Local worker processes.")
@click.option("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786): one task per job.")
@click.option("--regrade", multiple=True, metavar="NAME", help="Grade this submission again even if unchanged.")
@click.option("--sandbox", type=SANDBOXED, default=None,
              help="Override the challenge's [sandbox] backend (docker: one container per job).")
@click.option("--job-fn", default=None, hidden=True, help="module:function running one job (tests).")
def grade_command(submissions, challenge_path, db, workers, scheduler, regrade, sandbox, job_fn):
    """Grade SUBMISSIONS (folders, archives, or folders of them) into a store; safe to kill and rerun."""
    import dataclasses

    from harness.grading import grade, load_challenge

    challenge = load_challenge(challenge_path)
    if sandbox:
        challenge = dataclasses.replace(challenge, backend=sandbox)
    summary = grade(list(submissions), challenge, db, workers=workers, scheduler=scheduler, regrade=regrade,
                    job_fn=job_fn, echo=lambda line: _echo(line, err=True))
    c = summary.counts
    _echo(f"{c['finished']} finished, {c['failed']} failed, {c['queued']} queued, {c['running']} running "
               f"in {db} ({summary.wall_s:.1f} s); see `harness status --db {db}` and `harness leaderboard --db {db}`")


@cli.command("status")
@click.option("--db", required=True, type=click.Path(), help="SQLite grading store.")
def status_command(db):
    """Jobs by state; failures with their kind and message."""
    from harness.grading import status_report

    _echo(status_report(db), nl=False)


@cli.command("leaderboard")
@click.option("--db", required=True, type=click.Path(), help="SQLite grading store.")
@click.option("--split", type=LibraryChoice("harness.grading.challenge:SPLITS"), default="public", show_default=True)
@click.option("--format", "fmt", type=LibraryChoice("harness.grading.leaderboard:FORMATS"), default="table",
              show_default=True)
@click.option("--out", type=click.Path(), default=None, help="Write to this file instead of stdout.")
@click.option("--hide-failures", is_flag=True, help="Leave failed entries off the board (harness status lists them).")
def leaderboard_command(db, split, fmt, out, hide_failures):
    """The 2019 mean-rank leaderboard of a split, with 95% intervals."""
    from pathlib import Path

    from harness.grading import leaderboard

    text = leaderboard(db, split=split, fmt=fmt, hide_failures=hide_failures)
    if out:
        Path(out).write_text(text)
        _echo(f"wrote {out}", err=True)
    else:
        _echo(text, nl=False)


# --- the service: serve, teams, submit (issue 21) ---

@cli.command("serve")
@click.option("--challenge", "challenge_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Challenge TOML, with [[phases]] and [service] (docs/service.md).")
@click.option("--db", required=True, type=click.Path(), help="SQLite store (grading jobs, teams, uploads).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Local grading workers.")
@click.option("--scheduler", default=None, metavar="ADDR", help="Grade on a Dask cluster instead (tcp://host:8786).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Where uploads are kept.  [default: <db>.data]")
@click.option("--job-fn", default=None, hidden=True)
def serve_command(challenge_path, db, host, port, workers, scheduler, data_dir, job_fn):
    """Run the challenge: the HTTP API and pages, and the grading loop."""
    from harness.service.server import serve

    _echo(f"harness serve: http://{host}:{port}/  (store {db}; Ctrl-C stops)", err=True)
    serve(challenge_path, db, host=host, port=port, workers=workers, scheduler=scheduler, data_dir=data_dir,
          job_fn=job_fn)


@cli.group("teams")
def teams_group():
    """Teams of `harness serve` and their tokens (stored hashed; a token is shown once)."""


def _teams(db):
    from harness.service.teams import Teams

    return Teams(db)


@teams_group.command("add")
@click.argument("name")
@click.option("--db", required=True, type=click.Path(), help="The server's SQLite store.")
@click.option("--organizer", is_flag=True, help="An organizer token: admin API and pages, every split.")
def teams_add(name, db, organizer):
    """Create team NAME and print its token (once: keep it)."""
    _echo(_teams(db).add(name, organizer=organizer))


@teams_group.command("list")
@click.option("--db", required=True, type=click.Path(exists=True, dir_okay=False))
def teams_list(db):
    """Teams, whether organizer, and their active tokens."""
    import datetime as dt

    for t in _teams(db).list():
        made = dt.datetime.fromtimestamp(t["created_at"], dt.timezone.utc).isoformat(timespec="seconds")
        _echo(f"{t['name']:24s} {'organizer' if t['organizer'] else 'team':9s} {t['active']} active token(s)  "
              f"since {made}")


@teams_group.command("revoke")
@click.argument("name")
@click.option("--db", required=True, type=click.Path(exists=True, dir_okay=False))
def teams_revoke(name, db):
    """Revoke every token of NAME (its submissions stay)."""
    _echo(f"revoked {_teams(db).revoke(name)} token(s) of {name}")


@teams_group.command("rotate")
@click.argument("name")
@click.option("--db", required=True, type=click.Path(exists=True, dir_okay=False))
def teams_rotate(name, db):
    """Revoke NAME's tokens and print a new one."""
    _echo(_teams(db).rotate(name))


@cli.command("submit")
@click.argument("path", type=click.Path(exists=True))
@click.option("--server", required=True, metavar="URL", help="The challenge server, e.g. http://host:8000")
@click.option("--token", envvar="HARNESS_TOKEN", required=True, help="Your team's token (or $HARNESS_TOKEN).")
@click.option("--wait", is_flag=True, help="Follow the submission to its verdict.")
@click.option("--poll", type=click.FloatRange(min=0.1), default=2.0, show_default=True, hidden=True)
def submit_command(path, server, token, wait, poll):
    """Upload PATH (a submission folder, zipped on the fly, or an archive) to a `harness serve`.

    Prints the submission id. Exit 0 scored (or accepted, without --wait), 1 failed, 2 bad input
    (refused, over quota, bad token), 3 server or infrastructure."""
    from harness.service.client import SubmitError, submit

    try:
        for line in submit(path, server=server, token=token, wait=wait, poll=poll):
            _echo(line)
    except SubmitError as exc:
        _echo(f"error: {exc}", err=True)
        sys.exit(exc.code)
