"""Calling windows (pure): when a non-urgent campaign may call a recipient.

A window is a span of local wall-clock time ("08:00-20:00", or "22:00-06:00" across midnight)
on a set of days ("mon-fri", "sat,sun"), in a time zone: the template's (``--timezone``), or a
recipient's own (the CSV column ``timezone``). A span that crosses midnight belongs to the day it
starts on: "22:00-06:00" on "fri" is open from Friday 22:00 to Saturday 06:00.

Outside its window nobody is called and no attempt is spent: the scheduler leaves the
recipients of a closed zone alone (``open_zones``), as it leaves those of a kind whose trunk is
down. The zones come in as ``tzinfo`` objects: resolving a zone's name reads the time zone
database (files), which the core never does (``dialer.zones`` does it for the adapters).

Daylight saving time: local times are read with ``datetime.fromtimestamp(now, tz)``, so a
window follows the wall clock across the changes; on the night the clocks go forward a window
that starts inside the skipped hour opens when the clocks jump past its start; on the night they
go back the repeated hour is inside the window or outside it as its wall time says.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dialer.core.errors import ValidationError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
ALL_DAYS = frozenset(range(7))
DEFAULT_TIMEZONE = "UTC"

_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_HORIZON_DAYS = 16  # next_open looks this far ahead (a window opens at least once a week)


@dataclass(frozen=True, kw_only=True)
class Window:
    """A calling window: minutes after local midnight ``start`` (open) to ``end`` (closed; below
    ``start`` when it crosses midnight), on ``days`` (0 = Monday), in the zone named
    ``timezone`` (the template's; a recipient may have its own)."""

    start: int
    end: int
    days: frozenset[int] = ALL_DAYS
    timezone: str = DEFAULT_TIMEZONE

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    @property
    def span(self) -> str:
        return f"{_fmt(self.start)}-{_fmt(self.end)}"

    @property
    def day_names(self) -> str:
        return format_days(self.days)

    def __str__(self) -> str:
        days = "" if self.days == ALL_DAYS else f" {self.day_names}"
        return f"{self.span}{days} {self.timezone}"


def _fmt(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_span(text: str) -> tuple[int, int]:
    """ "HH:MM-HH:MM" as (start, end) minutes after midnight; ValidationError when malformed or
    empty (start equal to end: "00:00-00:00" would be a window of no time, or of all of it)."""
    parts = text.strip().split("-")
    if len(parts) != 2:
        raise ValidationError(f"window {text!r}: write HH:MM-HH:MM, e.g. 08:00-20:00")
    mins = []
    for part in parts:
        m = _HHMM.fullmatch(part.strip())
        if m is None:
            raise ValidationError(f"window {text!r}: {part.strip()!r} is not a time HH:MM "
                                  "(00:00 to 23:59)")
        mins.append(int(m[1]) * 60 + int(m[2]))
    if mins[0] == mins[1]:
        raise ValidationError(f"window {text!r}: it starts when it ends (an urgent template "
                              "has no window: leave --window out)")
    return mins[0], mins[1]


_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(name: str, text: str) -> int:
    n = name.strip().lower()
    for i, (short, full) in enumerate(zip(DAY_NAMES, _FULL_NAMES, strict=True)):
        if n in (short, full):
            return i
    raise ValidationError(f"window days {text!r}: {name.strip()!r} is not a day "
                          f"({', '.join(DAY_NAMES)})")


def parse_days(text: str) -> frozenset[int]:
    """ "mon-fri", "sat,sun", "mon-wed,fri", "fri-mon" (a range may wrap past Sunday), or
    "all", as weekday numbers (0 = Monday); ValidationError when malformed."""
    text = text.strip().lower()
    if text in ("all", "*", "daily"):
        return ALL_DAYS
    days: set[int] = set()
    for item in text.split(","):
        if not item.strip():
            raise ValidationError(f"window days {text!r}: an empty day between commas")
        ends = item.split("-")
        if len(ends) > 2:
            raise ValidationError(f"window days {text!r}: {item!r} is not a day or a range")
        d, last = _day(ends[0], text), _day(ends[-1], text)
        days.add(d)
        while d != last:
            d = (d + 1) % 7
            days.add(d)
    return frozenset(days)


def format_days(days: Iterable[int]) -> str:
    """The shortest spelling ``parse_days`` reads back: "mon-fri", "sat,sun", "all"."""
    ds = sorted(set(days))
    if len(ds) == 7:
        return "all"
    runs: list[list[int]] = []
    for d in ds:
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][-1] == 6:  # a run across Sunday
        runs[0] = runs.pop() + runs[0]
    return ",".join(DAY_NAMES[r[0]] if len(r) == 1
                    else (f"{DAY_NAMES[r[0]]},{DAY_NAMES[r[1]]}" if len(r) == 2
                          else f"{DAY_NAMES[r[0]]}-{DAY_NAMES[r[-1]]}") for r in runs)


@functools.lru_cache(maxsize=256)
def window_of(span: str | None, days: str | None = None,
              timezone: str | None = None) -> Window | None:
    """The window of a campaign snapshot's fields (``CampaignSettings.window``,
    ``window_days``, ``timezone``), None for an urgent one (no window). Cached: the scheduling
    pass asks for it on every pass."""
    if span is None:
        return None
    start, end = parse_span(span)
    return Window(start=start, end=end,
                  days=ALL_DAYS if days is None else parse_days(days),
                  timezone=timezone or DEFAULT_TIMEZONE)


def _open_at(local: dt.datetime, w: Window) -> bool:
    m = local.hour * 60 + local.minute
    day = local.weekday()
    if not w.crosses_midnight:
        return day in w.days and w.start <= m < w.end
    return (day in w.days and m >= w.start) or ((day - 1) % 7 in w.days and m < w.end)


def is_open(now: float, w: Window, tz: dt.tzinfo) -> bool:
    """Whether the window is open at POSIX time ``now`` in the zone ``tz``."""
    return _open_at(dt.datetime.fromtimestamp(now, tz), w)


def _transitions(t0: float, t1: float, tz: dt.tzinfo) -> list[float]:
    """The instants in (t0, t1] where ``tz`` changes its UTC offset (DST), to the second:
    found by comparing the offsets a day apart and bisecting where they differ."""
    def offset(t: float) -> dt.timedelta | None:
        return dt.datetime.fromtimestamp(t, tz).utcoffset()

    out: list[float] = []
    step = 86400.0
    a = t0
    while a < t1:
        b = min(a + step, t1)
        if offset(a) != offset(b):
            lo, hi = a, b  # offset(lo) == offset(a) != offset(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset(mid) == offset(a):
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
        a = b
    return out


def next_open(now: float, w: Window, tz: dt.tzinfo) -> float | None:
    """The first instant at or after ``now`` when the window is open in ``tz`` (``now`` itself
    when open); None only for a window that never opens within ``_HORIZON_DAYS``.

    The window can only open where the wall clock reaches its start on an allowed day, or
    where the clock jumps (a DST change): those instants are the candidates."""
    if is_open(now, w, tz):
        return now
    local = dt.datetime.fromtimestamp(now, tz)
    base = local.date()
    cands: list[float] = []
    for i in range(-1, _HORIZON_DAYS):
        day = base + dt.timedelta(days=i)
        wall = dt.datetime(day.year, day.month, day.day, w.start // 60, w.start % 60)
        for fold in (0, 1):
            t = wall.replace(tzinfo=tz, fold=fold).timestamp()
            # a wall time in the hour the clocks skip does not exist: it maps elsewhere
            if dt.datetime.fromtimestamp(t, tz).replace(tzinfo=None) == wall:
                cands.append(t)
    cands += _transitions(now, now + _HORIZON_DAYS * 86400.0, tz)
    found = [t for t in cands if t >= now and is_open(t, w, tz)]
    return min(found) if found else None


def open_zones(now: float, w: Window, zones: Mapping[str | None, dt.tzinfo]) -> frozenset[
        str | None]:
    """Which of a campaign's recipient zones (name -> ``tzinfo``; the key None stands for the
    recipients without a zone of their own, in the template's zone) are open at ``now``."""
    return frozenset(name for name, tz in zones.items() if is_open(now, w, tz))


def opens_at(now: float, w: Window, zones: Mapping[str | None, dt.tzinfo]) -> float | None:
    """When the first of ``zones`` opens (``now`` if one is open; None: none ever does)."""
    times = [t for tz in zones.values() if (t := next_open(now, w, tz)) is not None]
    return min(times) if times else None


def survey(now: float, w: Window, zones: Mapping[str | None, dt.tzinfo]
           ) -> tuple[frozenset[str | None], float | None]:
    """What a scheduling pass needs of a campaign with a window: which ``zones`` are open now,
    and when the first closed one opens (None: none is closed), the pass's next due time."""
    now_open = open_zones(now, w, zones)
    closed = {k: v for k, v in zones.items() if k not in now_open}
    return now_open, (opens_at(now, w, closed) if closed else None)


def waiting_text(now: float, w: Window, tz: dt.tzinfo, zone: str) -> str:
    """ "waiting for window until HH:MM (zone)": the local time, in ``zone``, of the opening."""
    t = next_open(now, w, tz)
    if t is None:
        return f"waiting for window {w.span} ({zone}): it never opens"
    local = dt.datetime.fromtimestamp(t, tz)
    days = (local.date() - dt.datetime.fromtimestamp(now, tz).date()).days
    when = local.strftime("%H:%M") if days == 0 else local.strftime("%a %H:%M")
    return f"waiting for window until {when} ({zone})"


def describe(span: str | None, days: str | None = None, timezone: str | None = None) -> str:
    """A snapshot's window for people: "08:00-20:00 mon-fri Europe/Rome", or "none (urgent)"."""
    w = window_of(span, days, timezone) if span is not None else None
    return "none (urgent)" if w is None else str(w)
