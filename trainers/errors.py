"""The trainers' own error, and the contract their ports keep."""


class TrainerError(Exception):
    """A failure the user can act on (a config, a dataset, an adapter, a stage of a cycle);
    shown as one line, without a traceback. What a port raises for such a failure (a store
    or a model server that failed) is one too: the application's errors derive from it."""
