"""The cluster's membership in the database: nodes join, renew their lease and leave; a node
whose lease ran out is declared lost, and its open attempts settled, by whichever node's
scheduling pass comes first. The decisions are ``dialer.core.cluster``'s.

Each renewal is its own short transaction (one UPDATE guarded by the generation, the state and
the lease still running), so that a renewal never waits on a scheduling pass. Declaring a node
lost is an UPDATE guarded the same way: of a renewal and a declaration that race, PostgreSQL
applies one and the other's guard then fails, so a node is never both renewed and lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dialer.core import cluster
from dialer.core.cluster import LeaseTerms, NodeLease, NodeLoad, NodeState
from dialer.core.domain import CampaignState, Outcome
from dialer.core.errors import NodeConflict
from dialer.storage.attempts import Attempts
from dialer.storage.fastpath import FastPath
from dialer.storage.models import AttemptRow, CampaignRow, NodeRow
from dialer.storage.records import EndReport, _as_utc, to_dt

logger = logging.getLogger("dialer.storage.store")


_NODES = cast(Table, NodeRow.__table__)
_COLUMNS = ("name", "host", "address", "pid", "generation", "state", "started_at",
            "heartbeat_at", "lease_until", "lease_seconds")
# every scheduling pass reads the (few) node rows: the fencing check and the lost nodes
_Q_NODES = select(*[_NODES.c[c] for c in _COLUMNS])


def _lease_of(row: Any) -> NodeLease:
    return _lease_of_tuple(tuple(getattr(row, c) for c in _COLUMNS))


def _lease_of_tuple(r: tuple[Any, ...]) -> NodeLease:
    return NodeLease(name=r[0], host=r[1], address=r[2], pid=r[3], generation=r[4],
                     state=NodeState(r[5]), started_at=_as_utc(r[6]).timestamp(),
                     heartbeat_at=_as_utc(r[7]).timestamp(),
                     lease_until=_as_utc(r[8]).timestamp(), lease_seconds=float(r[9]))


class Nodes(Attempts, FastPath):
    """``join``, ``renew``, ``leave``, ``nodes``; ``_settle_lost`` for the scheduling pass."""

    def join(self, *, node: str, host: str, address: str, pid: int, now: float,
             terms: LeaseTerms, pid_alive: Callable[[int], bool]) -> NodeLease:
        """Join the cluster as ``node``: a new generation and a lease until now + lease.
        Raises ``NodeConflict`` (one line) while another live node holds that name."""
        for _ in range(2):  # a second pass only when another process inserted the name first
            try:
                with self.session() as s:
                    row = s.get(NodeRow, node, with_for_update=not self.sqlite)
                    existing = _lease_of(row) if row is not None else None
                    verdict = cluster.join(
                        existing, name=node, host=host, pid=pid, now=now,
                        pid_alive=existing is not None and existing.host == host
                        and pid_alive(existing.pid))
                    if verdict.generation is None:
                        raise NodeConflict(verdict.refused or f"node {node!r} is running")
                    values = {"host": host, "address": address, "pid": pid,
                              "generation": verdict.generation, "state": NodeState.LIVE.value,
                              "started_at": to_dt(now), "heartbeat_at": to_dt(now),
                              "lease_until": to_dt(now + terms.lease),
                              "lease_seconds": terms.lease}
                    if row is None:
                        s.add(NodeRow(name=node, **values))
                    else:
                        for key, value in values.items():
                            setattr(row, key, value)
                    self._event(s, "node_joined", at=now, node=node, host=host,
                                address=address, pid=pid, generation=verdict.generation,
                                took_over=verdict.took_over)
                if verdict.took_over:
                    logger.warning("node %s: took the name over from its previous run (pid %d, "
                                   "gone), whose lease still ran", node,
                                   existing.pid if existing else 0)
                return NodeLease(name=node, host=host, address=address, pid=pid,
                                 generation=verdict.generation, state=NodeState.LIVE,
                                 started_at=now, heartbeat_at=now,
                                 lease_until=now + terms.lease, lease_seconds=terms.lease)
            except IntegrityError:
                continue
        raise NodeConflict(f"node {node!r} is being started by another process")

    def renew(self, *, node: str, generation: int, now: float, terms: LeaseTerms,
              load: NodeLoad | None = None) -> float | None:
        """Extend this node's lease to now + lease (and record its pool's ``load``); the new
        end, or None when the lease is no longer this node's (it ran out, or another node
        declared it lost): join again."""
        t = _NODES
        pool = {} if load is None else {"slots": load.slots, "late": load.late}
        with self.session() as s:
            got = s.execute(
                update(t).where(t.c.name == node, t.c.generation == generation,
                                t.c.state == NodeState.LIVE.value,
                                t.c.lease_until > to_dt(now))
                .values(heartbeat_at=to_dt(now), lease_until=to_dt(now + terms.lease),
                        lease_seconds=terms.lease, **pool)
                .returning(t.c.lease_until)).first()
        return now + terms.lease if got is not None else None

    def leave(self, *, node: str, generation: int, now: float) -> None:
        """A clean stop: the lease ends now (this node settled its own calls)."""
        t = _NODES
        with self.session() as s:
            done = s.execute(update(t).where(t.c.name == node, t.c.generation == generation,
                                             t.c.state == NodeState.LIVE.value)
                             .values(state=NodeState.STOPPED.value, lease_until=to_dt(now),
                                     heartbeat_at=to_dt(now)).returning(t.c.name)).first()
            if done is not None:
                self._event(s, "node_left", at=now, node=node, generation=generation)

    def node_lease(self, node: str) -> NodeLease | None:
        with self.session() as s:
            row = s.get(NodeRow, node)
            return _lease_of(row) if row is not None else None

    def nodes(self) -> list[dict[str, Any]]:
        """Every node with its calls in progress (open attempts), for ``dialer nodes``."""
        with self.session() as s:
            calls = dict(s.execute(select(AttemptRow.node, func.count())
                                   .where(AttemptRow.ended_at.is_(None))
                                   .group_by(AttemptRow.node)).all())
            out = []
            for row in s.scalars(select(NodeRow).order_by(NodeRow.name)):
                lease = _lease_of(row)
                out.append({"name": lease.name, "host": lease.host, "address": lease.address,
                            "pid": lease.pid, "generation": lease.generation,
                            "state": lease.state.value, "started_at": lease.started_at,
                            "heartbeat_at": lease.heartbeat_at,
                            "lease_until": lease.lease_until,
                            "lease_seconds": lease.lease_seconds,
                            "calls": int(calls.get(lease.name, 0)),
                            "slots": row.slots, "late": row.late or 0})
            return out

    # ----- within a scheduling pass -----

    def _stopped_calls(self, s: Session, node: str) -> list[str]:
        """The calls in progress of ``node`` whose campaign was stopped since they were placed
        (the daemon hangs them up: ``campaign stop`` is final). The open attempts' index."""
        return list(s.scalars(
            select(AttemptRow.id).join(CampaignRow, CampaignRow.id == AttemptRow.campaign_id)
            .where(AttemptRow.ended_at.is_(None), AttemptRow.node == node,
                   CampaignRow.state == CampaignState.TERMINATED.value)
            .order_by(AttemptRow.id)))

    def _node_rows(self, s: Session) -> list[NodeLease]:
        return [_lease_of_tuple(r) for r in self._rows(s, _Q_NODES)]

    def _settle_lost(self, s: Session, nodes: list[NodeLease], now: float
                     ) -> list[tuple[str, int]]:
        """Declare lost the live nodes whose lease ended more than its margin ago, and settle
        their open attempts as ``node_lost`` (counted), in the transaction ``s``."""
        out: list[tuple[str, int]] = []
        t = _NODES
        for lost in cluster.lost(nodes, now):
            if not s.execute(update(t).where(t.c.name == lost.name,
                                             t.c.generation == lost.generation,
                                             t.c.state == NodeState.LIVE.value,
                                             t.c.lease_until <= to_dt(
                                                 now - cluster.settle_margin(lost.lease_seconds)))
                             .values(state=NodeState.LOST.value)
                             .returning(t.c.name)).first():
                continue  # renewed meanwhile, or declared lost by another node
            ids = list(s.scalars(select(AttemptRow.id).where(AttemptRow.ended_at.is_(None),
                                                             AttemptRow.node == lost.name)))
            why = (f"node {lost.name} lost its lease (last heartbeat "
                   f"{now - lost.heartbeat_at:.0f} s ago)")
            for aid in ids:
                self._finish_in(s, EndReport(attempt_id=aid, outcome=Outcome.NODE_LOST, at=now,
                                             reason=why))
            self._event(s, "node_lost", at=now, node=lost.name, generation=lost.generation,
                        heartbeat_at=lost.heartbeat_at, attempts=len(ids))
            logger.warning("%s: %d open call(s) settled as node_lost", why, len(ids))
            out.append((lost.name, len(ids)))
        if out:
            s.flush()
        return out
