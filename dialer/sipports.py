"""The SIP ports of a node's workers (``[sip] port``): worker *i* listens on ``port + i``, UDP
and TCP, so that a PBX ACL or a firewall can allow the range. A worker that takes the place of
one still finishing its calls (a retiring worker of the same index) takes ``port + workers + i``
(``sip.endpoint.create_transports`` tries the one, then the other)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from dialer.core.errors import ConfigError


def port_range(first: int, workers: int) -> str:
    return f"{first}-{first + workers - 1}" if workers > 1 else str(first)


def taken(bind: str, port: int) -> str | None:
    """Why ``bind:port`` cannot be had for UDP and TCP, or None when it is free."""
    for kind, name in ((socket.SOCK_DGRAM, "UDP"), (socket.SOCK_STREAM, "TCP")):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PJSIP does
            try:
                s.bind((bind, port))
            except OSError as exc:
                why = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                return f"{name} {bind}:{port} {why}"
    return None


def check_free(bind: str, ports: Iterable[int], first: int, workers: int) -> None:
    """Refuse to start when a port of the workers' range is held by another process: one line."""
    for port in ports:
        why = taken(bind, port)
        if why is not None:
            raise ConfigError(f"[sip] port: the SIP workers need ports "
                              f"{port_range(first, workers)} (UDP and TCP) on {bind}, but {why}; "
                              f"choose another [sip] port or stop what holds it")
