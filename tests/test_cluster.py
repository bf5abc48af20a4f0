"""The pure rules of membership and leases (dialer.core.cluster)."""

from __future__ import annotations

import pytest

from dialer.core import cluster
from dialer.core.cluster import LeaseTerms, NodeLease, NodeState

NOW = 1_800_000_000.0


def lease(name: str = "n1", *, host: str = "h1", pid: int = 10, generation: int = 1,
          state: NodeState = NodeState.LIVE, until: float = NOW + 10,
          seconds: float = 15.0) -> NodeLease:
    return NodeLease(name=name, host=host, address="127.0.0.1", pid=pid, generation=generation,
                     state=state, started_at=NOW - 100, heartbeat_at=until - seconds,
                     lease_until=until, lease_seconds=seconds)


def test_the_three_instants_come_in_order_and_leave_room() -> None:
    n = lease(until=NOW + 15)
    assert n.fence_at < n.lease_until < n.settle_at
    assert n.lease_until - n.fence_at == pytest.approx(3.0)  # a fifth of 15 s
    assert n.settle_at - n.lease_until == pytest.approx(5.0)  # a third
    # a node dead just after a renewal is settled within lease + margin: 20 s < 30 s
    assert n.settle_at - n.heartbeat_at == pytest.approx(20.0)


def test_a_first_join_and_a_join_after_the_lease_ended() -> None:
    assert cluster.join(None, name="n1", host="h1", pid=1, now=NOW, pid_alive=False) \
        == cluster.Join(generation=1)
    old = lease(until=NOW - 1, generation=4, host="other")
    assert cluster.join(old, name="n1", host="h1", pid=1, now=NOW, pid_alive=True) \
        == cluster.Join(generation=5)
    stopped = lease(state=NodeState.STOPPED, generation=2)
    assert cluster.join(stopped, name="n1", host="h2", pid=1, now=NOW,
                        pid_alive=True).generation == 3


def test_a_live_namesake_is_refused_unless_it_is_our_dead_previous_run() -> None:
    live = lease(host="h1", pid=10)
    elsewhere = cluster.join(live, name="n1", host="h2", pid=20, now=NOW, pid_alive=False)
    assert elsewhere.generation is None
    assert elsewhere.refused is not None and "already running" in elsewhere.refused
    assert "pid 10 on h1" in elsewhere.refused
    running_here = cluster.join(live, name="n1", host="h1", pid=20, now=NOW, pid_alive=True)
    assert running_here.generation is None
    gone_here = cluster.join(live, name="n1", host="h1", pid=20, now=NOW, pid_alive=False)
    assert gone_here == cluster.Join(generation=2, took_over=True)
    itself = cluster.join(live, name="n1", host="h1", pid=10, now=NOW, pid_alive=True)
    assert itself == cluster.Join(generation=2, took_over=True)


def test_lost_takes_live_nodes_past_their_settle_instant_only() -> None:
    nodes = [lease("a", until=NOW - 5.0), lease("b", until=NOW - 4.9),
             lease("c", until=NOW - 100, state=NodeState.STOPPED),
             lease("d", until=NOW - 100, state=NodeState.LOST), lease("e", until=NOW + 1)]
    assert [n.name for n in cluster.lost(nodes, NOW)] == ["a"]
    # each node by its own lease length
    assert [n.name for n in cluster.lost([lease("f", until=NOW - 2.0, seconds=6.0)], NOW)] \
        == ["f"]


def test_holds_needs_the_same_generation_a_live_state_and_time_left() -> None:
    n = lease(generation=3, until=NOW + 1)
    assert cluster.holds(n, 3, NOW)
    assert not cluster.holds(n, 2, NOW)
    assert not cluster.holds(n, None, NOW)
    assert not cluster.holds(None, 3, NOW)
    assert not cluster.holds(n, 3, NOW + 1)
    assert not cluster.holds(lease(generation=3, state=NodeState.LOST), 3, NOW)


@pytest.mark.parametrize(("lease_s", "beat", "ok"), [(15, 3, True), (15, 5, True), (15, 6, False),
                                                     (0, 1, False)])
def test_terms_must_outlive_two_missed_renewals(lease_s: float, beat: float, ok: bool) -> None:
    assert (LeaseTerms(lease=lease_s, heartbeat=beat).check() is None) is ok


def test_a_node_takes_its_share_of_a_global_limit_when_others_are_live() -> None:
    assert cluster.share(12, 3) == 4 and cluster.share(10, 3) == 4 and cluster.share(5, 0) == 5
    cap = cluster.capacity_within_share
    assert cap(16, limit=12, live_nodes=3, mine=0) == 4
    assert cap(16, limit=12, live_nodes=3, mine=3) == 1
    assert cap(16, limit=12, live_nodes=3, mine=5) == 0  # over its share after a node joined
    assert cap(2, limit=12, live_nodes=3, mine=0) == 2  # its own slots bound it first
    assert cap(None, limit=12, live_nodes=2, mine=1) == 5
    assert cap(16, limit=12, live_nodes=1, mine=0) == 16  # alone: the limit alone bounds it
    assert cap(16, limit=None, live_nodes=3, mine=0) == 16  # no global limit: no share
