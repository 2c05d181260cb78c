"""One exception type for everything a user can get wrong.

The CLI turns a UserError into a single line on stderr and a non-zero exit, never a traceback.
Raise it for bad input (files, flags, names) and unreachable services; let real bugs raise anything else.
"""


class UserError(Exception):
    """A problem the user can fix; its message is shown as-is on one line."""

    exit_code = 2
