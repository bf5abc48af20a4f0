"""The supervised pool of SIP worker processes (``python -m sip.worker``).

One PJSUA2 process holds at most 4 calls, so capacity comes from several workers, all started
ahead of demand (a warm pool: a worker needs a good fraction of a second to become ready). Each
worker talks to the daemon over its own socketpair (dialer.ipc). A worker that dies takes only
its own calls: the pool reports them as lost and starts a replacement.

This module starts processes and moves messages; it never imports pjsua2.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dialer.errors import ConfigError
from dialer.ipc import Channel, Message, inheritable_pair

logger = logging.getLogger(__name__)

RESTART_BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0)
# New calls a second at most, in bursts of at most SETUP_BURST: a surge of hundreds of INVITEs in
# the same instant starves every process of the machine (the far end's too) and arrives no sooner.
SETUP_RATE = 100.0
SETUP_BURST = 100
FDS_PER_WORKER = 4  # the daemon's end of the socketpair, with room for pipes and restarts
EPHEMERAL_PORTS = "/proc/sys/net/ipv4/ip_local_port_range"


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit).

    The workers inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def check_rtp_ranges(first: int, last: int) -> None:
    """Refuse RTP ranges past port 65535; warn when they overlap the kernel's ephemeral ports
    (where SIP transports bind port 0): pjsua then skips to ports that may belong to a
    neighbouring worker, which works but costs failed binds."""
    if last > 65535:
        raise ConfigError(f"[sip] rtp_port: the workers need RTP ports {first}-{last}, past 65535;"
                          f" lower rtp_port or the number of workers")
    try:
        with open(EPHEMERAL_PORTS) as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return
    if first <= high and last >= low:
        logger.warning("RTP ports %d-%d overlap the ephemeral ports %d-%d: choose an rtp_port "
                       "below %d", first, last, low, high, low - (last - first + 1))


@dataclass
class Worker:
    """The daemon's view of one worker process."""

    index: int
    proc: subprocess.Popen[bytes]
    channel: Channel
    started_at: float
    ready: bool = False
    sip_port: int | None = None
    calls: set[str] = field(default_factory=set)
    failures: int = 0
    overloaded: bool = False  # the worker reports its event loop running late (``load``)
    # Slots held by calls already over whose SIP transaction (CANCEL, BYE) is still unanswered
    # (``slots``): the worker frees them within its trunk's invite_timeout.
    held: int = 0

    @property
    def taken(self) -> int:
        return len(self.calls) + self.held

    @property
    def pid(self) -> int:
        return self.proc.pid


class WorkerPool:
    """Starts, feeds and restarts the SIP workers."""

    def __init__(self, *, size: int, calls_per_worker: int,
                 init_message: Callable[[int], Message],
                 command: list[str] | None = None) -> None:
        self.size = size
        self.calls_per_worker = calls_per_worker
        self._init_message = init_message
        self._command = command or [sys.executable, "-m", "sip.worker"]
        self.workers: dict[int, Worker] = {}
        self.restarts = 0
        self._restart_at: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self.stopping = False
        self._tokens = float(SETUP_BURST)
        self._tokens_at = time.monotonic()

    def start(self, size: int | None = None) -> None:
        """Start ``size`` workers (default: the pool's maximum) ahead of any call."""
        limit = raise_fd_limit(64 + FDS_PER_WORKER * self.size + 1024)
        if limit < 64 + FDS_PER_WORKER * self.size:
            logger.warning("RLIMIT_NOFILE is %d: too low for %d workers", limit, self.size)
        last = self._init_message(self.size - 1)
        if last.get("rtp_port"):
            first = int(self._init_message(0)["rtp_port"])
            check_rtp_ranges(first, int(last["rtp_port"]) + int(last.get("rtp_port_range") or 0))
        self.resize(self.size if size is None else size)

    def resize(self, size: int) -> None:
        """Grow to ``size`` workers (never above the maximum). Shrinking is left to a restart:
        idle workers cost memory, not calls."""
        want = max(1, min(size, self.size))
        for i in range(want):
            if i not in self.workers and i not in self._restart_at:
                self._spawn(i)

    def _spawn(self, index: int) -> Worker:
        channel, child_fd = inheritable_pair()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen([*self._command, "--ipc-fd", str(child_fd)], pass_fds=[child_fd],
                                stdin=subprocess.DEVNULL, env=env)
        os.close(child_fd)
        w = Worker(index=index, proc=proc, channel=channel, started_at=time.monotonic(),
                   failures=self._failures.get(index, 0))
        self.workers[index] = w
        channel.send({"op": "init", **self._init_message(index)})
        logger.info("worker %d started (pid %d)", index, proc.pid)
        return w

    # ----- capacity -----

    def _usable(self, w: Worker) -> bool:
        return w.ready and not w.channel.closed and not w.overloaded

    def free_slots(self) -> int:
        """Slots for new calls. A worker whose event loop runs late (the machine is short of
        CPU) takes no new calls until it catches up: under overload the pool places fewer
        calls instead of degrading those in progress."""
        slots = sum(self.calls_per_worker - w.taken for w in self.workers.values()
                    if self._usable(w) and w.taken < self.calls_per_worker)
        return min(slots, int(self._refill()))

    def _refill(self) -> float:
        """The setup-rate budget (token bucket): calls that may start now."""
        now = time.monotonic()
        self._tokens = min(float(SETUP_BURST), self._tokens + (now - self._tokens_at) * SETUP_RATE)
        self._tokens_at = now
        return self._tokens

    def busy_slots(self) -> int:
        return sum(len(w.calls) for w in self.workers.values())

    def ready_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.ready)

    def dial(self, message: Message) -> Worker | None:
        """Hand a call to the least busy ready worker; None when every slot is taken."""
        ready = [w for w in self.workers.values()
                 if self._usable(w) and w.taken < self.calls_per_worker]
        if not ready:
            return None
        w = min(ready, key=lambda x: (x.taken, x.index))
        self._refill()
        self._tokens = max(0.0, self._tokens - 1)  # never refuses: the claim was bounded
        w.calls.add(str(message["call_id"]))
        w.channel.send({"op": "dial", **message})
        return w

    def send_all(self, message: Message) -> None:
        for w in self.workers.values():
            if not w.channel.closed:
                w.channel.send(message)

    # ----- events -----

    def on_message(self, w: Worker, msg: Message) -> None:
        """Book-keeping the pool itself needs; the daemon handles the rest."""
        ev = msg.get("ev")
        if ev == "ready":
            w.ready = True
            w.sip_port = msg.get("sip_port")
            self._failures[w.index] = 0
            logger.info("worker %d ready (pid %d, SIP port %s)", w.index, w.pid, w.sip_port)
        elif ev == "ended":
            w.calls.discard(str(msg.get("call_id")))
        elif ev == "slots":
            w.held = max(0, int(msg.get("held") or 0))
        elif ev == "load":
            w.overloaded = bool(msg.get("overloaded"))
            (logger.warning if w.overloaded else logger.info)(
                "worker %d %s (loop %.0f ms late)", w.index,
                "overloaded: no new calls" if w.overloaded else "caught up",
                1000 * float(msg.get("lag") or 0))

    def reap(self) -> list[tuple[Worker, set[str]]]:
        """Workers that have exited (or closed their channel): their lost calls, then restart."""
        lost: list[tuple[Worker, set[str]]] = []
        for index, w in list(self.workers.items()):
            code = w.proc.poll()
            if code is None and not w.channel.closed:
                continue
            if code is None:
                # The channel closed but the process lives on: it is no use to us.
                w.proc.kill()
                code = w.proc.wait()
            w.channel.close()
            (logger.info if self.stopping else logger.error)(
                "worker %d (pid %d) exited with %s holding %d call(s)",
                index, w.pid, code, len(w.calls))
            lost.append((w, set(w.calls)))
            del self.workers[index]
            fails = self._failures.get(index, 0) + 1
            self._failures[index] = fails
            delay = RESTART_BACKOFF[min(fails - 1, len(RESTART_BACKOFF) - 1)]
            self._restart_at[index] = time.monotonic() + delay
        now = time.monotonic()
        if self.stopping:
            self._restart_at.clear()
        for index, at in list(self._restart_at.items()):
            if at <= now:
                del self._restart_at[index]
                self.restarts += 1
                self._spawn(index)
        return lost

    def next_restart_in(self) -> float | None:
        if not self._restart_at:
            return None
        return max(0.0, min(self._restart_at.values()) - time.monotonic())

    def channels(self) -> list[tuple[Worker, Channel]]:
        return [(w, w.channel) for w in self.workers.values() if not w.channel.closed]

    def stop_restarts(self) -> None:
        """No more replacements: the pool is being shut down."""
        self.stopping = True
        self._restart_at.clear()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask every worker to hang up and exit; kill those that do not in time."""
        self.stop_restarts()
        self.send_all({"op": "shutdown"})
        deadline = time.monotonic() + timeout
        for w in self.workers.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                w.proc.wait(remaining)
            except subprocess.TimeoutExpired:
                logger.warning("worker %d did not stop in time: killing it", w.index)
                w.proc.kill()
                w.proc.wait()
            w.channel.close()

    def describe(self) -> list[dict[str, Any]]:
        return [{"index": w.index, "pid": w.pid, "ready": w.ready, "calls": sorted(w.calls),
                 "sip_port": w.sip_port} for w in self.workers.values()]
