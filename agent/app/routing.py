"""The routing table the record keeps: which repair strategies fix where.

The router (graphs/repair.py) orders strategies by rule. Measured on this project's suites,
some of those routes never pay: a constrained repair after a tool-decided sample fixed 0 of
99 sums failures, at about 2.5 s each. The table counts, per answering model and per place
(an eval suite, or in chat the kinds of checks a turn has), each strategy's repairs and how
many of them passed the turn's visible checks (never gold: the loop learns only from what it
may see). The graph skips a strategy tried at least `min_tries` times in a place that passed
fewer than 1 in `min_tries` there, and after a tool-checked sample found nothing, any
strategy the table does not show fixing so there; one turn in ten routes by rule alone
(graphs.nodes.EXPLORE), so a model that improves can win a strategy back. A new adapter
starts with an empty table.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from reflexa.agent.store import Store

TTL_S = 10.0  # read again after this long: a run of one suite learns within itself (a
# 30-item sums run with reflection on took 25 s here, so at 60 s it never re-read), and one
# query of at most 5,000 rows every 10 s per model costs little


def place(suite: str | None, checks: Sequence[dict[str, Any]]) -> str:
    """Where a turn's repairs are counted: its suite, or in chat the kinds of its checks."""
    if suite:
        return suite
    kinds = sorted({str(c.get("type")) for c in checks})
    return "chat: " + (", ".join(kinds) or "judge")


class RepairTable:
    """`graphs.state.RoutingFn` over the store: each strategy's repairs in a place, and how
    many passed; the graph decides what to skip (graphs.nodes.diagnose)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self._store, self._clock = store, clock
        self._read: dict[str, tuple[float, dict[tuple[str, str], tuple[int, int]]]] = {}
        self._lock = threading.Lock()

    def counts(self, model: str) -> dict[tuple[str, str], tuple[int, int]]:
        """(place, strategy) → (repairs, passed), `model`'s latest repairs."""
        with self._lock:
            read = self._read.get(model)
            if read is None or self._clock() - read[0] > TTL_S:
                tries: Counter[tuple[str, str]] = Counter()
                passes: Counter[tuple[str, str]] = Counter()
                for suite, checks, strategy, passed in self._store.repairs_by(model):
                    key = (place(suite, checks or []), strategy)
                    tries[key] += 1
                    passes[key] += passed
                read = (self._clock(), {k: (n, passes[k]) for k, n in tries.items()})
                self._read[model] = read
            return read[1]

    def __call__(
        self, model: str, suite: str | None, checks: list[dict[str, Any]]
    ) -> dict[str, tuple[int, int]]:
        where = place(suite, checks)
        return {strategy: n for (at, strategy), n in self.counts(model).items() if at == where}
