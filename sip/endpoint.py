"""What the SIP worker and the simulated phones share: one single-threaded PJSUA2 endpoint.

Threading (PJSUA2-NOTES): the process's main thread creates the library and then loops on
``libHandleEvents``; every callback runs inside that call, so no pjsua2 object is ever touched
from another thread. Media runs without its own threads (``threadCnt = 0`` only sticks together
with ``hasIoqueue = False``), the conference bridge is clocked by the null sound device.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pjsua2 as pj

from dialer import logs

logger = logging.getLogger(__name__)
pjsua_logger = logging.getLogger("pjsua")

F = TypeVar("F", bound=Callable[..., Any])

# Digest material must never reach a log line, even at message-logging levels.
_SECRET = re.compile(r"^((?:Proxy-)?Authorization:).*$", re.IGNORECASE | re.MULTILINE)

_Q850 = re.compile(r"^Reason:[^\r\n]*?Q\.850[^,\r\n]*?;\s*cause=(\d+)",
                   re.IGNORECASE | re.MULTILINE)


def q850_cause(message: str) -> int | None:
    """The Q.850 cause of a ``Reason: Q.850;cause=N`` header in a raw SIP message, if any."""
    match = _Q850.search(message)
    return int(match.group(1)) if match else None


def pjsua_level(level: int | str | None) -> int:
    """A pjsua log level (0..6) from the ``log_level`` of ``init`` (a number or a logging name)."""
    if level is None:
        return 3
    if isinstance(level, int):
        return max(0, min(6, level))
    return {"debug": 5, "info": 3, "warning": 2, "error": 1, "critical": 1}.get(level.lower(), 3)


def python_level(level: int) -> int:
    """The ``logging`` level that matches a pjsua level."""
    return logging.DEBUG if level >= 4 else logging.INFO if level == 3 else logging.WARNING


def setup_logging(level: int) -> None:
    """Log to stderr only: in the worker, stdout and the IPC socket carry no logs.

    pjlib prints to the C stdout until ``libInit`` installs our writer (and on its own after
    ``libDestroy``), so fd 1 is pointed at stderr as well.
    """
    sys.stdout.flush()
    os.dup2(2, 1)
    logs.setup("text", python_level(level))


class StderrLogWriter(pj.LogWriter):  # type: ignore[misc]
    """Routes pjsua's log lines into ``logging`` (stderr), with credentials redacted.

    pjsua may log from its clock thread too; ``logging`` is thread-safe and this writer never
    calls back into pjsua2, which is what the single-thread rule is about.
    """

    def write(self, entry: pj.LogEntry) -> None:
        try:
            msg = _SECRET.sub(r"\1 <redacted>", entry.msg.rstrip())
            pjsua_logger.log(logging.DEBUG if entry.level >= 4 else logging.INFO
                             if entry.level == 3 else logging.WARNING, "%s", msg)
        except Exception:  # noqa: BLE001 - a logging failure must never escape into C++
            pass


def guarded(method: F) -> F:
    """Wrap a pjsua2 callback: a Python exception is logged and swallowed.

    An exception escaping a SWIG director method turns into a C++ exception inside pjsua's
    event loop, which can abort the whole process (and every call in it).
    """

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception:  # noqa: BLE001
            logger.exception("error in pjsua2 callback %s", method.__qualname__)
            return None

    return wrapper  # type: ignore[return-value]


def create_endpoint(level: int, user_agent: str) -> tuple[pj.Endpoint, StderrLogWriter]:
    """Create and start a single-threaded endpoint with only G.711 enabled.

    Returns the endpoint and its log writer; the caller keeps both alive until ``libDestroy``.
    """
    ep = pj.Endpoint()
    with _pjlib_stdout():  # until libInit installs the writer, pjlib prints on its own
        writer = _create_and_init(ep, level, user_agent)
    ep.audDevManager().setNullDev()  # no sound card; the null device clocks the bridge
    for codec in ep.codecEnum2():
        # Only PCMU/PCMA: then the offer carries telephone-event as payload type 120, the only
        # one pjsua accepts DTMF on (PJSUA2-NOTES, DTMF).
        keep = codec.codecId.startswith(("PCMU/", "PCMA/"))
        ep.codecSetPriority(codec.codecId, 255 if codec.codecId.startswith("PCMU/")
                            else 254 if keep else 0)
    return ep, writer


@contextlib.contextmanager
def _pjlib_stdout() -> Iterator[None]:
    """What pjlib prints to the C stdout meanwhile goes through ``logging`` (pjsua, debug),
    in the format of every other line, instead of raw on the daemon's stderr."""
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(1)
        libc.fflush(None)
        os.dup2(captured.fileno(), 1)
        try:
            yield
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip():
                    pjsua_logger.debug("%s", _SECRET.sub(r"\1 <redacted>", line.strip()))


def _create_and_init(ep: pj.Endpoint, level: int, user_agent: str) -> StderrLogWriter:
    """``libCreate`` and ``libInit`` with the worker's configuration; returns the log writer."""
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = 4  # the wheel's compile-time ceiling anyway
    cfg.uaConfig.userAgent = user_agent
    cfg.medConfig.threadCnt = 0
    cfg.medConfig.hasIoqueue = False  # without this threadCnt = 0 is silently reset to 1
    cfg.medConfig.noVad = True
    # The bridge at 8 kHz: G.711 and every prompt and message are 8 kHz (media.audio), so no
    # frame is resampled on its way from a player to a call (the default bridge runs at 16 kHz).
    cfg.medConfig.clockRate = 8000
    cfg.medConfig.sndClockRate = 8000
    cfg.medConfig.ecTailLen = 0  # no echo canceller: there is no sound card to echo
    writer = StderrLogWriter()
    cfg.logConfig.writer = writer
    cfg.logConfig.level = level
    cfg.logConfig.consoleLevel = level
    cfg.logConfig.msgLogging = 1 if level >= 4 else 0
    cfg.logConfig.decor = pj.PJ_LOG_HAS_SENDER  # time and level come from `logging`
    ep.libInit(cfg)
    return writer


def create_transport(ep: pj.Endpoint, kind: int, bind: str, port: int = 0) -> tuple[int, int]:
    """Create a SIP transport on ``bind:port`` (0: the OS picks); return (id, actual port)."""
    tcfg = pj.TransportConfig()
    tcfg.boundAddress = bind
    tcfg.publicAddress = bind
    tcfg.port = port
    tid = ep.transportCreate(kind, tcfg)
    local = ep.transportGetInfo(tid).localName  # "host:port"
    return tid, int(local.rsplit(":", 1)[1])


def create_transports(ep: pj.Endpoint, bind: str, ports: list[int], *,
                      tcp: bool) -> dict[str, int]:
    """The worker's UDP transport (and TCP, on the same port number, so a PBX ACL or firewall
    names one port per worker) on the first of ``ports`` that is free (0: the OS picks).
    Returns the transport ids by name and the port under ``"port"``."""
    last: pj.Error | None = None
    for port in dict.fromkeys(ports):
        try:
            udp, actual = create_transport(ep, pj.PJSIP_TRANSPORT_UDP, bind, port)
        except pj.Error as exc:
            last = exc
            continue
        ids = {"udp": udp, "port": actual}
        if tcp:
            try:
                ids["tcp"], _ = create_transport(ep, pj.PJSIP_TRANSPORT_TCP, bind, actual)
            except pj.Error as exc:
                last = exc
                ep.transportClose(udp)
                continue
        return ids
    assert last is not None
    raise RuntimeError(f"no free SIP port among {', '.join(map(str, ports))} on {bind}: "
                       f"{last.info()}")


def sip_header(name: str, value: str) -> pj.SipHeader:
    header = pj.SipHeader()
    header.hName = name
    header.hValue = value
    return header


def destroy_endpoint(ep: pj.Endpoint) -> None:
    """Shut the library down; every Call, player and Account must already be dropped."""
    import gc

    gc.collect()
    try:
        ep.libDestroy()
    except pj.Error as exc:
        logger.warning("libDestroy: %s", exc.info())
