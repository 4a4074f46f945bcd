"""Opening the store: SQLite (WAL) at $REFLEXA_HOME/reflexa.db by default, PostgreSQL by URL,
migrated to the newest schema on open."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from reflexa.agent.errors import ReflexaError

MIGRATIONS = Path(__file__).with_name("migrations")
# Alembic keeps its migration context in a process-global proxy: one migration at a time per
# process. (Processes are kept apart by the database's own lock.)
_MIGRATION_LOCK = threading.Lock()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class StoreUnavailable(ReflexaError):
    """The database could not be read or written: full, locked, or gone away."""


def make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        engine = create_engine(url, pool_pre_ping=True)
        event.listen(engine, "handle_error", _unavailable)
        return engine
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_size=5, max_overflow=64, pool_timeout=60)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # BEGIN is ours, below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, so concurrent writers wait (busy_timeout)
        # instead of failing when a read transaction tries to become a write.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "handle_error", _unavailable)
    return engine


def _unavailable(context: ExceptionContext) -> None:
    """An operational failure (disk full, database locked, server gone) as one clear line;
    the transaction it hit was rolled back, so nothing is half-written. Programming errors,
    and the pool's own liveness pings, pass through unchanged."""
    if context.is_pre_ping or not isinstance(context.sqlalchemy_exception, OperationalError):
        return
    engine = context.engine
    where = engine.url.render_as_string(hide_password=True) if engine is not None else "?"
    cause = str(context.original_exception).strip().splitlines()[0]
    raise StoreUnavailable(f"the store ({where}) failed, nothing was half-written: {cause}")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (safe to run from several processes)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with _MIGRATION_LOCK, engine.connect() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
    except SQLAlchemyError as e:
        first_line = str(e).splitlines()[0]
        raise ReflexaError(f"database {engine.url!r}: cannot migrate ({first_line})") from None
