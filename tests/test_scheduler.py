"""The scheduling rule (dialer.core.scheduler.plan): table-driven cases and the invariants it
keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialer.core import scheduler
from dialer.core.domain import Kind, Limits
from dialer.core.scheduler import (
    CampaignLoad,
    Candidate,
    Counts,
    Dial,
    any_room,
    plan,
    rank,
    room,
    wanted,
)

I, E = Kind.INTERNAL, Kind.EXTERNAL
UNLIMITED = Limits()


def camp(id: int, *, priority: int = 0, start_at: float = 0.0, limits: Limits = UNLIMITED,
         running: Counts = Counts()) -> CampaignLoad:
    return CampaignLoad(id=id, priority=priority, start_at=start_at, limits=limits,
                        running=running)


def cands(spec: str, first_id: int = 1, fresh: bool = True) -> list[Candidate]:
    """``"iie"`` -> internal, internal, external candidates numbered from ``first_id``."""
    return [Candidate(first_id + n, I if ch == "i" else E, fresh) for n, ch in enumerate(spec)]


def ids(dials: Sequence[Dial]) -> list[tuple[int, int]]:
    return [(d.campaign_id, d.recipient_id) for d in dials]


def test_reference_example_10_8_6_with_7_internal_running() -> None:
    """SPEC 3: with 10/8/6 and 7 internal calls running, at most 3 external calls can start."""
    g = Limits(total=10, internal=8, external=6)
    dials = plan([camp(1)], g, Counts(internal=7), {1: cands("eeeeeeee")})
    assert [d.kind for d in dials] == [E, E, E]
    # with internal candidates too: one internal (8 - 7) and two externals fill the 3 slots
    dials = plan([camp(1)], g, Counts(internal=7), {1: cands("iiieeee")})
    assert ids(dials) == [(1, 1), (1, 4), (1, 5)]
    assert [d.kind for d in dials] == [I, E, E]


@pytest.mark.parametrize(
    ("loads", "expected_order"),
    [
        ([camp(1, priority=1), camp(2, priority=5), camp(3, priority=3)], [2, 3, 1]),
        ([camp(1, start_at=30), camp(2, start_at=10), camp(3, start_at=20)], [2, 3, 1]),
        ([camp(1, priority=1, start_at=0), camp(2, priority=2, start_at=99),
          camp(3, priority=2, start_at=5)], [3, 2, 1]),
        ([camp(7), camp(3), camp(5)], [3, 5, 7]),  # full tie: id
        ([camp(1, priority=-5), camp(2, priority=0)], [2, 1]),
    ],
)
def test_rank_priority_then_start_time_then_id(loads: list[CampaignLoad],
                                               expected_order: list[int]) -> None:
    assert [c.id for c in rank(loads)] == expected_order


def test_higher_priority_campaign_takes_the_slots_first() -> None:
    loads = [camp(1, priority=0), camp(2, priority=9)]
    dials = plan(loads, Limits(total=3), Counts(), {1: cands("iii", 1), 2: cands("ii", 10)})
    assert ids(dials) == [(2, 10), (2, 11), (1, 1)]


def test_earlier_start_first_when_priority_ties() -> None:
    loads = [camp(1, start_at=50), camp(2, start_at=10)]
    dials = plan(loads, Limits(total=2), Counts(), {1: cands("ee", 1), 2: cands("ee", 10)})
    assert ids(dials) == [(2, 10), (2, 11)]


def test_candidate_order_is_kept_within_a_campaign() -> None:
    cs = [*cands("ie", 1), *cands("ei", 3, fresh=False)]
    dials = plan([camp(1)], UNLIMITED, Counts(), {1: cs})
    assert ids(dials) == [(1, 1), (1, 2), (1, 3), (1, 4)]


@pytest.mark.parametrize(
    ("limits", "running", "spec", "expected"),
    [
        (Limits(total=2), Counts(), "iiee", [1, 2]),
        (Limits(total=2), Counts(internal=1), "iiee", [1]),
        (Limits(internal=1), Counts(), "iiee", [1, 3, 4]),
        (Limits(external=1), Counts(), "eeii", [1, 3, 4]),
        (Limits(internal=0, external=0), Counts(), "ie", []),
        (Limits(total=3, internal=2, external=2), Counts(), "iiiee", [1, 2, 4]),
        (Limits(total=5, internal=3, external=3), Counts(internal=3), "iieee", [3, 4]),
        (Limits(total=1), Counts(external=1), "ie", []),
        # internal + external may exceed total; total is never exceeded
        (Limits(total=3, internal=3, external=3), Counts(), "eeeeii", [1, 2, 3]),
    ],
)
def test_campaign_limits(limits: Limits, running: Counts, spec: str,
                         expected: list[int]) -> None:
    dials = plan([camp(1, limits=limits, running=running)], UNLIMITED, running,
                 {1: cands(spec)})
    assert [d.recipient_id for d in dials] == expected


def test_a_full_campaign_leaves_the_slots_to_the_next_one() -> None:
    loads = [camp(1, priority=5, limits=Limits(total=1)), camp(2)]
    dials = plan(loads, Limits(total=3), Counts(), {1: cands("iii", 1), 2: cands("iii", 10)})
    assert ids(dials) == [(1, 1), (2, 10), (2, 11)]


def test_internal_room_full_takes_only_externals() -> None:
    g = Limits(total=10, internal=2, external=10)
    loads = [camp(1, priority=1), camp(2)]
    dials = plan(loads, g, Counts(internal=2),
                 {1: cands("iiie", 1), 2: cands("iei", 10)})
    assert ids(dials) == [(1, 4), (2, 11)]
    assert {d.kind for d in dials} == {E}


def test_external_room_full_takes_only_internals() -> None:
    g = Limits(external=1)
    dials = plan([camp(1)], g, Counts(external=1), {1: cands("eiei")})
    assert [d.recipient_id for d in dials] == [2, 4]


@pytest.mark.parametrize("missing", [I, E])
def test_kinds_available_leaves_a_kind_out(missing: Kind) -> None:
    avail = frozenset(Kind) - {missing}
    dials = plan([camp(1)], UNLIMITED, Counts(), {1: cands("ieie")}, kinds_available=avail)
    assert [d.kind for d in dials] == [next(iter(avail))] * 2


def test_no_kind_available_places_nothing() -> None:
    assert plan([camp(1)], UNLIMITED, Counts(), {1: cands("ie")},
                kinds_available=frozenset()) == []


@pytest.mark.parametrize("capacity", [0, 1, 2, 5])
def test_capacity_bounds_the_plan(capacity: int) -> None:
    dials = plan([camp(1), camp(2)], UNLIMITED, Counts(), {1: cands("iii", 1),
                                                             2: cands("eee", 10)},
                 capacity=capacity)
    assert ids(dials) == [(1, 1), (1, 2), (1, 3), (2, 10), (2, 11)][:capacity]


def test_global_total_full_places_nothing() -> None:
    assert plan([camp(1)], Limits(total=4), Counts(internal=2, external=2),
                {1: cands("ie")}) == []


def test_campaign_without_candidates_is_skipped() -> None:
    dials = plan([camp(1, priority=9), camp(2)], UNLIMITED, Counts(), {2: cands("i", 5)})
    assert ids(dials) == [(2, 5)]


def test_room_and_counts() -> None:
    assert room(Limits(total=10, internal=8, external=6), Counts(internal=7)) == (3, 1, 6)
    assert room(UNLIMITED, Counts(5, 5)) == (float("inf"),) * 3
    assert room(Limits(total=1), Counts(2, 0))[0] == 0  # over the limit (lowered): no room
    c = Counts().add(I).add(E).add(E)
    assert (c.internal, c.external, c.total, c.of(I), c.of(E)) == (1, 2, 3, 1, 2)


@pytest.mark.parametrize(
    ("limits", "running", "g_limits", "g_running", "capacity", "expected"),
    [
        (UNLIMITED, Counts(), UNLIMITED, Counts(), None, (1_000_000, 1_000_000)),
        (UNLIMITED, Counts(), Limits(total=10, internal=8, external=6), Counts(7, 0), None, (1, 3)),
        (Limits(total=4, internal=1), Counts(), UNLIMITED, Counts(), None, (1, 4)),
        (UNLIMITED, Counts(), UNLIMITED, Counts(), 2, (2, 2)),
        (Limits(total=2), Counts(1, 1), UNLIMITED, Counts(), None, (0, 0)),
    ],
)
def test_wanted_bounds_what_plan_can_take(limits: Limits, running: Counts, g_limits: Limits,
                                          g_running: Counts, capacity: int | None,
                                          expected: tuple[int, int]) -> None:
    assert wanted(camp(1, limits=limits, running=running), g_limits, g_running,
                  capacity) == expected


# ----- properties -----

opt_limit = st.one_of(st.none(), st.integers(0, 6))
limits_st = st.builds(Limits, total=opt_limit, internal=opt_limit, external=opt_limit)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[CampaignLoad], Limits, Counts,
                                         dict[int, list[Candidate]], frozenset[Kind],
                                         int | None]:
    n = draw(st.integers(0, 5))
    loads: list[CampaignLoad] = []
    candidates: dict[int, list[Candidate]] = {}
    next_rid = 1
    g_int = g_ext = 0
    for cid in range(1, n + 1):
        running = Counts(draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        g_int += running.internal
        g_ext += running.external
        loads.append(camp(cid, priority=draw(st.integers(0, 3)),
                          start_at=draw(st.integers(0, 3)), limits=draw(limits_st),
                          running=running))
        kinds = draw(st.lists(st.sampled_from([I, E]), max_size=8))
        candidates[cid] = [Candidate(next_rid + k, kind, draw(st.booleans()))
                           for k, kind in enumerate(kinds)]
        next_rid += len(kinds)
    g_running = Counts(g_int + draw(st.integers(0, 3)), g_ext + draw(st.integers(0, 3)))
    avail = draw(st.sampled_from([frozenset(Kind), frozenset({I}), frozenset({E}), frozenset()]))
    capacity = draw(st.one_of(st.none(), st.integers(0, 10)))
    return loads, draw(limits_st), g_running, candidates, avail, capacity


def _after(limit: int | None, before: int, added: int) -> bool:
    """Within the limit after ``added`` more, or added nothing at all (it may be over already)."""
    return limit is None or added == 0 or before + added <= limit


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_plan_invariants(sc: tuple[list[CampaignLoad], Limits, Counts,
                                   Mapping[int, list[Candidate]], frozenset[Kind],
                                   int | None]) -> None:
    loads, g, g_running, candidates, avail, capacity = sc
    dials = plan(loads, g, g_running, candidates, kinds_available=avail, capacity=capacity)
    by_id = {c.id: c for c in loads}
    cand_of = {(cid, c.recipient_id): c for cid, cs in candidates.items() for c in cs}

    # only real candidates, each at most once, of an available kind, with their own kind
    assert len({d.recipient_id for d in dials}) == len(dials)
    for d in dials:
        c = cand_of[(d.campaign_id, d.recipient_id)]
        assert c.kind is d.kind and d.kind in avail

    # global limits and capacity
    n_int = sum(d.kind is I for d in dials)
    n_ext = len(dials) - n_int
    assert capacity is None or len(dials) <= capacity
    assert _after(g.total, g_running.total, len(dials))
    assert _after(g.internal, g_running.internal, n_int)
    assert _after(g.external, g_running.external, n_ext)

    # per-campaign limits
    for load in loads:
        mine = [d for d in dials if d.campaign_id == load.id]
        ci = sum(d.kind is I for d in mine)
        assert _after(load.limits.total, load.running.total, len(mine))
        assert _after(load.limits.internal, load.running.internal, ci)
        assert _after(load.limits.external, load.running.external, len(mine) - ci)
        # within a campaign the candidate order is kept
        order = [x.recipient_id for x in candidates.get(load.id, [])]
        picked = [d.recipient_id for d in mine]
        assert picked == sorted(picked, key=order.index)

    # campaigns are served in rank order: no lower-ranked campaign gets a slot of a kind while
    # a higher-ranked one still had a candidate of that kind and room for it
    ranked = [c.id for c in rank(loads)]
    served = [ranked.index(d.campaign_id) for d in dials]
    assert served == sorted(served)
    for pos, hi in enumerate(ranked):
        h = by_id[hi]
        mine = [d for d in dials if d.campaign_id == hi]
        end = Counts(h.running.internal + sum(d.kind is I for d in mine),
                     h.running.external + sum(d.kind is E for d in mine))
        total_room, int_room, ext_room = room(h.limits, end)
        taken = {d.recipient_id for d in mine}
        for kind, kind_room in ((I, int_room), (E, ext_room)):
            left = [x for x in candidates.get(hi, []) if x.kind is kind
                    and x.kind in avail and x.recipient_id not in taken]
            if left and min(total_room, kind_room) > 0:
                lower = [d for d in dials if ranked.index(d.campaign_id) > pos]
                assert all(d.kind is not kind for d in lower), (hi, kind, dials)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_plan_fills_what_it_can(sc: tuple[list[CampaignLoad], Limits, Counts,
                                          Mapping[int, list[Candidate]], frozenset[Kind],
                                          int | None]) -> None:
    """Work-conserving: a candidate left out had no room (its campaign's, global or capacity)."""
    loads, g, g_running, candidates, avail, capacity = sc
    dials = plan(loads, g, g_running, candidates, kinds_available=avail, capacity=capacity)
    if capacity is not None and len(dials) >= capacity:
        return
    n_int = sum(d.kind is I for d in dials)
    g_end = Counts(g_running.internal + n_int, g_running.external + len(dials) - n_int)
    gt, gi, ge = room(g, g_end)
    taken = {(d.campaign_id, d.recipient_id) for d in dials}
    for c in loads:
        mine = [d for d in dials if d.campaign_id == c.id]
        ci = sum(d.kind is I for d in mine)
        ct, cint, cext = room(c.limits, Counts(c.running.internal + ci,
                                               c.running.external + len(mine) - ci))
        for x in candidates.get(c.id, []):
            if (c.id, x.recipient_id) in taken or x.kind not in avail:
                continue
            kind_room = min(gi, cint) if x.kind is I else min(ge, cext)
            assert min(gt, ct, kind_room) <= 0, (c.id, x, dials)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_wanted_is_an_upper_bound_of_the_plan(sc: tuple[list[CampaignLoad], Limits, Counts,
                                                        Mapping[int, list[Candidate]],
                                                        frozenset[Kind], int | None]) -> None:
    loads, g, g_running, candidates, avail, capacity = sc
    dials = plan(loads, g, g_running, candidates, kinds_available=avail, capacity=capacity)
    for c in loads:
        n_int, n_ext = wanted(c, g, g_running, capacity)
        mine = [d for d in dials if d.campaign_id == c.id]
        assert sum(d.kind is I for d in mine) <= n_int
        assert sum(d.kind is E for d in mine) <= n_ext


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_without_global_room_plan_places_nothing(sc: tuple[list[CampaignLoad], Limits, Counts,
                                                          Mapping[int, list[Candidate]],
                                                          frozenset[Kind], int | None]) -> None:
    """``any_room`` False lets the storage adapter skip loading campaigns: plan, from a mapping
    or from a candidate source, would have placed nothing."""
    loads, g, g_running, candidates, avail, capacity = sc
    if any_room(g, g_running, avail, capacity):
        return
    assert plan(loads, g, g_running, candidates, kinds_available=avail, capacity=capacity) == []
    assert plan(loads, g, g_running, lambda c, _g, _cap: candidates.get(c.id, []),
                kinds_available=avail, capacity=capacity) == []


# ----- SPEC 3 rules 3-4: the pure ranking, and the SQL that mirrors it -----

waiting_sets = st.lists(
    st.tuples(st.sampled_from([I, E]), st.one_of(st.none(), st.integers(0, 50))),
    min_size=0, max_size=12)


@settings(max_examples=200, deadline=None)
@given(waiting_sets, st.integers(0, 6), st.integers(0, 6))
def test_candidates_fresh_first_in_list_order_then_longest_ago_first(
        drawn: list[tuple[Kind, int | None]], n_int: int, n_ext: int) -> None:
    waiting = [scheduler.Waiting(i, kind, i, None if last is None else float(last))
               for i, (kind, last) in enumerate(drawn)]
    got = scheduler.candidates(waiting, n_int, n_ext)
    by_id = {w.recipient_id: w for w in waiting}
    for kind, n in ((I, n_int), (E, n_ext)):
        mine = [c for c in got if c.kind is kind]
        assert len(mine) == min(n, sum(1 for w in waiting if w.kind is kind))
        # no one left out ranks before one taken
        taken = {c.recipient_id for c in mine}
        worst = max((scheduler.call_order(by_id[r]) for r in taken), default=None)
        for w in waiting:
            if w.kind is kind and w.recipient_id not in taken and worst is not None:
                assert scheduler.call_order(w) > worst
    fresh = [c.fresh for c in got]
    assert fresh == sorted(fresh, reverse=True)  # every fresh one before any retry
    positions = [by_id[c.recipient_id].position for c in got if c.fresh]
    assert positions == sorted(positions)  # fresh ones in list order
    lasts = [(by_id[c.recipient_id].last_call_at, by_id[c.recipient_id].position)
             for c in got if not c.fresh]
    assert lasts == sorted(lasts)  # retries: called longest ago first, ties in list order
    assert [c.fresh for c in got] == [by_id[c.recipient_id].last_call_at is None for c in got]


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.none(), st.integers(1, 40)), min_size=1, max_size=10),
       st.integers(1, 6))
def test_the_sql_claims_in_the_order_of_the_pure_ranking(
        tmp_path: Path, lasts: list[int | None], n: int) -> None:
    """SqlStore's queries (dialer.storage.fastpath) pick and order recipients as
    ``scheduler.candidates`` does, whatever the mix of fresh and due retries."""
    import uuid

    from sqlalchemy import update

    from dialer.storage.models import RecipientRow
    from dialer.storage.store import SqlStore, to_dt
    from dialer.testing.setup import launch

    now = 1_800_000_000.0
    store = SqlStore(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")
    store.migrate()
    try:
        cid = launch(store, "T", [str(101 + i) for i in range(len(lasts))], now=now,
                     attempts=99)
        with store.session() as s:
            rows = s.query(RecipientRow).filter(RecipientRow.campaign_id == cid).all()
            ids = {r.position: r.id for r in rows}
            for r in rows:
                last = lasts[r.position - min(ids)]
                if last is not None:
                    s.execute(update(RecipientRow).where(RecipientRow.id == r.id).values(
                        calls=1, attempts=1, last_call_at=to_dt(now - 100 + last),
                        next_at=to_dt(now - 1)))
        waiting = [scheduler.Waiting(ids[p], I, p,
                                     None if (ago := lasts[p - min(ids)]) is None
                                     else now - 100 + ago)
                   for p in sorted(ids)]
        want = [c.recipient_id for c in scheduler.candidates(waiting, n, 0)]
        got = [c.recipient_id for c in store.tick(now=now, node="n", capacity=n).calls]
        assert got == want
    finally:
        store.dispose()
