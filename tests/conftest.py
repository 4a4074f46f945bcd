"""Every test gets an empty REFLEXA_HOME and no REFLEXA_* settings from the outer environment;
the test-only REFLEXA_TEST_* variables stay."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("REFLEXA_") and not name.startswith("REFLEXA_TEST_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("REFLEXA_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # no stray ./reflexa.toml
    return home


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (REFLEXA_TEST_POSTGRES_URL names the server;
    `.ci/postgres.sh` starts one). Dropped afterwards."""
    server = os.environ.get("REFLEXA_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("no PostgreSQL: set REFLEXA_TEST_POSTGRES_URL (see .ci/postgres.sh)")
    import psycopg
    from sqlalchemy import make_url

    url = make_url(server)
    name = f"reflexa_test_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's URL, once for each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reflexa.db'}"
    return str(request.getfixturevalue("postgres_url"))
