"""The node membership of ``MemoryStore`` (``dialer.storage.nodes`` without the database): the
same decisions, by ``dialer.core.cluster``."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dialer.core import cluster
from dialer.core.cluster import LeaseTerms, NodeLease, NodeLoad, NodeState
from dialer.core.domain import Outcome
from dialer.core.errors import LeaseLost, NodeConflict
from dialer.core.records import EndReport

if TYPE_CHECKING:
    from dialer.testing.memory_rows import _Attempt


class MemoryNodes:
    """``join``, ``renew``, ``leave``, ``node_lease``, ``nodes``; ``_fence_and_settle`` for the
    scheduling pass of ``MemoryStore``."""

    _lock: threading.RLock
    attempts: dict[str, _Attempt]
    node_rows: dict[str, NodeLease]
    node_loads: dict[str, NodeLoad]  # each node's pool at its last renewal

    if TYPE_CHECKING:
        def finish_attempt(self, report: EndReport) -> Outcome | None: ...

        def _event(self, kind: str, /, *, at: float, campaign_id: int | None = None,
                   recipient_id: int | None = None, attempt_id: str | None = None,
                   actor: str | None = None, **detail: Any) -> None: ...

    def join(self, *, node: str, host: str, address: str, pid: int, now: float,
             terms: LeaseTerms, pid_alive: Callable[[int], bool]) -> NodeLease:
        with self._lock:
            existing = self.node_rows.get(node)
            verdict = cluster.join(existing, name=node, host=host, pid=pid, now=now,
                                   pid_alive=existing is not None and existing.host == host
                                   and pid_alive(existing.pid))
            if verdict.generation is None:
                raise NodeConflict(verdict.refused or f"node {node!r} is running")
            lease = NodeLease(name=node, host=host, address=address, pid=pid,
                              generation=verdict.generation, state=NodeState.LIVE,
                              started_at=now, heartbeat_at=now, lease_until=now + terms.lease,
                              lease_seconds=terms.lease)
            self.node_rows[node] = lease
            self._event("node_joined", at=now, node=node, host=host, address=address, pid=pid,
                        generation=lease.generation, took_over=verdict.took_over)
            return lease

    def renew(self, *, node: str, generation: int, now: float, terms: LeaseTerms,
              load: NodeLoad | None = None) -> float | None:
        with self._lock:
            row = self.node_rows.get(node)
            if row is None or row.generation != generation or not row.valid(now):
                return None
            self.node_rows[node] = dataclasses.replace(
                row, heartbeat_at=now, lease_until=now + terms.lease, lease_seconds=terms.lease)
            if load is not None:
                self.node_loads[node] = load
            return now + terms.lease

    def leave(self, *, node: str, generation: int, now: float) -> None:
        with self._lock:
            row = self.node_rows.get(node)
            if row is not None and row.generation == generation and row.state is NodeState.LIVE:
                self.node_rows[node] = dataclasses.replace(row, state=NodeState.STOPPED,
                                                           lease_until=now, heartbeat_at=now)
                self._event("node_left", at=now, node=node, generation=generation)

    def node_lease(self, node: str) -> NodeLease | None:
        with self._lock:
            return self.node_rows.get(node)

    def nodes(self) -> list[dict[str, Any]]:
        with self._lock:
            calls: dict[str, int] = {}
            for a in self.attempts.values():
                if a.ended_at is None:
                    calls[a.node] = calls.get(a.node, 0) + 1
            loads = self.node_loads
            return [{**dataclasses.asdict(n), "state": n.state.value, "calls": calls.get(name, 0),
                     "slots": loads[name].slots if name in loads else None,
                     "late": loads[name].late if name in loads else 0}
                    for name, n in sorted(self.node_rows.items())]

    def _within_share(self, node: str, lease: int | None, now: float, limit: int | None,
                      capacity: int | None) -> int | None:
        live = sum(1 for n in self.node_rows.values() if n.valid(now))
        if lease is None or live <= 1 or limit is None:
            return capacity
        mine = sum(1 for a in self.attempts.values() if a.ended_at is None and a.node == node)
        return cluster.capacity_within_share(capacity, limit=limit, live_nodes=live, mine=mine)

    def _fence_and_settle(self, node: str, lease: int | None, now: float
                          ) -> list[tuple[str, int]]:
        """The start of a scheduling pass: this node's fencing check, then the lost nodes."""
        if lease is not None and not cluster.holds(self.node_rows.get(node), lease, now):
            raise LeaseLost(f"node {node} no longer holds lease {lease}")
        out: list[tuple[str, int]] = []
        for lost in cluster.lost(list(self.node_rows.values()), now):
            self.node_rows[lost.name] = dataclasses.replace(lost, state=NodeState.LOST)
            ids = [a.id for a in sorted(self.attempts.values(), key=lambda a: a.seq)
                   if a.ended_at is None and a.node == lost.name]
            why = (f"node {lost.name} lost its lease (last heartbeat "
                   f"{now - lost.heartbeat_at:.0f} s ago)")
            for aid in ids:
                self.finish_attempt(EndReport(attempt_id=aid, outcome=Outcome.NODE_LOST, at=now,
                                              reason=why))
            self._event("node_lost", at=now, node=lost.name, generation=lost.generation,
                        heartbeat_at=lost.heartbeat_at, attempts=len(ids))
            out.append((lost.name, len(ids)))
        return out
