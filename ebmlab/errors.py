"""The one exception type for mistakes a user can make and fix."""


class EbmlabError(Exception):
    """A user-facing error: the message names the problem and the fix.

    The CLI prints it as one line and exits with code 2, without a traceback.
    """
