"""Several daemons on one store, on a virtual clock (the simulator's ``FakeGateway`` per node):
a node that dies has its calls settled ``node_lost`` by another within the lease and its
margin; a node that loses the database hangs its calls up before its lease ends, nobody calls
its recipients before that, and it rejoins with a new generation when the database answers.
At every instant no recipient is in two calls at once and no limit is exceeded.

The same scenarios with real ``dialer serve`` processes, PostgreSQL and SIPp are in
tests/test_cluster_e2e.py; these run in milliseconds and check every instant."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dialer.core.cluster import fence_margin, settle_margin
from dialer.core.errors import StoreUnavailable
from dialer.daemon import Daemon
from dialer.testing.memory import MemoryStore
from dialer.testing.setup import launch
from tests.sim import T0, Behaviour, FakeGateway, VirtualClock, _durations, sim_config

LEASE = 15.0
STEP = 0.1  # virtual seconds a node may move the clock in one turn


class Cuttable:
    """A store whose every call fails as an unreachable database while ``cut`` is set."""

    def __init__(self, inner: MemoryStore) -> None:
        self._inner = inner
        self.cut = False

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if callable(value) and self.cut:
            def unreachable(*_a: Any, **_k: Any) -> Any:
                raise StoreUnavailable("database error: connection refused (cut by the test)")
            return unreachable
        return value


class Cluster:
    """Daemons of several nodes on one store and one virtual clock, stepped in turn."""

    def __init__(self, store: MemoryStore, tmp: Path, names: list[str]) -> None:
        self.store = store
        self.clock = VirtualClock(T0)
        self.gateways: dict[str, FakeGateway] = {}
        self.views: dict[str, Cuttable] = {}
        self.daemons: dict[str, Daemon] = {}
        self.dead: set[str] = set()
        self.peak_total = 0
        for name in names:
            gw = FakeGateway(self.clock, {}, capacity=4,
                             default=Behaviour("confirm", after=1.0))
            view = Cuttable(store)
            d = Daemon(sim_config(store, tmp / name, node=name), view,
                       clock=self.clock, gateway=gw, safety_interval=1.0,
                       durations=_durations, handle_signals=False)
            d.start()
            self.gateways[name], self.views[name], self.daemons[name] = gw, view, d

    def step(self) -> None:
        for name, d in self.daemons.items():
            if name in self.dead:
                continue
            for gw in self.gateways.values():
                gw.horizon = self.clock.now + STEP
            d.step()
            self.check()

    def check(self) -> None:
        """Every instant: nobody in two calls, the limit held, every live call has an attempt."""
        live = Counter(c.number for name, gw in self.gateways.items() if name not in self.dead
                       for c in gw.calls.values())  # a dead node's calls died with it
        twice = [n for n, k in live.items() if k > 1]
        assert not twice, f"in two calls at once at +{self.clock.now - T0:.1f} s: {twice}"
        total = sum(live.values())
        self.peak_total = max(self.peak_total, total)
        open_ids = {a.id for a in self.store.attempts.values() if a.ended_at is None}
        for name, gw in self.gateways.items():
            if name in self.dead:
                continue
            for cid in gw.calls:
                assert cid in open_ids or self.views[name].cut or name in self.dead, \
                    f"{name} carries {cid}, whose attempt is closed"

    def run(self, seconds: float, until: Any = None) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.step()
            if until is not None and until():
                return
        if until is not None:
            raise AssertionError(f"not done after {seconds:g} s of virtual time")


def campaign(store: MemoryStore, n: int, **settings: Any) -> int:
    return launch(store, "Alarm", [str(100 + i) for i in range(n)], now=T0,
                  attempts=settings.pop("attempts", 3), retry_delay=0.0, **settings)


def finished(store: MemoryStore, cid: int) -> bool:
    return store.campaign_detail(cid)["state"] in ("completed", "incomplete")


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    s.set_settings(actor="tester", now=T0, max_calls=6)
    return s


def test_a_dead_nodes_calls_are_settled_node_lost_and_the_campaign_completes(
        store: MemoryStore, tmp_path: Path) -> None:
    cid = campaign(store, 30)
    c = Cluster(store, tmp_path, ["n1", "n2", "n3"])
    c.run(3.0)
    carried = [a.id for a in store.attempts.values() if a.ended_at is None and a.node == "n1"]
    assert carried, "n1 should carry calls when it dies"
    died = c.clock.now
    c.dead.add("n1")  # kill -9 of the node and its workers: it never steps again
    c.run(40.0, until=lambda: all(store.attempts[a].ended_at is not None for a in carried))
    settled = [store.attempts[a] for a in carried]
    assert {a.outcome for a in settled} == {"node_lost"}
    took = max(a.ended_at for a in settled if a.ended_at is not None) - died
    # the lease, its margin, and the one second between two passes: within 30 s
    assert LEASE + settle_margin(LEASE) - 3.0 <= took <= LEASE + settle_margin(LEASE) + 1.5
    assert took <= 30
    c.run(600.0, until=lambda: finished(store, cid))
    assert store.campaign_detail(cid)["state"] == "completed"
    assert c.peak_total <= 6
    assert all(gw.dialled for gw in c.gateways.values())  # each node placed calls
    per = Counter(a.recipient_id for a in store.attempts.values())
    counted = Counter(a.recipient_id for a in store.attempts.values()
                      if a.outcome not in ("interrupted", "trunk_down"))
    assert max(counted.values()) <= 3 and max(per.values()) <= 3 + 3
    dialled = sum(sum(gw.dialled.values()) for gw in c.gateways.values())
    assert dialled == len(store.attempts)  # every call placed has its attempt
    nodes = {n["name"]: n["state"] for n in store.nodes()}
    assert nodes == {"n1": "lost", "n2": "live", "n3": "live"}


def test_a_node_without_its_database_stops_its_calls_before_anyone_settles_them(
        store: MemoryStore, tmp_path: Path) -> None:
    cid = campaign(store, 24, attempts=3, audio_seconds=30.0)  # calls outlast the lease
    c = Cluster(store, tmp_path, ["n1", "n2"])
    c.run(2.0)
    mine = [a.id for a in store.attempts.values() if a.ended_at is None and a.node == "n1"]
    assert mine
    lease = store.node_lease("n1")
    assert lease is not None
    c.views["n1"].cut = True
    cut_at = c.clock.now
    fence_by = lease.lease_until + 0.5  # at the latest: renewed at most 3 s before the cut
    c.run(LEASE, until=lambda: not c.gateways["n1"].calls)
    assert c.clock.now <= fence_by
    assert c.clock.now <= lease.lease_until - fence_margin(LEASE) + STEP * 4
    assert c.gateways["n1"].fenced > 0
    fenced_at = c.clock.now
    # nobody settles n1's calls (nor calls those recipients) before its lease and margin
    c.run(lease.lease_until + settle_margin(LEASE) - c.clock.now - 0.2)
    assert all(store.attempts[a].ended_at is None for a in mine)
    c.run(3.0, until=lambda: all(store.attempts[a].ended_at is not None for a in mine))
    assert {store.attempts[a].outcome for a in mine} == {"node_lost"}
    assert min(store.attempts[a].ended_at or 0 for a in mine) >= fenced_at
    d1 = c.daemons["n1"]
    assert d1.membership.fenced and d1.membership.generation is None
    # the database comes back: n1 rejoins with a new generation and dials again
    c.views["n1"].cut = False
    c.run(5.0, until=lambda: d1.membership.generation is not None)
    assert d1.membership.generation == 2
    assert not d1._backlog
    c.run(600.0, until=lambda: finished(store, cid))
    assert store.campaign_detail(cid)["state"] == "completed"
    assert any(a.node == "n1" and a.lease == 2 for a in store.attempts.values())
    assert c.peak_total <= 6
    assert cut_at < fenced_at
    dialled = sum(sum(gw.dialled.values()) for gw in c.gateways.values())
    assert dialled == len(store.attempts)
