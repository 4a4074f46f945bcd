"""The store: one façade over every kind of record, on one engine."""

from __future__ import annotations

from reflexa.agent.store.adapters import AdapterRecords
from reflexa.agent.store.cycles import CycleRecords
from reflexa.agent.store.db import make_engine, migrate
from reflexa.agent.store.episodes import EpisodeRecords
from reflexa.agent.store.eval_runs import EvalRunRecords


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
