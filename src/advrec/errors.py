"""The one exception type for mistakes a user can fix (bad file, bad column, bad override)."""


class AdvrecError(Exception):
    """A user-facing error: the message names the problem and how to fix it.

    Entry points print the message alone (no traceback) and exit with status 2.
    """


class Diverged(AdvrecError):
    """Training produced a non-finite loss or weight: the run has no result."""
