"""The SIP gateway port: what the daemon needs from whatever places its calls.

``Gateway`` is a small Protocol: place a call (``dial``), hang one up, and ``poll`` for what
happened (the worker events of ``dialer.ipc``: ringing, answered, played, key, confirmed, ended,
ready, reg, log, plus ``worker_lost`` when a worker process died holding calls). The daemon's
decision loop is written against it only, so it runs unchanged on:

* ``PoolGateway``: the real thing, a supervised pool of PJSUA2 worker processes (``WorkerPool``)
  multiplexed with a selector;
* ``tests/sim.py``'s ``FakeGateway``: scripted recipients on a virtual clock, driving the real
  pure dialogue, so that hours of campaigns run in seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import selectors
import time
from typing import Protocol

from dialer import ipc, pressure, sipports
from dialer.core import admission
from dialer.core.cluster import NodeLoad
from dialer.pool import Worker, WorkerPool
from dialer.workerprep import worker_events

logger = logging.getLogger("dialer.pool")

GatewayEvent = tuple[int, ipc.Event]
"""(worker index, message): what a gateway reports."""


class Gateway(Protocol):
    """Places calls and reports their progress; see the module docstring."""

    def attach(self) -> tuple[list[GatewayEvent], set[str]]:
        """Before anything is settled: find the workers a previous daemon left carrying calls.
        Returns the events they kept for us, in order, and the calls they still carry."""

    def start(self, size: int) -> None:
        """Get ready to carry calls (start ``size`` workers ahead of demand)."""

    def resize(self, size: int) -> None:
        """The limits changed: make room for about ``size`` workers."""

    def demand(self, calls: int) -> None:
        """After a pass: ``calls`` are in progress or could be placed now; have the workers
        for them ready (grow ahead, retire idle ones late: ``dialer.core.elastic``)."""

    def free_slots(self) -> int:
        """How many more calls can be placed right now."""

    def busy_slots(self) -> int:
        """Calls in progress."""

    def ready_count(self) -> int:
        """Workers ready to take calls."""

    def pool_size(self) -> int:
        """Worker processes kept now, running or starting (the elastic pool's target)."""

    def node_load(self) -> NodeLoad:
        """What the pool can carry now: slots of the workers taking calls, workers late."""

    def dial(self, message: ipc.Dial) -> int | None:
        """Place a call (``dialer.ipc`` ``dial`` fields); the worker index, None when full."""

    def hangup(self, call_id: str) -> None:
        """Hang a call up; its ``ended`` event follows."""

    def trust(self, sources: list[str]) -> None:
        """The trusted SIP sources changed (a trunk host re-resolved): tell every worker."""

    def trunk_state(self, trunk: str, up: bool, reason: str) -> None:
        """A trunk went down (or came back): calls on it that have had no answer yet end
        ``trunk_down`` (nobody rang), wherever they are."""

    def lease(self, valid_for: float) -> None:
        """This node's lease covers the next ``valid_for`` seconds (0: no longer): past them
        every worker hangs up its calls on its own clock (``interrupted``) and takes no new one
        until told again, so a node that lost its database stops its calls in time even if
        its daemon hangs (``dialer.core.cluster``)."""
        ...

    def poll(self, timeout: float) -> list[GatewayEvent]:
        """Wait at most ``timeout`` seconds for events; return those that arrived."""

    def ack(self) -> None:
        """Everything ``poll`` and ``attach`` returned so far is committed: the workers may
        forget it (until then they keep it for the next daemon, should this one die)."""

    def next_wakeup_in(self) -> float | None:
        """Seconds until the gateway needs ``poll`` called again on its own (None: never)."""

    def begin_shutdown(self) -> None:
        """Stop restarting workers and ask every call to hang up."""

    def active(self) -> bool:
        """Whether anything is still running (workers, calls) after ``begin_shutdown``."""

    def close(self, timeout: float) -> None:
        """Stop everything, forcibly after ``timeout`` seconds."""

    def detach(self) -> None:
        """Let go of the workers without stopping them: their calls go on (``hand_over``)."""


class PoolGateway:
    """The ``Gateway`` over the supervised pool of SIP worker processes."""

    def __init__(self, pool: WorkerPool,
                 overload_pressure: float = admission.PRESSURE_OVERLOAD) -> None:
        """``overload_pressure``: the machine's CPU pressure over which the node's hold steps
        down (``[sip] overload_pressure``; 0: the hold follows the workers' lateness only)."""
        self.pool = pool
        self.selector = selectors.DefaultSelector()
        self._registered: dict[int, Worker] = {}
        self._seen: dict[int, tuple[Worker, int]] = {}  # pid -> (worker, last seq returned)
        self.hold = admission.Hold()  # the node's overload hold (dialer.core.admission)
        self.overload_pressure = overload_pressure
        self.pressure = pressure.CpuPressure()

    def attach(self) -> tuple[list[GatewayEvent], set[str]]:
        events: list[GatewayEvent] = []
        live: set[str] = set()
        for w, msgs in self.pool.adopt():
            for msg in msgs:
                self.pool.on_message(w, msg)
                self._note(w, msg)
                events.append((w.index, msg))
            live |= w.calls
        # After adopting: a worker that exited meanwhile wrote its file before closing its socket.
        events.extend((-1, msg) for msg in self.pool.undelivered())
        return events, live

    def start(self, size: int) -> None:
        first = self.pool.init_for(0)
        if first.sip_port:
            # the range, but the ports this node's own workers hold (adopted, retiring)
            held = {w.sip_port for w in self.pool.all_workers()}
            ports = [first.sip_port + i for i in range(self.pool.size)]
            sipports.check_free(first.bind, [p for p in ports if p not in held],
                                first.sip_port, self.pool.size)
            logger.info("SIP workers listen on %s:%s (UDP and TCP)", first.bind,
                        sipports.port_range(first.sip_port, self.pool.size))
        self.pool.start(size)

    def resize(self, size: int) -> None:
        self.pool.resize(size)

    def demand(self, calls: int) -> None:
        # held: no workers for more than the ceiling (starting them loads the machine further)
        self.pool.scale(calls if self.hold.ceiling is None else min(calls, self.hold.ceiling))

    def free_slots(self) -> int:
        """The pool's free slots, within the node's overload hold (stepped at every pass)."""
        busy, load = self.pool.busy_slots(), self.pool.node_load()
        was = self.hold.ceiling
        cpu = self.pressure.sample() if self.overload_pressure > 0 else None
        self.hold = admission.step(self.hold, now=time.monotonic(), in_progress=busy,
                                   late=load.late, ready=self.pool.ready_count(),
                                   capacity=self.pool.wanted * self.pool.calls_per_worker,
                                   per_worker=self.pool.calls_per_worker, pressure=cpu,
                                   pressure_overload=self.overload_pressure)
        if self.hold.ceiling != was:
            if self.hold.ceiling is None:
                logger.warning("the workers keep up again: the overload hold is lifted")
            elif was is None or self.hold.ceiling < was:
                logger.warning("overloaded: %d of %d workers run late (CPU wait %.2f), CPU "
                               "pressure %s; this node now carries at most %d calls at once (%d "
                               "in progress)", load.late, self.pool.ready_count(), load.wait,
                               "unknown" if cpu is None else f"{cpu:.2f}", self.hold.ceiling,
                               busy)
            else:
                logger.info("the workers keep up: the overload hold rises to %d calls",
                            self.hold.ceiling)
        free = self.pool.free_slots()
        more = admission.room(self.hold, busy)
        return free if more is None else min(free, more)

    def busy_slots(self) -> int:
        return self.pool.busy_slots()

    def ready_count(self) -> int:
        return self.pool.ready_count()

    def pool_size(self) -> int:
        return self.pool.kept

    def node_load(self) -> NodeLoad:
        load = self.pool.node_load()
        if self.hold.ceiling is None:
            return load
        # held: the node carries no more than the ceiling (``campaign watch`` says it is full)
        return dataclasses.replace(load, slots=min(load.slots, self.hold.ceiling),
                                   held=self.hold.ceiling)

    def dial(self, message: ipc.Dial) -> int | None:
        w = self.pool.dial(message)
        return None if w is None else w.index

    def hangup(self, call_id: str) -> None:
        for w in self.pool.all_workers():
            if call_id in w.calls and not w.channel.closed:
                w.channel.send_msg(ipc.Hangup(call_id=call_id))

    def trust(self, sources: list[str]) -> None:
        self.pool.send_all(ipc.Trust(allowed_sources=sources))

    def trunk_state(self, trunk: str, up: bool, reason: str) -> None:
        self.pool.send_all(ipc.TrunkState(trunk=trunk, up=up, reason=reason))

    def lease(self, valid_for: float) -> None:
        self.pool.send_all(ipc.Lease(valid_for=round(max(0.0, valid_for), 3)))

    def _sync_selector(self) -> None:
        live = {ch.fileno(): w for w, ch in self.pool.channels()}
        for fd in list(self._registered):
            if fd not in live or self._registered[fd] is not live[fd]:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(fd)
                del self._registered[fd]
        for fd, w in live.items():
            if fd not in self._registered:
                self.selector.register(fd, selectors.EVENT_READ, w)
                self._registered[fd] = w

    def poll(self, timeout: float) -> list[GatewayEvent]:
        self._sync_selector()
        out: list[GatewayEvent] = []
        for key, _ in self.selector.select(timeout):
            w: Worker = key.data
            for msg in worker_events(w.channel.receive_msgs()):
                self.pool.on_message(w, msg)
                self._note(w, msg)
                out.append((w.index, msg))
        for w, calls in self.pool.reap():
            out.append((w.index, ipc.WorkerLost(worker=w.index, pid=w.pid, calls=sorted(calls),
                                                retiring=w.retiring)))
        return out

    def _note(self, w: Worker, msg: ipc.Event) -> None:
        if msg.seq is not None:
            self._seen[w.pid] = (w, msg.seq)

    def ack(self) -> None:
        seen, self._seen = self._seen, {}
        for w, seq in seen.values():
            if not w.channel.closed:
                w.channel.send_msg(ipc.Ack(seq=seq))

    def next_wakeup_in(self) -> float | None:
        return self.pool.next_restart_in()

    def begin_shutdown(self) -> None:
        self.pool.stop_restarts()
        self.pool.send_all(ipc.Shutdown())

    def active(self) -> bool:
        return bool(self.pool.all_workers())

    def close(self, timeout: float) -> None:
        self.pool.shutdown(timeout=timeout)

    def detach(self) -> None:
        self.pool.detach()
