"""The trainers' own error, and the contract their ports keep."""


class TrainerError(Exception):
    """A failure the user can act on (a config, a dataset, an adapter, a stage of a cycle);
    shown as one line, without a traceback. What a port raises for such a failure (a store
    or a model server that failed) is one too: the application's errors derive from it."""


class CycleBusy(TrainerError):
    """Another cycle holds the lock (on this host, or on any host sharing the database): this
    one did not start. A scheduled night treats it as skipped, not failed."""


class PromotionRace(TrainerError):
    """The promoted adapter changed between reading it and replacing it (another process
    promoted or rolled back): nothing was changed."""
