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

# --- train / export commands (issue 6) ---

# --- grade / status / leaderboard commands (issue 7) ---
