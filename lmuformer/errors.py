"""The one exception type the CLI turns into a single error line and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: a missing or corrupt file, a wrong layout, impossible options.

    The message is printed as one line (``error: <message>``), with no traceback.
    """
