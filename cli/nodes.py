"""``dialer nodes``: the cluster's nodes and their leases (viewer role)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import typer
from rich.table import Table

from cli.common import authorized, emit_json, local, out
from dialer.core.permissions import Role


def nodes_data(rows: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """What ``dialer nodes --json`` prints (docs/cli-json.md)."""
    def iso(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()

    return [{"name": r["name"], "host": r["host"], "address": r["address"], "pid": r["pid"],
             "state": r["state"], "generation": r["generation"],
             "started_at": iso(r["started_at"]), "heartbeat_at": iso(r["heartbeat_at"]),
             "heartbeat_age": round(now - r["heartbeat_at"], 1),
             "lease_until": iso(r["lease_until"]),
             "lease_left": round(max(0.0, r["lease_until"] - now), 1)
             if r["state"] == "live" else 0.0,
             "calls": r["calls"], "slots": r.get("slots"), "late": r.get("late") or 0}
            for r in rows]


def nodes(json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """List the nodes sharing this database: state, heartbeat age, lease, calls in progress,
    call slots (of the workers taking calls) and workers running late (the overload gate).

    A live node renews its lease every few seconds ([cluster] in its config); one whose lease
    ran out is marked lost by the next node to pass, and its open calls settled as node_lost.
    Example: dialer nodes
    """
    data = nodes_data(authorized(Role.VIEWER, "nodes").nodes(), time.time())
    if json_out:
        emit_json(data)
        return
    if not data:
        out.print("no node has served this database yet")
        return
    t = Table("node", "host (address)", "pid", "state", "generation", "heartbeat", "lease left",
              "calls/slots", "started", title="nodes")
    for n in data:
        t.add_row(n["name"], f"{n['host']} ({n['address']})", str(n["pid"]), n["state"],
                  str(n["generation"]), f"{n['heartbeat_age']:.0f} s ago",
                  f"{n['lease_left']:.0f} s" if n["state"] == "live" else "-", _calls(n),
                  local(n["started_at"]))
    out.print(t)


def _calls(n: dict[str, Any]) -> str:
    """Calls in progress / call slots, and the workers running late: ``12/500 (3 late)``."""
    slots = "-" if n["slots"] is None else str(n["slots"])
    return f"{n['calls']}/{slots}" + (f" ({n['late']} late)" if n["late"] else "")
