"""The ``lmuf`` command line: a thin layer over the Python API.

Each command lives in its own module of this package and is registered below.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from lmuformer.errors import Terminated, UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lmuformer")
@click.option("--allow-special-output", is_flag=True,
              help="Let output options write into a device or FIFO (e.g. /dev/stdout), not refuse it.")
def cli(allow_special_output: bool) -> None:
    """Train, export (NIR), simulate (Lava, emulator) and report the Spiking LMUFormer."""
    from lmuformer.files import allow_special_outputs

    allow_special_outputs(allow_special_output)


def _register() -> None:
    from lmuformer.cli import export, finetune, import_reference, info, report, simulate, stream, train
    from lmuformer.cli import map as map_command

    for module in (export, finetune, info, report, simulate, stream, train, map_command, import_reference):
        cli.add_command(module.command)


_register()


_MAIN_PID = os.getpid()


def _terminate(signum: int, frame) -> None:
    """SIGTERM/SIGHUP in the CLI process: raise Terminated (unwinds like Ctrl-C).  A child
    forked by a backend (Lava) that inherited this handler dies as it would by default."""
    if os.getpid() != _MAIN_PID:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP raise :class:`Terminated` in this process (main thread only)."""
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)


def run(args: list[str] | None = None) -> int:
    """Run the CLI on ``args``; returns the exit code: 0, 2 (one ``error:`` line on stderr),
    130 (Ctrl-C) or 128 + signal number (SIGTERM 143, SIGHUP 129)."""
    from lmuformer.files import allow_special_outputs, cleanup_temporaries, unprotect_all

    try:
        cli.main(args=args, standalone_mode=False)
        return 0
    except Terminated as e:
        click.echo(f"terminated ({signal.Signals(e.signum).name})", err=True)
        return 128 + e.signum
    except click.exceptions.Abort as e:  # click turns KeyboardInterrupt (and Terminated) into Abort
        cause = e.__cause__ or e.__context__
        if isinstance(cause, Terminated):
            click.echo(f"terminated ({signal.Signals(cause.signum).name})", err=True)
            return 128 + cause.signum
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.UsageError as e:  # one line, as for UserError
        click.echo(f"error: {e.format_message()}", err=True)
        return 2
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    finally:
        cleanup_temporaries()
        unprotect_all()
        allow_special_outputs(False)


def main() -> None:
    """Entry point: runs the CLI, turning UserError into one line and exit 2, Ctrl-C into 130
    and SIGTERM/SIGHUP into 128 + the signal number."""
    if threading_main():
        install_signal_handlers()
    sys.exit(run())


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
