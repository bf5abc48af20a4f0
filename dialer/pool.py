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
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dialer.ipc import Channel, Message, inheritable_pair

logger = logging.getLogger(__name__)

RESTART_BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0)


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

    def start(self, size: int | None = None) -> None:
        """Start ``size`` workers (default: the pool's maximum) ahead of any call."""
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

    def free_slots(self) -> int:
        return sum(self.calls_per_worker - len(w.calls) for w in self.workers.values()
                   if w.ready and not w.channel.closed)

    def busy_slots(self) -> int:
        return sum(len(w.calls) for w in self.workers.values())

    def ready_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.ready)

    def dial(self, message: Message) -> Worker | None:
        """Hand a call to the least busy ready worker; None when every slot is taken."""
        ready = [w for w in self.workers.values()
                 if w.ready and not w.channel.closed and len(w.calls) < self.calls_per_worker]
        if not ready:
            return None
        w = min(ready, key=lambda x: (len(x.calls), x.index))
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
