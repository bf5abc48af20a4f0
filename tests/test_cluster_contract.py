"""The cluster part of the ``DispatchPort`` contract (dialer.core.cluster, dialer.storage.nodes):
join, renew, leave, the fencing check of a scheduling pass and the settlement of a lost node's
calls, on the in-memory fake, SQLite and PostgreSQL alike (the ``store`` fixture of the store
contract)."""

from __future__ import annotations

import pytest

from dialer.core.cluster import LeaseTerms, NodeLoad, settle_margin
from dialer.core.domain import Outcome
from dialer.core.errors import LeaseLost, NodeConflict
from dialer.testing.setup import ContractStore
from tests.fixtures_core import pg_database  # noqa: F401 - pytest fixture
from tests.test_store_contract import NODE, NOW, OTHER, camp, confirm, end, recs, store, tick

__all__ = ["store"]  # the fixture

TERMS = LeaseTerms(lease=15.0, heartbeat=3.0)


def join(s: ContractStore, node: str = NODE, at: float = NOW, host: str = "h1", pid: int = 100,
         alive: bool = True) -> int:
    return s.join(node=node, host=host, address="127.0.0.1", pid=pid, now=at, terms=TERMS,
                  pid_alive=lambda _pid: alive).generation


def test_join_renew_leave_and_the_generation_grows(store: ContractStore) -> None:
    g1 = join(store)
    assert g1 == 1
    assert store.renew(node=NODE, generation=g1, now=NOW + 3, terms=TERMS) == NOW + 18
    lease = store.node_lease(NODE)
    assert lease is not None and lease.valid(NOW + 17) and not lease.valid(NOW + 18)
    store.leave(node=NODE, generation=g1, now=NOW + 4)
    assert store.renew(node=NODE, generation=g1, now=NOW + 5, terms=TERMS) is None
    assert join(store, at=NOW + 6) == 2
    rows = {n["name"]: n for n in store.nodes()}
    assert (rows[NODE]["state"], rows[NODE]["generation"]) == ("live", 2)


def test_a_renewal_records_the_pools_load_for_the_cli(store: ContractStore) -> None:
    g1 = join(store)
    assert store.nodes()[0]["slots"] is None and store.nodes()[0]["late"] == 0  # not reported
    store.renew(node=NODE, generation=g1, now=NOW + 3, terms=TERMS,
                load=NodeLoad(slots=496, late=2))
    [row] = store.nodes()
    assert (row["slots"], row["late"]) == (496, 2)
    store.renew(node=NODE, generation=g1, now=NOW + 6, terms=TERMS)  # no load: kept
    store.renew(node=NODE, generation=g1, now=NOW + 9, terms=TERMS, load=NodeLoad(slots=500))
    [row] = store.nodes()
    assert (row["slots"], row["late"]) == (500, 0)


def test_a_renewal_with_an_old_generation_or_after_the_lease_ended_fails(
        store: ContractStore) -> None:
    g1 = join(store)
    assert store.renew(node=NODE, generation=g1 + 1, now=NOW + 3, terms=TERMS) is None
    assert store.renew(node=NODE, generation=g1, now=NOW + 15, terms=TERMS) is None  # ended
    assert join(store, at=NOW + 16) == g1 + 1  # ours again, with a new fencing token


def test_a_second_live_node_of_the_same_name_is_refused(store: ContractStore) -> None:
    join(store, host="h1", pid=100)
    with pytest.raises(NodeConflict, match="already running"):
        join(store, at=NOW + 1, host="h2", pid=200)
    with pytest.raises(NodeConflict, match="already running"):  # same host, that pid alive
        join(store, at=NOW + 1, host="h1", pid=300, alive=True)
    # a previous run on this host whose process is gone: taken over at once
    assert join(store, at=NOW + 2, host="h1", pid=300, alive=False) == 2
    # and once a lease has ended, anyone may take the name
    assert join(store, at=NOW + 18, host="h2", pid=200) == 3


def test_a_pass_without_a_valid_lease_decides_nothing(store: ContractStore) -> None:
    cid = camp(store, ["101", "102"])
    g = join(store)
    with pytest.raises(LeaseLost):
        tick(store, lease=g + 1)  # a stale token
    with pytest.raises(LeaseLost):
        tick(store, at=NOW + 15, lease=g)  # the lease ended
    assert store.campaign_detail(cid)["state"] == "scheduled"
    assert store.running_counts().total == 0
    calls = tick(store, at=NOW + 1, lease=g, capacity=1).calls
    assert len(calls) == 1
    (a,) = [x for x in store.attempts_of(cid) if x["id"] == calls[0].attempt_id]
    assert (a["node"], a["lease"]) == (NODE, g)  # the claim carries its fencing token


def test_a_lost_nodes_calls_are_settled_node_lost_after_its_margin_only(
        store: ContractStore) -> None:
    cid = camp(store, ["101", "102", "103"], attempts=2, retry_delay=0.0)
    ga = join(store, NODE)
    gb = join(store, OTHER, host="h2")
    a1, a2 = tick(store, lease=ga, capacity=2).calls
    confirm(store, a2, NOW + 1, "answer", "listen")  # heard: contacted whatever comes next
    # node A dies: B renews, A does not
    last = NOW
    for t in range(3, 40, 3):
        assert store.renew(node=OTHER, generation=gb, now=NOW + t, terms=TERMS) is not None
        last = NOW + t
    settle_at = NOW + TERMS.lease + settle_margin(TERMS.lease)
    before = tick(store, at=settle_at - 0.5, node=OTHER, lease=gb, capacity=0)
    assert before.settled == [] and len(store.open_attempts(NODE)) == 2  # not yet
    after = tick(store, at=settle_at, node=OTHER, lease=gb, capacity=0)
    assert after.settled == [(NODE, 2)]
    assert store.open_attempts(NODE) == []
    out = {a["number"]: a["outcome"] for a in store.attempts_of(cid)}
    assert out == {"101": "node_lost", "102": "contacted"}
    r = recs(store, cid)
    assert (r["101"]["state"], r["101"]["attempts"]) == ("idle", 1)  # counted, retried
    assert r["102"]["state"] == "contacted"
    # the lost node's late reports change nothing; its lease is gone
    assert end(store, a1, Outcome.BUSY, settle_at + 1) is None
    assert store.renew(node=NODE, generation=ga, now=settle_at + 1, terms=TERMS) is None
    with pytest.raises(LeaseLost):
        tick(store, at=settle_at + 1, lease=ga)
    assert {n["name"]: n["state"] for n in store.nodes()} == {NODE: "lost", OTHER: "live"}
    # B goes on with the recipient A left
    numbers = {c.number for c in tick(store, at=last + 0.5, node=OTHER, lease=gb).calls}
    assert numbers == {"101", "103"}
    # A comes back: a new generation, nothing of the old one
    assert join(store, at=settle_at + 2) == ga + 1
    assert tick(store, at=settle_at + 2, node=OTHER, lease=gb).settled == []


def test_a_stopped_node_is_never_settled_by_another(store: ContractStore) -> None:
    camp(store, ["101"])
    ga = join(store, NODE)
    gb = join(store, OTHER, host="h2")
    tick(store, lease=ga)
    store.recover(node=NODE, now=NOW + 1)
    store.leave(node=NODE, generation=ga, now=NOW + 1)
    gb = join(store, OTHER, at=NOW + 60, host="h2")  # B's own lease ran out meanwhile
    t = tick(store, at=NOW + 60, node=OTHER, lease=gb)
    assert t.settled == []
    assert {n["name"]: n["state"] for n in store.nodes()}[NODE] == "stopped"


def test_each_live_node_takes_its_share_of_the_global_limit(store: ContractStore) -> None:
    store.set_settings(actor="tester", now=NOW, max_calls=4)
    camp(store, [str(101 + i) for i in range(10)])
    ga = join(store, NODE)
    assert len(tick(store, lease=ga, capacity=16).calls) == 4  # alone: the whole limit
    gb = join(store, OTHER, host="h2")
    assert tick(store, node=OTHER, lease=gb, capacity=16).calls == []  # the limit is full
    first = store.open_attempts(NODE)
    for aid in first[:3]:
        end(store, aid, Outcome.BUSY, NOW + 1)
    # A had 4, now 1: its share of 4 among two live nodes is 2, so 1 more; B takes the rest
    assert len(tick(store, at=NOW + 2, lease=ga, capacity=16).calls) == 1
    assert len(tick(store, at=NOW + 2, node=OTHER, lease=gb, capacity=16).calls) == 2
    assert store.running_counts().total == 4
