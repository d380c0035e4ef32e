"""Where a command's text result goes: a file (written atomically) or stdout."""

from __future__ import annotations

import click

from lmuformer.files import write_text


def emit(text: str, output: str | None) -> None:
    """Write ``text`` to ``output`` (temporary name, then rename), or echo it to stdout if None."""
    if output:
        write_text(output, text)
    else:
        click.echo(text, nl=False)
