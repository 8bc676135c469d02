"""The one error type for problems with the user's input."""


class UserError(Exception):
    """A problem the user can fix: bad input, a missing file, a path outside its root.

    Scripts print it as ``error: <message> (<culprit>)`` and exit with code 2; anything
    else that escapes is a bug and keeps its traceback.
    """

    def __init__(self, message: str, culprit: object = None):
        self.message = message
        self.culprit = culprit
        super().__init__(f"{message} ({culprit})" if culprit is not None else message)
