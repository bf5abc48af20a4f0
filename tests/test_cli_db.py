"""``dialer db`` and ``dialer init`` show Alembic (issue 14): which revision a database is at,
the history, an upgrade that says from and to what, and the SQL of an upgrade for a DBA, which
builds on PostgreSQL the very schema the online upgrade builds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dialer.storage.migrate import alembic_config, head_revision, history
from dialer.storage.store import SqlStore
from tests.fixtures_core import PG_HOST, PG_PORT, PG_USER, _admin_connect

Invoke = Callable[..., Any]


def test_init_says_from_and_to_which_revision(cli_invoke: Invoke) -> None:
    head = head_revision()
    first = cli_invoke("init")
    assert first.exit_code == 0 and f"(schema {head}, new)" in " ".join(first.stdout.split())
    again = cli_invoke("init")
    assert f"(schema {head}, up to date)" in " ".join(again.stdout.split())


def test_current_history_and_upgrade_of_an_older_database(cli_invoke: Invoke, db: str) -> None:
    from alembic import command

    revs = [r.id for r in history()]
    assert revs == sorted(revs) and revs[-1] == head_revision() and len(revs) >= 7
    assert [r["id"] for r in json.loads(cli_invoke("db", "history", "--json").stdout)] == revs
    assert cli_invoke("db", "current").exit_code == 1  # no database yet: nothing created
    store = SqlStore(db)
    command.upgrade(alembic_config(store.engine), revs[-2])  # a database one release old
    store.dispose()
    cur = json.loads(cli_invoke("db", "current", "--json").stdout)
    assert (cur["current"], cur["head"], cur["up_to_date"]) == (revs[-2], revs[-1], False)
    assert "1 revision(s) behind" in " ".join(cli_invoke("db", "current").stdout.split())
    up = cli_invoke("db", "upgrade")
    assert up.exit_code == 0, up.stderr
    assert f"schema upgraded from {revs[-2]} to {revs[-1]}" in " ".join(up.stdout.split())
    assert json.loads(cli_invoke("db", "current", "--json").stdout)["up_to_date"] is True
    assert "up to date" in cli_invoke("db", "upgrade").stdout


def test_sql_is_for_postgresql_and_a_known_revision(cli_invoke: Invoke) -> None:
    r = cli_invoke("db", "sql")
    assert r.exit_code == 1 and "PostgreSQL" in r.stderr and len(r.stderr.splitlines()) == 1
    r = cli_invoke("--db", "postgresql://x@127.0.0.1:1/none", "db", "sql", "--from", "9999")
    assert r.exit_code == 1 and "no such revision" in r.stderr


@pytest.fixture
def two_pg() -> Iterator[tuple[str, str]]:
    try:
        admin = _admin_connect()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    names = [f"dialer_sql_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with admin.cursor() as cur:  # type: ignore[attr-defined]
        for n in names:
            cur.execute(f'CREATE DATABASE "{n}"')
    try:
        a, b = (f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{n}" for n in names)
        yield a, b
    finally:
        with admin.cursor() as cur:  # type: ignore[attr-defined]
            for n in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
        admin.close()  # type: ignore[attr-defined]


def _schema(url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        cols = conn.execute("select table_name, column_name, data_type, is_nullable, "
                            "column_default from information_schema.columns where "
                            "table_schema = 'public' order by 1, 2").fetchall()
        idx = conn.execute("select indexname, indexdef from pg_indexes where "
                           "schemaname = 'public' order by 1").fetchall()
        cons = conn.execute("select conname, pg_get_constraintdef(oid) from pg_constraint "
                            "where connamespace = 'public'::regnamespace order by 1").fetchall()
        version = conn.execute("select version_num from alembic_version").fetchall()
    return {"columns": cols, "indexes": idx, "constraints": cons, "version": version}


@pytest.mark.postgres
def test_the_sql_for_a_dba_builds_the_schema_of_the_online_upgrade(
        cli_invoke: Invoke, two_pg: tuple[str, str]) -> None:
    import psycopg

    online, offline = two_pg
    assert cli_invoke("--db", online, "init").exit_code == 0
    r = cli_invoke("--db", offline, "db", "sql")
    assert r.exit_code == 0, r.stderr
    assert "CREATE TABLE attempts" in r.stdout and "BEGIN;" in r.stdout
    with psycopg.connect(offline.replace("postgresql+psycopg", "postgresql"),
                         autocommit=True) as conn:
        conn.execute(r.stdout.encode())
    assert _schema(offline) == _schema(online)
    partial = cli_invoke("--db", offline, "db", "sql", "--from", history()[-2].id).stdout
    assert "Running upgrade" in partial and "CREATE TABLE attempts" not in partial
