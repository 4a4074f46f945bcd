"""Self-repair cycles and their stages."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text

from reflexa.agent.store.records import Records, columns
from reflexa.agent.store.tables import Cycle, utcnow
from reflexa.trainers.errors import CycleBusy

# The advisory lock's key: one per database, the same for every host (a signed 64-bit int).
CYCLE_LOCK_KEY = int.from_bytes(hashlib.sha256(b"reflexa.cycle").digest()[:8], "big", signed=True)


class CycleRecords(Records):
    @contextmanager
    def cycle_lock(self) -> Iterator[None]:
        """Held for a whole cycle by whoever shares this database. On PostgreSQL: a
        session-level advisory lock on a connection of its own, so a second host's cycle
        fails at once (CycleBusy) and a crashed holder frees it as its connection drops. (It
        needs a direct connection: a pooler in transaction mode would let it go.) On SQLite,
        one host's file: the cycle's file lock is the lock."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        conn = self.engine.connect()
        try:
            taken = conn.execute(text("select pg_try_advisory_lock(:k)"), {"k": CYCLE_LOCK_KEY})
            if not taken.scalar():
                raise CycleBusy(f"another cycle is running ({_holder(conn)})")
            conn.commit()  # the lock is the session's, not the transaction's
            yield
        finally:
            conn.invalidate()  # closed, never pooled: the lock goes with its session
            conn.close()

    def start_cycle(self, trigger: str) -> str:
        """A new cycle; cycles left `running` by a killed process are marked failed."""
        cycle_id = uuid.uuid4().hex
        with self._session.begin() as s:
            for row in s.scalars(select(Cycle).where(Cycle.status == "running")):
                _interrupted(row)
            s.add(Cycle(id=cycle_id, status="running", trigger=trigger, stages=[]))
        return cycle_id

    def take_up_cycle(self, within_hours: float) -> dict[str, Any] | None:
        """The newest cycle a stopped process left `running`, if it began less than
        `within_hours` ago: the next cycle takes it up (its status stays `running`). Any
        other left running is marked failed, as `start_cycle` would."""
        cutoff = utcnow() - timedelta(hours=within_hours)
        with self._session.begin() as s:
            rows = list(s.scalars(
                select(Cycle).where(Cycle.status == "running").order_by(Cycle.started_at.desc())
            ))  # fmt: skip
            recent = rows and within_hours > 0 and _aware(rows[0].started_at) >= cutoff
            kept = rows[0] if recent else None
            for row in rows:
                if row is not kept:
                    _interrupted(row)
            return columns(kept) if kept else None

    def record_stage(self, cycle_id: str, stage: dict[str, Any]) -> None:
        with self._session.begin() as s:
            row = s.get_one(Cycle, cycle_id)
            row.stages = [*row.stages, stage]

    def finish_cycle(self, cycle_id: str, *, status: str, reason: str | None,
                     adapter_version: str | None, result: dict[str, Any]) -> None:  # fmt: skip
        with self._session.begin() as s:
            row = s.get_one(Cycle, cycle_id)
            row.status, row.reason, row.adapter_version = status, reason, adapter_version
            row.result, row.finished_at = result, utcnow()

    def cycles(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(select(Cycle).order_by(Cycle.started_at.desc()).limit(limit))
            return [columns(r) for r in rows]


def _interrupted(row: Cycle) -> None:
    row.status, row.reason = "failed", "interrupted (the process was stopped)"
    row.finished_at = utcnow()


def _aware(moment: datetime) -> datetime:
    """A stored time as UTC (SQLite hands it back without its zone)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _holder(conn: Any) -> str:
    """Who holds the cycle's advisory lock, as PostgreSQL sees the session."""
    row = conn.execute(
        text(
            "select a.pid, coalesce(host(a.client_addr), 'local') "
            "from pg_locks l join pg_stat_activity a on a.pid = l.pid "
            "where l.locktype = 'advisory' and l.granted and l.objsubid = 1 "
            "and ((l.classid::bigint << 32) | l.objid::bigint) = :k"  # the key's two halves
        ),
        {"k": CYCLE_LOCK_KEY},
    ).first()
    if row is None:
        return "a PostgreSQL advisory lock held by a session that has just ended"
    return f"the database's advisory lock is held by backend {row[0]} from {row[1]}"
