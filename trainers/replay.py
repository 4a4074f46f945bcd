"""Replay: a night that goes on from the current adapter learns every row logged since the
last night that trained compiled its own, and of the rows from before a capped share
(`[cycle] replay` times as many as the new ones, drawn at random), replayed against
forgetting. The adapter it goes on from learnt most of them already; the rest a refused
night taught and could not keep. Teaching all of them again made training grow with the
store, night by night: 592 s on night 1, 1,380 s on night 4, of which 129-153 rows a night
were new (bench/results/nights-2026-12-07-4.json). A night that starts a new adapter learns
all rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from reflexa.trainers.examples import Compiled


def last_trained(cycles: Sequence[dict[str, Any]]) -> datetime | None:
    """When the newest of `cycles` (newest first) that trained a candidate began compiling its
    rows, in UTC: what was logged before, its own sampling included, it could learn. None
    where none trained. (A cycle from before the compile stage kept its time: its start plus
    the seconds of the stages before it.)"""
    for c in cycles:
        stages = c.get("stages") or []
        if not any(s.get("ok") and str(s.get("stage", "")).startswith("train") for s in stages):
            continue
        before = 0.0
        for s in stages:
            if str(s.get("stage", "")).startswith("compile"):
                if "began_at" in s:
                    return utc(datetime.fromisoformat(s["began_at"]))
                break
            before += s.get("seconds", 0)
        return utc(datetime.fromisoformat(str(c["started_at"]))) + timedelta(seconds=before)
    return None


def with_replay(compiled: Compiled, since: datetime, share: float) -> Compiled:
    """`compiled` with the examples logged before `since` cut to `share` times as many as
    those logged since (an example with no time counts as new), drawn at random: the same
    draw for every candidate of a night (seeded by `since`)."""
    since = utc(since)
    new = {id(e) for e in compiled.examples if e.logged_at is None or utc(e.logged_at) >= since}
    earlier = [e for e in compiled.examples if id(e) not in new]
    room = min(len(earlier), int(share * len(new)))
    drawn = {id(e) for e in random.Random(since.isoformat()).sample(earlier, room)}
    kept = [e for e in compiled.examples if id(e) in new or id(e) in drawn]
    counts = {"since": since.isoformat(), "new": len(new), "earlier": len(earlier),
              "replayed": room}  # fmt: skip
    return replace(compiled, examples=kept, replay=counts)


def utc(moment: datetime) -> datetime:
    """A stored time as UTC (SQLite hands it back without its zone)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
