"""Issue 10, "nobody impersonated": who the caller is, what the audit log records, and which
files a command may create.

The CLI runs as a real subprocess here (the installed console script, else ``python -m
cli.app``), so that what is tested is what an operator's shell gets: its environment, its uid,
its umask.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import cli.common
from cli.app import app
from dialer.storage.store import SqlStore
from tests.fixtures_core import PG_HOST, PG_PORT, PG_USER, _admin_connect, pg_database  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
ME = pwd.getpwuid(os.getuid()).pw_name  # the real user running the tests
OTHER = "someadmin"
EXE = Path(sys.executable).with_name("dialer")
CMD = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "cli.app"]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """``dialer ARGS`` in a clean environment (plus ``env``), optionally under ``umask``."""
    full = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=60, env=full,
                          cwd=cwd or REPO,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def ok(*args: str, **kw: Any) -> str:
    p = run(*args, **kw)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


def one_error(p: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ----- 1. the caller is the process's real user, never an environment variable -----

@pytest.fixture
def demoted(tmp_path: Path) -> str:
    """A database where the real user is only a viewer and OTHER is an admin."""
    db = f"sqlite:///{tmp_path / 'x.db'}"
    ok("--db", db, "init")
    ok("--db", db, "operator", "add", OTHER, "--role", "admin")
    ok("--db", db, "operator", "add", ME, "--role", "viewer")
    return db


IMPERSONATE = {"LOGNAME": OTHER, "USER": OTHER, "LNAME": OTHER, "USERNAME": OTHER}


def test_login_variables_do_not_make_a_viewer_an_admin(demoted: str) -> None:
    db = demoted
    audit = json.loads(ok("--db", db, "audit", "list", "--json"))
    settings = json.loads(ok("--db", db, "settings", "show", "--json"))
    one_error(run("--db", db, "settings", "set", "--max-calls", "11", env=IMPERSONATE),
              ME, "settings set", "settings")
    one_error(run("--db", db, "operator", "add", ME, "--role", "admin", env=IMPERSONATE),
              ME, "operator add")
    one_error(run("--db", db, "operator", "add", "root", "--role", "admin",
                  env={"LOGNAME": "root", "USER": "root"}), ME)
    assert json.loads(ok("--db", db, "audit", "list", "--json")) == audit
    assert json.loads(ok("--db", db, "settings", "show", "--json")) == settings
    roles = {o["name"]: o["roles"] for o in json.loads(ok("--db", db, "operator", "list",
                                                          "--json"))}
    assert roles == {OTHER: ["admin"], ME: ["viewer"]}


def test_the_audit_records_the_real_user_whatever_the_environment(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    ok("--db", db, "init", env=IMPERSONATE)
    ok("--db", db, "settings", "set", "--max-calls", "11", env=IMPERSONATE)
    rows = json.loads(ok("--db", db, "audit", "list", "--json"))
    assert [(r["actor"], r["action"], r["db_role"]) for r in rows] == [
        (ME, "operator.add", None), (ME, "settings.set", None)]
    assert [o["name"] for o in json.loads(ok("--db", db, "operator", "list", "--json"))] == [ME]


def test_no_command_changes_or_deletes_audit_rows() -> None:
    """The audit group only lists; no command module touches the audit table but to add."""
    import typer.main

    group = typer.main.get_command(app)
    audit = group.commands["audit"]  # type: ignore[attr-defined]
    assert sorted(audit.commands) == ["list"]
    sources = [p.read_text() for p in [*(REPO / "cli").glob("*.py"),
                                       *(REPO / "dialer").rglob("*.py")]
               if "migrations" not in p.parts]
    for text in sources:
        for forbidden in ("delete(AuditRow", "update(AuditRow", "AuditRow).delete",
                          "AuditRow).update", "DELETE FROM audit", "UPDATE audit"):
            assert forbidden not in text


# ----- the database itself keeps the audit log append-only -----

@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'a.db'}"
    else:
        from tests.fixtures_core import _reset_pg

        url = request.getfixturevalue("pg_database")
        _reset_pg(url)
    s = SqlStore(url)
    s.migrate()
    try:
        yield s
    finally:
        s.dispose()


def test_audit_rows_cannot_be_updated_or_deleted(migrated: SqlStore) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DatabaseError

    migrated.set_settings(actor="alice", now=1.0, max_calls=3)
    before = migrated.audit_list()
    for sql in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"):
        with pytest.raises(DatabaseError, match="append-only"), migrated.engine.begin() as conn:
            conn.execute(text(sql))
    assert migrated.audit_list() == before


# ----- PostgreSQL: the database role beside the operator -----

@pytest.fixture
def pg_role(pg_database: str) -> Iterator[tuple[str, str]]:  # noqa: F811
    """A fresh PostgreSQL login role with the dialer's privileges: (name, URL as that role)."""
    from tests.fixtures_core import _reset_pg

    _reset_pg(pg_database)
    name = f"op_{uuid.uuid4().hex[:10]}"
    admin: Any = _admin_connect()
    with admin.cursor() as cur:
        cur.execute(f'CREATE ROLE "{name}" LOGIN')
    dbname = pg_database.rsplit("/", 1)[1]
    try:
        yield name, f"postgresql+psycopg://{name}@{PG_HOST}:{PG_PORT}/{dbname}"
    finally:
        import psycopg

        conn = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname,
                               autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f'DROP OWNED BY "{name}"')
        conn.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP ROLE IF EXISTS "{name}"')
        admin.close()


def _grant(url: str, role: str) -> None:
    import psycopg

    conn = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER,
                           dbname=url.rsplit("/", 1)[1], autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"; '
                    f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public '
                    f'TO "{role}"; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    conn.close()


@pytest.mark.postgres
def test_postgresql_role_is_recorded_and_can_be_required(
        pg_database: str, pg_role: tuple[str, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    role, role_url = pg_role
    runner = CliRunner()
    who = {"name": ME}
    monkeypatch.setattr(cli.common, "login", lambda: who["name"])

    def dialer(url: str, *args: str) -> Any:
        return runner.invoke(app, ["--db", url, *args])

    def audit() -> list[dict[str, Any]]:  # read as the DBA: not an operator command
        s = SqlStore(pg_database, create=False)
        try:
            return s.audit_list()
        finally:
            s.dispose()

    assert dialer(pg_database, "init").exit_code == 0
    r = dialer(pg_database, "operator", "add", role, "--role", "admin")
    assert r.exit_code == 0, r.stderr
    _grant(pg_database, role)
    assert [(a["actor"], a["db_role"]) for a in audit()] == [(ME, PG_USER), (ME, PG_USER)]

    # the operator's own role: recorded as such, without being asked
    who["name"] = role
    r = dialer(role_url, "settings", "set", "--max-calls", "5")
    assert r.exit_code == 0, r.stderr
    assert (audit()[-1]["actor"], audit()[-1]["db_role"]) == (role, role)

    # required from now on
    r = dialer(role_url, "settings", "set", "--require-db-role", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["require_db_role"] is True
    before = audit()
    who["name"] = ME  # an admin, but connected as another role: refused, nothing stored
    r = dialer(pg_database, "settings", "set", "--max-calls", "6")
    assert r.exit_code == 1, r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert f"role {PG_USER}" in lines[0] and f"operator {ME}" in lines[0]
    assert audit() == before
    who["name"] = role
    r = dialer(role_url, "settings", "set", "--max-calls", "6")
    assert r.exit_code == 0, r.stderr
    assert (audit()[-1]["actor"], audit()[-1]["db_role"]) == (role, role)


@pytest.mark.postgres
def test_postgresql_role_column_cannot_be_forged(pg_database: str) -> None:  # noqa: F811
    from sqlalchemy import text

    from tests.fixtures_core import _reset_pg

    _reset_pg(pg_database)
    s = SqlStore(pg_database)
    s.migrate()
    try:
        with s.engine.begin() as conn:
            conn.execute(text("INSERT INTO audit (at, actor, action, target, db_role) "
                              "VALUES (now(), 'x', 'forged', 't', 'somebody_else')"))
        assert [(a["action"], a["db_role"]) for a in s.audit_list()] == [("forged", PG_USER)]
    finally:
        s.dispose()


def test_require_db_role_needs_postgresql(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    ok("--db", db, "init")
    before = ok("--db", db, "audit", "list", "--json")
    one_error(run("--db", db, "settings", "set", "--require-db-role"), "PostgreSQL")
    assert ok("--db", db, "audit", "list", "--json") == before


# ----- 2. files private by default, whatever the umask -----

def test_init_creates_a_private_database_under_umask_022(tmp_path: Path) -> None:
    where = tmp_path / "data" / "db"
    ok("--db", f"sqlite:///{where / 'x.db'}", "init", umask=0o022)
    assert mode(where / "x.db") == 0o600
    assert mode(where) == 0o700 and mode(where.parent) == 0o700


PROBE = textwrap.dedent("""
    import json, os, stat, sys
    from pathlib import Path
    from dialer.storage.store import SqlStore
    url, data = sys.argv[1], Path(sys.argv[2])
    s = SqlStore(url)
    sha = s.add_media(data=b"RIFF", sha256="ab" * 32, rate=8000, seconds=0.1, source=None,
                      now=1.0)
    with s.session() as ses:  # a transaction open: the -wal and -shm files exist now
        db = Path(s.engine.url.database)
        files = [db, Path(str(db) + "-wal"), Path(str(db) + "-shm")]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    cached = s.media_file(sha, data / "media")
    for p in (data, data / "media", cached):
        modes[str(p.relative_to(data.parent))] = stat.S_IMODE(p.stat().st_mode)
    print(json.dumps(modes))
""")


def test_wal_shm_and_cached_media_are_private_under_umask_022(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    ok("--db", db, "init", umask=0o022)
    p = subprocess.run([sys.executable, "-c", PROBE, db, str(tmp_path / "dialer-data")],
                       capture_output=True, text=True, timeout=60, cwd=REPO,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
                       preexec_fn=lambda: os.umask(0o022))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {
        "x.db": 0o600, "x.db-wal": 0o600, "x.db-shm": 0o600,
        "dialer-data": 0o700, "dialer-data/media": 0o700,
        f"dialer-data/media/{'ab' * 32}.wav": 0o600}


# ----- 3. no command but init creates a database or a directory -----

def test_a_missing_database_is_one_line_and_nothing_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "dir" / "x.db"
    line = one_error(run("--db", f"sqlite:///{missing}", "template", "list"),
                     "no database at", "dialer init")
    assert str(missing) in line
    assert not (tmp_path / "missing").exists()
    # the default database of the current directory
    one_error(run("template", "list", cwd=tmp_path), "no database at", "dialer.db",
              "dialer init")
    one_error(run("settings", "set", "--max-calls", "3", cwd=tmp_path), "no database at")
    assert list(tmp_path.iterdir()) == []
    # the directory exists, the file does not
    one_error(run("--db", f"sqlite:///{tmp_path / 'y.db'}", "audit", "list"), "no database at")
    assert list(tmp_path.iterdir()) == []


def test_serve_with_a_missing_database_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "dialer.toml"
    cfg.write_text('[trunks.internal]\nuri = "sip:a.example.com"\n'
                   '[trunks.external]\nuri = "sip:b.example.com"\n')
    missing = tmp_path / "nowhere" / "x.db"
    p = run("--db", f"sqlite:///{missing}", "serve", "--config", str(cfg))
    one_error(p, "no database at", str(missing), "dialer init")
    assert p.stdout == ""
    assert not (tmp_path / "nowhere").exists()


def test_init_still_creates_the_database(tmp_path: Path) -> None:
    ok("init", cwd=tmp_path, umask=0o022)
    assert mode(tmp_path / "dialer.db") == 0o600
    assert "[]" in ok("template", "list", "--json", cwd=tmp_path)
