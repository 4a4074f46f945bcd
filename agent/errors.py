"""The one exception type the CLI turns into a clear message and a non-zero exit."""


class ReflexaError(Exception):
    """A failure the user can act on; its message is shown as one line, without a traceback."""
