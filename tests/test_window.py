"""The calling windows of ``dialer.core.window`` (pure): parsing, ``is_open`` against an
independent model, ``next_open`` checked minute by minute (exhaustive between now and the
opening), and the clock changes of Europe/Rome."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialer import zones
from dialer.core import window
from dialer.core.domain import CampaignSettings
from dialer.core.errors import ValidationError
from dialer.core.validation import settings as check_settings
from dialer.core.window import ALL_DAYS, Window

ROME = zoneinfo.ZoneInfo("Europe/Rome")
UTC = dt.UTC
# the clock changes of 2026 in Rome: 29 March 02:00 -> 03:00, 25 October 03:00 -> 02:00
SPRING = dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()
AUTUMN = dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC).timestamp()


def rome(y: int, mo: int, d: int, h: int, mi: int, fold: int = 0) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=ROME, fold=fold).timestamp()


@pytest.mark.parametrize(("text", "span"), [
    ("08:00-20:00", (480, 1200)), (" 22:30 - 06:15 ", (1350, 375)), ("00:00-23:59", (0, 1439)),
])
def test_spans(text: str, span: tuple[int, int]) -> None:
    assert window.parse_span(text) == span


@pytest.mark.parametrize(("text", "why"), [
    ("08:00", "HH:MM-HH:MM"), ("8-20", "not a time"), ("24:00-08:00", "not a time"),
    ("08:60-09:00", "not a time"), ("08:00-08:00", "starts when it ends"),
    ("08:00-12:00-13:00", "HH:MM-HH:MM"),
])
def test_bad_spans_are_one_clear_error(text: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        window.parse_span(text)


@pytest.mark.parametrize(("text", "days"), [
    ("mon-fri", {0, 1, 2, 3, 4}), ("sat,sun", {5, 6}), ("fri-mon", {4, 5, 6, 0}),
    ("Monday,wed-thu", {0, 2, 3}), ("all", set(range(7))), ("sun", {6}),
])
def test_day_sets(text: str, days: set[int]) -> None:
    assert window.parse_days(text) == frozenset(days)


@pytest.mark.parametrize("text", ["", "mon,,fri", "mo", "funday", "mon-tue-wed", "mon-"])
def test_bad_day_sets_are_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="window days"):
        window.parse_days(text)


@given(st.frozensets(st.integers(0, 6), min_size=1))
def test_day_sets_are_written_back_as_they_read(days: frozenset[int]) -> None:
    assert window.parse_days(window.format_days(days)) == days


def model_open(local: dt.datetime, w: Window) -> bool:
    """An independent reading of a window: the instances of the span that start on each
    allowed day, as intervals of wall-clock time; is the wall time inside one of them?"""
    wall = local.replace(tzinfo=None, fold=0)
    for back in (0, 1):
        day = wall.date() - dt.timedelta(days=back)
        if day.weekday() not in w.days:
            continue
        begin = dt.datetime(day.year, day.month, day.day) + dt.timedelta(minutes=w.start)
        length = (w.end - w.start) % 1440
        if begin <= wall.replace(second=0, microsecond=0) < begin + dt.timedelta(minutes=length):
            return True
    return False


windows = st.builds(
    lambda a, b, days: Window(start=a, end=b if b != a else (a + 1) % 1440, days=days,
                              timezone="Europe/Rome"),
    st.integers(0, 1439), st.integers(0, 1439), st.frozensets(st.integers(0, 6), min_size=1))
# instants around the clock changes (the interesting part) and anywhere in two years
instants = st.one_of(st.floats(SPRING - 3 * 86400, SPRING + 3 * 86400),
                     st.floats(AUTUMN - 3 * 86400, AUTUMN + 3 * 86400),
                     st.floats(rome(2026, 1, 1, 0, 0), rome(2027, 12, 31, 0, 0)))


@given(windows, instants)
def test_is_open_agrees_with_the_model(w: Window, now: float) -> None:
    assert window.is_open(now, w, ROME) == model_open(dt.datetime.fromtimestamp(now, ROME), w)


@settings(max_examples=60, deadline=None)
@given(windows, instants)
def test_next_open_is_the_first_open_instant(w: Window, now: float) -> None:
    """Exhaustive between ``now`` and the answer: the wall clock of Rome changes only on whole
    minutes of UTC, so checking every minute boundary checks every instant."""
    t = window.next_open(now, w, ROME)
    assert t is not None and t >= now
    assert window.is_open(t, w, ROME)
    if t > now:
        assert not window.is_open(now, w, ROME)
        m = (int(now) // 60 + 1) * 60
        while m < t:
            assert not window.is_open(m, w, ROME), (dt.datetime.fromtimestamp(m, ROME), w)
            m += 60
        assert not window.is_open(t - 1, w, ROME)  # t is where it opens, not later


def test_a_window_in_the_skipped_hour_opens_when_the_clocks_jump() -> None:
    """29 March 2026: 02:00 becomes 03:00; a window from 02:30 opens at 03:00 CEST."""
    w = window.window_of("02:30-04:00", None, "Europe/Rome")
    assert w is not None
    t = window.next_open(rome(2026, 3, 29, 1, 0), w, ROME)
    assert t == dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()  # 03:00 CEST
    assert dt.datetime.fromtimestamp(t, ROME).strftime("%H:%M %Z") == "03:00 CEST"


def test_the_repeated_hour_reopens_a_window() -> None:
    """25 October 2026: 03:00 CEST becomes 02:00 CET; a window 01:00-02:30 is open from 01:00
    to 02:30 CEST, shut from 02:30 to 03:00 CEST, open again from 02:00 CET to 02:30 CET."""
    w = window.window_of("01:00-02:30", None, "Europe/Rome")
    assert w is not None
    shut = rome(2026, 10, 25, 2, 45, fold=0)  # CEST
    assert not window.is_open(shut, w, ROME)
    again = window.next_open(shut, w, ROME)
    assert again == rome(2026, 10, 25, 2, 0, fold=1)  # 02:00 CET, the transition itself
    assert window.is_open(rome(2026, 10, 25, 2, 29, fold=1), w, ROME)
    assert not window.is_open(rome(2026, 10, 25, 2, 30, fold=1), w, ROME)


def test_a_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    w = window.window_of("22:00-06:00", "fri", "Europe/Rome")
    assert w is not None
    # Friday 4 December 2026 22:00 to Saturday 06:00
    assert not window.is_open(rome(2026, 12, 4, 21, 59), w, ROME)
    assert window.is_open(rome(2026, 12, 4, 22, 0), w, ROME)
    assert window.is_open(rome(2026, 12, 5, 5, 59), w, ROME)
    assert not window.is_open(rome(2026, 12, 5, 6, 0), w, ROME)
    assert not window.is_open(rome(2026, 12, 5, 23, 0), w, ROME)  # Saturday's night: no
    assert window.next_open(rome(2026, 12, 5, 6, 0), w, ROME) == rome(2026, 12, 11, 22, 0)


def test_open_zones_and_the_waiting_text() -> None:
    w = window.window_of("08:00-20:00", "mon-fri", "Europe/Rome")
    assert w is not None
    zs = zones.zone_map([None, "America/New_York", "Asia/Tokyo"], w.timezone)
    now = rome(2026, 12, 3, 9, 0)  # Thursday 09:00 in Rome, 03:00 in New York, 17:00 Tokyo
    assert window.open_zones(now, w, zs) == {None, "Asia/Tokyo"}
    open_now, opens = window.survey(now, w, zs)
    assert opens == dt.datetime(2026, 12, 3, 13, 0, tzinfo=UTC).timestamp()  # 08:00 New York
    assert window.waiting_text(now, w, zs["America/New_York"], "America/New_York") == \
        "waiting for window until 08:00 (America/New_York)"
    friday_night = rome(2026, 12, 4, 21, 0)
    assert window.waiting_text(friday_night, w, ROME, "Europe/Rome") == \
        "waiting for window until Mon 08:00 (Europe/Rome)"


def test_unknown_zones() -> None:
    with pytest.raises(ValidationError, match="time zone 'Mars/Olympus' is unknown"):
        zones.check("Mars/Olympus")
    with pytest.raises(ValidationError, match="unknown"):
        zones.check("../../etc/passwd")
    assert zones.zone_map(["Mars/Olympus", None], "UTC") == {None: zones.zone("UTC")}


def test_settings_validation() -> None:
    check_settings(CampaignSettings(window="08:00-20:00", window_days="mon-fri",
                                    timezone="Europe/Rome"))
    with pytest.raises(ValidationError, match="need --window"):
        check_settings(CampaignSettings(window_days="mon-fri"))
    with pytest.raises(ValidationError, match="window days"):
        check_settings(CampaignSettings(window="08:00-20:00", window_days="weekdays"))
    assert window.window_of(None) is None
    w = window.window_of("08:00-20:00")
    assert w is not None and w.days == ALL_DAYS and w.timezone == "UTC"
    assert str(window.window_of("08:00-20:00", "sat,sun", "Europe/Rome")) == \
        "08:00-20:00 sat,sun Europe/Rome"
