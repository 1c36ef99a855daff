"""The one exception type the CLI turns into a one-line ``error: ...`` message."""


class MfnError(Exception):
    """A user-facing error: bad input, a missing file, a tool that failed.

    The message must stand on its own on one line and name the file or value at fault.
    """
