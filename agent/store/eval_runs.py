"""Eval runs: opened (or resumed), their episodes, finished with metrics."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from sqlalchemy import inspect, select

from reflexa.agent.store.episodes import episode_dict
from reflexa.agent.store.records import Records, columns
from reflexa.agent.store.tables import Attempt, Episode, EvalRun, utcnow


class EvalRunRecords(Records):
    def open_eval_run(
        self, suite: str, source: str, config: dict[str, Any], *, finished: bool = False
    ) -> tuple[str, bool]:
        """The unfinished run with this suite and config (resumed), or with `finished` the
        newest such run whatever its status, or a new one."""
        key = hashlib.sha256(json.dumps([suite, config], sort_keys=True).encode()).hexdigest()
        with self._session.begin() as s:
            statuses = ("running", "done") if finished else ("running",)
            run = s.scalars(
                select(EvalRun)
                .where(EvalRun.config_key == key, EvalRun.status.in_(statuses))
                .order_by(EvalRun.created_at.desc())
            ).first()
            if run is not None:
                return run.id, True
            run_id = uuid.uuid4().hex
            s.add(EvalRun(id=run_id, suite=suite, source=source, status="running",
                          config=config, config_key=key))  # fmt: skip
            return run_id, False

    def run_episodes(self, run_id: str) -> list[dict[str, Any]]:
        """The finished episodes of an eval run, one per item (the newest, if an item ran twice)."""
        with self._session() as s:
            rows = s.scalars(
                select(Episode)
                .where(Episode.eval_run_id == run_id, Episode.status != "running")
                .order_by(Episode.created_at)
            )
            latest = {r.item_id: r for r in rows}  # the newest of an item that ran twice
            return [episode_dict(r, with_attempts=True) for r in latest.values()]

    def earlier_runs(
        self, suite: str, config: dict[str, Any], ignoring: tuple[str, ...] = ()
    ) -> list[str]:
        """Finished runs of `suite` of another cycle with this config, but for the keys
        `ignoring` (the same gate request on another night), newest first."""
        left = ("cycle", *ignoring)
        same = {k: v for k, v in config.items() if k not in left}
        with self._session() as s:
            runs = s.scalars(
                select(EvalRun)
                .where(EvalRun.suite == suite, EvalRun.status == "done")
                .order_by(EvalRun.created_at.desc())
            )
            return [
                r.id for r in runs
                if r.config.get("cycle") not in (None, config.get("cycle"))
                and {k: v for k, v in r.config.items() if k not in left} == same
            ]  # fmt: skip

    def copy_episode(self, episode_id: str, run_id: str) -> str:
        """A finished episode (with its attempts) recorded again in eval run `run_id`: an
        answer reused, as that run's. Returns the copy's id."""
        copy_id = uuid.uuid4().hex
        with self._session.begin() as s:
            row = s.get_one(Episode, episode_id)
            fields = {a.key: getattr(row, a.key) for a in inspect(Episode).column_attrs}
            s.add(Episode(**fields | {"id": copy_id, "eval_run_id": run_id, "owner": None}))
            for a in row.attempts:
                kept = {k.key: getattr(a, k.key) for k in inspect(Attempt).column_attrs}
                s.add(Attempt(**kept | {"id": None, "episode_id": copy_id}))
        return copy_id

    def finish_eval_run(self, run_id: str, metrics: dict[str, Any]) -> None:
        with self._session.begin() as s:
            run = s.get_one(EvalRun, run_id)
            run.status, run.metrics, run.finished_at = "done", metrics, utcnow()

    def eval_run(self, run_id: str) -> dict[str, Any] | None:
        with self._session() as s:
            row = s.get(EvalRun, run_id)
            return None if row is None else columns(row)

    def eval_run_source(self, suite: str) -> str | None:
        """Where the suite of that name was last run from (a file path, or built-in)."""
        with self._session() as s:
            return s.scalars(
                select(EvalRun.source)
                .where(EvalRun.suite == suite)
                .order_by(EvalRun.created_at.desc())
                .limit(1)
            ).first()
