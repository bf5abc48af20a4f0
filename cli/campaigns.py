"""``dialer campaign ...``: launch campaigns and follow them (campaigns role to act)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.table import Table

from cli.common import (actor, authorized, emit_json, fail, import_audio_file, local, out,
                        parse_start, read_recipients, short_time)
from dialer.domain import CampaignState
from dialer.permissions import Role

campaign_app = typer.Typer(help="Launch and follow campaigns.", no_args_is_help=True)

C, V = Role.CAMPAIGNS, Role.VIEWER
STATES = [s.value for s in CampaignState]


@campaign_app.command("start")
def campaign_start(
    template: str = typer.Argument(..., help="Template to launch."),
    name: Optional[str] = typer.Option(None, help="Campaign name (default: the template's)."),
    audio: Optional[Path] = typer.Option(None, help="Another message for this launch."),
    recipients: Optional[Path] = typer.Option(None, help="Another recipient list (CSV)."),
    in_minutes: Optional[float] = typer.Option(None, "--in", help="Start after N minutes."),
    at: Optional[str] = typer.Option(None, "--at", help="Start at an ISO date-time (local zone if none)."),
    json_out: bool = typer.Option(False, "--json", help="Print {\"id\": ...}."),
) -> None:
    """Launch a campaign from a template, now, --in N minutes or --at a date-time.

    Example: dialer campaign start Fire --name "Drill 3" --at 2026-12-01T08:30+01:00
    """
    now = time.time()
    start_at = parse_start(in_minutes, at, now)
    if name is not None:
        from dialer import validation

        validation.template_name(name)
    s = authorized(C, "campaign start")
    recs = read_recipients(recipients) if recipients else None
    s.get_template(template)  # an unknown template fails before any audio is stored
    sha, seconds = import_audio_file(s, audio) if audio else (None, None)
    cid = s.start_campaign(template=template, name=name, now=now, start_at=start_at,
                           actor=actor(), audio_sha=sha, audio_seconds=seconds, recipients=recs)
    if json_out:
        emit_json({"id": cid})
    else:
        out.print(cid)


@campaign_app.command("list")
def campaign_list(
    state: Optional[list[str]] = typer.Option(None, "--state", help=f"Only these states ({', '.join(STATES)}); repeatable."),
    json_out: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """List campaigns. Example: dialer campaign list --state active --state blocked"""
    states = []
    for value in state or []:
        for part in value.split(","):
            if part.strip() not in STATES:
                fail(f"unknown state {part.strip()!r} (states: {', '.join(STATES)})")
            states.append(part.strip())
    rows = authorized(V, "campaign list").list_campaigns(states or None)
    if json_out:
        emit_json(rows)
        return
    t = Table("id", "name", "state", "priority", "start", "recipients", "contacted", "failed",
              "in call")
    for r in rows:
        t.add_row(str(r["id"]), r["name"], r["state"], str(r["priority"]), local(r["start_at"]),
                  str(r["recipients"]), str(r["contacted"]), str(r["failed"]), str(r["active"]))
    out.print(t)


def recipients_table(detail: dict[str, Any], width: int = 80) -> Table:
    """The per-recipient table of a campaign; last call and answer times on wide terminals."""
    wide = width >= 110
    t = Table(title=f"campaign {detail['id']} {detail['name']} ({detail['state']})",
              box=box.SIMPLE_HEAD, pad_edge=False)
    for name, nowrap in (("#", True), ("number", True), ("name", False), ("kind", True),
                         ("state", True), ("att", True), ("last call", True), ("outcome", False),
                         ("answered", True), ("confirmed", True)):
        if name in ("last call", "answered") and not wide:
            continue
        t.add_column(name, no_wrap=nowrap)
    colours = {"contacted": "green", "failed": "red", "active": "yellow", "stopped": "magenta"}
    for r in detail["recipients"]:
        outcome = (r["last_outcome"] or "").replace("_", " ")
        if r["last_status"] and r["last_status"] != 200:
            outcome += f" {r['last_status']}"
        if wide and r.get("last_reason"):
            outcome += f" {r['last_reason']}"
        st = r["state"]
        row = [str(r["position"]), r["number"], r["name"] or "", r["kind"][:3],
               f"[{colours.get(st, 'white')}]{st}[/]", str(r["attempts"])]
        if wide:
            row.append(short_time(r["last_call_at"]))
        row.append(outcome)
        if wide:
            row.append(short_time(r["answered_at"]))
        row.append(short_time(r["confirmed_at"]))
        t.add_row(*row)
    return t


@campaign_app.command("show")
def campaign_show(campaign_id: int = typer.Argument(..., help="Campaign id."),
                  json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """Show a campaign: per recipient its state, attempts, last call, outcome (SIP status and
    reason), last answer and listening confirmation. Example: dialer campaign show 3 --json"""
    detail = authorized(V, "campaign show").campaign_detail(campaign_id)
    if json_out:
        emit_json(detail)
        return
    out.print(f"starts {local(detail['start_at'])}"
              + (f", ended {local(detail['ended_at'])}" if detail["ended_at"] else ""))
    out.print(recipients_table(detail, out.width))


@campaign_app.command("attempts")
def campaign_attempts(campaign_id: int = typer.Argument(..., help="Campaign (run) id."),
                      recipient: str = typer.Argument(..., help="Position (#N) or number."),
                      json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """Every attempt to one recipient, with its events and timestamps.

    Example: dialer campaign attempts 3 101
    """
    from cli.common import rules

    data = authorized(V, "campaign attempts").recipient_attempts(campaign_id, recipient, rules())
    if json_out:
        emit_json(data)
        return
    out.print(f"campaign {campaign_id}, recipient {data['position']} {data['number']} "
              f"{data['name'] or ''}: {len(data['attempts'])} attempt(s)")
    for i, a in enumerate(data["attempts"], 1):
        t = Table("time", "event", "detail", title=f"attempt {i} ({a['id']}): {a['outcome'] or 'in progress'}"
                  + (f" {a['status']}" if a["status"] else "") + (f" {a['reason']}" if a["reason"] else ""),
                  box=box.SIMPLE_HEAD)
        for e in a["events"]:
            detail = ", ".join(f"{k}={v}" for k, v in sorted(e["detail"].items()) if v is not None)
            t.add_row(local(e["at"]), e["kind"], detail)
        out.print(t)
    if data["events"]:
        t = Table("time", "event", "actor", "detail", title="other events", box=box.SIMPLE_HEAD)
        for e in data["events"]:
            detail = ", ".join(f"{k}={v}" for k, v in sorted(e["detail"].items()) if v is not None)
            t.add_row(local(e["at"]), e["kind"], e["actor"] or "", detail)
        out.print(t)


def _action(campaign_id: int, action: str) -> None:
    out.print(authorized(C, f"campaign {action}").set_campaign_state(
        campaign_id, action, actor=actor(), now=time.time()))


@campaign_app.command("suspend")
def campaign_suspend(campaign_id: int = typer.Argument(..., help="Campaign id.")) -> None:
    """Suspend: no new calls, calls in progress continue. Example: dialer campaign suspend 3"""
    _action(campaign_id, "suspend")


@campaign_app.command("resume")
def campaign_resume(campaign_id: int = typer.Argument(..., help="Campaign id.")) -> None:
    """Resume a suspended campaign. Example: dialer campaign resume 3"""
    _action(campaign_id, "resume")


@campaign_app.command("stop")
def campaign_stop(campaign_id: int = typer.Argument(..., help="Campaign id.")) -> None:
    """Terminate a campaign (final). Example: dialer campaign stop 3"""
    _action(campaign_id, "stop")


@campaign_app.command("grant")
def campaign_grant(
    campaign_id: int = typer.Argument(..., help="Campaign id."),
    recipients: Optional[list[str]] = typer.Argument(None, help="Positions (#N) or numbers; none: every failed recipient."),
    attempts: int = typer.Option(..., "--attempts", "-n", help="How many more attempts (1..99)."),
) -> None:
    """Grant more attempts: a failed recipient becomes idle again and an incomplete campaign
    active again. Example: dialer campaign grant 3 101 +390669820000 --attempts 2"""
    from cli.common import rules

    done = authorized(C, "campaign grant").grant_attempts(
        campaign_id, recipients or [], attempts, actor=actor(), now=time.time(), rules=rules())
    out.print(f"{attempts} more attempt(s) to recipient(s) {', '.join(map(str, done))}")


@campaign_app.command("stop-recipient")
def campaign_stop_recipient(campaign_id: int = typer.Argument(..., help="Campaign id."),
                            recipient: str = typer.Argument(..., help="Position (#N) or number.")) -> None:
    """Stop the attempts to one recipient. Example: dialer campaign stop-recipient 3 101"""
    from cli.common import rules

    r = authorized(C, "campaign stop-recipient").stop_recipient(
        campaign_id, recipient, actor=actor(), now=time.time(), rules=rules())
    out.print(f"recipient {r['position']} ({r['number']}) stopped")


@campaign_app.command("delete")
def campaign_delete(campaign_id: int = typer.Argument(..., help="Campaign id."),
                    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask.")) -> None:
    """Delete a completed or terminated campaign; its history stays (dialer history show ID).

    Example: dialer campaign delete 3 --yes
    """
    s = authorized(C, "campaign delete")
    s.campaign_detail(campaign_id)
    if not yes and not typer.confirm(f"delete campaign {campaign_id}?", default=False):
        fail("not deleted")
    s.delete_campaign(campaign_id, actor=actor(), now=time.time())
    out.print(f"campaign {campaign_id} deleted; its history stays")
