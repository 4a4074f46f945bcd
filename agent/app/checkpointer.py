"""LangGraph's checkpointer for threads: SQLite under $REFLEXA_HOME, or PostgreSQL when the
store is PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from reflexa.agent.errors import ReflexaError
from reflexa.agent.settings import Settings


@asynccontextmanager
async def open_checkpointer(settings: Settings) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    url = settings.database
    if url.startswith("postgresql"):
        try:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        except ImportError:
            raise ReflexaError(
                "a PostgreSQL database needs `pip install 'reflexa[postgres]'`"
            ) from None
        from psycopg import AsyncConnection
        from psycopg.rows import DictRow, dict_row
        from psycopg_pool import AsyncConnectionPool

        # A pool that checks each connection before lending it: after the server restarts,
        # the next episode gets a fresh connection (a single one would stay broken). While
        # the server is down, an episode waits at most `timeout` for one, then fails.
        async with AsyncConnectionPool(
            url.replace("postgresql+psycopg://", "postgresql://"),
            connection_class=AsyncConnection[DictRow],
            min_size=1,
            max_size=16,
            timeout=5,
            reconnect_timeout=5,  # then a new attempt on the next request, not a long backoff
            open=False,
            check=AsyncConnectionPool.check_connection,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        ) as pool:
            postgres = AsyncPostgresSaver(pool)
            await postgres.setup()
            yield postgres
        return
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(
        str(settings.home_dir / "checkpoints.db")
    ) as saver:
        yield saver
