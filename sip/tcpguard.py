"""The SIP TCP listener's guard: strangers' SYNs are dropped in the kernel, and every connection
is refused while the ioqueue's sockets run short.

pjlib's select ioqueue has 64 sockets and keeps each closed one 0.5 s before reusing it; past
that it aborts the process. TCP connections (even from trusted peers: a PBX opening one per
message) are refused in the kernel while ``TCP_SOCKET_BUDGET`` are open or closed within the
last ``TCP_REUSE_S`` seconds, and accepted again below half that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sip import sockfilter, trust

logger = logging.getLogger(__name__)

TCP_SOCKET_BUDGET = 28
TCP_REUSE_S = 1.0


class TcpGuard:
    """The socket filter on the worker's TCP listeners (none: nothing to guard)."""

    def __init__(self, trusted: Callable[[], list[trust.Network]]) -> None:
        self._trusted = trusted
        self.listeners: list[int] = []
        self._open = 0
        self._closed: list[float] = []  # monotonic times of recent closes
        self.refusing = False

    def start(self, listeners: list[int]) -> None:
        self.listeners = listeners
        self.guard(closed=False)  # strangers' SYNs dropped in the kernel

    def trust_changed(self) -> None:
        if self.listeners and not self.refusing:
            self.guard(closed=False)

    def on_connection(self, made: bool) -> None:
        if made:
            self._open += 1
        else:
            self._open = max(0, self._open - 1)
            self._closed.append(time.monotonic())
        self.check(time.monotonic())

    def check(self, now: float) -> None:
        """Refuse TCP connections while the ioqueue's sockets run short; accept them again after."""
        if not self.listeners:
            return
        while self._closed and now - self._closed[0] > TCP_REUSE_S:
            self._closed.pop(0)
        in_use = self._open + len(self._closed)
        if not self.refusing and in_use >= TCP_SOCKET_BUDGET:
            logger.warning("%d TCP connections open or just closed: refusing new ones for now",
                           in_use)
            self.guard(closed=True)
        elif self.refusing and in_use < TCP_SOCKET_BUDGET // 2:
            logger.info("accepting TCP connections again")
            self.guard(closed=False)

    def guard(self, closed: bool) -> None:
        prog = sockfilter.program([] if closed else self._trusted())
        for fd in self.listeners:
            sockfilter.attach(fd, prog)
        self.refusing = closed
