"""The store: episodes, attempts and corrections in SQLite or PostgreSQL."""

from agent.store.store import Store
from evals.contamination import prompt_hash

__all__ = ["Store", "prompt_hash"]
