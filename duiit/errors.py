"""The one exception type users see: a one-line message naming the file or case and what is wrong."""


class DuiitError(Exception):
    """A user-facing error; the CLI prints its message (no traceback) and exits non-zero."""
