"""The exception types for mistakes a user can make and fix."""


class EbmlabError(Exception):
    """A user-facing error: the message names the problem and the fix.

    The CLI prints it as one line and exits with code 2, without a traceback.
    """


class InvalidInputError(EbmlabError, ValueError):
    """Data or a parameter value that cannot be used, e.g. NaN in a table passed to `fit`.

    Also a ValueError, the type scikit-learn and most Python code expect for a bad value, so
    the scikit-learn estimators (`ebmlab.estimator`) raise it where scikit-learn's own do.
    """
