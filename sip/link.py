"""A SIP worker's end of the wire: calls outlive the daemon.

A worker started by ``dialer serve`` listens on a Unix socket in the node's state directory
(``dialer.pool`` creates it and hands the listening descriptor over, so only the daemon ever
names its path). The daemon that started it connects at once; a daemon that starts later, after
the first one died, connects to every socket it finds there and re-attaches (``attach``). While
no daemon is attached, the worker's calls go on: every event is kept, in order, in a bounded
buffer, and handed to the next daemon that attaches, before anything else.

Events are numbered (``seq``) and stay in the buffer until the daemon acknowledges them
(``ack``), which it does once what they report is committed to the database: an event written
to the socket of a daemon killed before it read it is not lost, it is handed over again. A
daemon that attaches may therefore receive again the last events its predecessor committed
but did not acknowledge; it records replayed events only once (``dialer.daemon``).

Decisions worth knowing:

* One daemon at a time: a connection that arrives while a daemon is attached is told ``refused``
  and closed (two daemons of one node are a configuration error; the first one keeps its calls).
* The buffer holds ``BUFFER_MAX`` unacknowledged events. When it is full, progress events
  (ringing, played, keys) are dropped oldest first; call ends and confirmations are never
  dropped (at most one end per call: a worker with no daemon places no call, so they are
  bounded by the calls it held).
* A worker alone for ``ALONE_S`` seconds takes it that no daemon is coming: it lets its calls
  finish their dialogue, then exits. What no daemon took by then is written to
  ``undelivered-<pid>.jsonl`` in the state directory (0600), which the next daemon reads before
  it settles anything: nothing a call reported is lost, however long the node was down.

This module knows nothing of pjsua2: the worker gives it messages and asks it what arrived,
typed (``dialer.ipc``); what it keeps is their JSON (``seq`` added), as it goes on the wire.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dialer import ipc
from dialer.ipc import ALONE_S, WIRE_VERSION, Channel, Raw

logger = logging.getLogger(__name__)

BUFFER_MAX = 4096
KEPT = frozenset({"ended", "confirmed"})  # never dropped from a full buffer
STATE = frozenset({"reg", "load", "slots"})  # not buffered: restated at each attach


class Link:
    """The worker's connection to whichever daemon is attached, if any.

    ``hello`` builds what a worker says of itself when a daemon attaches (the fields of
    ``dialer.ipc.Hello`` but ``wire`` and ``pid``: its index, SIP port, configuration digest,
    whether it is ready); ``state`` the messages that restate its current state
    (registrations, load); ``calls`` lists the calls it carries right now."""

    def __init__(self, channel: Channel | None, listener: socket.socket | None, *,
                 state_dir: Path | None = None,
                 hello: Callable[[], dict[str, Any]] = dict,
                 state: Callable[[], Sequence[ipc.Event | Raw]] = list,
                 calls: Callable[[], list[str]] = list,
                 clock: Callable[[], float] = time.monotonic,
                 buffer_max: int = BUFFER_MAX, alone_s: float = ALONE_S) -> None:
        self.channel = channel
        self.listener = listener
        if listener is not None:
            listener.setblocking(False)
        self.state_dir = state_dir
        self._hello, self._state, self._calls = hello, state, calls
        self._clock = clock
        self.buffer: deque[Raw] = deque()  # sent or not, not acknowledged yet (their JSON)
        self._seq = 0
        self.buffer_max = buffer_max
        self.alone_s = alone_s
        self.dropped = 0  # events dropped from a full buffer since the last attach
        self._alone_since: float | None = None if channel is not None else clock()
        self.attachments = 0
        self.pending: Channel | None = None  # a daemon connected; its ``attach`` not yet read
        self._tail: list[ipc.Message] = []  # what a daemon sent before a write found it gone

    @property
    def detachable(self) -> bool:
        """Whether this worker outlives its daemon (it has a listener to be found on)."""
        return self.listener is not None

    @property
    def attached(self) -> bool:
        return self.channel is not None and not self.channel.closed

    def alone_for(self) -> float:
        """Seconds since the last daemon went away (0 while one is attached)."""
        return 0.0 if self._alone_since is None else self._clock() - self._alone_since

    @property
    def abandoned(self) -> bool:
        """Alone for longer than the bound: no daemon is coming."""
        return self._alone_since is not None and self.alone_for() >= self.alone_s

    def fileno(self) -> int | None:
        return self.channel.fileno() if self.attached and self.channel is not None else None

    # ----- to the daemon -----

    def send(self, msg: ipc.Event | Raw) -> None:
        """Send an event to the daemon (numbered and kept until acknowledged, when this worker
        outlives its daemon). A ``Raw`` one is taken as already encoded."""
        raw = msg if isinstance(msg, dict) else ipc.encode(msg)
        if self.detachable and raw.get("ev") not in STATE:
            self._seq += 1
            raw = {**raw, "seq": self._seq}
            self.buffer.append(raw)
            if len(self.buffer) > self.buffer_max:
                self._shed()
        self._write(raw)

    def _write(self, msg: ipc.Event | Raw) -> None:
        if self.attached and self.channel is not None:
            self.channel.send(msg if isinstance(msg, dict) else ipc.encode(msg))
            if self.channel.closed:
                self._tail += self._read_rest(self.channel)
                self._lost("sending")

    @staticmethod
    def _read_rest(channel: Channel) -> list[ipc.Message]:
        """What a daemon that went away sent before it went (still in our socket buffer)."""
        channel.closed = False
        try:
            return channel.receive_msgs()
        except ValueError:
            return []
        finally:
            channel.closed = True

    def _acked(self, seq: int) -> None:
        while self.buffer and int(self.buffer[0].get("seq") or 0) <= seq:
            self.buffer.popleft()

    def _shed(self) -> None:
        """The buffer is full: drop the oldest event that is not a call's end or confirmation."""
        for i, m in enumerate(self.buffer):
            if m.get("ev") not in KEPT:
                del self.buffer[i]
                self.dropped += 1
                return
        # Only ends and confirmations: keep them all (they are bounded by the calls held).

    # ----- from the daemon -----

    def receive(self) -> list[ipc.Op]:
        """What the attached daemon sent (``attach`` handled here); accepts a new daemon when
        none is attached. Sets the worker alone when the daemon goes away."""
        if self._tail:  # handled before any new daemon attaches (see below)
            tail, self._tail = self._tail, []
            return self._own(tail)
        if self._quiet():
            return []
        messages: list[ipc.Message] = []
        if self.attached and self.channel is not None:
            try:
                messages = self.channel.receive_msgs()
            except ValueError as exc:  # malformed JSON or an over-long line: hang up on it
                logger.error("IPC: %s", exc)
                self.channel.close()
            if self.channel.closed:
                self._lost("reading")
                # What the dead daemon sent last (a dial among them) is handled before any new
                # daemon attaches, so that the calls it is told of include them.
                return self._own(messages)
        if self.pending is None:
            self._accept()
        if self.pending is not None:
            messages += self._read_pending()
        return self._own(messages)

    def _quiet(self) -> bool:
        """Whether no descriptor of the link is readable. One ``select`` with no wait instead of
        a ``recv`` and an ``accept`` that fail, each raising (its strerror decoded) on every
        turn of the worker's loop: that was the dearest step of an idle turn (issue 16)."""
        fds = [self.channel.fileno()] if self.attached and self.channel is not None else []
        if self.pending is not None:
            if self.pending.closed:
                return False  # receive drops it without reading
            fds.append(self.pending.fileno())
        elif self.listener is not None:
            fds.append(self.listener.fileno())
        try:
            ready, _, _ = select.select(fds, [], [], 0)
        except (OSError, ValueError):
            return False  # let the reads find out what is wrong
        return not ready

    def _own(self, messages: list[ipc.Message]) -> list[ipc.Op]:
        """Acknowledgements are the link's; the rest is the worker's (events are dropped)."""
        out: list[ipc.Op] = []
        for msg in messages:
            if isinstance(msg, ipc.Ack):
                self._acked(msg.seq)
            elif isinstance(msg, ipc.Op):
                out.append(msg)
            else:
                logger.error("IPC: a daemon sent an event (%s): dropped", msg.EV)
        return out

    def _read_pending(self) -> list[ipc.Message]:
        """The connected daemon's first messages: nothing reaches it before its ``attach``."""
        pending = self.pending
        assert pending is not None
        try:
            messages = pending.receive_msgs()
        except ValueError as exc:
            logger.error("IPC: %s", exc)
            messages = []
            pending.close()
        if pending.closed and not messages:
            self.pending = None
            return []
        if not messages:
            return []
        first = messages[0]
        if not isinstance(first, ipc.Attach):
            logger.error("a daemon connected without attaching (%r): closed",
                         getattr(first, "OP", None) or getattr(first, "EV", None))
            pending.close()
            self.pending = None
            return []
        self.pending = None
        if self.channel is not None:
            self.channel.close()
        self.channel = pending
        self._attach(first)
        return messages[1:]

    def _lost(self, when: str) -> None:
        if self._alone_since is None:
            self._alone_since = self._clock()
            if self.detachable:
                logger.warning("daemon gone (%s): the calls go on; waiting up to %.0f s for a "
                               "daemon to attach", when, self.alone_s)
            else:
                logger.info("IPC socket closed")

    def _accept(self) -> None:
        if self.listener is None:
            return
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.error("accepting a daemon: %s", exc)
                return
            if self.attached:
                refused = Channel(conn)
                refused.send_msg(ipc.Refused(reason="another daemon is attached",
                                             pid=os.getpid()))
                refused.close()
                logger.warning("refused a second daemon: one is attached")
                continue
            self.pending = Channel(conn)
            return

    def _attach(self, msg: ipc.Attach) -> None:
        """A daemon (re)attached: say who we are, hand over what it missed, restate our state,
        then list the calls we carry: the daemon settles nothing before that last line."""
        assert self.channel is not None
        theirs = msg.wire
        self._write(ipc.Hello(wire=WIRE_VERSION, pid=os.getpid(), **self._hello()))
        if theirs != WIRE_VERSION:
            logger.warning("a daemon of wire version %s attached (ours: %s)", theirs,
                           WIRE_VERSION)
        backlog = list(self.buffer)  # kept until this daemon acknowledges them
        for m in backlog:
            self._write(m)
        for state in self._state():
            self._write(state)
        self._write(ipc.Attached(calls=self._calls(), dropped=self.dropped,
                                 alone=round(self.alone_for(), 3)))
        if self.attached:
            logger.info("daemon attached after %.1f s alone: %d event(s) handed over, %d dropped",
                        self.alone_for(), len(backlog), self.dropped)
            self._alone_since = None
            self.dropped = 0
            self.attachments += 1

    # ----- exit -----

    def write_undelivered(self) -> Path | None:
        """At exit with no daemon attached: keep what no daemon took, for the next one."""
        if self.attached or not self.buffer or self.state_dir is None:
            return None
        path = self.state_dir / f"undelivered-{os.getpid()}.jsonl"
        data = "".join(json.dumps(m, separators=(",", ":")) + "\n" for m in self.buffer)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data)
        logger.warning("no daemon attached: %d event(s) left in %s", len(self.buffer), path)
        self.buffer.clear()
        return path

    def close(self) -> None:
        for ch in (self.channel, self.pending):
            if ch is not None:
                ch.close()
        if self.listener is not None:
            self.listener.close()


def read_first(channel: Channel) -> list[ipc.Message]:
    """Block until the first messages (``init`` first) arrive; empty at EOF."""
    while not channel.closed:
        select.select([channel], [], [], 1.0)
        messages = channel.receive_msgs()
        if messages:
            return messages
    return []


def first_daemon(listener: socket.socket, timeout: float) -> Channel | None:
    """The connection of the daemon that started us (it connects at once)."""
    ready, _, _ = select.select([listener], [], [], timeout)
    if not ready:
        return None
    conn, _ = listener.accept()
    return Channel(conn)


def unlink_socket(path: str | None) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def attach(ipc_fd: int | None, listen_fd: int | None, path: str | None
           ) -> tuple[Channel, socket.socket | None, ipc.Init, list[ipc.Op]] | int:
    """A starting worker's wire: the daemon's connection (on ``--ipc-fd``, or the first to
    connect to ``--listen-fd``), its ``init`` and the operations that came with it; or the exit
    code when there is none (0: the daemon went away before init; 2: nobody came, or the first
    message was not init)."""
    listener: socket.socket | None = None
    if listen_fd is not None:
        listener = socket.socket(fileno=listen_fd)
        channel = first_daemon(listener, 10.0)
        if channel is None:
            logger.error("no daemon connected")
            listener.close()
            unlink_socket(path)
            return 2
    else:
        assert ipc_fd is not None
        channel = Channel.from_fd(ipc_fd)
    first = read_first(channel)
    if not first:
        unlink_socket(path)
        return 0
    init = first[0]
    if not isinstance(init, ipc.Init):
        logger.error("expected init, got %r",
                     getattr(init, "OP", None) or getattr(init, "EV", None))
        unlink_socket(path)
        return 2
    return channel, listener, init, [m for m in first[1:] if isinstance(m, ipc.Op)]
