"""The scheduler and the campaign lifecycle end to end in the simulator (tests/sim.py): the real
daemon loop, a store (SqlStore on a SQLite file, and the in-memory fake of ``DispatchPort``,
``dialer.testing.memory.MemoryStore``: the scenarios run on both through the ``sim_store``
fixture; PostgreSQL for one scenario), scheduler, lifecycle and dialogue, with scripted
recipients on a virtual clock. One property test runs each random world on both stores and
requires the same history (calls, instants, outcomes, final states).

The invariants are checked after every step of the daemon, i.e. at every instant something can
change: limits (global and per campaign, total/internal/external), the number of active
campaigns, one call at a time per recipient and never beyond its attempts, priority (a
higher-ranked campaign never waits while a lower one takes a slot it could have used) and work
conservation (no free slot is left while a callable recipient waits: wake-ups are exact, there is
no polling delay; the daemon's safety pass is set to an hour here so it cannot hide a late one).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from dialer.core import lifecycle
from dialer.core.domain import CampaignSettings, Kind, Limits
from dialer.core.recipients import Recipient
from dialer.core.scheduler import Counts, room
from dialer.storage.models import AttemptRow, CampaignRow, RecipientRow
from dialer.storage.store import SqlStore, settings_from_dict, to_ts
from dialer.testing.memory import MemoryStore
from tests.fixtures_core import db_url, pg_database, store  # noqa: F401 - pytest fixtures
from tests.sim import BEHAVIOURS, T0, Behaviour, Simulation

I, E = Kind.INTERNAL, Kind.EXTERNAL
FINAL = {"completed", "incomplete", "terminated"}
BACKENDS = ["sqlite", "memory"]
Store = SqlStore | MemoryStore


def make_store(backend: str, tmp: Path) -> Store:
    """A new, initialised store of the simulator: a SQLite file in ``tmp``, or the fake."""
    if backend == "memory":
        return MemoryStore()
    store = SqlStore(f"sqlite:///{tmp / 'sim.db'}")
    store.migrate()
    return store


def dispose(store: Store) -> None:
    if isinstance(store, SqlStore):
        store.dispose()


@pytest.fixture(params=BACKENDS)
def sim_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The simulator's store, on each backend (SQLite file, in-memory fake)."""
    store = make_store(request.param, tmp_path)
    try:
        yield store
    finally:
        dispose(store)


# ----- set-up helpers -----


def internal(n: int) -> str:
    return str(100 + n)


def external(n: int) -> str:
    return f"+39066982{n:04d}"


def recipient(number: str) -> Recipient:
    return Recipient(number=number, kind=E if number.startswith("+") else I)


def launch(store: Store, name: str, numbers: list[str], *, start_at: float = T0,
           audio_seconds: float = 4.0, **settings: Any) -> int:
    """A template named ``name`` and one campaign of it, starting at ``start_at``."""
    content = b"fake audio"
    sha = hashlib.sha256(content).hexdigest()
    store.add_media(data=content, sha256=sha, rate=8000, seconds=audio_seconds, source=None,
                    now=T0)
    cs = CampaignSettings(**{"retry_delay": 30.0, "attempts": 3, "ring_timeout": 20.0,
                             **settings})
    store.add_template(name=name, settings=cs, audio_sha=sha, audio_seconds=audio_seconds,
                       recipients=[recipient(n) for n in numbers], now=T0, actor="sim")
    return store.start_campaign(template=name, name=None, now=T0, start_at=start_at,
                                actor="sim")


def campaigns_done(store: Store) -> bool:
    if isinstance(store, MemoryStore):
        return all(c.state.value in FINAL for c in store.campaigns.values())
    assert isinstance(store, SqlStore)
    with store.session() as s:
        return all(state in FINAL for state in s.scalars(select(CampaignRow.state)))


# ----- the invariants, checked after every step -----


@dataclass
class World:
    """The database as the checker reads it at one instant."""

    now: float
    max_campaigns: int | None
    limits: Limits
    camps: dict[int, dict[str, Any]]
    recs: dict[int, dict[str, Any]]
    open: dict[str, tuple[int, int, str]]  # attempt id -> (campaign, recipient, kind)


def read_world(store: Store, now: float) -> World:
    gs = store.get_settings()
    if isinstance(store, MemoryStore):
        return World(
            now=now, max_campaigns=gs.max_campaigns, limits=gs.limits,
            camps={c.id: {"id": c.id, "state": c.state.value, "priority": c.priority,
                          "start_at": c.start_at, "settings": c.settings}
                   for c in store.campaigns.values()},
            recs={r.id: {"id": r.id, "campaign": r.campaign_id, "kind": r.kind,
                         "state": r.state.value, "calls": r.calls, "attempts": r.attempts,
                         "max_attempts": r.max_attempts, "next_at": r.next_at}
                  for r in store.recipients.values()},
            open={a.id: (a.campaign_id, a.recipient_id, a.kind.value)
                  for a in store.attempts.values() if a.ended_at is None})
    assert isinstance(store, SqlStore)
    with store.session() as s:
        camps = {c.id: {"id": c.id, "state": c.state, "priority": c.priority,
                        "start_at": to_ts(c.start_at) or 0.0,
                        "settings": settings_from_dict(c.settings)}
                 for c in s.scalars(select(CampaignRow))}
        recs = {r.id: {"id": r.id, "campaign": r.campaign_id, "kind": Kind(r.kind),
                       "state": r.state, "calls": r.calls, "attempts": r.attempts,
                       "max_attempts": r.max_attempts, "next_at": to_ts(r.next_at)}
                for r in s.scalars(select(RecipientRow))}
        open_ = {a.id: (a.campaign_id, a.recipient_id, a.kind)
                 for a in s.scalars(select(AttemptRow).where(AttemptRow.ended_at.is_(None)))}
    return World(now=now, max_campaigns=gs.max_campaigns, limits=gs.limits, camps=camps,
                 recs=recs, open=open_)


def counts(items: list[str]) -> Counts:
    return Counts(sum(k == "internal" for k in items), sum(k == "external" for k in items))


def within(limits: Limits, c: Counts) -> bool:
    return all(lim is None or n <= lim for lim, n in
               ((limits.total, c.total), (limits.internal, c.internal),
                (limits.external, c.external)))


def tally(w: World, cid: int) -> lifecycle.Tally:
    acc: dict[str, int] = {}
    for r in w.recs.values():
        if r["campaign"] == cid:
            acc[r["state"]] = acc.get(r["state"], 0) + 1
    return lifecycle.Tally(**acc)


def callable_now(w: World, cid: int, kind: Kind) -> bool:
    return any(r["campaign"] == cid and r["kind"] is kind and r["state"] == "idle"
               and (r["calls"] == 0 or r["next_at"] is None or r["next_at"] <= w.now)
               for r in w.recs.values())


@dataclass
class Invariants:
    """Checks the rules after each step; remembers what it saw to spot new calls."""

    store: Store
    limits_fixed: bool = True
    seen: set[str] = field(default_factory=set)
    peak: int = 0
    peak_active: int = 0
    checks: int = 0
    wake_by: float = float("inf")  # the daemon had to decide again by then

    def __call__(self, sim: Simulation) -> None:
        w = read_world(self.store, sim.now)
        self.checks += 1
        # nothing changes between two steps but time: a due start or retry that had room must
        # have woken the daemon at its instant, not later
        assert w.now <= self.wake_by + 1e-6, ("overslept", self.wake_by - T0, w.now - T0)
        self.wake_by = float("inf")
        for c in w.camps.values():
            if c["state"] == "scheduled":
                self.wake_by = min(self.wake_by, c["start_at"])
        new = {aid: v for aid, v in w.open.items() if aid not in self.seen}
        self.seen |= set(w.open)
        running = counts([k for _, _, k in w.open.values()])
        self.peak = max(self.peak, running.total)
        # limits, global and per campaign (a lowered limit: no new call above it)
        if self.limits_fixed or new:
            assert within(w.limits, running), (w.now - T0, w.limits, running)
        for cid, c in w.camps.items():
            mine = counts([k for camp, _, k in w.open.values() if camp == cid])
            assert within(c["settings"].limits, mine), (cid, c["settings"].limits, mine)
        # active campaigns
        active = [c for c in w.camps.values() if c["state"] == "active"]
        self.peak_active = max(self.peak_active, len(active))
        if w.max_campaigns is not None:
            assert len(active) <= w.max_campaigns, (w.max_campaigns, active)
        # one call at a time per recipient, never beyond its attempts
        per_rec: dict[int, int] = {}
        for _, rid, _ in w.open.values():
            per_rec[rid] = per_rec.get(rid, 0) + 1
        assert all(n == 1 for n in per_rec.values()), per_rec
        for r in w.recs.values():
            assert r["attempts"] <= r["max_attempts"], r
            assert r["calls"] - (1 if r["id"] in per_rec else 0) <= r["max_attempts"] + \
                (1 if r["state"] == "contacted" else 0) - 0, r
        # priority and work conservation, among campaigns allowed to place calls
        ranked = sorted((c for c in active if lifecycle.may_call(
            tally(w, c["id"]), c["settings"].threshold,
            c["settings"].keep_calling_after_threshold)),
            key=lambda c: (-c["priority"], c["start_at"], c["id"]))
        g_total, g_int, g_ext = room(w.limits, running)
        for pos, c in enumerate(ranked):
            mine = counts([k for camp, _, k in w.open.values() if camp == c["id"]])
            c_total, c_int, c_ext = room(c["settings"].limits, mine)
            for kind, c_kind, g_kind in ((I, c_int, g_int), (E, c_ext, g_ext)):
                if min(c_total, c_kind) <= 0 or not callable_now(w, c["id"], kind):
                    continue
                # c could take a call of this kind: nobody ranked lower took one now ...
                lower = {x["id"] for x in ranked[pos + 1:]}
                taken = [v for v in new.values() if v[0] in lower and v[2] == kind.value]
                assert not taken, ("priority", c["id"], kind, taken)
                # ... and the slot is not free (no waiting for a later poll)
                assert min(g_total, g_kind) <= 0, ("idle slot", w.now - T0, c["id"], kind)
            for kind, c_kind, g_kind in ((I, c_int, g_int), (E, c_ext, g_ext)):
                if min(c_total, c_kind, g_total, g_kind) > 0:
                    later = [r["next_at"] for r in w.recs.values()
                             if r["campaign"] == c["id"] and r["kind"] is kind
                             and r["state"] == "idle" and r["calls"] > 0
                             and r["next_at"] is not None and r["next_at"] > w.now]
                    self.wake_by = min([self.wake_by, *later])


def check_final(store: Store, cid: int, script: dict[str, list[Behaviour]]) -> None:
    """Every attempt ended as its scripted behaviour says; the recipient and the campaign are in
    the state the rules give."""
    d = store.campaign_detail(cid)
    st: dict[str, Any] = d["settings"]
    cs = settings_from_dict(st)
    attempts = store.attempts_of(cid)
    by_number: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        by_number.setdefault(a["number"], []).append(a)
    contacted = 0
    for r in d["recipients"]:
        mine = by_number.get(r["number"], [])
        plan = script.get(r["number"]) or [Behaviour()]
        fails = 0
        for n, a in enumerate(mine):
            b = plan[min(n, len(plan) - 1)]
            ok = b.succeeds(answer_confirm=cs.answer_confirm, listen_confirm=cs.listen_confirm,
                            max_repeats=cs.max_repeats, ring_timeout=cs.ring_timeout)
            assert (a["outcome"] == "contacted") is ok, (r["number"], n, b, a["outcome"])
            assert fails < cs.attempts, "called beyond its attempts"
            if ok:
                assert n == len(mine) - 1, "called again after success"
            else:
                fails += 1
        assert r["attempts"] == fails and r["calls"] == len(mine)
        if mine and mine[-1]["outcome"] == "contacted":
            assert r["state"] == "contacted"
            contacted += 1
        elif fails >= cs.attempts:
            assert r["state"] == "failed"
        else:
            # left idle: only when the threshold was reached early and calling stopped
            assert r["state"] == "idle" and not cs.keep_calling_after_threshold, r
    need = lifecycle.threshold_of(cs.threshold, len(d["recipients"]))
    assert d["state"] == ("completed" if contacted >= need else "incomplete"), (d["state"],
                                                                              contacted, need)
    # every transition is an event with its cause
    moves = [e["detail"] for e in store.events_of(cid) if e["kind"] == "campaign_state"]
    assert moves and all(m.get("cause") for m in moves)
    assert moves[-1]["new"] == d["state"]


# ----- property test -----

opt = st.one_of(st.none(), st.integers(1, 3))
behaviour_st = st.builds(Behaviour, kind=st.sampled_from(BEHAVIOURS),
                         after=st.sampled_from([0.5, 3.0, 25.0]))


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    n_camps = draw(st.integers(1, 3))
    camps = []
    serial = 0
    script: dict[str, list[Behaviour]] = {}
    for _ in range(n_camps):
        kinds = draw(st.lists(st.sampled_from([I, E]), min_size=1, max_size=5))
        numbers = []
        for kind in kinds:
            serial += 1
            num = internal(serial) if kind is I else external(serial)
            numbers.append(num)
            script[num] = draw(st.lists(behaviour_st, min_size=1, max_size=3))
        camps.append({
            "numbers": numbers,
            "start_at": T0 + draw(st.sampled_from([0.0, 0.0, 7.0, 40.0])),
            "priority": draw(st.integers(0, 2)),
            "attempts": draw(st.integers(1, 3)),
            "retry_delay": draw(st.sampled_from([0.0, 5.0, 30.0])),
            "answer_confirm": draw(st.booleans()),
            "listen_confirm": draw(st.booleans()),
            "max_repeats": draw(st.integers(0, 2)),
            "threshold": draw(st.one_of(st.none(), st.integers(1, len(numbers)))),
            "keep_calling_after_threshold": draw(st.booleans()),
            "limits": Limits(total=draw(opt), internal=draw(opt), external=draw(opt)),
        })
    return {"camps": camps, "script": script,
            "max_campaigns": draw(st.one_of(st.none(), st.integers(1, 2))),
            "max_calls": draw(st.one_of(st.none(), st.integers(1, 4))),
            "max_internal": draw(opt), "max_external": draw(opt)}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(world=worlds())
@pytest.mark.parametrize("backend", BACKENDS)
def test_random_campaigns_keep_every_rule_at_every_instant(tmp_path_factory: Any, backend: str,
                                                           world: dict[str, Any]) -> None:
    tmp = tmp_path_factory.mktemp("sim")
    store = make_store(backend, tmp)
    try:
        store.set_settings(actor="sim", now=T0, max_campaigns=world["max_campaigns"],
                           max_calls=world["max_calls"], max_internal=world["max_internal"],
                           max_external=world["max_external"])
        ids = []
        for k, c in enumerate(world["camps"]):
            c = dict(c)
            numbers, start_at = c.pop("numbers"), c.pop("start_at")
            ids.append(launch(store, f"T{k}", numbers, start_at=start_at, **c))
        sim = Simulation(store, tmp / "data", world["script"])
        inv = Invariants(store)
        sim.run(done=lambda: campaigns_done(store), check=inv)
        assert sim.now - T0 < 24 * 3600
        for cid in ids:
            check_final(store, cid, world["script"])
        assert_counters_match(store)
        if world["max_campaigns"] is not None:
            assert inv.peak_active <= world["max_campaigns"]
        sim.stop()
    finally:
        dispose(store)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(world=worlds())
def test_the_fake_store_makes_the_decisions_of_sql_store(tmp_path_factory: Any,
                                                         world: dict[str, Any]) -> None:
    """The same world on SQLite and on the fake: the same calls, in the same order, at the same
    instants, with the same outcomes, and the same final states."""
    tmp = tmp_path_factory.mktemp("diff")
    histories = []
    for backend in BACKENDS:
        store = make_store(backend, tmp)
        try:
            store.set_settings(actor="sim", now=T0, max_campaigns=world["max_campaigns"],
                               max_calls=world["max_calls"], max_internal=world["max_internal"],
                               max_external=world["max_external"])
            ids = []
            for k, c in enumerate(world["camps"]):
                c = dict(c)
                numbers, start_at = c.pop("numbers"), c.pop("start_at")
                ids.append(launch(store, f"T{k}", numbers, start_at=start_at, **c))
            sim = Simulation(store, tmp / backend, world["script"])
            sim.run(done=functools.partial(campaigns_done, store))
            sim.stop()
            histories.append([
                (store.campaign_detail(cid)["state"],
                 [(r["number"], r["state"], r["attempts"], r["calls"])
                  for r in store.campaign_detail(cid)["recipients"]],
                 sorted((round(to_ts(_dt(a["created_at"])) or 0.0, 3), a["number"],
                         a["outcome"]) for a in store.attempts_of(cid)))
                for cid in ids])
        finally:
            dispose(store)
    assert histories[0] == histories[1]


def assert_counters_match(store: Store) -> None:
    from dialer.storage import counters

    if not isinstance(store, SqlStore):
        return  # the fake counts its recipients every time: no counter to drift

    with store.session() as s:
        rows = s.execute(select(CampaignRow)).scalars().all()
        truth = counters.count(s, [r.id for r in rows])
        for r in rows:
            assert counters.tally_of(r) == truth[r.id], (r.id, counters.tally_of(r), truth[r.id])


# ----- scenarios -----


def test_reference_example_10_8_6_in_the_simulator(sim_store: Store, tmp_path: Path) -> None:
    """SPEC 3: limits 10/8/6 with 7 internal calls running admit at most 3 external calls."""
    store = sim_store
    store.set_settings(actor="sim", now=T0, max_calls=10, max_internal=8, max_external=6)
    long_call = [Behaviour("confirm", after=1.0)]
    inside = [internal(n) for n in range(7)]
    outside = [external(n) for n in range(10)]
    script = {n: long_call for n in inside + outside}
    launch(store, "Inside", inside, priority=5, audio_seconds=600.0)
    launch(store, "Outside", outside, start_at=T0 + 10, audio_seconds=600.0)
    sim = Simulation(store, tmp_path / "data", script)
    inv = Invariants(store)
    sim.run(until=T0 + 9, check=inv)
    assert store.running_counts() == Counts(internal=7, external=0)
    sim.run(until=T0 + 60, check=inv)
    assert store.running_counts() == Counts(internal=7, external=3)
    sim.run(done=lambda: campaigns_done(store), check=inv)
    assert inv.peak == 10
    sim.stop()


@pytest.mark.parametrize("direction", ["raise", "lower"])
def test_a_limit_change_takes_effect_at_the_next_decision(sim_store: Store, tmp_path: Path,
                                                             direction: str) -> None:
    store = sim_store
    before, after = (2, 6) if direction == "raise" else (6, 2)
    store.set_settings(actor="sim", now=T0, max_calls=before)
    numbers = [internal(n) for n in range(30)]
    launch(store, "T", numbers, audio_seconds=20.0, answer_confirm=False, listen_confirm=False)
    sim = Simulation(store, tmp_path / "data", safety_interval=1.0)
    inv = Invariants(store, limits_fixed=False)
    sim.run(until=T0 + 15, check=inv)
    assert store.running_counts().total == before
    changed_at = sim.now
    store.set_settings(actor="sim", now=changed_at, max_calls=after)
    sim.daemon.notify()  # the CLI's change, as the safety pass or a notification would see it
    sim.run(until=changed_at + 0.001, check=inv)
    if direction == "raise":
        assert store.running_counts().total == after  # at the very next decision
    else:
        assert store.running_counts().total == before  # calls in progress are not cut
    peak_after = 0

    def watch(s: Simulation) -> None:
        nonlocal peak_after
        inv(s)
        peak_after = max(peak_after, store.running_counts().total)
        if direction == "lower" and store.running_counts().total > after:
            # above the new limit only while the old calls drain: no new call is placed
            assert all(a in inv.seen for a in store.open_attempts("sim"))

    sim.run(done=lambda: campaigns_done(store), check=watch)
    assert peak_after == (after if direction == "raise" else before)
    sim.stop()


def test_blocked_campaign_takes_the_freed_place_in_the_same_pass(sim_store: Store,
                                                                 tmp_path: Path) -> None:
    store = sim_store
    store.set_settings(actor="sim", now=T0, max_campaigns=1)
    first = launch(store, "A", [internal(1)], priority=1)
    second = launch(store, "B", [internal(2)])
    sim = Simulation(store, tmp_path / "data")
    sim.run(done=lambda: campaigns_done(store), check=Invariants(store))
    ev1 = [e for e in store.events_of(first) if e["kind"] == "campaign_state"]
    ev2 = [e for e in store.events_of(second) if e["kind"] == "campaign_state"]
    assert [e["detail"]["new"] for e in ev1] == ["active", "completed"]
    assert [e["detail"]["new"] for e in ev2] == ["blocked", "active", "completed"]
    assert ev2[1]["at"] == ev1[1]["at"]  # the same instant, the same pass
    assert ev2[1]["detail"]["cause"] == "a place freed"
    sim.stop()


def test_retries_wake_the_daemon_exactly(sim_store: Store, tmp_path: Path) -> None:
    """Busy twice with a 45 s retry delay: each retry is placed at its due time, to the µs."""
    store = sim_store
    cid = launch(store, "T", [internal(1)], retry_delay=45.0, attempts=3)
    script = {internal(1): [Behaviour("busy", 2.0), Behaviour("busy", 2.0), Behaviour()]}
    sim = Simulation(store, tmp_path / "data", script)
    sim.run(done=lambda: campaigns_done(store), check=Invariants(store))
    attempts = store.attempts_of(cid)
    starts = [to_ts(_dt(a["created_at"])) for a in attempts]
    ends = [to_ts(_dt(a["ended_at"])) for a in attempts]
    assert [a["outcome"] for a in attempts] == ["busy", "busy", "contacted"]
    assert ends[0] is not None and ends[1] is not None
    assert starts[1] == pytest.approx(ends[0] + 45.0, abs=1e-5)
    assert starts[2] == pytest.approx(ends[1] + 45.0, abs=1e-5)
    assert sim.daemon.ticks < 20  # no polling: a handful of passes for three calls
    sim.stop()


def test_threshold_reached_early_stop_calling(sim_store: Store, tmp_path: Path) -> None:
    """keep_calling_after_threshold = False: calls stop at the threshold, the rest stay idle."""
    store = sim_store
    nums = [internal(n) for n in range(6)]
    cid = launch(store, "T", nums, threshold=2, keep_calling_after_threshold=False,
                 limits=Limits(total=1))
    sim = Simulation(store, tmp_path / "data")
    sim.run(done=lambda: campaigns_done(store), check=Invariants(store))
    d = store.campaign_detail(cid)
    assert d["state"] == "completed"
    assert [r["state"] for r in d["recipients"]] == ["contacted"] * 2 + ["idle"] * 4
    sim.stop()


@pytest.mark.postgres
def test_a_mixed_campaign_on_postgresql(store: SqlStore) -> None:  # noqa: F811
    if store.sqlite:
        pytest.skip("the SQLite case is covered above")
    store.set_settings(actor="sim", now=T0, max_calls=3, max_internal=2, max_campaigns=1)
    script = {internal(1): [Behaviour("busy", 1.0), Behaviour()],
              internal(2): [Behaviour("wrong_key", 2.0)],
              external(3): [Behaviour("hangup_mid_message", 1.0)],
              external(4): [Behaviour("no_answer")], internal(5): [Behaviour("silent")]}
    a = launch(store, "A", list(script), retry_delay=10.0, attempts=2, priority=1)
    b = launch(store, "B", [internal(6), external(7)])
    sim = Simulation(store, Path("/tmp") / f"sim-pg-{a}", script)
    sim.run(done=lambda: campaigns_done(store), check=Invariants(store))
    check_final(store, a, script)
    check_final(store, b, script)
    assert_counters_match(store)
    sim.stop()


def _dt(iso: str | None) -> Any:
    import datetime as dt

    assert iso is not None
    return dt.datetime.fromisoformat(iso)


def test_trusted_sources_are_resolved_again_and_pushed_to_the_workers(
        store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon re-resolves the trunks' hosts off its loop and tells the gateway when the
    list changed; a resolution where a host failed changes nothing."""
    import time

    from dialer import daemon as daemon_module
    from dialer.config import Config

    answers = [(["10.0.0.1"], []), (["10.0.0.1"], []), (["10.0.0.2"], []),
               (["10.0.0.9"], ["pbx.test"])]
    used: list[int] = []

    def resolve(self: Config) -> tuple[list[str], list[str]]:
        used.append(1)
        return answers[len(used) - 1] if len(used) <= len(answers) else (["10.0.0.2"], [])

    monkeypatch.setattr(Config, "resolve_sources", resolve)
    monkeypatch.setattr(daemon_module, "RESOLVE_INTERVAL", 0.01)
    sim = Simulation(store, tmp_path)
    pushed: list[list[str]] = []
    monkeypatch.setattr(sim.gateway, "trust", pushed.append)
    try:
        deadline = time.monotonic() + 10
        while len(used) <= len(answers) + 2:
            assert time.monotonic() < deadline, f"resolved {len(used)} times"
            sim.daemon.step()
        sim.daemon.step()
        assert sim.daemon._sources == ["10.0.0.2"]
        assert pushed == [["10.0.0.2"]]  # once: the same list and the failed lookup not at all
    finally:
        sim.daemon.stopping.set()
        sim.stop()


def test_escalation_launches_at_its_time_once(sim_store: Store, tmp_path: Path) -> None:
    """Issue 15: "fewer than 2 reached 5 minutes after the start" launches the follow-up at that
    instant (the daemon wakes for it as for a retry), once, while the first run goes on; the
    follow-up calls its own list and the first run ends without a second launch."""
    store = sim_store
    first = launch(store, "Fire", [internal(1), internal(2), internal(3)], attempts=2,
                   retry_delay=600.0, escalate_to="Managers", escalate_when="below",
                   escalate_below=2, escalate_after=300.0)
    store.add_template(name="Managers", settings=CampaignSettings(attempts=1),
                       audio_sha=hashlib.sha256(b"fake audio").hexdigest(), audio_seconds=4.0,
                       recipients=[recipient(internal(9))], now=T0, actor="sim")
    script = {internal(2): [Behaviour("busy")], internal(3): [Behaviour("no_answer")]}
    sim = Simulation(store, tmp_path / "data", script)
    sim.run(done=lambda: campaigns_done(store) and len(store.list_campaigns()) == 2,
            check=Invariants(store))
    escalated = [e for e in store.events_of(first) if e["kind"] == "campaign_escalated"]
    assert len(escalated) == 1
    assert to_ts(_dt(escalated[0]["at"])) == pytest.approx(T0 + 300.0, abs=1e-3)
    followup = escalated[0]["detail"]["escalated_to"]
    assert escalated[0]["detail"]["cause"] == "1 of 2 reached 5 min after the start"
    detail = store.campaign_detail(followup)
    assert detail["state"] == "completed"
    assert [r["number"] for r in detail["recipients"]] == [internal(9)]
    assert store.campaign_detail(first)["state"] == "incomplete"  # it went on after
    assert store.campaign_detail(first)["escalation"]["state"] == "launched"
    sim.stop()
def test_the_daemon_seals_each_run_it_ends_and_counts_it(tmp_path: Path) -> None:
    """Issue 15, the history chain: campaigns the daemon plays to their end (retries, wrong
    keys, a hang-up, incomplete then stopped) are sealed once each; every run verifies, and
    ``dialer_runs_sealed_total`` counts them."""
    store = make_store("sqlite", tmp_path)
    assert isinstance(store, SqlStore)
    script = {internal(1): [Behaviour("busy", 1.0), Behaviour()],
              internal(2): [Behaviour("wrong_key", 2.0)],
              external(3): [Behaviour("hangup_mid_message", 1.0)]}
    a = launch(store, "A", list(script), retry_delay=10.0, attempts=2)
    b = launch(store, "B", [internal(6), external(7)])
    sim = Simulation(store, tmp_path / "data", script)
    try:
        sim.run(done=lambda: campaigns_done(store), check=Invariants(store))
        states = {cid: store.campaign_detail(cid)["state"] for cid in (a, b)}
        assert states == {a: "incomplete", b: "completed"}
        assert store.verify_run(a).status.value == "not_sealed_yet"  # attempts can be granted
        metrics = sim.daemon.metrics
        assert store.runs_sealed == 1  # b, by the daemon's pass that completed it
        assert metrics.runs_sealed.labels(metrics.node)._value.get() == 1
        cli = SqlStore(store.url)  # the operator's stop, from another process, seals a
        try:
            cli.set_campaign_state(a, "stop", actor="op", now=sim.now)
            assert cli.runs_sealed == 1
        finally:
            cli.dispose()
        for cid in (a, b):
            report = store.verify_run(cid)
            assert report.ok, report.line()
            assert report.rows == len(store.attempts_of(cid)) + len(store.events_of(cid))
        assert store.runs_sealed == 1
    finally:
        sim.stop()
        dispose(store)


def test_stopping_a_campaign_hangs_up_its_calls(tmp_path: Path) -> None:
    """``campaign stop`` is final, and its --help says calls in progress are hung up: the
    daemon's next pass hangs up the calls of a campaign stopped from another process (found
    when issue 15's Alertmanager receiver stopped campaigns on resolve: they played on)."""
    store = make_store("sqlite", tmp_path)
    assert isinstance(store, SqlStore)
    stopped = launch(store, "Long", [internal(1), internal(2)], audio_seconds=600.0)
    other = launch(store, "Other", [internal(3)], audio_seconds=600.0)
    sim = Simulation(store, tmp_path / "data")
    try:
        sim.run(until=T0 + 30, check=Invariants(store))
        assert len(sim.gateway.calls) == 3  # every call answered, in its message
        cli = SqlStore(store.url)  # the operator's stop, from another process
        try:
            cli.set_campaign_state(stopped, "stop", actor="op", now=sim.now)
        finally:
            cli.dispose()
        sim.daemon.notify()
        sim.run(until=T0 + 31, check=Invariants(store))
        assert store.open_attempts("sim") == [a["id"] for a in store.attempts_of(other)]
        ended = store.attempts_of(stopped)
        assert all(a["ended_at"] is not None and a["reason"] == "hung up by the dialer"
                   for a in ended), ended
        assert len(sim.gateway.calls) == 1  # the other campaign's call goes on
        sim.run(until=T0 + 300, check=Invariants(store))
        assert len(store.attempts_of(stopped)) == 2  # and nobody of it is called again
        assert "active" not in {r["state"] for r in store.campaign_detail(stopped)["recipients"]}
    finally:
        sim.stop()
        dispose(store)
