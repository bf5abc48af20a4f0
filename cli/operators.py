"""``dialer operator ...`` (admin role) and ``dialer audit list``: who may do what, and who did."""

from __future__ import annotations

import json
import time
from typing import Optional

import typer
from rich.table import Table

from cli.choices import RoleName
from cli.common import JSON_RESULT, actor, authorized, emit_json, local, out, parse_when, report
from cli.tables import Col, fit, when
from dialer.core.permissions import Role, parse_roles

operator_app = typer.Typer(help="Operators (OS logins) and their roles: admin, campaigns, "
                                "settings, viewer.", no_args_is_help=True)
audit_app = typer.Typer(help="Who changed what, when, with old and new values.",
                        no_args_is_help=True)


@operator_app.command("add")
def operator_add(
    user: str = typer.Argument(..., help="OS login name."),
    role: list[RoleName] = typer.Option(..., "--role", "-r", help="A role; repeatable."),
    json_out: bool = JSON_RESULT,
) -> None:
    """Add an operator, or set the roles of an existing one.

    Example: dialer operator add alice --role campaigns --role settings
    """
    roles = parse_roles([r.value for r in role])
    authorized(Role.ADMIN, "operator add").set_operator(user, roles, actor=actor(),
                                                        now=time.time())
    names = sorted(r.value for r in roles)
    report(json_out, {"operator": user, "roles": names}, f"{user}: {', '.join(names)}")


@operator_app.command("list")
def operator_list(json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """List operators and their roles. Example: dialer operator list"""
    rows = authorized(Role.VIEWER, "operator list").list_operators()
    if json_out:
        emit_json(rows)
        return
    t = Table("operator", "roles", "added", "by")
    for r in rows:
        t.add_row(r["name"], ", ".join(r["roles"]), local(r["created_at"]), r["created_by"])
    out.print(t)


@operator_app.command("remove")
def operator_remove(user: str = typer.Argument(..., help="OS login name."),
                    json_out: bool = JSON_RESULT) -> None:
    """Remove an operator (never the last admin). Example: dialer operator remove alice"""
    authorized(Role.ADMIN, "operator remove").remove_operator(user, actor=actor(), now=time.time())
    report(json_out, {"operator": user, "removed": True}, f"{user} removed")


@audit_app.command("list")
def audit_list(
    since: Optional[str] = typer.Option(None, "--since", help="Only from this ISO date-time on."),
    json_out: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Every successful change: who (the OS user, and the PostgreSQL role), when, what, old
    and new values. Read only: no command changes or deletes an entry.

    Example: dialer audit list --since 2026-12-01T00:00
    """
    start = parse_when(since, "--since") if since else None
    rows = authorized(Role.VIEWER, "audit list").audit_list(start)
    if json_out:
        emit_json(rows)
        return
    cols = (Col("time"), Col("who"), Col("db role", 5), Col("action"), Col("target", 2),
            Col("old", 4), Col("new", 3))
    out.print(fit(cols, [[when(r["at"]), r["actor"], r["db_role"] or "", r["action"],
                          r["target"], _brief(r["old"]), _brief(r["new"])] for r in rows],
                  width=out.width))


def _brief(value: object, width: int = 120) -> str:
    """A value in one short line for the table (the whole of it is in --json)."""
    if value is None:
        return ""
    text = json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"
