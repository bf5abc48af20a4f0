"""What the worker pool (``dialer.pool``) checks and derives before and around its processes:
the digest of a worker's configuration, the events of a worker's messages, the descriptor limit,
the RTP port ranges. No process is started here."""

from __future__ import annotations

import hashlib
import json
import logging
import resource

from dialer import ipc
from dialer.core.errors import ConfigError

logger = logging.getLogger("dialer.pool")

FDS_PER_WORKER = 4  # the daemon's end of the socketpair, with room for pipes and restarts
EPHEMERAL_PORTS = "/proc/sys/net/ipv4/ip_local_port_range"


def digest(init: ipc.Init) -> str:
    """What a worker was configured with, as a short hash: a worker adopted by a daemon whose
    configuration differs (trunks, bind, ports) retires instead of taking new calls. The trusted
    sources are left out: they change at run time (``trust``) and are sent again on adoption."""
    stable = {k: v for k, v in ipc.encode(init).items()
              if k not in ("allowed_sources", "digest", "op", "wire")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


def worker_events(msgs: list[ipc.Message]) -> list[ipc.Event]:
    """The events of what a worker sent (an operation from a worker is dropped, logged)."""
    out: list[ipc.Event] = []
    for m in msgs:
        if isinstance(m, ipc.Event):
            out.append(m)
        else:
            logger.error("IPC: a worker sent an operation (%s): dropped", m.OP)
    return out


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
