"""``dialer campaign ...``: launch campaigns and follow them (campaigns role to act)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from cli.choices import Language, State, complete_campaign, complete_template
from cli.common import (
    JSON_RESULT,
    actor,
    authorized,
    confirm,
    emit_json,
    fail,
    local,
    message_audio,
    out,
    parse_start,
    read_recipient_lines,
    report,
    rules,
    short_time,
)
from cli.escalation import escalation_lines
from cli.tables import Col, fit, shown, when
from dialer.core import keys
from dialer.core.alerts import describe
from dialer.core.domain import CampaignState
from dialer.core.permissions import Role

campaign_app = typer.Typer(help="Launch and follow campaigns.", no_args_is_help=True)

C, V = Role.CAMPAIGNS, Role.VIEWER
WAITING_DETAIL = 5000  # watch reads every recipient's retry time up to this many, else by kind
STATES = [s.value for s in CampaignState]


@campaign_app.command("start")
def campaign_start(
    template: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template to launch."),
    name: Optional[str] = typer.Option(None, help="Campaign name (default: the template's)."),
    audio: Optional[Path] = typer.Option(None, help="Another message for this launch."),
    tts: Optional[str] = typer.Option(None, "--tts", help="Another message for this launch, "
                                      "as text spoken by espeak-ng."),
    voice: Optional[Language] = typer.Option(None, "--voice", help="Voice of --tts "
                                        "(default: the template's language)."),
    recipients: Optional[Path] = typer.Option(None, help="Another recipient list (CSV)."),
    in_minutes: Optional[float] = typer.Option(None, "--in", help="Start after N minutes."),
    at: Optional[str] = typer.Option(None, "--at",
                                     help="Start at an ISO date-time (local zone if none)."),
    json_out: bool = typer.Option(False, "--json", help="Print {\"id\": ...}."),
) -> None:
    """Launch a campaign from a template, now, --in N minutes or --at a date-time.

    Example: dialer campaign start Fire --name "Drill 3" --at 2026-12-01T08:30+01:00
    """
    now = time.time()
    start_at = parse_start(in_minutes, at, now)
    if name is not None:
        from dialer.core import validation

        name = validation.template_name(name)
    s = authorized(C, "campaign start")
    recs = [r for _, r in read_recipient_lines(recipients)] if recipients else None
    tpl = s.get_template(template)  # an unknown template fails before any audio is stored
    sha, seconds, text = message_audio(s, audio, tts,
                                       voice.value if voice else tpl.settings.language,
                                       required=False)
    cid = s.start_campaign(template=template, name=name, now=now, start_at=start_at,
                           actor=actor(), audio_sha=sha, audio_seconds=seconds, recipients=recs,
                           tts_text=text)
    if json_out:
        emit_json({"id": cid})
        return
    started = s.campaign_detail(cid)
    when_ = (f"starts {local(started['start_at'])}" if started["state"] == "scheduled"
             else started["state"])
    out.print(f"campaign {cid} {started['name']!r}: {when_}, "
              f"{len(started['recipients'])} recipients", highlight=False)


@campaign_app.command("list")
def campaign_list(
    state: Optional[list[State]] = typer.Option(None, "--state",
                                                help="Only these states; repeatable."),
    json_out: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """List campaigns. Example: dialer campaign list --state active --state blocked"""
    states = [s.value for s in state or []]
    rows = authorized(V, "campaign list").list_campaigns(states or None)
    if json_out:
        emit_json(rows)
        return
    cols = (Col("id", number=True), Col("name"), Col("state"), Col("priority", 4, number=True),
            Col("start", 3), Col("recipients", 2, number=True), Col("contacted", number=True),
            Col("failed", number=True), Col("in call", number=True))
    out.print(fit(cols, [[str(r["id"]), r["name"], r["state"], str(r["priority"]),
                          when(r["start_at"]), str(r["recipients"]), str(r["contacted"]),
                          str(r["failed"]), str(r["active"])] for r in rows], width=out.width))


RECIPIENT_COLUMNS = (Col("#", number=True), Col("number"), Col("name", 3), Col("kind", 6),
                     Col("state"), Col("calls", number=True), Col("failed", 4, number=True),
                     Col("last call", 5), Col("outcome", 2), Col("answered", 7),
                     Col("confirmed", 3))


def recipients_table(detail: dict[str, Any], width: int = 80) -> Table:
    """The per-recipient table of a campaign, fitted to ``width`` (the least needed columns go
    first: answered, kind, last call, failed, name). ``calls``: the calls placed to the
    recipient; ``failed``: the unsuccessful attempts it used, of those it may."""
    colours = {"contacted": "green", "failed": "red", "active": "yellow", "stopped": "magenta"}
    rows = []
    for r in detail["recipients"]:
        outcome = (r["last_outcome"] or "").replace("_", " ")
        if r["last_status"] and r["last_status"] != 200:
            outcome += f" {r['last_status']}"
        if width >= 110 and r.get("last_reason"):
            outcome += f" {r['last_reason']}"
        st = r["state"]
        rows.append([str(r["position"]), r["number"], r["name"] or "", r["kind"],
                     f"[{colours.get(st, 'white')}]{st}[/]", str(r.get("calls", 0)),
                     f"{r['attempts']}/{r['max_attempts']}", short_time(r["last_call_at"]),
                     outcome, short_time(r["answered_at"]), short_time(r["confirmed_at"])])
    return fit(RECIPIENT_COLUMNS, rows, width=width,
               title=f"campaign {detail['id']} {detail['name']} ({detail['state']})")


@campaign_app.command("show")
def campaign_show(campaign_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                   help="Campaign id."),
                  json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """Show a campaign: per recipient its state, attempts, last call, outcome (SIP status and
    reason), last answer and listening confirmation. Example: dialer campaign show 3 --json"""
    from cli.watch import situation, waiting_lines
    from dialer.core.waiting import window_line

    store = authorized(V, "campaign show")
    detail = store.campaign_detail(campaign_id)
    now = time.time()
    where = situation(store, detail, now)
    if json_out:  # the window's line: "calling window ...: waiting for window until HH:MM (zone)"
        emit_json({**detail, "calling_window": window_line(where, now)})
        return
    out.print(f"starts {local(detail['start_at'])}"
              + (f", ended {local(detail['ended_at'])}" if detail["ended_at"] else ""))
    if launched := describe(detail.get("alert")):
        out.print(f"launched by {launched}", highlight=False, markup=False)
    for line in [*_trunk_lines(store, detail), *escalation_lines(detail)]:
        out.print(line, highlight=False)
    if (keys_line := random_keys_line(detail.get("settings") or {})) is not None:
        out.print(keys_line, highlight=False)
    if (connect := keys.connect_text(detail.get("settings") or {})) is not None:
        out.print(f"connect to a person: {connect}", highlight=False, markup=False)
    if detail["chain"]["head"]:
        from cli.history import chain_text, print_chain_head

        out.print(f"history {chain_text(detail['chain'])}", highlight=False)
        print_chain_head(detail["chain"])
    for line in waiting_lines(detail["recipients"], where, now):
        out.print(line, highlight=False)
    out.print(recipients_table(detail, out.width))


def random_keys_line(settings: dict[str, Any]) -> str | None:
    """What the confirmation keys are, when one is drawn per call (None: both fixed)."""
    parts = [f"{what} {settings.get(f'{what}_key')}" for what in ("answer", "listen")
             if settings.get(f"{what}_confirm", True)]
    if not any(p.endswith(" random") for p in parts):
        return None
    return (f"confirmation keys: {', '.join(parts)} (random: a digit 2-8 drawn per call, "
            "kept on each attempt)")


def _trunk_lines(store: Any, detail: dict[str, Any]) -> list[str]:
    from cli.watch import trunk_lines

    settings = detail.get("settings") or {}
    return trunk_lines(store.trunk_health(time.time()), settings.get("external_route"))


@campaign_app.command("attempts")
def campaign_attempts(campaign_id: int = typer.Argument(..., help="Campaign (run) id."),
                      recipient: str = typer.Argument(..., help="Position (#N) or number."),
                      json_out: bool = typer.Option(False, "--json",
                                                    help="JSON for scripts.")) -> None:
    """Every attempt to one recipient, with its events and timestamps.

    Example: dialer campaign attempts 3 101
    """
    data = authorized(V, "campaign attempts").recipient_attempts(campaign_id, recipient, rules())
    if json_out:
        emit_json(data)
        return
    out.print(f"campaign {campaign_id}, recipient {data['position']} {data['number']} "
              f"{data['name'] or ''}: {len(data['attempts'])} attempt(s)")
    for i, a in enumerate(data["attempts"], 1):
        t = Table("time", "event", "detail",
                  title=f"attempt {i} ({a['id']}): {a['outcome'] or 'in progress'}"
                  + (f" {a['status']}" if a["status"] else "")
                  + (f" {a['reason']}" if a["reason"] else "")
                  + keys.drawn_text(a),
                  box=box.SIMPLE_HEAD)
        for e in a["events"]:
            t.add_row(local(e["at"]), e["kind"], shown(_set(e["detail"])))
        out.print(t)
    if data["events"]:
        t = Table("time", "event", "actor", "detail", title="other events", box=box.SIMPLE_HEAD)
        for e in data["events"]:
            t.add_row(local(e["at"]), e["kind"], e["actor"] or "", shown(_set(e["detail"])))
        out.print(t)


def _set(detail: dict[str, Any]) -> dict[str, Any]:
    """An event's detail without its unset fields, in key order."""
    return {k: v for k, v in sorted(detail.items()) if v is not None}


def _action(campaign_id: int, action: str, json_out: bool = False) -> None:
    state = authorized(C, f"campaign {action}").set_campaign_state(
        campaign_id, action, actor=actor(), now=time.time())
    report(json_out, {"id": campaign_id, "state": state}, state)


@campaign_app.command("suspend")
def campaign_suspend(campaign_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                   help="Campaign id."),
                     json_out: bool = JSON_RESULT) -> None:
    """Suspend: no new calls, calls in progress continue. Example: dialer campaign suspend 3"""
    _action(campaign_id, "suspend", json_out)


@campaign_app.command("resume")
def campaign_resume(campaign_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                   help="Campaign id."),
                    json_out: bool = JSON_RESULT) -> None:
    """Resume a suspended campaign: scheduled again while its start time is ahead (or if it
    never started), else active, or blocked while the maximum of active campaigns is reached.
    Prints the new state. Example: dialer campaign resume 3"""
    _action(campaign_id, "resume", json_out)


@campaign_app.command("stop")
def campaign_stop(campaign_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                   help="Campaign id."),
                  yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
                  json_out: bool = JSON_RESULT) -> None:
    """Terminate a campaign (final: calls in progress are hung up, no call is placed again).

    Example: dialer campaign stop 3 --yes
    """
    authorized(C, "campaign stop").campaign_detail(campaign_id)
    confirm(f"stop campaign {campaign_id} for good?", yes, "not stopped")
    _action(campaign_id, "stop", json_out)


@campaign_app.command("grant")
def campaign_grant(
    campaign_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                   help="Campaign id."),
    recipients: Optional[list[str]] = typer.Argument(None, help="Positions (#N) or numbers; "
                                                     "none: every failed recipient."),
    attempts: int = typer.Option(..., "--attempts", "-n", help="How many more attempts (1..99)."),
    json_out: bool = JSON_RESULT,
) -> None:
    """Grant more attempts: a failed recipient becomes idle again and an incomplete campaign
    active again. Example: dialer campaign grant 3 101 +390669820000 --attempts 2"""
    done = authorized(C, "campaign grant").grant_attempts(
        campaign_id, recipients or [], attempts, actor=actor(), now=time.time(), rules=rules())
    report(json_out, {"id": campaign_id, "attempts": attempts, "recipients": list(done)},
           f"{attempts} more attempt(s) to recipient(s) {', '.join(map(str, done))}")


@campaign_app.command("stop-recipient")
def campaign_stop_recipient(campaign_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                   help="Campaign id."),
                            recipient: str = typer.Argument(
                                ..., help="Position (#N) or number."),
                            yes: bool = typer.Option(False, "--yes", "-y",
                                                     help="Do not ask."),
                            json_out: bool = JSON_RESULT) -> None:
    """Stop the attempts to one recipient (final for this run).

    Example: dialer campaign stop-recipient 3 101 --yes
    """
    authorized(C, "campaign stop-recipient").campaign_detail(campaign_id)
    confirm(f"stop calling recipient {recipient} of campaign {campaign_id}?", yes, "not stopped")
    r = authorized(C, "campaign stop-recipient").stop_recipient(
        campaign_id, recipient, actor=actor(), now=time.time(), rules=rules())
    report(json_out, {"id": campaign_id, "position": r["position"], "number": r["number"],
                      "state": "stopped"}, f"recipient {r['position']} ({r['number']}) stopped")


@campaign_app.command("delete")
def campaign_delete(campaign_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                   help="Campaign id."),
                    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
                    json_out: bool = JSON_RESULT) -> None:
    """Delete a completed or terminated campaign whose calls have all ended; its history stays
    (dialer history show ID).

    Example: dialer campaign delete 3 --yes
    """
    s = authorized(C, "campaign delete")
    s.campaign_detail(campaign_id)
    confirm(f"delete campaign {campaign_id}?", yes, "not deleted")
    s.delete_campaign(campaign_id, actor=actor(), now=time.time())
    report(json_out, {"id": campaign_id, "deleted": True},
           f"campaign {campaign_id} deleted; its history stays")


@campaign_app.command("watch")
def campaign_watch(
    campaign_id: int = typer.Argument(..., autocompletion=complete_campaign,
                                   help="Campaign id."),
    once: bool = typer.Option(False, "--once", help="Print one frame and exit (scripts, tests)."),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between two refreshes."),
    json_out: bool = typer.Option(False, "--json",
                                  help="One JSON object per refresh, one per line."),
) -> None:
    """A live view of a campaign: recipients by state, calls in progress, rate, estimated time
    to completion and the last events; exits when the campaign finishes (Ctrl-C to leave).
    With no daemon serving the database it says so instead of a time to completion.

    Example: dialer campaign watch 3
    """
    from rich.live import Live

    from cli.watch import (
        FINISHED,
        RATE_WINDOW,
        frame,
        kinds_waiting,
        situation,
        trunk_lines,
        waiting_lines,
        watch_data,
    )

    if interval <= 0:
        fail("--interval must be positive")
    s = authorized(V, "campaign watch")

    def render() -> tuple[Any, str]:
        now = time.time()
        progress = s.campaign_progress(campaign_id, since=now - RATE_WINDOW)
        trunks = trunk_lines(s.trunk_health(now), (progress.get("settings") or {})
                             .get("external_route"))
        total = sum(sum(k.values()) for k in progress["recipients"].values())
        if total <= WAITING_DETAIL:  # each recipient, in its own zone
            detail = s.campaign_detail(campaign_id)
            where = situation(s, {**detail, "in_call": progress["in_call"]}, now)
            waiting = waiting_lines(detail["recipients"], where, now)
        else:
            where = situation(s, progress, now)
            waiting = kinds_waiting(progress, where, now)
        limits, live = where.global_limits, where.serving
        if json_out:
            return watch_data(progress, now, limits, trunks, live, waiting), progress["state"]
        return frame(progress, now, limits, trunks, live, waiting), progress["state"]

    view, state = render()
    if json_out:
        try:
            while True:
                sys.stdout.write(json.dumps(view) + "\n")
                sys.stdout.flush()
                if once or state in FINISHED:
                    return
                time.sleep(interval)
                view, state = render()
        except KeyboardInterrupt:
            return
    if once or state in FINISHED:
        out.print(view)
        return
    try:
        with Live(view, console=out, refresh_per_second=4, transient=False) as live:
            while state not in FINISHED:
                time.sleep(interval)
                view, state = render()
                live.update(view)
    except KeyboardInterrupt:
        return
    out.print(f"campaign {campaign_id} {state}")


@campaign_app.command("check")
def campaign_check(
    template: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template to check."),
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="The daemon's dialer.toml: its [numbers] rules, "
                                          "worker capacity and metrics endpoint "
                                          "(trunk registrations)."),
    recipients: Optional[Path] = typer.Option(None, "--recipients", help="Check this list "
                                              "instead of the template's (CSV)."),
    json_out: bool = typer.Option(False, "--json", help="The findings as JSON."),
) -> None:
    """Before a launch: bad or duplicate numbers, missing or invalid audio, unregistered trunks,
    limits of 0 and the estimated duration; exit 1 when any error is found.

    Example: dialer campaign check Fire --config /etc/dialer/dialer.toml
    """
    import tempfile

    from dialer import config as config_mod
    from dialer.core.errors import NotFound
    from dialer.precheck import Severity, check_campaign, fetch_trunk_states, findings_json

    cfg = config_mod.load(config) if config is not None else None
    s = authorized(V, "campaign check")
    tpl = s.get_template(template)
    number_rules = cfg.numbers if cfg is not None else rules()
    recs = [r for _, r in read_recipient_lines(recipients, number_rules)] if recipients else None
    trunk_states: dict[str, bool | None] = {}
    trunk_health: dict[str, bool] = {}
    capacity = None
    if cfg is not None:
        capacity = cfg.workers * cfg.calls_per_worker
        if cfg.metrics_port is not None:
            host = "127.0.0.1" if cfg.metrics_bind in ("0.0.0.0", "::", "") else cfg.metrics_bind
            url = f"http://{host}:{cfg.metrics_port}/metrics"
            trunk_states = fetch_trunk_states(url)
            trunk_health = {n: v for n, v in fetch_trunk_states(
                url, metric="dialer_trunk_healthy").items() if v is not None}
        for name, t in cfg.trunks.items():
            if t.registrar is None:  # nothing to register: always ready to call
                trunk_states.setdefault(name, True)
    gs = s.get_settings()
    active = len(s.list_campaigns([CampaignState.ACTIVE.value]))
    with tempfile.TemporaryDirectory(prefix="dialer-check-") as tmp:
        try:
            audio: Path | None = s.media_file(tpl.audio_sha, Path(tmp))
        except NotFound:
            audio = None
        findings = check_campaign(tpl, rules=number_rules, trunk_states=trunk_states,
                                  limits=gs.limits, audio=audio, recipients=recs,
                                  max_campaigns=gs.max_campaigns, active_campaigns=active,
                                  capacity=capacity, trunk_health=trunk_health,
                                  routes=cfg.routes if cfg is not None else None,
                                  now=time.time())
    errors = sum(1 for f in findings if f.severity is Severity.ERROR)
    if json_out:
        typer.echo(findings_json(findings))
    else:
        colours = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
        for f in findings:
            out.print(f"[{colours[f.severity]}]{escape(f.line())}[/]", highlight=False,
                      soft_wrap=True)
        warnings = sum(1 for f in findings if f.severity is Severity.WARNING)
        out.print(f"template {template!r}: {errors} error(s), {warnings} warning(s)",
                  highlight=False)
    if errors:
        raise typer.Exit(1)
