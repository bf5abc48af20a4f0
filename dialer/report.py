"""The HTML report of a campaign run: one self-contained page (inline CSS, an inline SVG chart).

``render_report(history)`` takes the history of one run and returns the page as text; nothing is
fetched (no script, no font, no image, no stylesheet from elsewhere), so the file can be mailed,
archived or opened offline years later.

The input (``history``) is the shape of ``SqlStore.run_history(run_id)``::

    {
      "run": {"id": 12, "name": "Evacuation B", "template": "evac", "state": "completed",
              "created_at": ISO, "created_by": "alice", "start_at": ISO,
              "audio_sha256": "...", "audio_seconds": 12.5,             # every key optional
              "chain": {"head": "<64 hex>"|None, "rows": 42|None, "sealed_at": ISO|None}},
      "settings": {...},         # the CampaignSettings snapshot as a dict (limits nested)
      "recipients": [{"id": 31, "position": 1, "number": "201", "name": "Ada", "email": None,
                      "kind": "internal",
                      # optional, as SqlStore.campaign_detail() gives them; otherwise derived
                      "state": "contacted", "attempts": 0, "last_outcome": "contacted",
                      "last_status": 200, "answered_at": ISO, "confirmed_at": ISO}, ...],
      "attempts": [{"id": "…", "recipient_id": 31, "number": "201", "kind": "internal",
                    "created_at": ISO, "answered_at": ISO|None, "ended_at": ISO|None,
                    "status": 200, "reason": None, "outcome": "contacted",
                    "answer_confirmed_at": ISO|None, "listen_confirmed_at": ISO|None}, ...],
      "events": [{"id": 1, "at": ISO, "kind": "attempt_started", "recipient_id": 31,
                  "attempt_id": "…", "actor": None, "detail": {...}}, ...],
    }

Timestamps are ISO 8601 strings (as the store gives them) or POSIX seconds. For a campaign that
still exists, ``history_from_campaign(campaign_detail(id), attempts_of(id), events_of(id))``
builds the same shape from the three store methods.

The chart is computed from the events alone: a recipient's state follows its ``recipient_state``
events (``detail.new``), calls in progress follow ``attempt_started`` / ``attempt_ended``.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from dialer.core import escalation, keys, window
from dialer.core.alerts import describe
from dialer.reportdata import Point, _ts, history_from_campaign, timeline

__all__ = ["Point", "chart_svg", "history_from_campaign", "render_report", "timeline"]

UTC = dt.UTC

OUTCOME_COLOURS: dict[str, str] = {
    "contacted": "#1f9d55", "busy": "#e8912d", "no_answer": "#d6b40b", "rejected": "#8e44ad",
    "unreachable": "#d64545", "hung_up": "#3b82c4", "not_confirmed": "#5b6fd8",
    "failed": "#a61b1b", "worker_lost": "#6b2f87", "daemon_lost": "#b35c00",
    "trunk_down": "#7a7a7a", "interrupted": "#6b2f87", "node_lost": "#8a3b12",
}
STATE_COLOURS: dict[str, str] = {
    "contacted": "#1f9d55", "failed": "#d64545", "active": "#3b82c4", "idle": "#94a3b8",
    "stopped": "#e8912d",
}
CAMPAIGN_STATE_COLOURS: dict[str, str] = {
    "scheduled": "#64748b", "active": "#3b82c4", "blocked": "#e8912d", "suspended": "#d6b40b",
    "incomplete": "#d64545", "completed": "#1f9d55", "terminated": "#475569",
}
SERIES: tuple[tuple[str, str, str], ...] = (
    ("contacted", "Contacted", STATE_COLOURS["contacted"]),
    ("failed", "Failed", STATE_COLOURS["failed"]),
    ("stopped", "Stopped", STATE_COLOURS["stopped"]),
    ("in_progress", "In a call", STATE_COLOURS["active"]),
)
"""Chart series, bottom to top: (id, legend, colour)."""


# ----- formatting helpers -----

def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(ts: float | None, tz: dt.tzinfo, *, date: bool = True) -> str:
    if ts is None:
        return "—"
    d = dt.datetime.fromtimestamp(ts, tz)
    return d.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _yesno(value: Any) -> str:
    return "yes" if value else "no"


def _limit(value: Any) -> str:
    return "unlimited" if value is None else str(value)


def _nice_step(span: float, target: int, steps: Sequence[float]) -> float:
    for step in steps:
        if span / step <= target:
            return step
    return steps[-1] * math.ceil(span / steps[-1] / target)


TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, 86400)


# ----- the chart -----

def chart_svg(points: Sequence[Point], total: int, tz: dt.tzinfo, *,
              marks: Sequence[tuple[float, str]] = (), width: int = 960,
              height: int = 330) -> str:
    """A stacked step-area chart of contacted / failed / in-a-call recipients over time.

    ``marks`` are (time, label) vertical markers (campaign state changes).
    """
    left, right, top, bottom = 48, 16, 18, 42
    w, h = width - left - right, height - top - bottom
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" id="progress-chart" role="img" '
            f'viewBox="0 0 {width} {height}" width="100%" '
            f'aria-label="Recipients contacted, failed and in a call over time">')
    if not points:
        return (head + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                'class="empty">No call was placed in this run.</text></svg>')
    t0, t1 = points[0].at, points[-1].at
    pad = max(1.0, (t1 - t0) * 0.03)
    t0, t1 = t0 - pad, t1 + pad
    ymax = max(1, total, max(p.contacted + p.failed + p.stopped + p.in_progress for p in points))

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * w

    def y(v: float) -> float:
        return top + h - v / ymax * h

    out = [head, '<defs>']
    for sid, _, colour in SERIES:
        out.append(f'<linearGradient id="g-{sid}" x1="0" y1="0" x2="0" y2="1">'
                   f'<stop offset="0" stop-color="{colour}" stop-opacity="0.95"/>'
                   f'<stop offset="1" stop-color="{colour}" stop-opacity="0.70"/>'
                   '</linearGradient>')
    out.append('</defs>')
    # grid and axes
    ystep = _nice_step(ymax, 6, (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000))
    v = 0.0
    while v <= ymax + 1e-9:
        out.append(f'<line class="grid" x1="{left}" x2="{left + w}" y1="{y(v):.1f}" '
                   f'y2="{y(v):.1f}"/><text class="tick" x="{left - 8}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end">{int(v)}</text>')
        v += ystep
    tstep = _nice_step(t1 - t0, 8, TIME_STEPS)
    first = math.ceil(t0 / tstep) * tstep
    show_date = t1 - t0 > 86400
    t = first
    while t <= t1:
        label = _when(t, tz, date=show_date) if tstep >= 60 or show_date else _when(t, tz,
                                                                                   date=False)
        if tstep >= 60 and not show_date:
            label = label[:5]
        out.append(f'<line class="grid v" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" '
                   f'y2="{top + h}"/><text class="tick" x="{x(t):.1f}" y="{top + h + 18}" '
                   f'text-anchor="middle">{_e(label)}</text>')
        t += tstep
    # stretches where the campaign was suspended or blocked, shaded behind the series
    shown = [(at, label) for at, label in sorted(marks) if t0 <= at <= t1]
    for i, (at, label) in enumerate(shown):
        if label in ("suspended", "blocked"):
            until = shown[i + 1][0] if i + 1 < len(shown) else t1
            out.append(f'<rect class="paused" x="{x(at):.1f}" y="{top}" '
                       f'width="{max(0.0, x(until) - x(at)):.1f}" height="{h}" '
                       f'fill="{CAMPAIGN_STATE_COLOURS[label]}"/>')
    # the stacked series, bottom up, as step areas
    end = points[-1].at
    xs = [x(p.at) for p in points] + [x(t1)]
    lower = [0] * len(points)
    for sid, name, colour in SERIES:
        upper = [lo + getattr(p, sid) for lo, p in zip(lower, points, strict=True)]
        top_path = [f"M{x(t0):.1f},{y(0):.1f}", f"L{xs[0]:.1f},{y(0):.1f}"]
        for i, val in enumerate(upper):
            top_path.append(f"L{xs[i]:.1f},{y(val):.1f}L{xs[i + 1]:.1f},{y(val):.1f}")
        bottom_path = []
        for i in range(len(lower) - 1, -1, -1):
            bottom_path.append(f"L{xs[i + 1]:.1f},{y(lower[i]):.1f}L{xs[i]:.1f},"
                               f"{y(lower[i]):.1f}")
        d = "".join(top_path) + "".join(bottom_path) + "Z"
        last = getattr(points[-1], sid)
        out.append(f'<path class="series" id="series-{sid}" data-series="{sid}" '
                   f'data-last="{last}" fill="url(#g-{sid})" stroke="{colour}" '
                   f'stroke-width="1.2" d="{d}"><title>{_e(name)}: {last} at the end'
                   '</title></path>')
        lower = upper
    # the total, dashed: the space under it and above the stack is recipients still waiting
    out.append(f'<line class="total" x1="{left}" x2="{left + w}" y1="{y(total):.1f}" '
               f'y2="{y(total):.1f}"/><text class="total-label" x="{left + w - 4}" '
               f'y="{y(total) - 6:.1f}" text-anchor="end">{total} recipients</text>')
    # marks: a line and a label per campaign state change
    last_x, row = -1e9, 0
    for at, label in shown:
        colour = CAMPAIGN_STATE_COLOURS.get(label, "#334155")
        row = row + 1 if x(at) - last_x < 70 else 0  # close marks: step the labels down
        last_x = x(at)
        near_end = x(at) > left + w - 80
        tx = x(at) - 4 if near_end else x(at) + 4
        out.append(f'<g class="mark" data-state="{_e(label)}"><line x1="{x(at):.1f}" '
                   f'x2="{x(at):.1f}" y1="{top}" y2="{top + h}" stroke="{colour}"/>'
                   f'<text x="{tx:.1f}" y="{top + 10 + 13 * row}" fill="{colour}" '
                   f'text-anchor="{"end" if near_end else "start"}">{_e(label)}</text></g>')
    out.append(f'<line class="axis" x1="{left}" x2="{left + w}" y1="{top + h}" y2="{top + h}"/>')
    out.append(f'<text class="tick" x="{left}" y="{height - 4}">'
               f'{_e(_when(end, tz))} · {_e(getattr(tz, "key", None) or tz.tzname(None) or "")}'
               '</text>')
    out.append("</svg>")
    return "".join(out)


# ----- the page -----

CSS = """
:root { --ink:#0f172a; --muted:#64748b; --line:#e2e8f0; --bg:#f1f5f9; --card:#fff; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif; }
header { background:linear-gradient(120deg,#0f172a,#1e3a5f); color:#fff; padding:28px 40px 34px; }
header .kicker { text-transform:uppercase; letter-spacing:.12em; font-size:12px; opacity:.7; }
header h1 { margin:4px 0 8px; font-size:30px; font-weight:650; }
header .meta { opacity:.85; font-size:14px; }
header .meta span + span::before { content:"·"; margin:0 8px; opacity:.6; }
.badge { display:inline-block; padding:2px 10px; border-radius:999px; font-size:12px;
  font-weight:600; color:#fff; vertical-align:middle; text-transform:uppercase;
  letter-spacing:.05em; }
main { max-width:1120px; margin:-18px auto 40px; padding:0 24px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:14px; }
.card { background:var(--card); border-radius:12px; padding:16px 18px;
  box-shadow:0 1px 2px rgba(15,23,42,.06),0 4px 14px rgba(15,23,42,.05); }
.kpi .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.06em; }
.kpi .value { font-size:26px; font-weight:700; margin-top:2px; white-space:nowrap; }
.kpi .sub { color:var(--muted); font-size:13px; }
.kpi.good .value { color:#1f9d55; } .kpi.bad .value { color:#d64545; }
section { margin-top:22px; }
h2 { font-size:17px; margin:0 0 12px; }
.chart svg { display:block; }
.chart .grid { stroke:#e2e8f0; stroke-width:1; } .chart .grid.v { stroke-dasharray:2 4; }
.chart .axis { stroke:#94a3b8; } .chart .tick { fill:#64748b; font-size:11px; }
.chart .total { stroke:#0f172a; stroke-dasharray:6 5; stroke-width:1.2; }
.chart .total-label { fill:#0f172a; font-size:12px; font-weight:600; }
.chart .mark line { stroke-dasharray:3 3; stroke-width:1.2; }
.chart .mark text { font-size:11px; font-weight:600; paint-order:stroke; stroke:#fff;
  stroke-width:3px; }
.chart .paused { opacity:.10; }
.chart .empty { fill:#64748b; font-size:15px; }
.legend { display:flex; gap:18px; flex-wrap:wrap; margin-top:8px; color:#334155; font-size:13px; }
.legend i { display:inline-block; width:12px; height:12px; border-radius:3px; margin-right:6px;
  vertical-align:-1px; }
.legend i.waiting { border:1.5px dashed #0f172a; background:transparent; }
.split { display:grid; grid-template-columns:1.3fr 1fr; gap:14px; }
@media (max-width:900px) { .split { grid-template-columns:1fr; } }
.bar { display:flex; height:22px; border-radius:6px; overflow:hidden; background:#e2e8f0; }
.bar span { display:block; height:100%; }
.outcomes td { padding:5px 6px; border-bottom:1px solid var(--line); }
.outcomes td.n { text-align:right; font-variant-numeric:tabular-nums; font-weight:600; }
.outcomes td.meter { width:45%; }
.meter div { height:8px; border-radius:4px; }
table { width:100%; border-collapse:collapse; font-size:13.5px; }
th { text-align:left; color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase;
  letter-spacing:.05em; padding:8px 8px; border-bottom:2px solid var(--line); }
.people td { padding:7px 8px; border-bottom:1px solid var(--line); vertical-align:middle; }
.people tr:nth-child(even) td { background:#f8fafc; }
.people td.num { font-family:ui-monospace,"DejaVu Sans Mono",monospace; font-size:12.5px; }
.people td.pos { color:var(--muted); width:34px; }
.people .who { font-weight:600; } .people .mail { color:var(--muted); font-size:12px; }
.pill { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12px; font-weight:600;
  color:#fff; }
.dots span { display:inline-block; width:11px; height:11px; border-radius:50%; margin-right:3px;
  vertical-align:middle; }
.muted { color:var(--muted); }
.settings { display:grid; grid-template-columns:repeat(auto-fit,minmax(250px,1fr)); gap:0 28px; }
.settings div { display:flex; justify-content:space-between; padding:6px 0;
  border-bottom:1px solid var(--line); font-size:13.5px; }
.settings dt { color:var(--muted); } .settings dd { margin:0; font-weight:600; text-align:right; }
footer { color:var(--muted); font-size:12px; text-align:center; margin:30px 0; }
@media print { body { background:#fff; } .card { box-shadow:none; border:1px solid var(--line); }
  header { -webkit-print-color-adjust:exact; print-color-adjust:exact; } }
"""


def _pill(text: str, colour: str) -> str:
    return f'<span class="pill" style="background:{colour}">{_e(text)}</span>'


def _kpi(label: str, value: str, sub: str = "", cls: str = "") -> str:
    return (f'<div class="card kpi {cls}"><div class="label">{_e(label)}</div>'
            f'<div class="value">{_e(value)}</div><div class="sub">{_e(sub)}</div></div>')


def _chain_html(chain: Mapping[str, Any]) -> str:
    """The run's chain head, in full (``dialer history verify RUN --head`` takes it)."""
    if not chain.get("head"):
        return '<div class="meta" id="chain-head"><span>history not sealed</span></div>'
    return (f'<div class="meta" id="chain-head"><span>history sealed, {_e(chain.get("rows"))} '
            f'rows, chain head <code>{_e(chain["head"])}</code></span></div>')


def _settings_rows(st: Mapping[str, Any], run: Mapping[str, Any]) -> list[tuple[str, str]]:
    lim = st.get("limits") or {}
    threshold = st.get("threshold")
    rows = [
        ("Template", run.get("template")),
        ("Launched by", describe(run.get("alert"))),
        ("Priority", st.get("priority")),
        ("Attempts per recipient", st.get("attempts")),
        ("Ring timeout", f"{st.get('ring_timeout')} s" if st.get("ring_timeout") is not None
         else None),
        ("Retry delay", f"{st.get('retry_delay')} s" if st.get("retry_delay") is not None
         else None),
        ("Answer confirmation", f"{_yesno(st.get('answer_confirm'))} (key "
                                f"{keys.setting_text(st.get('answer_key', '1'))})"),
        ("Listening confirmation", f"{_yesno(st.get('listen_confirm'))} (key "
                                   f"{keys.setting_text(st.get('listen_key', '9'))})"),
        ("Repeats at most", st.get("max_repeats")),
        ("Completion threshold", "all recipients" if threshold is None else threshold),
        ("Max calls total / int. / ext.",
         f"{_limit(lim.get('total'))} / {_limit(lim.get('internal'))} / "
         f"{_limit(lim.get('external'))}"),
        ("Caller number", st.get("caller_number") or "trunk default"),
        ("Display name", st.get("display_name")),
        ("Language", st.get("language")),
        ("External route", st.get("external_route") or "default"),
        ("Escalation", escalation.summary(st, run.get("escalated_from"), run.get("escalated_to"))),
        ("Calling window", window.describe(st.get("window"), st.get("window_days"),
                                           st.get("timezone"))),
        ("Connect to a person", keys.connect_text(st)),
        ("Message", f"{run['audio_seconds']:.1f} s" if run.get("audio_seconds") else None),
        ("Audio SHA-256", (str(run["audio_sha256"])[:16] + "…") if run.get("audio_sha256")
         else None),
    ]
    return [(k, str(v)) for k, v in rows if v is not None and v != ""]


def render_report(history: Mapping[str, Any], *, tz: dt.tzinfo = UTC,
                  generated_at: float | None = None) -> str:
    """The self-contained HTML page of one run (see the module docstring for ``history``).

    ``tz`` is the time zone the times are shown in (UTC by default); ``generated_at`` (POSIX
    seconds) is printed in the footer when given, so that a report can be reproduced byte for byte.
    """
    run = history.get("run") or {}
    st = history.get("settings") or {}
    recipients = sorted(history.get("recipients") or [], key=lambda r: r.get("position") or 0)
    attempts = sorted(history.get("attempts") or [],
                      key=lambda a: (_ts(a.get("created_at")) or 0, str(a.get("id"))))
    events = list(history.get("events") or [])
    total = len(recipients)

    # final state of each recipient: the store's value when given, else the last event
    last_state: dict[Any, str] = {}
    for e in sorted(events, key=lambda e: (_ts(e.get("at")) or 0, e.get("id") or 0)):
        if e.get("kind") == "recipient_state" and "new" in (e.get("detail") or {}):
            last_state[e.get("recipient_id")] = str(e["detail"]["new"])
    by_recipient: dict[Any, list[Mapping[str, Any]]] = {}
    for a in attempts:
        by_recipient.setdefault(a.get("recipient_id"), []).append(a)
    number_to_id = {str(a.get("number")): a.get("recipient_id") for a in attempts}

    rows = []
    states: Counter[str] = Counter()
    for r in recipients:
        rid = r.get("id", number_to_id.get(str(r.get("number"))))
        mine = by_recipient.get(rid, []) if rid is not None else [
            a for a in attempts if str(a.get("number")) == str(r.get("number"))]
        state = str(r.get("state") or last_state.get(rid) or "idle")
        states[state] += 1
        rows.append((r, mine, state))

    points = timeline(events, total)
    marks = [(t, str((e.get("detail") or {}).get("new")))
             for e in events if e.get("kind") == "campaign_state"
             and (t := _ts(e.get("at"))) is not None]
    outcome_counts = Counter(str(a.get("outcome")) for a in attempts if a.get("outcome"))
    started = [t for a in attempts if (t := _ts(a.get("created_at"))) is not None]
    ended = [t for a in attempts if (t := _ts(a.get("ended_at"))) is not None]
    first_call = min(started) if started else None
    last_end = max(ended) if ended else None
    answer_conf = sum(1 for a in attempts if a.get("answer_confirmed_at"))
    listen_conf = sum(1 for a in attempts if a.get("listen_confirmed_at"))
    contacted = states["contacted"]
    threshold = st.get("threshold")
    needed = total if threshold is None else min(int(threshold), total)

    def reached(share: float) -> float | None:
        want = math.ceil(share * total) if total else 0
        if first_call is None or want == 0:
            return None
        for p in points:
            if p.contacted >= want:
                return p.at - first_call
        return None

    state = str(run.get("state") or "unknown")
    title = str(run.get("name") or f"Campaign {run.get('id', '')}")
    parts: list[str] = []
    parts.append(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} — alert campaign report</title>
<style>{CSS}</style></head><body>
<header><div class="kicker">Alert campaign report · run {_e(run.get('id', '?'))}</div>
<h1>{_e(title)} <span class="badge" id="run-state"
 style="background:{CAMPAIGN_STATE_COLOURS.get(state, '#475569')}">{_e(state)}</span></h1>
<div class="meta"><span>template {_e(run.get('template') or '—')}</span>
<span>launched {_e(_when(_ts(run.get('created_at')), tz))}{
    ' by ' + _e(run['created_by']) if run.get('created_by') else ''}</span>
<span>start {_e(_when(_ts(run.get('start_at')), tz))}</span>
<span>times in {_e(getattr(tz, 'key', None) or tz.tzname(None) or 'UTC')}</span></div>
{_chain_html(run.get("chain") or {})}
</header><main>""")
    share = f"{contacted / total:.0%} of {total}" if total else "no recipients"
    half, alltime = reached(0.5), reached(1.0)
    parts.append('<div class="cards">')
    parts.append(_kpi("Contacted", str(contacted), share,
                      "good" if total and contacted >= needed else ""))
    parts.append(_kpi("Failed", str(states["failed"]),
                      f"{states['stopped']} stopped" if states["stopped"] else "attempts used up",
                      "bad" if states["failed"] else ""))
    parts.append(_kpi("Calls placed", str(len(attempts)),
                      f"{len(attempts) / total:.1f} per recipient" if total else ""))
    parts.append(_kpi("Confirmed", f"{answer_conf} / {listen_conf}", "answer / listened"))
    if st.get("connect_key"):
        steps = Counter(str(e.get("kind")) for e in events)
        parts.append(_kpi("Transferred", str(steps["transferred"]),
                          f"{steps['transfer_requested']} asked, {steps['transfer_failed']} "
                          "failed"))
    parts.append(_kpi("Half reached in", _span(half), "from the first call"))
    parts.append(_kpi("Duration", _span(last_end - first_call if first_call and last_end
                                        else None),
                      f"everyone reached in {_span(alltime)}" if alltime is not None
                      else "first call to last hang-up"))
    parts.append("</div>")

    # the chart
    legend = "".join(f'<span><i style="background:{c}"></i>{_e(n)}</span>' for _, n, c in SERIES)
    legend += '<span><i class="waiting"></i>recipients (the gap up to it: still waiting)</span>'
    parts.append('<section class="card chart"><h2>Progress over time</h2>'
                 + chart_svg(points, total, tz, marks=marks)
                 + f'<div class="legend">{legend}</div></section>')

    # outcomes of the attempts + the recipients by state
    parts.append('<div class="split"><section class="card"><h2>How the calls ended</h2>')
    if attempts:
        bar = "".join(
            f'<span title="{_e(o)}: {n}" style="width:{n / len(attempts) * 100:.2f}%;'
            f'background:{OUTCOME_COLOURS.get(o, "#94a3b8")}"></span>'
            for o, n in outcome_counts.most_common())
        parts.append(f'<div class="bar">{bar}</div><table class="outcomes">')
        top = max(outcome_counts.values()) if outcome_counts else 1
        for o, n in outcome_counts.most_common():
            colour = OUTCOME_COLOURS.get(o, "#94a3b8")
            parts.append(f'<tr><td>{_pill(o.replace("_", " "), colour)}</td>'
                         f'<td class="meter"><div style="width:{n / top * 100:.1f}%;'
                         f'background:{colour}"></div></td><td class="n">{n}</td>'
                         f'<td class="muted">{n / len(attempts):.0%}</td></tr>')
        open_calls = len(attempts) - sum(outcome_counts.values())
        if open_calls:
            parts.append(f'<tr><td>{_pill("in progress", STATE_COLOURS["active"])}</td><td>'
                         f'</td><td class="n">{open_calls}</td><td></td></tr>')
        parts.append("</table>")
    else:
        parts.append('<p class="muted">No call was placed.</p>')
    parts.append('</section><section class="card"><h2>Recipients</h2><table class="outcomes">')
    for s in ("contacted", "failed", "stopped", "active", "idle"):
        n = states.get(s, 0)
        parts.append(f'<tr><td>{_pill(s, STATE_COLOURS[s])}</td><td class="meter"><div style="'
                     f'width:{(n / total * 100) if total else 0:.1f}%;background:'
                     f'{STATE_COLOURS[s]}"></div></td><td class="n">{n}</td>'
                     f'<td class="muted">{(n / total) if total else 0:.0%}</td></tr>')
    parts.append("</table></section></div>")

    # the outcome table, one row per recipient
    parts.append('<section class="card"><h2>Every recipient</h2><table class="people" '
                 'id="recipients"><thead><tr><th>#</th><th>Recipient</th><th>Number</th>'
                 '<th>State</th><th>Calls</th><th>Last outcome</th><th>Answered</th>'
                 '<th>Listened</th></tr></thead><tbody>')
    for r, mine, rstate in rows:
        dots = "".join(
            f'<span title="{_e(_when(_ts(a.get("created_at")), tz))} '
            f'{_e(a.get("outcome") or "in progress")}'
            f'{" " + _e(a.get("status")) if a.get("status") else ""}{_e(keys.drawn_text(a))}" '
            f'style="background:{OUTCOME_COLOURS.get(str(a.get("outcome")), "#3b82c4")}">'
            '</span>' for a in mine)
        last = mine[-1] if mine else None
        outcome = (last.get("outcome") if last else None) or r.get("last_outcome")
        status = (last.get("status") if last else None) or r.get("last_status")
        answered = max((t for a in mine if (t := _ts(a.get("answered_at"))) is not None),
                       default=_ts(r.get("answered_at")))
        listened = max((t for a in mine if (t := _ts(a.get("listen_confirmed_at"))) is not None),
                       default=_ts(r.get("confirmed_at")))
        who = (f'<div class="who">{_e(r.get("name"))}</div>' if r.get("name")
               else '<div class="muted">—</div>')
        if r.get("email"):
            who += f'<div class="mail">{_e(r["email"])}</div>'
        outcome_html = (_pill(str(outcome).replace("_", " "),
                              OUTCOME_COLOURS.get(str(outcome), "#94a3b8"))
                        + (f' <span class="muted">{_e(status)}</span>' if status else "")
                        if outcome else '<span class="muted">—</span>')
        parts.append(
            f'<tr><td class="pos">{_e(r.get("position"))}</td><td>{who}</td>'
            f'<td class="num">{_e(r.get("number"))}<div class="muted">{_e(r.get("kind"))}'
            f'</div></td><td>{_pill(rstate, STATE_COLOURS.get(rstate, "#94a3b8"))}</td>'
            f'<td class="dots">{dots or "<span class=muted>—</span>"}</td>'
            f'<td>{outcome_html}</td><td>{_e(_when(answered, tz, date=False))}</td>'
            f'<td>{_e(_when(listened, tz, date=False))}</td></tr>')
    parts.append("</tbody></table></section>")

    # the configuration snapshot
    parts.append('<section class="card"><h2>Configuration snapshot</h2><dl class="settings">')
    for k, v in _settings_rows(st, run):
        parts.append(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>")
    parts.append("</dl></section></main>")
    footer = f"{len(events)} events · {len(attempts)} attempts"
    if generated_at is not None:
        footer = f"generated {_e(_when(generated_at, tz))} · " + footer
    parts.append(f"<footer>alert-dialer · {footer}</footer></body></html>\n")
    return "".join(parts)
