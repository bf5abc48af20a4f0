"""The input of the HTML report (``dialer.report``): a run's history as ``render_report`` takes
it, built from a live campaign where needed, and the series its chart draws (recipients by
state after each event)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

UTC = dt.UTC


# ----- input -----

def history_from_campaign(detail: Mapping[str, Any], attempts: Sequence[Mapping[str, Any]],
                          events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Build ``render_report``'s input from ``SqlStore.campaign_detail()``, ``attempts_of()``
    and ``events_of()`` of one campaign.

    ``campaign_detail`` recipients carry no id; it is recovered from the attempts (by number),
    which is all the report needs to tie events to recipients.
    """
    ids = {str(a["number"]): a["recipient_id"] for a in attempts if a.get("number")}
    created = next((e for e in events if e.get("kind") == "campaign_created"), None)
    recipients = [{**r, "id": r.get("id", ids.get(str(r.get("number"))))}
                  for r in detail.get("recipients", [])]
    return {
        "run": {"id": detail.get("id"), "name": detail.get("name"),
                "template": detail.get("template"), "state": detail.get("state"),
                "start_at": detail.get("start_at"), "ended_at": detail.get("ended_at"),
                "created_at": created.get("at") if created else None,
                "created_by": created.get("actor") if created else None},
        "settings": dict(detail.get("settings") or {}),
        "recipients": recipients,
        "attempts": list(attempts),
        "events": list(events),
    }


def _ts(value: Any) -> float | None:
    """ISO string, datetime or POSIX seconds -> POSIX seconds (naive ISO is read as UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dt.datetime):
        when = value
    else:
        try:
            when = dt.datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


# ----- the series -----

@dataclass(frozen=True)
class Point:
    """The recipients by state right after one event."""

    at: float
    contacted: int
    failed: int
    stopped: int
    in_progress: int


def timeline(events: Iterable[Mapping[str, Any]], total: int) -> list[Point]:
    """Contacted / failed / stopped recipients and calls in progress after each event that
    changes them (several events at one instant make one point)."""
    state: dict[Any, str] = {}
    calls: set[Any] = set()
    points: list[Point] = []
    ordered = sorted((e for e in events if _ts(e.get("at")) is not None),
                     key=lambda e: (_ts(e.get("at")), e.get("id") or 0))
    for e in ordered:
        kind = e.get("kind")
        detail = e.get("detail") or {}
        if kind == "attempt_started":
            calls.add(e.get("attempt_id"))
        elif kind == "attempt_ended":
            calls.discard(e.get("attempt_id"))
        elif kind == "recipient_state" and "new" in detail:
            state[e.get("recipient_id")] = str(detail["new"])
        else:
            continue
        at = _ts(e.get("at"))
        assert at is not None
        states = Counter(state.values())
        p = Point(at, states["contacted"], states["failed"], states["stopped"], len(calls))
        if points and points[-1].at == at:
            points[-1] = p  # several events at one instant: keep the last picture
        else:
            points.append(p)
    return points
