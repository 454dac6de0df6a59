"""Errors that mean "the input is wrong", as opposed to a bug in tal.

The CLI turns a `TalInputError` into a one-line message on stderr and exit status 2; the HTTP API
turns it into a 4xx JSON error. Messages name the file (and video or line) and, where one exists,
the fix.
"""


class TalInputError(ValueError):
    """Bad input: a malformed file, a missing key, an impossible value."""
