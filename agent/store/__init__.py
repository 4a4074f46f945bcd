"""The store: episodes (with attempts and corrections), memories, eval runs, adapters and
cycles, in SQLite or PostgreSQL, behind one `Store`; `open_store` opens it as configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reflexa.agent.store.store import Store
from reflexa.evals.contamination import prompt_hash

if TYPE_CHECKING:
    from reflexa.agent.settings import Settings

__all__ = ["Store", "open_store", "prompt_hash"]


def open_store(settings: Settings) -> Store:
    """The store as configured: its database and its memory bound. Every command opens one
    (at its edge) and hands it down."""
    store = Store.open(settings.database, memory_limit=settings.memory.max_entries)
    store.interrupt_orphans()  # what a killed process of this host left running
    return store
