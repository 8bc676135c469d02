"""The one error type for problems with the user's input, and how an error line lists names."""

LISTED_NAMES = 10  # every "first N names, and M more" listing shows this many


class UserError(Exception):
    """A problem the user can fix: bad input, a missing file, a path outside its root.

    Scripts print it as ``error: <message> (<culprit>)`` and exit with code 2; anything
    else that escapes is a bug and keeps its traceback.
    """

    def __init__(self, message: str, culprit: object = None):
        self.message = message
        self.culprit = culprit
        super().__init__(f"{message} ({culprit})" if culprit is not None else message)


def listed(names, limit: int = LISTED_NAMES) -> str:
    """``a, b, c and 7 more``: the first ``limit`` names of a list, for an error or warning line."""
    names = list(names)
    shown = ", ".join(str(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
