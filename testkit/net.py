"""Loopback helpers of the test peers: free ports, the peers' constants and error."""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

from testkit.wait import PeerError as PeerError

ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = ROOT / "tests"
SIPP_DIR = TESTS_DIR / "sipp"
KAMAILIO_CFG = TESTS_DIR / "kamailio" / "kamailio.cfg"
SHIPPED_DTMF = Path("/usr/share/sip-tester")
LOCALHOST = "127.0.0.1"
DTMF_PAYLOAD_TYPE = 120
DTMF_KEYS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")




_rng = random.Random(os.getpid() ^ int(time.time() * 1000))

# Ports handed out in this process and when: checked free but perhaps not bound yet, so never
# handed out again before HANDED_OUT_S (by then the peer has bound it or given up).
HANDED_OUT_S = 300.0
_handed_out: dict[int, float] = {}


def free_port(count: int = 1) -> int:
    """A port free on 127.0.0.1 for both UDP and TCP, with ``count - 1`` free ports after it.

    ``count`` > 1 is for SIPp's media port, which also binds port + 2.

    Ports come from 10000-19999, below the kernel's ephemeral range (where the dialer's workers
    and every client socket get theirs) and below the RTP ranges the tests give the dialer
    (20000 and up), and no port is handed out twice in a process (``_handed_out``): between this
    check and the peer's bind, nobody else takes the port.
    """
    now = time.monotonic()
    for port, at in list(_handed_out.items()):
        if now - at > HANDED_OUT_S:
            del _handed_out[port]
    for _ in range(500):
        base = _rng.randrange(10000, 20000 - count)
        span = range(base, base + count)
        if not any(p in _handed_out for p in span) and all(_port_free(p) for p in span):
            _handed_out.update(dict.fromkeys(span, now))
            return base
    raise PeerError("no free port found on 127.0.0.1")


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((LOCALHOST, port))
            except OSError:
                return False
    return True


def _udp_port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return True
    return False


