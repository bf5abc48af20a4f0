"""``dialer db``: the database schema, over Alembic's own commands.

``current`` and ``history`` say where a database stands (viewer role), ``upgrade`` brings it to
the newest revision (admin role; ``dialer init`` does the same and also makes the first admin),
``sql`` writes the SQL of an upgrade for a DBA to review and run (PostgreSQL: nothing is connected
to; a SQLite file is upgraded by ``dialer init`` or ``dialer db upgrade``).
"""

from __future__ import annotations

import time
from typing import Optional

import typer

from cli.common import actor, db_url, emit_json, fail, out, store
from dialer import bootstrap
from dialer.core.permissions import PermissionDenied, Role

db_app = typer.Typer(help="The database schema: current revision, history, upgrade, SQL.",
                     no_args_is_help=True)


def _status(current: str | None, head: str | None) -> str:
    if current == head:
        return "up to date"
    known = [r.id for r in bootstrap.schema_history()]
    if current is None:
        return "empty: run 'dialer init'"
    if current not in known:
        return "newer than this version of the dialer"
    return f"{len(known) - 1 - known.index(current)} revision(s) behind: run 'dialer db upgrade'"


@db_app.command("current")
def db_current(json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """The database's schema revision and the newest one. Example: dialer db current"""
    s = store(ready=False, create=False)
    current, head = bootstrap.schema_revisions(s)
    if json_out:
        emit_json({"database": s.safe_url, "current": current, "head": head,
                   "up_to_date": current == head})
        return
    out.print(f"{s.safe_url}: schema {current or 'none'} (newest {head}): "
              f"{_status(current, head)}", highlight=False)


@db_app.command("history")
def db_history(json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """Every schema revision, oldest first. Example: dialer db history"""
    revs = bootstrap.schema_history()
    if json_out:
        emit_json([{"id": r.id, "down": r.down, "doc": r.doc} for r in revs])
        return
    for r in revs:
        out.print(f"{r.id}  {r.doc.splitlines()[0] if r.doc else ''}", highlight=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database to the newest schema revision (admin). Example: dialer db upgrade"""
    s = store(ready=False, create=False)
    current, head = bootstrap.schema_revisions(s)
    if current is None:
        fail(f"{s.safe_url} is empty: 'dialer init' creates the schema and its first admin")
    who = actor()
    roles = s.roles_of(who)
    if s.list_operators() and Role.ADMIN not in roles:
        raise PermissionDenied(who, "db upgrade", Role.ADMIN, roles)
    if current == head:
        out.print(f"schema {current}: up to date", highlight=False)
        return
    started = time.monotonic()
    s.migrate()
    out.print(f"schema upgraded from {current} to {head} in {time.monotonic() - started:.1f} s",
              highlight=False)


@db_app.command("sql")
def db_sql(
    start: Optional[str] = typer.Option(None, "--from",
                                        help="The revision the database is at (default: empty)."),
) -> None:
    """Write the SQL of an upgrade to the newest revision, for a DBA (PostgreSQL).

    Example: dialer --db postgresql://dialer@db/dialer db sql --from 0006 > upgrade.sql
    """
    url = db_url()
    if not url.startswith("postgresql"):
        fail("dialer db sql writes PostgreSQL's SQL; a SQLite file is upgraded in place by "
             "'dialer init' or 'dialer db upgrade'")
    known = [r.id for r in bootstrap.schema_history()]
    if start is not None and start not in known:
        fail(f"--from {start}: no such revision (dialer db history lists them)")
    typer.echo(bootstrap.schema_sql(url, start), nl=False)
