"""Fixtures of the core test suite: one database URL fixture parametrized over SQLite and
PostgreSQL.

Import explicitly from a test module (``from tests.fixtures_core import db_url, store``); this
module is not a conftest, so it stays out of the SIP suite's way.

PostgreSQL: one fresh database per test session (``dialer_test_<random>``), created through
psycopg (3) with autocommit on the ``test`` database and dropped at the end; every test gets an
empty ``public`` schema. When the server is unreachable the PostgreSQL variants skip, saying why.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dialer.storage.store import SqlStore

PG_HOST = os.environ.get("DIALER_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DIALER_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("DIALER_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("DIALER_TEST_PG_DB", "test")


def _admin_connect() -> object:
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB,
                           connect_timeout=3, autocommit=True)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this session; its SQLAlchemy URL."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install .[postgresql])")
    try:
        admin = _admin_connect()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL on {PG_HOST}:{PG_PORT} is unreachable: "
                    f"{str(exc).strip().splitlines()[0]}")
    name = f"dialer_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()  # type: ignore[attr-defined]


def _reset_pg(url: str) -> None:
    import psycopg

    dbname = url.rsplit("/", 1)[1]
    conn = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname,
                           connect_timeout=3, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (never initialised): a SQLite file, or a clean PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dialer.db'}"
        return
    url: str = request.getfixturevalue("pg_database")
    _reset_pg(url)
    yield url


@contextlib.contextmanager
def migrated(url: str) -> Iterator[SqlStore]:
    """A migrated SqlStore on ``url``, disposed at the end."""
    s = SqlStore(url)
    s.migrate()
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    """A migrated SqlStore on each backend."""
    with migrated(db_url) as s:
        yield s
