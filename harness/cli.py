"""The ``harness`` command line: a thin click layer that parses, calls the library and prints.

Bad input raises :class:`harness.errors.InputError` in the library; here it becomes one line on
stderr and exit code 2.
"""

from __future__ import annotations

import sys

import click

from harness import __version__
from harness.errors import InputError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InputError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def cli():
    """Grade learned representations for disentanglement (NeurIPS 2019 challenge metrics)."""


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
        ds = datasets.load(name)
        factors = ", ".join(f"{f}={s}" for f, s in zip(ds.factor_names, ds.factor_sizes))
        shape = "x".join(str(d) for d in ds.observation_shape)
        kind = "stochastic" if ds.stochastic else "deterministic"
        click.echo(f"{name:16s} {ds.num_observations:>9,d} images {shape:8s} {kind:13s} {factors}  [{ds.source}]")
    click.echo("files: original dSprites .npz, MPI3D .npz, DeepMind 3dshapes.h5, organizer .h5 (harness datasets check FILE)")


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
    path = save_montage(datasets.load(name), out, max_columns=columns, seed=seed)
    click.echo(f"wrote {path}")


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
    click.echo(f"wrote {out}: {info['num_rows']:,d} images, {'full grid' if info['full_grid'] else 'subset'}")


@datasets_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def datasets_check(path):
    """Validate a dataset file (organizer HDF5 or an original file); exit 2 with the reason if bad."""
    from harness.datasets.files import check_file

    info = check_file(path)
    click.echo(f"ok: {path}: {info}")

# --- metrics commands (issue 3) ---

# --- validate / doctor commands (issue 4) ---

# --- evaluate command (issue 5) ---

@cli.command("evaluate")
@click.argument("submission", type=click.Path())
@click.option("--dataset", "datasets", multiple=True, metavar="NAME|FILE",
              help="Dataset name or file; repeat for several. Default: dsprites (procedural).")
@click.option("--preset", type=click.Choice(["challenge", "dlib", "full"]), default="challenge", show_default=True,
              help="Metric suite: challenge = the 2019 leaderboard's five.")
@click.option("--metric", "metrics", multiple=True, metavar="NAME", help="Run only these metrics (repeat).")
@click.option("--param", "params", multiple=True, metavar="METRIC.NAME=VALUE",
              help="Override a metric parameter, e.g. factor_vae.num_train=2000 (repeat).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every metric (2019 used 0).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder. Default: a new <submission>-results.")
@click.option("--sandbox", type=click.Choice(["process", "bwrap", "docker", "none"]), default="process",
              show_default=True, help="Isolation backend; none runs the model in-process (trusted models only).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Wall seconds the model may take to load and for each encode call.")
@click.option("--memory-limit", type=click.IntRange(min=1), metavar="MB", help="Memory limit of the model process.")
@click.option("--cache", type=click.Path(file_okay=False), metavar="DIR",
              help="Keep codes by (submission, dataset, index): a rerun encodes only what is new.")
@click.option("--json", "as_json", is_flag=True, help="Print results.json to stdout; no table, no progress bars.")
def evaluate_command(submission, datasets, preset, metrics, params, seed, out, sandbox, device, time_limit,
                     memory_limit, cache, as_json):
    """Score SUBMISSION (folder, .zip or .tar.gz) and write results.json and report.html.

    Exit status: 0 scored, 1 the submission failed (kind and message on stderr), 2 bad input,
    3 an infrastructure failure on our side.
    """
    import json

    from harness.evaluation import evaluate, resolve_metrics
    from harness.evaluation.evaluate import default_out_dir, limits_from, parse_params
    from harness.evaluation.report import text_table

    metric_params = parse_params(params)
    specs = resolve_metrics(preset, list(metrics) or None, metric_params)
    out_dir = out or default_out_dir(submission)
    results = evaluate(submission, datasets=list(datasets) or ["dsprites"], preset=preset,
                       metrics=list(metrics) or None, metric_params=metric_params, seed=seed, out=out_dir,
                       sandbox=sandbox, device=device, limits=limits_from(time_limit, memory_limit), cache=cache,
                       progress=False if as_json else None)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        headline = {spec.name: list(getattr(spec, "headline", []) or []) for spec, _ in specs}
        if results["evaluations"]:
            click.echo(text_table(results, headline))
        click.echo(f"results: {out_dir}/results.json\nreport:  {out_dir}/report.html")
    failure = results["failure"]
    if failure:
        click.echo(f"failed: {failure['kind']}: {failure['message']}", err=True)
        sys.exit(3 if failure["kind"] == "infra_error" else 1)

# --- train / export commands (issue 6) ---

# --- grade / status / leaderboard commands (issue 7) ---


@cli.command("grade")
@click.argument("submissions", nargs=-1, required=True, type=click.Path())
@click.option("--challenge", "challenge_path", required=True, type=click.Path(), help="Challenge file (TOML).")
@click.option("--db", required=True, type=click.Path(), help="SQLite grading store (created if missing).")
@click.option("--workers", default=1, show_default=True, type=int, help="Local worker processes.")
@click.option("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786): one task per job.")
@click.option("--regrade", multiple=True, metavar="NAME", help="Grade this submission again even if unchanged.")
@click.option("--sandbox", type=click.Choice(["process", "bwrap", "docker"]), default=None,
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
                    job_fn=job_fn, echo=lambda line: click.echo(line, err=True))
    c = summary.counts
    click.echo(f"{c['finished']} finished, {c['failed']} failed, {c['queued']} queued, {c['running']} running "
               f"in {db} ({summary.wall_s:.1f} s); see `harness status --db {db}` and `harness leaderboard --db {db}`")


@cli.command("status")
@click.option("--db", required=True, type=click.Path(), help="SQLite grading store.")
def status_command(db):
    """Jobs by state; failures with their kind and message."""
    from harness.grading import status_report

    click.echo(status_report(db), nl=False)


@cli.command("leaderboard")
@click.option("--db", required=True, type=click.Path(), help="SQLite grading store.")
@click.option("--split", type=click.Choice(["public", "private"]), default="public", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "md", "html"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(), default=None, help="Write to this file instead of stdout.")
def leaderboard_command(db, split, fmt, out):
    """The 2019 mean-rank leaderboard of a split, with 95% intervals."""
    from pathlib import Path

    from harness.grading import leaderboard

    text = leaderboard(db, split=split, fmt=fmt)
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)
