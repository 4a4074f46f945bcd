"""Self-repair cycles and their stages."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from reflexa.agent.store.records import Records, columns
from reflexa.agent.store.tables import Cycle, utcnow


class CycleRecords(Records):
    def start_cycle(self, trigger: str) -> str:
        """A new cycle; cycles left `running` by a killed process are marked failed."""
        cycle_id = uuid.uuid4().hex
        with self._session.begin() as s:
            for row in s.scalars(select(Cycle).where(Cycle.status == "running")):
                row.status, row.reason = "failed", "interrupted (the process was stopped)"
                row.finished_at = utcnow()
            s.add(Cycle(id=cycle_id, status="running", trigger=trigger, stages=[]))
        return cycle_id

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
