"""The adapter registry's records: versions, statuses, the promoted one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from reflexa.agent.store.records import Records, columns
from reflexa.agent.store.tables import Adapter, utcnow
from reflexa.trainers.errors import PromotionRace


class AdapterRecords(Records):
    def next_adapter_version(self) -> str:
        with self._session() as s:
            versions = s.scalars(select(Adapter.version))
            return f"v{max((int(v[1:]) for v in versions), default=0) + 1}"

    def add_adapter(self, **fields: Any) -> dict[str, Any]:
        with self._session.begin() as s:
            row = Adapter(status="candidate", **fields)
            s.add(row)
            s.flush()
            return columns(row)

    def adapters(self) -> list[dict[str, Any]]:
        with self._session() as s:
            return [columns(r) for r in s.scalars(select(Adapter).order_by(Adapter.created_at))]

    def adapter(self, version: str) -> dict[str, Any] | None:
        with self._session() as s:
            row = s.get(Adapter, version)
            return None if row is None else columns(row)

    def promoted_adapter(self) -> dict[str, Any] | None:
        """The adapter that ask, chat, serve and eval use by default (None: the base model)."""
        with self._session() as s:
            row = s.scalars(select(Adapter).where(Adapter.status == "promoted")).first()
            return None if row is None else columns(row)

    def update_adapter(self, version: str, *, metrics: dict[str, Any] | None = None,
                       **fields: Any) -> None:  # fmt: skip
        """Set columns; `metrics` entries are merged into the adapter's metrics."""
        with self._session.begin() as s:
            row = s.get_one(Adapter, version)
            for key, value in fields.items():
                setattr(row, key, value)
            if metrics:
                row.metrics = {**row.metrics, **metrics}

    def set_promoted(
        self, version: str | None, reason: str, demoted_status: str, *, was: str | None
    ) -> None:
        """Make `version` (None: the base model) the default in one transaction, if `was`
        (None: the base model) still is: the pointer is flipped once, or not at all
        (PromotionRace) when another process moved it since the caller read it. The adapter
        that was promoted gets `demoted_status` (retired, or rejected on rollback). The
        database itself keeps one promoted row at most (a partial unique index)."""
        with self._session.begin() as s:
            demoted = s.scalars(
                update(Adapter)
                .where(Adapter.status == "promoted")
                .values(status=demoted_status, reason=reason)
                .returning(Adapter.version)
            ).all()
            if demoted != ([was] if was else []):
                now = demoted[0] if demoted else "the base model"
                raise PromotionRace(
                    f"the promoted adapter changed while this process was deciding (it is "
                    f"{now}, not {was or 'the base model'}): nothing was changed; try again"
                )
            if version is not None:
                row = s.get_one(Adapter, version)
                row.status, row.reason, row.promoted_at = "promoted", reason, utcnow()
