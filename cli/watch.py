"""The frame of ``dialer campaign watch ID``: counts by state, calls in progress, rate, estimated
time to completion and the last events of one campaign, as a Rich renderable.

``eta_seconds`` is pure: remaining recipients over the observed throughput (recipients finished
per second since the first call). Before anything has finished it falls back to the pre-launch
model (``dialer.precheck.estimate_duration``) for the recipients not yet done.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cli.common import short_time
from dialer import zones
from dialer.bootstrap import settings_from_dict
from dialer.core import window as windows
from dialer.core.cluster import load_lines
from dialer.core.domain import CampaignState, Limits, RecipientState
from dialer.core.records import TrunkHealthView
from dialer.core.waiting import Situation, tally, why_waiting, window_line
from dialer.precheck import estimate_duration

FINISHED = {CampaignState.COMPLETED.value, CampaignState.INCOMPLETE.value,
            CampaignState.TERMINATED.value}
RATE_WINDOW = 60.0  # seconds of attempts the "rate" counts
COLOURS = {"contacted": "green", "failed": "red", "active": "yellow", "stopped": "magenta",
           "idle": "white"}


def _ts(iso: str | None) -> float | None:
    return None if not iso else dt.datetime.fromisoformat(iso).timestamp()


def human(seconds: float | None) -> str:
    """``95`` -> ``1 min 35 s``; None -> ``unknown``."""
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def eta_seconds(progress: dict[str, Any], now: float, global_limits: Limits) -> float | None:
    """Seconds until every recipient is done (None: unknown; 0 when nothing is left)."""
    counts = {state: sum(kinds.values()) for state, kinds in progress["recipients"].items()}
    total = sum(counts.values())
    done = sum(counts.get(s.value, 0) for s in RecipientState if s.done)
    remaining = total - done
    if remaining <= 0 or progress["state"] in FINISHED:
        return 0.0
    first = _ts(progress.get("first_call_at"))
    if first is not None and done > 0 and now > first:
        return float(remaining / (done / (now - first)))
    st = settings_from_dict(progress["settings"])
    left = {k: 0 for k in ("internal", "external")}
    for state, kinds in progress["recipients"].items():
        if state in (RecipientState.IDLE.value, RecipientState.ACTIVE.value):
            for kind, n in kinds.items():
                left[kind] = left.get(kind, 0) + n
    est = estimate_duration(internal=left["internal"], external=left["external"], settings=st,
                            global_limits=global_limits,
                            message_seconds=float(progress.get("audio_seconds") or 0.0))
    return est.expected_seconds


def trunk_lines(health: Mapping[str, TrunkHealthView], route: str | None) -> list[str]:
    """One line per trunk out of service (``dialer.core.health``), and the route if named."""
    lines = [f"route {route}"] if route else []
    for name, h in sorted(health.items()):
        if not h.healthy:
            until = (dt.datetime.fromtimestamp(h.until).strftime("%H:%M:%S")
                     if h.until is not None else "?")
            lines.append(f"trunk {name}: unhealthy until {until} ({h.reason})")
    return lines


def situation(store: Any, campaign: Mapping[str, Any], now: float) -> Situation:
    """What ``dialer.core.waiting`` needs of a campaign (``campaign_detail`` or
    ``campaign_progress``), read from the store now. The routes are the daemon's config, which
    the CLI does not read: the external trunks are those the health guard knows."""
    settings = settings_from_dict(campaign["settings"])
    health = store.trunk_health(now)
    running = store.running_counts()
    calls = campaign.get("in_call")
    if calls is None:
        calls = {"internal": 0, "external": 0}
        for r in campaign["recipients"]:
            if r["state"] == RecipientState.ACTIVE.value:
                calls[r["kind"]] = calls.get(r["kind"], 0) + 1
    w = windows.window_of(settings.window, settings.window_days, settings.timezone)
    listed = campaign["recipients"] if isinstance(campaign["recipients"], list) else []
    nodes = store.nodes()
    return Situation(state=campaign["state"], start_at=_ts(campaign.get("start_at")),
                     window=w, zones={} if w is None else zones.zone_map(
                         [None, *(r.get("timezone") for r in listed)], w.timezone),
                     serving=serving(nodes, now), nodes=nodes, limits=settings.limits,
                     global_limits=store.get_settings().limits, calls=calls,
                     global_calls={"internal": running.internal, "external": running.external},
                     external_trunks=[t for t in health if t != "internal"],
                     unhealthy={t: h.until for t, h in health.items() if not h.healthy})


def waiting_lines(recipients: Sequence[Mapping[str, Any]], s: Situation, now: float) -> list[str]:
    """Why the idle recipients wait: one line per reason, with how many."""
    reasons = [why_waiting(r["kind"], _ts(r.get("next_at")), s, now, r.get("timezone"))
               for r in recipients if r["state"] == RecipientState.IDLE.value]
    head = window_line(s, now)
    return ([head] if head else []) + [f"{n} waiting: {reason}" for reason, n in tally(reasons)] \
        + _node_lines(s, bool(reasons))


def _node_lines(s: Situation, idle: bool) -> list[str]:
    """The nodes' pools, when they hold calls back: full, or workers late (the overload gate)."""
    return load_lines(s.nodes, waiting=idle and s.state == CampaignState.ACTIVE.value)


def kinds_waiting(progress: Mapping[str, Any], s: Situation, now: float) -> list[str]:
    """The watch's cheap form: why each kind with idle recipients waits (retry delays are
    per recipient: ``campaign show`` has them)."""
    idle = progress["recipients"].get(RecipientState.IDLE.value, {})
    head = window_line(s, now)
    return ([head] if head else []) + [f"{n} {kind} waiting: {why_waiting(kind, None, s, now)}"
                                       for kind, n in sorted(idle.items()) if n] \
        + _node_lines(s, any(idle.values()))


def serving(nodes: Sequence[Mapping[str, Any]], now: float) -> bool:
    """Whether some daemon serves the database: a live node whose lease has not run out."""
    return any(n["state"] == "live" and float(n["lease_until"]) > now for n in nodes)


NOT_SERVING = "no daemon is serving this database: nothing is dialled (start dialer serve)"


def watch_data(progress: dict[str, Any], now: float, global_limits: Limits,
               trunks: Sequence[str] = (), live: bool = True,
               waiting: Sequence[str] = ()) -> dict[str, Any]:
    """One refresh of ``campaign watch --json`` (one object per line, docs/cli-json.md)."""
    counts = {state: sum(kinds.values()) for state, kinds in progress["recipients"].items()}
    finished = progress["state"] in FINISHED
    return {"at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(), "id": progress["id"],
            "name": progress["name"], "state": progress["state"],
            "recipients": {s.value: counts.get(s.value, 0) for s in RecipientState},
            "in_call": progress["in_call"],
            "rate_per_min": round(progress["ended_since"] * 60.0 / RATE_WINDOW, 2),
            "serving": live, "finished": finished,
            "eta_seconds": 0.0 if finished else (
                eta_seconds(progress, now, global_limits) if live else None),
            "trunks": list(trunks), "waiting": list(waiting)}


def frame(progress: dict[str, Any], now: float, global_limits: Limits,
          trunks: Sequence[str] = (), live: bool = True,
          waiting: Sequence[str] = ()) -> RenderableType:
    """One frame of the live view; ``trunks``: ``trunk_lines``; ``live``: a daemon serves
    (``serving``): without one there is no time to completion, and the frame says why."""
    counts = {state: sum(kinds.values()) for state, kinds in progress["recipients"].items()}
    total = sum(counts.values())
    done = sum(counts.get(s.value, 0) for s in RecipientState if s.done)
    in_call = progress["in_call"]
    rate = progress["ended_since"] * 60.0 / RATE_WINDOW
    eta = eta_seconds(progress, now, global_limits)
    state = progress["state"]
    head = Text.assemble(
        (f"campaign {progress['id']} ", "bold"), (progress["name"], "bold cyan"),
        f"  ({progress['template']})  ",
        (state, "green" if state in (CampaignState.ACTIVE.value,
                                     CampaignState.COMPLETED.value) else "yellow"))
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(total, 1), completed=done, width=40),
                f"{done}/{total} done")
    counts_t = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="recipients")
    for s in RecipientState:
        counts_t.add_column(s.value, justify="right")
    counts_t.add_row(*(f"[{COLOURS[s.value]}]{counts.get(s.value, 0)}[/]" for s in RecipientState))
    stats = Table.grid(padding=(0, 2))
    stats.add_row("calls in progress",
                  f"{sum(in_call.values())} (internal {in_call.get('internal', 0)}, "
                  f"external {in_call.get('external', 0)})")
    stats.add_row("rate", f"{rate:.1f} attempts/min (last {RATE_WINDOW:.0f} s)")
    stats.add_row("time to completion",
                  "done" if state in FINISHED else f"about {human(eta)}" if live
                  else f"[bold red]{NOT_SERVING}[/]")
    for line in trunks:
        stats.add_row("trunks", line)
    for line in waiting:
        stats.add_row("waiting", line)
    events = Table("time", "event", "number", "detail", box=box.SIMPLE_HEAD, pad_edge=False,
                   title="last events")
    for e in reversed(progress["events"]):
        detail = ", ".join(f"{k}={v}" for k, v in sorted((e["detail"] or {}).items())
                           if v is not None and k != "settings")
        events.add_row(short_time(e["at"]), e["kind"], e.get("number") or "",
                       escape(detail[:80]))
    return Group(head, bar, counts_t, stats, events)
