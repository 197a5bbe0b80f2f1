"""The one exception type for user mistakes.

Library code raises :class:`UserError` for anything a user can fix (a missing directory, a
malformed file, an invalid index list, an unknown option). The CLI prints its message as one
line and exits with status 2; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, explained in one line."""
