"""Errors meant for a user.

Library code raises these with a message that names the problem and the fix; the CLI turns
them into one line on stderr and an exit code, without a traceback (``--debug`` shows one).
"""


class CondlabError(Exception):
    """A failure of the run (exit code 1): bad numbers, a model that does not fit its data."""

    exit_code = 1


class UsageError(CondlabError):
    """A bad request (exit code 2): a missing file, an unknown option value, a malformed config."""

    exit_code = 2
