"""systemd's notify protocol, for ``Type=notify`` and ``WatchdogSec=`` in the shipped unit.

The protocol is one datagram of ``KEY=value`` lines to the Unix socket named by
``$NOTIFY_SOCKET`` (sd_notify(3)); it is written here in a few lines because the Python packages
for it are either unmaintained (sdnotify, last release 2017) or need libsystemd's headers to build
(systemd-python). Without ``$NOTIFY_SOCKET`` (not started by systemd) every call does nothing.

``ready`` says the daemon serves (systemd then considers the start done), ``alive`` is the
watchdog's ping from the daemon's loop, sent every half of ``$WATCHDOG_USEC`` at most (a loop
stuck longer than ``WatchdogSec`` gets the daemon restarted; its workers carry their calls over),
``stopping`` precedes the drain.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping


class Notifier:
    """The daemon's end of sd_notify; a no-op outside systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        watchdog_pid = env.get("WATCHDOG_PID")
        usec = env.get("WATCHDOG_USEC", "")
        mine = watchdog_pid is None or watchdog_pid == str(os.getpid())
        self.interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._clock = clock
        self._last = float("-inf")

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one notification; False when not under systemd or it failed."""
        if not self.address:
            return False
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX,
                                                         socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(lines).encode(), self.address)
            return True
        return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")
        self._last = self._clock()

    def alive(self) -> None:
        """The watchdog's ping, at most every half of its interval."""
        if self.interval is None:
            return
        now = self._clock()
        if now - self._last >= self.interval:
            self.send("WATCHDOG=1")
            self._last = now

    def stopping(self, status: str = "stopping: draining the calls in progress") -> None:
        self.send("STOPPING=1", f"STATUS={status}")
