"""Calling windows end to end in the simulator (tests/sim.py: the daemon's real loop on a
virtual clock with a fake gateway), on the in-memory fake and on SQLite (``sim_store``).

Issue 15's acceptance line: a campaign started outside its window places no call until the
window opens (simulator clock), and spends no attempt; a recipient with a zone of its own is
called at its own window.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialer.core.domain import CampaignSettings, Kind
from dialer.core.recipients import Recipient
from dialer.core.window import is_open, window_of
from dialer.storage.store import SqlStore
from dialer.testing.memory import MemoryStore
from tests.sim import T0, Behaviour, Simulation
from tests.test_sim import (  # noqa: F401 - sim_store: the fixture
    BACKENDS,
    assert_counters_match,
    campaigns_done,
    check_final,
    dispose,
    make_store,
    sim_store,
    worlds,
)

Store = SqlStore | MemoryStore
ROME = zoneinfo.ZoneInfo("Europe/Rome")
HELSINKI = zoneinfo.ZoneInfo("Europe/Helsinki")  # an hour ahead of Rome
# Tuesday 19 March 2030, 06:30 in Rome (05:30 UTC): outside the window in both zones
START = dt.datetime(2030, 3, 19, 6, 30, tzinfo=ROME).timestamp()
OPENS_HELSINKI = dt.datetime(2030, 3, 19, 8, 0, tzinfo=HELSINKI).timestamp()  # 07:00 in Rome
OPENS_ROME = dt.datetime(2030, 3, 19, 8, 0, tzinfo=ROME).timestamp()


def launch(store: Store, recipients: list[Recipient], *, start: float, name: str = "Night",
           start_at: float | None = None, **settings: Any) -> int:
    content = b"fake audio"
    sha = hashlib.sha256(content).hexdigest()
    store.add_media(data=content, sha256=sha, rate=8000, seconds=4.0, source=None, now=start)
    cs = CampaignSettings(**{"retry_delay": 30.0, "attempts": 3, "ring_timeout": 20.0,
                             **settings})
    store.add_template(name=name, settings=cs, audio_sha=sha, audio_seconds=4.0,
                       recipients=recipients, now=start, actor="sim")
    return store.start_campaign(template=name, name=None, now=start,
                                start_at=start if start_at is None else start_at, actor="sim")


def starts(store: Store, cid: int) -> dict[str, list[float]]:
    """Each number's attempts, by their start time."""
    out: dict[str, list[float]] = {}
    for a in store.attempts_of(cid):
        at = dt.datetime.fromisoformat(a["created_at"]).timestamp()
        out.setdefault(a["number"], []).append(at)
    return out


def waiting_gauge(sim: Simulation) -> float | None:
    return sim.daemon.metrics.registry.get_sample_value("dialer_campaigns_waiting_window")


def test_a_campaign_started_outside_its_window_calls_nobody_until_it_opens(
        sim_store: Store, tmp_path: Path) -> None:
    store = sim_store
    cid = launch(store, [Recipient(number="101", kind=Kind.INTERNAL),
                         Recipient(number="102", kind=Kind.INTERNAL,
                                   timezone="Europe/Helsinki")],
                 start=START, window="08:00-20:00", window_days="mon-fri",
                 timezone="Europe/Rome")
    sim = Simulation(store, tmp_path / "data", start=START)

    def check(s: Simulation) -> None:
        calls = starts(store, cid)
        if s.now < OPENS_HELSINKI:  # nobody is called, no attempt is spent
            assert calls == {}, (s.now - START, calls)
        if s.now < OPENS_ROME:  # the recipient in Rome waits; the one in Helsinki is called
            assert "101" not in calls, (s.now - START, calls)

    sim.run(until=OPENS_HELSINKI - 1.0, check=check)
    assert starts(store, cid) == {}
    assert all(r["attempts"] == 0 and r["calls"] == 0 and r["state"] == "idle"
               for r in store.campaign_detail(cid)["recipients"])
    assert store.campaign_detail(cid)["state"] == "active"
    assert waiting_gauge(sim) == 1.0  # the campaign waits for its window
    assert sim.daemon.ticks < 10  # it slept until the window, no polling
    sim.run(done=lambda: campaigns_done(store), check=check)
    calls = starts(store, cid)
    # placed at the very instant each window opened: the daemon woke for it
    assert calls["102"] == [pytest.approx(OPENS_HELSINKI, abs=1e-5)]
    assert calls["101"] == [pytest.approx(OPENS_ROME, abs=1e-5)]
    assert [r["state"] for r in store.campaign_detail(cid)["recipients"]] == ["contacted"] * 2
    assert store.campaign_detail(cid)["state"] == "completed"
    sim.stop()


def test_a_retry_due_while_the_window_is_closed_waits_for_it_to_open(
        sim_store: Store, tmp_path: Path) -> None:
    """A window open all day but 19:30-20:00 (it crosses midnight): busy at 19:28 with a
    5-minute retry delay, the retry falls due inside the closed half hour and is placed at
    20:00, not before."""
    store = sim_store
    evening = dt.datetime(2030, 3, 19, 19, 28, tzinfo=ROME).timestamp()
    cid = launch(store, [Recipient(number="101", kind=Kind.INTERNAL)], start=evening,
                 retry_delay=300.0, window="20:00-19:30", timezone="Europe/Rome")
    script = {"101": [Behaviour("busy", 2.0), Behaviour()]}
    sim = Simulation(store, tmp_path / "data", script, start=evening)
    sim.run(done=lambda: campaigns_done(store))
    attempts = store.attempts_of(cid)
    assert [a["outcome"] for a in attempts] == ["busy", "contacted"]
    second = dt.datetime.fromisoformat(attempts[1]["created_at"]).timestamp()
    assert second == pytest.approx(
        dt.datetime(2030, 3, 19, 20, 0, tzinfo=ROME).timestamp(), abs=1e-5)
    sim.stop()


def test_an_urgent_campaign_calls_at_once(sim_store: Store, tmp_path: Path) -> None:
    """No window (the default): called at the start, whatever the hour."""
    store = sim_store
    cid = launch(store, [Recipient(number="101", kind=Kind.INTERNAL)], start=START)
    sim = Simulation(store, tmp_path / "data", start=START)
    sim.run(done=lambda: campaigns_done(store))
    assert starts(store, cid)["101"] == [pytest.approx(START, abs=1e-5)]
    assert waiting_gauge(sim) == 0.0
    sim.stop()


# ----- the fake decides as SqlStore does, with windows and zones -----

T0_WALL = dt.datetime.fromtimestamp(T0, dt.UTC)  # Sunday 17 March 2030, 17:46:40 UTC
ONE_AHEAD = "Etc/GMT-1"  # UTC+1 all year (POSIX signs are inverted in the Etc names)


@st.composite
def windowed_worlds(draw: st.DrawFn) -> dict[str, Any]:
    """``tests.test_sim.worlds`` with a calling window per campaign (UTC: open all day but a
    gap of some minutes that falls, in UTC, within the first two hours; in UTC+1 an hour
    earlier, so often at the start) and recipients in UTC or UTC+1."""
    world = draw(worlds())
    for c in world["camps"]:
        if not draw(st.booleans()):
            continue  # some campaigns stay urgent
        gap_at = T0_WALL + dt.timedelta(minutes=draw(st.sampled_from([45, 55, 65])))
        gap_end = gap_at + dt.timedelta(minutes=draw(st.sampled_from([5, 15, 30])))
        c["window"] = f"{gap_end:%H:%M}-{gap_at:%H:%M}"  # crosses midnight: open but the gap
        c["zones"] = [draw(st.sampled_from([None, ONE_AHEAD])) for _ in c["numbers"]]
    return world


def _run_world(store: Store, world: dict[str, Any], data: Path) -> list[Any]:
    store.set_settings(actor="sim", now=T0, max_campaigns=world["max_campaigns"],
                       max_calls=world["max_calls"], max_internal=world["max_internal"],
                       max_external=world["max_external"])
    ids = []
    for k, c in enumerate(world["camps"]):
        c = dict(c)
        numbers, start_at = c.pop("numbers"), c.pop("start_at")
        tzs = c.pop("zones", [None] * len(numbers))
        recs = [Recipient(number=n, kind=Kind.EXTERNAL if n.startswith("+") else Kind.INTERNAL,
                          timezone=z) for n, z in zip(numbers, tzs, strict=True)]
        ids.append(launch(store, recs, start=T0, name=f"T{k}", start_at=start_at, **c))
    sim = Simulation(store, data, world["script"])
    sim.run(done=lambda: campaigns_done(store))
    sim.stop()
    for cid in ids:
        check_final(store, cid, world["script"])
    assert_counters_match(store)
    history = []
    for cid in ids:
        c = store.campaign_detail(cid)
        w = window_of(c["settings"]["window"], None, "UTC")
        for a in store.attempts_of(cid):  # no call while its recipient's zone is closed
            at = dt.datetime.fromisoformat(a["created_at"]).timestamp()
            zone = next(r["timezone"] for r in c["recipients"] if r["number"] == a["number"])
            assert w is None or is_open(at, w, zoneinfo.ZoneInfo(zone or "UTC")), (a, zone)
        history.append((c["state"], [(r["number"], r["state"], r["attempts"], r["calls"])
                                     for r in c["recipients"]],
                        sorted((round(dt.datetime.fromisoformat(a["created_at"]).timestamp(),
                                      3), a["number"], a["outcome"])
                               for a in store.attempts_of(cid))))
    return history


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(world=windowed_worlds())
def test_the_fake_store_keeps_the_windows_as_sql_store_does(tmp_path_factory: Any,
                                                            world: dict[str, Any]) -> None:
    """Random campaigns with windows and zones on SQLite and on the fake: nobody is called
    while their zone's window is closed, and both give the same calls at the same instants
    with the same outcomes and final states (the fake mirrors the SQL of the zones)."""
    tmp = tmp_path_factory.mktemp("win")
    histories = []
    for backend in BACKENDS:
        store = make_store(backend, tmp)
        try:
            histories.append(_run_world(store, world, tmp / backend))
        finally:
            dispose(store)
    assert histories[0] == histories[1]
