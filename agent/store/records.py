"""What every kind of record shares: the engine, one short transaction per method, and rows
as plain dicts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker


class Records:
    """A table family's reads and writes; `Store` combines them over one engine."""

    def __init__(self, engine: Engine, memory_limit: int = 10_000) -> None:
        self.engine = engine
        self.memory_limit = memory_limit  # memories kept; the least recently used go first
        self._session = sessionmaker(engine, expire_on_commit=False)


def columns(row: Any) -> dict[str, Any]:
    out = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        out[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return out
