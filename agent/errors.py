"""The one exception type the CLI turns into a clear message and a non-zero exit."""

from reflexa.trainers.errors import TrainerError


class ReflexaError(TrainerError):
    """A failure the user can act on; its message is shown as one line, without a traceback.
    A TrainerError, so the cycle (below the application) treats a failed store or server as
    it treats its own failures: the stage fails, nothing is promoted."""
