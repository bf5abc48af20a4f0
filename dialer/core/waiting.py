"""Why a recipient waits (pure): what ``campaign show`` and ``campaign watch`` say of each idle
recipient, from what the database knows now.

The reasons, in the order the scheduler meets them (``dialer.core.scheduler``,
``dialer.core.routing``): the campaign is scheduled, suspended or blocked; no daemon serves the
database; the calling window is closed in the recipient's zone ("waiting for window until
HH:MM (zone)", in that zone's time: the recipient's own, else the campaign's); the recipient's
retry delay runs; a limit is full (the campaign's, then the global
one: total, or its kind's); every trunk its external call could take is out of service; else it
is next in line (the others before it are dialled first, by priority and position).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dialer.core.domain import CampaignState, Limits
from dialer.core.window import Window, is_open, waiting_text


@dataclass(frozen=True, kw_only=True)
class Situation:
    """A campaign's surroundings now. ``calls``/``global_calls``: calls in progress by kind
    (``internal``, ``external``) of the campaign and of every campaign; ``unhealthy``: trunk ->
    out of service until (POSIX s) of the trunks its external calls may take."""

    state: str
    start_at: float | None = None
    serving: bool = True
    limits: Limits = field(default_factory=Limits)
    global_limits: Limits = field(default_factory=Limits)
    calls: Mapping[str, int] = field(default_factory=dict)
    global_calls: Mapping[str, int] = field(default_factory=dict)
    external_trunks: Sequence[str] = ()
    unhealthy: Mapping[str, float | None] = field(default_factory=dict)
    # the calling window (None: urgent) and the zones of its recipients (None: the campaign's)
    window: Window | None = None
    zones: Mapping[str | None, dt.tzinfo] = field(default_factory=dict)
    # the nodes (``nodes()`` rows: state, calls, the pool's slots and late workers)
    nodes: Sequence[Mapping[str, Any]] = ()


def window_line(s: Situation, now: float) -> str | None:
    """The campaign's window as ``campaign show`` and ``watch`` head it: open, or "waiting for
    window until HH:MM (zone)" in the campaign's zone; None when it has no window."""
    if s.window is None:
        return None
    tz = s.zones.get(None)
    if tz is None:
        return f"calling window {s.window}"
    if is_open(now, s.window, tz):
        return f"calling window {s.window}: open"
    return f"calling window {s.window}: {waiting_text(now, s.window, tz, s.window.timezone)}"


def _hhmm(ts: float | None) -> str:
    return "?" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def _full(limits: Limits, calls: Mapping[str, int], kind: str) -> str | None:
    """Which of ``limits`` is full for a call of ``kind`` (None: none)."""
    total = sum(calls.values())
    if limits.total is not None and total >= limits.total:
        return f"max calls {limits.total}"
    own = limits.internal if kind == "internal" else limits.external
    if own is not None and calls.get(kind, 0) >= own:
        return f"max {kind} {own}"
    return None


def why_waiting(kind: str, next_at: float | None, s: Situation, now: float,
                zone: str | None = None) -> str:
    """Why an idle recipient of ``kind`` (``next_at``: not before; ``zone``: its own time zone,
    None: the campaign's) is not being called."""
    if s.state == CampaignState.SCHEDULED.value:
        return f"campaign scheduled: starts {_hhmm(s.start_at)}"
    if s.state == CampaignState.SUSPENDED.value:
        return "campaign suspended"
    if s.state == CampaignState.BLOCKED.value:
        return "campaign blocked: the maximum of active campaigns is reached"
    if s.state != CampaignState.ACTIVE.value:
        return f"campaign {s.state}"
    if not s.serving:
        return "no daemon serving the database"
    if s.window is not None:
        tz = s.zones.get(zone)
        if tz is None:
            return f"time zone {zone or s.window.timezone} unknown here: not called"
        if not is_open(now, s.window, tz):
            return waiting_text(now, s.window, tz, zone or s.window.timezone)
    if next_at is not None and next_at > now:
        return f"retry delay until {_hhmm(next_at)}"
    if full := _full(s.limits, s.calls, kind):
        return f"campaign limit full ({full})"
    if full := _full(s.global_limits, s.global_calls, kind):
        return f"global limit full ({full})"
    if kind == "external" and s.external_trunks and all(
            t in s.unhealthy for t in s.external_trunks):
        down = ", ".join(f"{t} until {_hhmm(s.unhealthy[t])}" for t in s.external_trunks)
        return f"trunks out of service ({down})"
    return "next in line"


def tally(reasons: Sequence[str]) -> list[tuple[str, int]]:
    """Each reason with how many recipients wait for it, most first."""
    counts: dict[str, int] = {}
    for r in reasons:
        counts[r] = counts.get(r, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
