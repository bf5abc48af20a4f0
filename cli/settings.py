"""``dialer settings ...``: the global limits (settings role to change them)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Optional

import typer
from rich.table import Table

from cli.common import actor, authorized, emit_json, local, out, parse_limit
from dialer.bootstrap import GlobalSettings
from dialer.core.errors import ValidationError
from dialer.core.permissions import Role

settings_app = typer.Typer(help="Global settings: campaign and call limits.", no_args_is_help=True)


def settings_data(gs: GlobalSettings) -> dict[str, Any]:
    at = (None if gs.updated_at is None
          else dt.datetime.fromtimestamp(gs.updated_at, dt.UTC))
    return {"max_campaigns": gs.max_campaigns, "max_calls": gs.limits.total,
            "max_internal": gs.limits.internal, "max_external": gs.limits.external,
            "require_db_role": gs.require_db_role,
            "version": gs.version, "updated_at": at.isoformat() if at else None,
            "updated_by": gs.updated_by}


def _show(data: dict[str, Any]) -> None:
    t = Table("setting", "value", title="global settings")
    for key in ("max_campaigns", "max_calls", "max_internal", "max_external"):
        t.add_row(key.replace("_", "-"), "unlimited" if data[key] is None else str(data[key]))
    t.add_row("require-db-role", "yes" if data["require_db_role"] else "no")
    t.add_row("changed", f"{local(data['updated_at'])} by {data['updated_by']}"
              if data["updated_by"] else "never")
    out.print(t)


@settings_app.command("show")
def settings_show(json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """Show the global limits. Example: dialer settings show"""
    data = settings_data(authorized(Role.VIEWER, "settings show").get_settings())
    if json_out:
        emit_json(data)
    else:
        _show(data)


@settings_app.command("set")
def settings_set(
    max_campaigns: Optional[str] = typer.Option(None, help="Simultaneously active campaigns (none: "
                                                           "unlimited)."),
    max_calls: Optional[str] = typer.Option(None, help="Concurrent calls in total (none: "
                                                       "unlimited)."),
    max_internal: Optional[str] = typer.Option(None, help="Concurrent internal calls (none: "
                                                          "unlimited)."),
    max_external: Optional[str] = typer.Option(None, help="Concurrent external calls (none: "
                                                          "unlimited)."),
    require_db_role: Optional[bool] = typer.Option(
        None, "--require-db-role/--no-require-db-role",
        help="PostgreSQL only: every operator command must connect as the operator's own "
             "database role (turned on from a connection as your own role)."),
    json_out: bool = typer.Option(False, "--json", help="Print the new settings as JSON."),
) -> None:
    """Change the global limits; a running daemon applies them within a second.

    Example: dialer settings set --max-calls 10 --max-internal 8 --max-external none
    """
    changes: dict[str, int | None] = {}
    for key, raw in (("max_campaigns", max_campaigns), ("max_calls", max_calls),
                     ("max_internal", max_internal), ("max_external", max_external)):
        given, value = parse_limit(raw, "--" + key.replace("_", "-"))
        if given:
            changes[key] = value
    if not changes and require_db_role is None:
        raise ValidationError("nothing to set: give --max-campaigns, --max-calls, "
                              "--max-internal, --max-external and/or --require-db-role")
    s = authorized(Role.SETTINGS, "settings set")
    data = settings_data(s.set_settings(actor=actor(), now=time.time(),
                                        require_db_role=require_db_role, **changes))
    if json_out:
        emit_json(data)
    else:
        _show(data)
