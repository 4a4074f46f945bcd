"""The store: one façade over every kind of record, on one engine."""

from __future__ import annotations

from agent.store.adapters import AdapterRecords
from agent.store.cycles import CycleRecords
from agent.store.db import make_engine, migrate
from agent.store.episodes import EpisodeRecords
from agent.store.eval_runs import EvalRunRecords


class Store(EpisodeRecords, EvalRunRecords, AdapterRecords, CycleRecords):
    """The database of everything Reflexa did: episodes (and the memories their corrections
    make), eval runs, adapters and cycles. Each method is one short transaction."""

    @classmethod
    def open(cls, url: str, memory_limit: int = 10_000) -> Store:
        engine = make_engine(url)
        migrate(engine)
        return cls(engine, memory_limit)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
