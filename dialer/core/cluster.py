"""Several ``dialer serve`` nodes on one database: membership, leases and fencing, decided from
values (the storage adapter reads and writes the ``nodes`` rows; the daemon acts).

A node *joins* under its name and gets a new *generation*, its fencing token. It holds a
*lease* until ``lease_until`` and renews it every ``heartbeat`` seconds. Three instants follow
from a lease, in this order, so that a call is never carried by two nodes:

* ``fence_at`` (``lease_until`` less a fifth of the lease): the node hangs up its calls and
  places none, if it has not renewed by then (its SIP workers do this on their own clock as
  well, so a node whose daemon hangs or lost the database still stops its calls in time);
* ``lease_until``: the lease ends; a claim of the node is refused from then on;
* ``settle_at`` (``lease_until`` plus a third of the lease): another node may declare it lost
  and settle its open attempts as ``node_lost``.

The margins cover the clocks of the nodes disagreeing (keep them in NTP sync) and the time a
hang-up takes to leave. Times are seconds since the epoch, as everywhere in the core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any


class NodeState(str, Enum):
    LIVE = "live"
    STOPPED = "stopped"  # left on purpose (dialer serve stopped); its calls were settled by it
    LOST = "lost"  # its lease ran out; another node settled its calls


def fence_margin(lease: float) -> float:
    """How long before its lease ends a node that could not renew stops its calls."""
    return lease / 5


def settle_margin(lease: float) -> float:
    """How long after a node's lease ended another node waits before settling its calls."""
    return lease / 3


@dataclass(frozen=True, kw_only=True)
class LeaseTerms:
    """How long a lease lasts and how often it is renewed (``[cluster]`` in the config)."""

    lease: float = 15.0
    heartbeat: float = 3.0

    def check(self) -> str | None:
        """What is wrong with these terms, or None."""
        if self.heartbeat <= 0 or self.lease <= 0:
            return "lease and heartbeat must be positive"
        if self.heartbeat * 3 > self.lease:
            return (f"heartbeat ({self.heartbeat:g} s) must be at most a third of the lease "
                    f"({self.lease:g} s): a lease must outlive two missed renewals")
        return None


@dataclass(frozen=True, kw_only=True)
class NodeLease:
    """A ``nodes`` row as the core sees it."""

    name: str
    host: str
    address: str
    pid: int
    generation: int
    state: NodeState
    started_at: float
    heartbeat_at: float
    lease_until: float
    lease_seconds: float

    @property
    def fence_at(self) -> float:
        return self.lease_until - fence_margin(self.lease_seconds)

    @property
    def settle_at(self) -> float:
        return self.lease_until + settle_margin(self.lease_seconds)

    def valid(self, now: float) -> bool:
        return self.state is NodeState.LIVE and now < self.lease_until


@dataclass(frozen=True)
class Join:
    """The verdict on a node joining: the generation it gets, or why it may not."""

    generation: int | None
    refused: str | None = None
    took_over: bool = False  # the name's previous run died on this host (its lease still ran)


def join(existing: NodeLease | None, *, name: str, host: str, pid: int, now: float,
         pid_alive: bool) -> Join:
    """May a node called ``name`` on ``host`` (process ``pid``) join now?

    Refused while another live node of that name holds a valid lease, unless it is a previous
    run on this same host whose process is gone (a restart after a crash: the new run takes the
    name over at once rather than waiting out the lease, and adopts its SIP workers).
    ``pid_alive``: whether ``existing.pid`` runs on this host (only asked when the host is ours).
    """
    if existing is None:
        return Join(generation=1)
    generation = existing.generation + 1
    if not existing.valid(now):
        return Join(generation=generation)
    if existing.host == host and (existing.pid == pid or not pid_alive):
        return Join(generation=generation, took_over=True)
    age = now - existing.heartbeat_at
    where = f"pid {existing.pid} on {existing.host}" + (
        f" ({existing.address})" if existing.address else "")
    return Join(generation=None, refused=(
        f"node {name!r} is already running ({where}, heartbeat {age:.0f} s ago, lease for "
        f"{existing.lease_until - now:.0f} s more): give this node another name (node = ...)"))


def lost(nodes: list[NodeLease], now: float) -> list[NodeLease]:
    """The live nodes whose lease ended more than its settle margin ago: to be declared lost."""
    return sorted((n for n in nodes if n.state is NodeState.LIVE and now >= n.settle_at),
                  key=lambda n: n.name)


def holds(row: NodeLease | None, generation: int | None, now: float) -> bool:
    """Whether the node that joined as ``generation`` still holds a valid lease: the fencing
    check of every claim."""
    return (row is not None and generation is not None and row.generation == generation
            and row.valid(now))


def share(limit: int, live_nodes: int) -> int:
    """A node's share of a global limit among the live nodes (rounded up: the shares may add up
    to a little more than the limit, which the limit itself still bounds)."""
    return -(-limit // max(1, live_nodes))


def capacity_within_share(capacity: int | None, *, limit: int | None, live_nodes: int,
                          mine: int) -> int | None:
    """What this node may place in one pass: its own ``capacity`` (free call slots), and, when
    several nodes share a global limit, no more than its share less the ``mine`` calls it has in
    progress. Without it the node whose calls end first would take every freed place (each call
    end reruns its pass at once) and the others would starve."""
    if limit is None or live_nodes <= 1:
        return capacity
    room = max(0, share(limit, live_nodes) - mine)
    return room if capacity is None else min(capacity, room)


@dataclass(frozen=True)
class NodeLoad:
    """What a node's SIP worker pool can carry now, reported at each lease renewal."""

    slots: int  # call slots of the ready workers that take new calls (not running late)
    late: int = 0  # workers whose event loop runs late: they take no new calls meanwhile
    lag: float = 0.0  # the latest loop of any worker (s); for the metrics, not stored
    wait: float = 0.0  # the largest share of a second a worker's thread waited for a CPU
    held: int | None = None  # the overload hold's ceiling (dialer.core.admission); for metrics


def load_lines(nodes: Sequence[Mapping[str, Any]], *, waiting: bool) -> list[str]:
    """Why calls wait on the live nodes, as ``campaign watch`` and ``campaign show`` say it: a
    node with workers running late (the machine is short of CPU), and, when recipients are
    ``waiting`` to be called, a node whose every call slot is in use."""
    out: list[str] = []
    for n in nodes:
        if n.get("state") != NodeState.LIVE.value:
            continue
        name, slots = n.get("name"), n.get("slots")
        late, calls = int(n.get("late") or 0), int(n.get("calls") or 0)
        if late:
            out.append(f"node {name}: {late} SIP worker{'s' if late > 1 else ''} running late "
                       "(the machine is short of CPU): no new calls there until they catch up")
        if waiting and isinstance(slots, int) and calls >= slots:
            out.append(f"node {name} is full: {calls} calls in progress, {slots} call slots "
                       "([sip] workers x calls_per_worker, less those running late, within the "
                       "overload hold): new calls wait for a free one" if slots else
                       f"node {name} has no SIP worker taking calls: new calls wait")
    return out
