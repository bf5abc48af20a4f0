"""This node's membership of the cluster, as the daemon keeps it: join at start, renew the lease
every heartbeat, fence itself when the lease is not renewed in time or is lost, join again when
the database answers. The rules and instants are ``dialer.core.cluster``'s.

Fencing happens twice, on purpose. The daemon tells its SIP workers, at every renewal, how long
the lease still covers them (``Gateway.lease``); each worker hangs its calls up on its own clock
when that time passes, so a daemon that hangs, or waits on a database that does not answer,
still has its calls stopped before another node may settle them. The daemon fences too (at the
same instant, or at once when the lease turns out lost) and places no call until it holds a
lease again.

Only a store that several nodes may share (PostgreSQL) has workers fenced: on SQLite, one node
only, nobody else settles a call, and the calls outlive a stopped daemon for
``[sip] orphan_timeout`` as before.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from dialer.core.cluster import LeaseTerms, NodeLease, fence_margin
from dialer.core.errors import NodeConflict, StoreUnavailable
from dialer.core.ports import DispatchPort
from dialer.gateway import Gateway
from dialer.metrics import Metrics

logger = logging.getLogger("dialer.daemon")

RETRY_S = 1.0  # while the database does not answer, or the lease is lost: try again this often


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Membership:
    """The lease of one node. ``generation`` is what a scheduling pass is fenced with (None:
    no lease held, no pass may claim); ``beat`` runs at every turn of the daemon's loop."""

    def __init__(self, store: DispatchPort, *, node: str, address: str, lease: float,
                 heartbeat: float, gateway: Gateway, metrics: Metrics,
                 clock: Callable[[], float], fence_workers: bool) -> None:
        self.store = store
        self.node = node
        self.address = address
        self.lease_s = lease
        self.heartbeat = heartbeat
        self.terms = LeaseTerms(lease=lease, heartbeat=heartbeat)
        self.gateway = gateway
        self.metrics = metrics
        self.clock = clock
        self.fence_workers = fence_workers
        self.lease: NodeLease | None = None
        self.until = float("-inf")  # when the lease held ends (wall clock)
        self.fenced = False
        self._next = float("inf")  # next renewal (or rejoin) attempt
        self._failing: str | None = None  # the last renewal failure, logged once

    @property
    def generation(self) -> int | None:
        return self.lease.generation if self.lease is not None and not self.fenced else None

    @property
    def fence_at(self) -> float:
        return self.until - fence_margin(self.lease_s)

    def next_in(self, now: float) -> float:
        """Seconds until ``beat`` has something to do (a renewal, a fence, a rejoin)."""
        due = self._next if self.fenced or self.lease is None else min(self._next, self.fence_at)
        return max(0.0, due - now)

    def join(self) -> NodeLease:
        """Join at start; ``NodeConflict`` (one line) when the name is taken."""
        now = self.clock()
        lease = self.store.join(node=self.node, host=socket.gethostname(), address=self.address,
                                pid=os.getpid(), now=now, terms=self.terms, pid_alive=pid_alive)
        self._held(lease, now)
        return lease

    def _held(self, lease: NodeLease, now: float) -> None:
        self.lease = lease
        self.until = lease.lease_until
        self.fenced = False
        self._next = now + self.heartbeat
        self._push(now)

    def _push(self, now: float) -> None:
        """Tell the workers how long the lease covers them; refresh the gauges."""
        valid = self.lease is not None and not self.fenced
        if self.fence_workers:
            self.gateway.lease(self.fence_at - now if valid else 0.0)
        self.metrics.set_lease(valid=valid, remaining=self.until - now,
                               generation=self.lease.generation if self.lease else None)

    def workers_changed(self) -> None:
        """A worker became ready: it must know the lease too."""
        self._push(self.clock())

    def beat(self, now: float) -> None:
        """Renew when due; fence when the lease runs out unrenewed; rejoin when lost."""
        if now >= self._next:
            try:
                if self.lease is not None and not self.fenced:
                    until = self.store.renew(node=self.node, generation=self.lease.generation,
                                             now=now, terms=self.terms,
                                             load=self.gateway.node_load())
                    if until is None:
                        self.lost("the lease is no longer this node's (it ran out, or another "
                                  "node declared it lost)")
                    else:
                        self.until = until
                        self._next = now + self.heartbeat
                        self._recovered()
                        self._push(now)
                else:
                    self._rejoin(now)
            except StoreUnavailable as exc:
                self._next = now + RETRY_S
                self.metrics.set_database_up(False)
                if self._failing is None:
                    logger.error("node %s cannot renew its lease: %s; its calls are hung up at "
                                 "%.0f s from now unless the database answers", self.node, exc,
                                 max(0.0, self.fence_at - now))
                self._failing = str(exc)
        if self.lease is not None and not self.fenced and now >= self.fence_at:
            self.fence("not_renewed",
                       f"lease not renewed for {now - (self.until - self.lease_s):.0f} s")

    def _recovered(self) -> None:
        self.metrics.set_database_up(True)
        if self._failing is not None:
            logger.warning("node %s: the database answers again", self.node)
            self._failing = None

    def _rejoin(self, now: float) -> None:
        try:
            lease = self.store.join(node=self.node, host=socket.gethostname(),
                                    address=self.address, pid=os.getpid(), now=now,
                                    terms=self.terms, pid_alive=pid_alive)
        except NodeConflict as exc:
            self._next = now + RETRY_S
            logger.error("node %s cannot rejoin: %s", self.node, exc)
            return
        self._recovered()
        logger.warning("node %s rejoined with a new lease (generation %d)", self.node,
                       lease.generation)
        self._held(lease, now)

    def lost(self, why: str) -> None:
        """The lease is not ours any more (a renewal or a scheduling pass found it so)."""
        if self.lease is not None and not self.fenced:
            self.fence("lease_lost", why)
        self._next = min(self._next, self.clock())  # rejoin at the next beat

    def fence(self, reason: str, why: str) -> None:
        """Hang up every call and place none until a lease is held again."""
        self.fenced = True
        self.metrics.node_fenced(reason)
        logger.error("node %s fenced (%s): %s; no call is placed until it holds a lease again",
                     self.node, why, f"hanging up its {self.gateway.busy_slots()} call(s)"
                     if self.fence_workers else "its calls go on (one node only)")
        now = self.clock()
        if self.fence_workers:
            self._push(now)
        else:
            self.metrics.set_lease(valid=False, remaining=self.until - now)
        self._next = min(self._next, now + RETRY_S)

    def leave(self) -> None:
        """A clean stop: give the lease back (the calls were settled by the daemon)."""
        if self.lease is None:
            return
        try:
            self.store.leave(node=self.node, generation=self.lease.generation, now=self.clock())
        except StoreUnavailable as exc:
            logger.warning("node %s could not give its lease back: %s (it ends on its own)",
                           self.node, exc)
        self.lease = None
