"""The ``lmuf`` command line: a thin layer over the Python API.

Each command lives in its own module of this package and is registered below.
"""

from __future__ import annotations

import sys

import click

from lmuformer.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lmuformer")
def cli() -> None:
    """Train, export (NIR), simulate (Lava, emulator) and report the Spiking LMUFormer."""


def _register() -> None:
    from lmuformer.cli import export, finetune, info, report, simulate, stream, train

    for module in (export, finetune, info, report, simulate, stream, train):
        cli.add_command(module.command)


_register()


def main() -> None:
    """Entry point: runs the CLI, turning UserError (and Ctrl-C) into one line and exit 2/130."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
