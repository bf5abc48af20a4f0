"""Routes, per-trunk limits and the health guard through ``DispatchPort.tick`` and
``finish_attempt`` (issue 13): the same tests over the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from dialer.core.domain import Outcome
from dialer.core.health import HealthPolicy
from dialer.core.routing import TrunkLoad
from dialer.storage.store import SqlStore
from dialer.testing.setup import ContractStore
from tests.fixtures_core import pg_database  # noqa: F401 - pytest fixture
from tests.test_store_contract import NODE, NOW, camp, end, store  # noqa: F401 - fixture

ROUTES = {"external": ("external",), "carriers": ("carrier-a", "carrier-b")}
EXT = [f"+39066982{i:04d}" for i in range(20)]


def loads(**over: Any) -> list[TrunkLoad]:
    base = {n: TrunkLoad(n) for n in ("internal", "external", "carrier-a", "carrier-b")}
    for name, load in over.items():
        base[name.replace("_", "-")] = load
    return list(base.values())


def tick(store: ContractStore, at: float = NOW, trunks: list[TrunkLoad] | None = None,
         **kw: Any) -> Any:
    return store.tick(now=at, node=NODE, trunks=loads() if trunks is None else trunks,
                      routes=ROUTES, **kw)


def test_each_call_goes_to_its_routes_trunk_and_the_attempt_names_it(
        store: ContractStore) -> None:
    a = camp(store, EXT[:2], name="A", external_route="carriers")
    b = camp(store, EXT[2:4], name="B")
    c = camp(store, ["101"], name="C", external_route="carriers")
    t = tick(store)
    got = {(call.campaign_id, call.number): call.trunk for call in t.calls}
    assert got == {(a, EXT[0]): "carrier-a", (a, EXT[1]): "carrier-a",
                   (b, EXT[2]): "external", (b, EXT[3]): "external", (c, "101"): "internal"}
    started = [e for e in store.events_of(a) if e["kind"] == "attempt_started"]
    assert {e["detail"]["trunk"] for e in started} == {"carrier-a"}


def test_max_calls_holds_and_the_rest_goes_to_the_next_trunk(store: ContractStore) -> None:
    camp(store, EXT[:10], external_route="carriers")
    trunks = loads(carrier_a=TrunkLoad("carrier-a", max_calls=3),
                   carrier_b=TrunkLoad("carrier-b", max_calls=4))
    t = tick(store, trunks=trunks)
    assert [c.trunk for c in t.calls] == ["carrier-a"] * 3 + ["carrier-b"] * 4
    assert tick(store, NOW + 1, trunks=trunks).calls == []  # both full: the rest waits
    end(store, t.calls[0], Outcome.CONTACTED, NOW + 2)
    again = tick(store, NOW + 3, trunks=trunks).calls
    assert [c.trunk for c in again] == ["carrier-a"]


def test_max_cps_lets_no_more_claims_into_a_window_and_says_when_to_come_back(
        store: ContractStore) -> None:
    camp(store, EXT[:20])
    trunks = loads(external=TrunkLoad("external", max_cps=5))
    t = tick(store, trunks=trunks)
    assert len(t.calls) == 5
    assert t.next_due is not None and abs(t.next_due - (NOW + 1.1)) < 1e-3
    assert tick(store, NOW + 1.0, trunks=trunks).calls == []
    assert len(tick(store, NOW + 1.2, trunks=trunks).calls) == 5


def test_a_route_without_a_usable_trunk_spends_no_attempt(
        store: ContractStore, caplog: pytest.LogCaptureFixture) -> None:
    cid = camp(store, EXT[:3], external_route="carriers")
    down = loads(carrier_a=TrunkLoad("carrier-a", usable=False),
                 carrier_b=TrunkLoad("carrier-b", usable=False))
    assert tick(store, trunks=down).calls == []
    assert all(r["calls"] == 0 for r in store.campaign_detail(cid)["recipients"])
    lost = camp(store, EXT[3:5], name="L", external_route="nowhere")  # no such [routes]
    assert [c.campaign_id for c in tick(store, NOW + 1).calls] == [cid] * 3
    assert all(r["calls"] == 0 for r in store.campaign_detail(lost)["recipients"])
    if isinstance(store, SqlStore):  # the daemon's log says why, once
        tick(store, NOW + 2)
        said = [r.getMessage() for r in caplog.records if "is not configured" in r.getMessage()]
        assert said == [f"campaign {lost}: route 'nowhere' is not configured on node {NODE} "
                        "([routes.nowhere]): its external recipients wait"]


def test_a_failing_trunk_turns_unhealthy_and_its_calls_go_to_the_next_one(
        store: ContractStore) -> None:
    store.set_trunk_policies({"carrier-a": HealthPolicy(window=5, failures=3, backoff=30)})
    cid = camp(store, EXT[:12], external_route="carriers", attempts=3, retry_delay=10.0)
    trunks = loads(carrier_a=TrunkLoad("carrier-a", max_calls=3),
                   carrier_b=TrunkLoad("carrier-b", max_calls=4))
    first = tick(store, trunks=trunks).calls
    assert [c.trunk for c in first] == ["carrier-a"] * 3 + ["carrier-b"] * 4
    for i, call in enumerate(first[:3]):
        end(store, call, Outcome.CONGESTION, NOW + 1 + i, status=503)
    health = store.trunk_health(NOW + 5)
    assert not health["carrier-a"].healthy and health["carrier-a"].until == NOW + 3 + 30
    assert health["carrier-a"].reason == "3 of the last 3 attempts 3 congestion"
    events = [e for e in store.events_of(cid) if e["kind"] == "trunk_unhealthy"]
    assert len(events) == 1 and events[0]["detail"]["trunk"] == "carrier-a"
    for call in first[3:]:
        end(store, call, Outcome.CONTACTED, NOW + 4)
    # nothing more on carrier-a while it is out of service: carrier-b takes what it can
    later = tick(store, NOW + 20, trunks=trunks).calls
    assert [c.trunk for c in later] == ["carrier-b"] * 4
    assert all(r["attempts"] <= 1 for r in store.campaign_detail(cid)["recipients"])
    for call in later:
        end(store, call, Outcome.CONTACTED, NOW + 21)
    # the back-off over: back in service, with an event in the campaign's history
    back = tick(store, NOW + 34, trunks=trunks).calls
    assert [c.trunk for c in back] == ["carrier-a"] * 3 + ["carrier-b"]
    assert store.trunk_health(NOW + 34)["carrier-a"].healthy
    kinds = [e["kind"] for e in store.events_of(cid)]
    assert kinds.count("trunk_unhealthy") == 1 and kinds.count("trunk_healthy") == 1


def test_registration_failures_in_a_row_trip_the_trunk(store: ContractStore) -> None:
    store.set_trunk_policies({"carrier-a": HealthPolicy(window=5, failures=2, backoff=60)})
    store.trunk_registration("carrier-a", False, "403 Forbidden", NOW)
    assert store.trunk_health(NOW).get("carrier-a") is None or \
        store.trunk_health(NOW)["carrier-a"].healthy
    store.trunk_registration("carrier-a", False, "403 Forbidden", NOW + 1)
    h = store.trunk_health(NOW + 2)["carrier-a"]
    assert not h.healthy and "registration failures" in h.reason
    camp(store, EXT[:2], external_route="carriers")
    assert {c.trunk for c in tick(store, NOW + 2).calls} == {"carrier-b"}
