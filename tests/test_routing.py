"""Routes, per-trunk limits and the trunk health guard (issue 13): the pure rules
(``dialer.core.routing``, ``dialer.core.health``) and ``scheduler.plan`` with a router."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dialer.core import health, scheduler
from dialer.core.domain import Kind, Limits, Outcome
from dialer.core.routing import Router, TrunkLoad, cps_window

ROUTES = {"external": ("external",), "carriers": ("carrier-a", "carrier-b")}


def router(now: float = 100.0, **loads: TrunkLoad) -> Router:
    trunks = {n: TrunkLoad(n) for n in ("internal", "external", "carrier-a", "carrier-b")}
    trunks.update({k.replace("_", "-"): v for k, v in loads.items()})
    return Router(trunks, ROUTES, now)


def test_extensions_go_by_the_internal_trunk_external_numbers_by_their_route() -> None:
    r = router()
    assert r.pick(Kind.INTERNAL, "carriers") == "internal"
    assert r.pick(Kind.EXTERNAL, None) == "external"
    assert r.pick(Kind.EXTERNAL, "carriers") == "carrier-a"
    assert r.pick(Kind.EXTERNAL, "nowhere") is None  # a route no [routes] table defines


def test_the_first_usable_trunk_under_its_limits_takes_the_call() -> None:
    r = router(carrier_a=TrunkLoad("carrier-a", usable=False))
    assert r.pick(Kind.EXTERNAL, "carriers") == "carrier-b"
    r = router(carrier_a=TrunkLoad("carrier-a", max_calls=2, running=2))
    assert r.pick(Kind.EXTERNAL, "carriers") == "carrier-b"
    r = router(carrier_a=TrunkLoad("carrier-a", max_calls=2, running=1),
               carrier_b=TrunkLoad("carrier-b", usable=False))
    assert r.pick(Kind.EXTERNAL, "carriers") == "carrier-a"
    r.take("carrier-a")
    assert r.pick(Kind.EXTERNAL, "carriers") is None  # both full: the recipient waits
    assert r.kinds("carriers") == frozenset({Kind.INTERNAL})


def test_a_rate_limit_counts_the_claims_of_its_window() -> None:
    window, n = cps_window(5)
    assert (window, n) == (1.1, 5)
    assert cps_window(0.5) == (2.1, 1)
    load = TrunkLoad("carrier-a", max_cps=5, recent=[99.0, 99.5, 99.6, 99.7])
    r = router(carrier_a=load)
    assert r.pick(Kind.EXTERNAL, "carriers") == "carrier-a"
    r.take("carrier-a")  # the fifth in the window
    assert r.pick(Kind.EXTERNAL, "carriers") == "carrier-b"
    # 99.0 leaves the window at 100.1: the trunk takes calls again then
    assert r.next_free() is not None and abs(r.next_free() - 100.1) < 1e-9  # type: ignore[operator]


@given(st.floats(0.5, 20), st.lists(st.floats(0, 0.05), min_size=1, max_size=200))
def test_property_no_second_holds_more_than_the_rate(rate: float, gaps: list[float]) -> None:
    """Claims whenever the router lets one through, at any times: no 1 s window of them holds
    more than ``rate`` (rounded down, at least one)."""
    load = TrunkLoad("t", max_cps=rate)
    now = 0.0
    for gap in gaps:
        now += gap
        r = Router({"t": load}, {"external": ("t",)}, now)
        if r.pick(Kind.EXTERNAL, None) == "t":
            r.take("t")
    times = load.recent
    cap = max(1, int(rate))
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 1.0) <= cap


def camp(cid: int, route: str | None = None, priority: int = 0) -> scheduler.CampaignLoad:
    return scheduler.CampaignLoad(id=cid, priority=priority, start_at=0.0, limits=Limits(),
                                  running=scheduler.Counts(), route=route)


def ext(*ids: int) -> list[scheduler.Candidate]:
    return [scheduler.Candidate(i, Kind.EXTERNAL, True) for i in ids]


def test_plan_places_each_call_on_its_routes_trunk_and_never_past_its_limits() -> None:
    r = router(carrier_a=TrunkLoad("carrier-a", max_calls=3),
               carrier_b=TrunkLoad("carrier-b", max_calls=2))
    dials = scheduler.plan([camp(1, "carriers"), camp(2)], Limits(), scheduler.Counts(),
                           {1: ext(*range(10, 20)), 2: ext(30, 31)}, router=r)
    by = [(d.campaign_id, d.recipient_id, d.trunk) for d in dials]
    assert by == [(1, 10, "carrier-a"), (1, 11, "carrier-a"), (1, 12, "carrier-a"),
                  (1, 13, "carrier-b"), (1, 14, "carrier-b"),
                  (2, 30, "external"), (2, 31, "external")]


def test_plan_leaves_alone_a_campaign_whose_route_has_no_room() -> None:
    r = router(carrier_a=TrunkLoad("carrier-a", usable=False),
               carrier_b=TrunkLoad("carrier-b", usable=False))
    dials = scheduler.plan([camp(1, "carriers", priority=9), camp(2)], Limits(),
                           scheduler.Counts(),
                           lambda c, g, cap: ext(10, 11) if c.id == 1 else ext(30), router=r)
    assert [(d.recipient_id, d.trunk) for d in dials] == [(30, "external")]


# ----- the health guard -----

POLICY = health.HealthPolicy(window=6, failures=3, backoff=10, backoff_max=35)
U, C, OK, B = Outcome.UNREACHABLE, Outcome.CONGESTION, Outcome.CONTACTED, Outcome.BUSY


def test_failures_in_the_window_trip_the_trunk_for_its_backoff() -> None:
    state = health.Health()
    state, change = health.assess(POLICY, state, [U, OK, C], 100.0)
    assert change is None and state.healthy(100.0)  # the newest got through: fine
    state, change = health.assess(POLICY, state, [U, C, OK, U], 101.0)
    assert change is not None and not change.healthy and change.until == 111.0
    assert change.reason == "3 of the last 4 attempts 2 unreachable and 1 congestion"
    assert not state.healthy(110.9) and state.healthy(111.0)
    # while out of service, more failures change nothing
    assert health.assess(POLICY, state, [U, U, U], 105.0) == (state, None)


def test_the_backoff_doubles_until_a_call_gets_through_and_is_capped() -> None:
    state = health.Health()
    untils = []
    now = 0.0
    for _ in range(4):
        state, change = health.assess(POLICY, state, [U, U, U], now)
        assert change is not None and change.until is not None
        untils.append(change.until - now)
        now = change.until
        state, back = health.back_in_service(state, now)
        assert back is not None and back.healthy and state.since == now
    assert untils == [10.0, 20.0, 35.0, 35.0]
    state, _ = health.assess(POLICY, state, [B], now + 1)  # busy: the trunk carried it
    assert state.level == 0
    state, change = health.assess(POLICY, state, [U, U, U], now + 2)
    assert change is not None and change.until == now + 2 + 10.0


def test_registration_failures_in_a_row_trip_it_and_a_success_clears_them() -> None:
    state = health.Health()
    for i in range(2):
        state, change = health.registration_failed(POLICY, state, float(i), "408 timeout")
        assert change is None
    state = health.registered(state)
    assert state.reg_failures == 0
    for i in range(3):
        state, change = health.registration_failed(POLICY, state, float(i), "403 Forbidden")
    assert change is not None and not change.healthy
    assert change.reason == "3 registration failures in a row (403 Forbidden)"


@given(st.lists(st.sampled_from(list(Outcome)), max_size=40), st.floats(0, 1e6))
def test_property_only_enough_bad_outcomes_in_the_window_trip(outcomes: list[Outcome],
                                                              now: float) -> None:
    _, change = health.assess(POLICY, health.Health(), outcomes, now)
    window = outcomes[:POLICY.window]
    bad = sum(o in health.BAD for o in window)
    through = bool(window) and window[0] in health.THROUGH
    assert (change is not None) == (bad >= POLICY.failures and not through)
