"""The exception types the CLI turns into a single line and a non-zero exit."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a missing or corrupt file, a wrong layout, impossible options.

    The message is printed as one line (``error: <message>``), with no traceback; exit 2.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP received: unwinds like Ctrl-C (Lava stopped, temporaries removed),
    then the CLI exits with 128 + the signal number (143 for SIGTERM, 129 for SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
