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

# --- metrics commands (issue 3) ---

# --- validate / doctor commands (issue 4) ---

# --- evaluate command (issue 5) ---

# --- train / export commands (issue 6) ---

# --- grade / status / leaderboard commands (issue 7) ---
