"""Replay: a night that goes on from the current adapter learns every row logged since the
last night that trained, and of the rows from before it a capped share (`[cycle] replay`
times as many as the new ones, drawn at random), replayed against forgetting. The adapter it
goes on from learnt most of them already; the rest a refused night taught and could not
keep. Teaching all of them again made training grow with the store, night by night: 592 s
on night 1, 1,380 s on night 4, of which 129-153 rows a night were new
(bench/results/nights-2026-12-07-4.json). A night that starts a new adapter learns all rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from reflexa.trainers.examples import Compiled


def last_trained(cycles: Sequence[dict[str, Any]]) -> datetime | None:
    """When the newest of `cycles` (newest first) that trained a candidate began, in UTC;
    None where none did."""
    for c in cycles:
        stages = c.get("stages") or []
        if any(s.get("ok") and str(s.get("stage", "")).startswith("train") for s in stages):
            return utc(datetime.fromisoformat(str(c["started_at"])))
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
