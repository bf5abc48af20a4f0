"""One SIP worker process: a single-threaded PJSUA2 endpoint with at most 4 calls.

Run by the daemon as ``python -m sip.worker --listen-fd N --socket PATH`` (a listening Unix
socket in the node's state directory: the worker outlives its daemon and a restarted daemon
re-attaches, ``sip.link``), or as ``python -m sip.worker --ipc-fd N`` (one connected socket: the
worker hangs up and exits when it closes, as the tests drive it). The daemon speaks ``dialer.ipc``.
The
main thread alternates between ``libHandleEvents`` (where every pjsua2 callback runs) and a
non-blocking read of the IPC socket, then checks the calls' timers. Each answered call is driven
by the pure ``dialer.core.dialogue`` state machine; this module only turns its commands into SIP and
audio and SIP events back into dialogue events.

Decisions worth knowing:

* Caller ID: the From header of each call is set per call through ``SipTxOption.localUri``
  (``"display" <from_uri>``), so one account per trunk serves every campaign's caller number.
* Every received SIP message first goes through the source filter (``sip.trust`` decides,
  ``sip.pjmodule`` reads and acts, before PJSIP's transaction layer): only the trunks' addresses
  are heard, in-dialog requests only from the dialog's far end, and unsolicited requests are
  answered (INVITE 403 by default: a dial-out-only UA refuses service; OPTIONS 200) or dropped
  before pjsua can spend a call slot, a media port or a socket on them.
* Registration health (worker 0, which holds the registrations): a REGISTER without a final
  answer within ``register_timeout`` and an OPTIONS keep-alive to the registrar unanswered within
  ``keepalive_timeout`` both report the trunk not registered at once; when the registrar answers
  again the worker registers anew.
* No call holds a pjsua call slot for PJSIP's 32 s transaction timeout: an INVITE without any
  response after ``invite_timeout`` ends ``unreachable`` (408), and a call we hung up that is not
  over ``invite_timeout`` later (an unanswered CANCEL, a malformed 487) is terminated.
* A call ended on the daemon's request (``hangup``) or by ``shutdown`` before the dialogue
  finished ends ``failed`` (or ``contacted`` if every confirmation already came), never
  ``no_answer``/``hung_up``: the recipient did nothing wrong.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import logging
import os
import select
import socket
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pjsua2 as pj

from dialer.core import dialogue as dlg
from dialer.core import outcome as oc
from dialer.core.domain import DialogueSettings, Outcome
from dialer.ipc import Channel, Message
from sip import sockfilter, trust
from sip.link import Link
from sip.endpoint import (create_endpoint, create_transport, destroy_endpoint, guarded,
                          pjsua_level, q850_cause, setup_logging)
from sip.pjmodule import Module, Rx, Tx

logger = logging.getLogger(__name__)

MAX_CALLS = 4  # PJSUA_MAX_CALLS of the wheel
MAX_ACCOUNTS = 8  # the 9th Account.create() aborts the process
POLL_MS = 50  # SIP, RTP and timers still wake libHandleEvents earlier (PJSUA2-NOTES)
MEDIA_GRACE = 5.0  # seconds an answered call may go without active audio before we give up
SHUTDOWN_GRACE = 3.0  # seconds to wait for BYE/CANCEL transactions when shutting down
SHUTTING_DOWN = oc.SHUTTING_DOWN  # the reason of the calls a stopping worker cuts
# A replaced or finished player is destroyed only this long after it was disconnected. PJSIP
# 2.15's conference bridge applies connect/disconnect/remove on its clock thread, so a player
# destroyed at once can still be read by that thread: a use-after-free that killed workers
# with SIGSEGV in the clock thread under load (about 1 call in 150 at 100 concurrent calls,
# bench/RESULTS.md). Half a second is 25 clock ticks.
PLAYER_RETIRE_S = 0.5
# Overload: how late the loop comes round (an average over about a second of iterations) past
# which the worker asks for no new calls, and below which it takes them again. On a machine
# short of CPU every process waits for a core; the calls in progress keep theirs.
LAG_OVERLOAD_S = 0.10
LAG_RECOVER_S = 0.03
# pjlib's select ioqueue has 64 sockets and keeps each closed one 0.5 s before reusing it; past
# that it aborts the process. TCP connections (even from trusted peers: a PBX opening one per
# message) are refused in the kernel while this many are open or closed within the last second.
TCP_SOCKET_BUDGET = 28
TCP_REUSE_S = 1.0
DROP_REPORT_S = 2.0  # how often dropped-message counts go to the daemon (one line each there)
USER_AGENT = "alert-dialer"  # names no worker, version or library


def _sip_hostport(uri: str) -> str:
    """``host[:port]`` of a SIP URI such as ``sip:user@pbx:5060;transport=tcp``."""
    rest = uri.split(":", 1)[1] if uri.lower().startswith(("sip:", "sips:")) else uri
    return rest.split(";", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]


def _with_transport(uri: str, transport: str) -> str:
    """Add ``;transport=tcp`` to a URI of a TCP trunk so pjsip resolves it to TCP."""
    if transport == "udp" or not uri or ";transport=" in uri.lower():
        return uri
    return f"{uri};transport={transport}"


def _name_addr(display: str, uri: str) -> str:
    """A From value with a quoted display name (RFC 3261 quoted-string escaping)."""
    if not display:
        return f"<{uri}>"
    quoted = display.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{uri}>'


@dataclass(eq=False)
class Trunk:
    """One configured trunk and the account that places its calls."""

    name: str
    uri: str
    transport: str
    id_uri: str
    account: TrunkAccount | None = None
    invite_timeout: float = 5.0
    # Registration health, for a trunk this worker registers (see the module docstring).
    registers: bool = False
    probe_uri: str = ""  # where keep-alives go: the proxy, else the registrar
    keepalive_interval: float = 0.0
    keepalive_timeout: float = 2.0
    register_timeout: float = 4.0
    down: str | None = None  # why we reported it not registered ourselves, until it answers
    probe_call_id: str = ""
    probe_cseq: int = 0
    probe_next: float = 0.0  # monotonic time of the next keep-alive
    probe_waiting: float | None = None  # when the oldest unanswered keep-alive left
    reregister_at: float = 0.0


@dataclass(eq=False)
class Attempt:
    """Worker-side state of one dialled call (one ``dial``, one ``ended``)."""

    call_id: str
    trunk: Trunk
    media: dict[str, str]
    ring_deadline: float  # monotonic
    state: dlg.DialogueState
    call: OutboundCall | None = None
    player: pj.AudioMediaPlayer | None = None
    sink: pj.AudioMedia | None = None  # the call's audio the player transmits to
    timer: tuple[float, int] | None = None  # (monotonic deadline, token): one per call
    sip_confirmed: bool = False
    media_up: bool = False
    answered_at: float | None = None
    ringing_sent: bool = False
    abort_reason: str | None = None  # why we hung up on our own (daemon request, shutdown)
    keys: list[str] = field(default_factory=list)
    local_tag: str = ""  # the From tag of our INVITE (seen leaving)
    remote_tag: str = ""  # the To tag of the first response that had one
    responded: bool = False  # any response to the INVITE came back
    invite_deadline: float = float("inf")  # monotonic: no response by then -> unreachable
    hangup_deadline: float | None = None  # monotonic: hung up, and not over by then -> end it
    forced: tuple[Outcome, str] | None = None  # the outcome of a call we terminated ourselves


class TrunkAccount(pj.Account):  # type: ignore[misc]
    """A trunk's account: registration events go to the daemon, incoming calls are refused."""

    def __init__(self, worker: Worker, trunk: str) -> None:
        super().__init__()
        self._worker = worker
        self._trunk = trunk

    @guarded
    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        logger.info("trunk %s registration: %s %s (expires %s)", self._trunk, prm.code,
                    prm.reason, prm.expiration)
        self._worker.registration_changed(self._trunk, prm.code, prm.expiration)
        self._worker.send_reg({"ev": "reg", "trunk": self._trunk, "code": prm.code,
                               "reason": prm.reason, "expires": prm.expiration})

    @guarded
    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self._worker.reject_incoming(self, prm.callId)


class RejectedCall(pj.Call):  # type: ignore[misc]
    """An unsolicited incoming call, held only until pjsua reports it disconnected."""

    def __init__(self, worker: Worker, account: pj.Account, call_id: int) -> None:
        super().__init__(account, call_id)
        self._worker = worker

    @guarded
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._worker.drop_rejected(self)


class OutboundCall(pj.Call):  # type: ignore[misc]
    """A thin pjsua2 call: forwards each callback to the worker with the attempt's id.

    It holds no reference to its Attempt, so dropping the Attempt frees it (issue 3856).
    """

    def __init__(self, worker: Worker, account: pj.Account, call_id: str) -> None:
        super().__init__(account)
        self._worker = worker
        self.attempt_id = call_id

    @guarded
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        self._worker.on_call_state(self, prm)

    @guarded
    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self._worker.on_media_state(self)

    @guarded
    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        self._worker.on_digit(self.attempt_id, prm.digit)


class Worker:
    """Owns the endpoint, the trunk accounts and the calls of one worker process."""

    def __init__(self, channel: Channel | None, listener: Any = None,
                 socket_path: str | None = None) -> None:
        self.link = Link(channel, listener, hello=self._hello, state=self._state,
                         calls=self._carried,
                         state_dir=Path(socket_path).parent if socket_path else None)
        self.socket_path = socket_path
        self.digest = ""
        self._reg_last: dict[str, Message] = {}  # trunk -> its last ``reg`` event
        self._retiring = False  # finish the calls, take no new one, then exit
        self.ep: pj.Endpoint | None = None
        self._writer: Any = None
        self.index = 0
        self.sip_port = 0
        self.trunks: dict[str, Trunk] = {}
        self.attempts: dict[str, Attempt] = {}
        self._rejected: set[RejectedCall] = set()
        self._to_reject: list[RejectedCall] = []
        self._graveyard: list[pj.Call] = []  # disconnected calls, dropped after the callback
        self._retired: list[tuple[float, pj.AudioMediaPlayer]] = []  # (destroy at, player)
        self._redial: list[tuple[float, Message]] = []  # (give up at, dial) after PJ_ETOOMANY
        self._stopping = False
        self._lag = 0.0  # moving average of how late each loop iteration came round (s)
        self._overloaded = False
        self.filter = trust.SourceFilter([])
        self.module: Module | None = None
        self._registers: dict[tuple[str, int], tuple[float, str]] = {}  # REGISTERs waiting
        self._register_ids: dict[str, str] = {}  # a registration's Call-ID -> its trunk
        self._creating: str | None = None
        self._drops_at = 0.0
        # Calls reported over whose INVITE session pjsua still keeps (a hang-up is reported at
        # once; its CANCEL or BYE may go unanswered): call_id -> (local tag, remote tag, end by)
        self._lingering: dict[str, tuple[str, str, float]] = {}
        self._held_reported = 0
        self._listeners: list[int] = []
        self._tcp_open = 0
        self._tcp_closed: list[float] = []  # monotonic times of recent closes
        self._tcp_refusing = False

    # ----- IPC -----

    def send(self, msg: Message) -> None:
        self.link.send(msg)

    def send_reg(self, msg: Message) -> None:
        self._reg_last[str(msg.get("trunk"))] = msg
        self.send(msg)

    def _hello(self) -> Message:
        return {"worker": self.index, "sip_port": self.sip_port, "digest": self.digest,
                "ready": self.ep is not None and not self._retiring}

    def _state(self) -> list[Message]:
        """What a daemon that attaches must know of this worker's state."""
        out: list[Message] = list(self._reg_last.values())
        if self._overloaded:
            out.append({"ev": "load", "overloaded": True, "lag": round(self._lag, 3)})
        if self._held_reported:
            out.append({"ev": "slots", "held": self._held_reported})
        return out

    def _carried(self) -> list[str]:
        """The calls this worker carries: each will end with one ``ended``."""
        return [*self.attempts, *(str(m.get("call_id")) for _, m in self._redial)]

    def _log_event(self, level: str, message: str) -> None:
        self.send({"ev": "log", "level": level, "message": message})

    # ----- start-up -----

    def start(self, init: Message) -> None:
        """Create the endpoint, transports and trunk accounts from the ``init`` message."""
        level = pjsua_level(init.get("log_level"))
        self.index = int(init.get("worker", 0))
        self.digest = str(init.get("digest") or "")
        self.link.alone_s = float(init.get("orphan_timeout") or self.link.alone_s)
        bind = str(init.get("bind") or "127.0.0.1")
        self.ep, self._writer = create_endpoint(level, USER_AGENT)
        self.filter = trust.SourceFilter(trust.networks(init.get("allowed_sources") or []),
                                         int(init.get("reject_code") or 403))
        if not self.filter.trusted:
            logger.error("no trusted SIP source: every SIP message will be dropped")
        # Registered before any transport exists: no message is ever seen unfiltered.
        self.module = Module(self._on_rx, self._on_tx)
        trunks: dict[str, Any] = init.get("trunks") or {}
        transports = {str(t.get("transport") or "udp").lower() for t in trunks.values()}
        udp_id, self.sip_port = create_transport(self.ep, pj.PJSIP_TRANSPORT_UDP, bind)
        tp_ids = {"udp": udp_id}
        if "tcp" in transports:
            # On the UDP port's number, so a PBX ACL or firewall names one port per worker.
            tp_ids["tcp"], _ = create_transport(self.ep, pj.PJSIP_TRANSPORT_TCP, bind,
                                                self.sip_port)
            listeners = sockfilter.tcp_listeners(self.sip_port)
            if not listeners:
                raise RuntimeError("cannot find the SIP TCP listener to filter")
            self._listeners = listeners
            self._guard_listener(closed=False)  # strangers' SYNs dropped in the kernel
            self.module.watch_connections(self._on_connection)
        self.ep.libStart()
        self.module.self_check(self.ep, bind, self.sip_port)
        if len(trunks) > MAX_ACCOUNTS:
            raise ValueError(f"{len(trunks)} trunks: a worker holds at most {MAX_ACCOUNTS}")
        for name, t in trunks.items():
            try:
                self._add_trunk(name, t, bind, init, tp_ids)
            except (pj.Error, ValueError) as exc:
                reason = exc.info() if isinstance(exc, pj.Error) else str(exc)
                logger.error("trunk %s not usable: %s", name, reason)
                self._log_event("error", f"trunk {name} not usable: {reason}")
        if not self.trunks:
            # Incoming INVITEs are offered to the default account; without any, have one that
            # refuses them.
            self._add_trunk("_local", {"uri": f"sip:{bind}:{self.sip_port}"}, bind, init, tp_ids)
        logger.info("worker %d ready on %s:%d with trunks %s", self.index, bind, self.sip_port,
                    ", ".join(self.trunks))
        self.send({"ev": "ready", "worker": self.index, "pid": os.getpid(),
                   "sip_port": self.sip_port})

    def _add_trunk(self, name: str, t: dict[str, Any], bind: str, init: Message,
                   tp_ids: dict[str, int]) -> None:
        transport = str(t.get("transport") or "udp").lower()
        if transport not in tp_ids:
            raise ValueError(f"transport {transport!r} not supported (udp, tcp)")
        uri = str(t["uri"])
        user = str(t.get("username") or "dialer")
        trunk = Trunk(name=name, uri=uri, transport=transport,
                      id_uri=f"sip:{user}@{_sip_hostport(uri)}",
                      invite_timeout=float(t.get("invite_timeout") or 5.0))
        cfg = pj.AccountConfig()
        cfg.idUri = trunk.id_uri
        cfg.sipConfig.transportId = tp_ids[transport]
        if t.get("username") and t.get("password"):
            # Realm "*": answer whichever realm challenges (REGISTER or INVITE).
            cfg.sipConfig.authCreds.append(
                pj.AuthCredInfo("digest", "*", str(t["username"]), 0, str(t["password"])))
        if t.get("proxy"):
            cfg.sipConfig.proxies.append(_with_transport(str(t["proxy"]), transport))
        if t.get("register") and t.get("registrar"):
            cfg.regConfig.registrarUri = _with_transport(str(t["registrar"]), transport)
            cfg.regConfig.timeoutSec = int(t.get("expires", 300))
            cfg.regConfig.retryIntervalSec = int(t.get("retry_interval", 30))
            trunk.registers = True
            trunk.probe_uri = _with_transport(str(t.get("proxy") or t["registrar"]), transport)
            trunk.keepalive_interval = float(t.get("keepalive_interval") or 0.0)
            trunk.keepalive_timeout = float(t.get("keepalive_timeout") or 2.0)
            trunk.register_timeout = float(t.get("register_timeout") or 4.0)
            trunk.probe_call_id = f"keepalive-{os.getpid()}-{name}"
        else:
            cfg.regConfig.registrarUri = ""
        tcfg = cfg.mediaConfig.transportConfig
        tcfg.boundAddress = bind
        if init.get("rtp_port"):
            tcfg.port = int(init["rtp_port"])
            tcfg.portRange = int(init.get("rtp_port_range") or 0)
        trunk.account = TrunkAccount(self, name)
        self._creating = name
        try:
            trunk.account.create(cfg, not self.trunks)  # the first one: the default account
        finally:
            self._creating = None
        self.trunks[name] = trunk

    # ----- main loop -----

    def run(self, pending: list[Message]) -> None:
        """Handle ``pending`` (what arrived with ``init``), then loop until shutdown or EOF."""
        assert self.ep is not None
        for msg in pending:
            self._handle(msg)
        last = time.monotonic()
        while not self._stopping:
            self.ep.libHandleEvents(POLL_MS)
            now = time.monotonic()
            self._watch_load(now - last)
            last = now
            self._graveyard.clear()  # before any new makeCall can reuse a call slot
            if self._retired and self._retired[0][0] <= time.monotonic():
                self._destroy_retired(time.monotonic())
            if self._redial:
                redial, self._redial = self._redial, []
                for give_up, msg in redial:
                    self._handle(msg, give_up)
            self._reject_pending()
            for msg in self.link.receive():
                self._handle(msg)
            if not self.link.attached and not self.link.detachable:
                logger.info("IPC socket closed: shutting down")
                self._stopping = True
            elif self.link.abandoned and not self._retiring:
                logger.warning("no daemon for %.0f s: finishing %d call(s), then exiting",
                               self.link.alone_for(), len(self._carried()))
                self._retiring = True
            if self._retiring and not self._carried() and not self._lingering:
                self._stopping = True
            self._tick()
            self._check_trunks(time.monotonic())
            self._report_drops(time.monotonic())
            self._reap_lingering(time.monotonic())
            if self._tcp_refusing:
                self._check_connections(time.monotonic())
        self.shutdown()

    def _watch_load(self, elapsed: float) -> None:
        """Track how late the loop runs; tell the daemon when it crosses the thresholds."""
        self._lag = 0.95 * self._lag + 0.05 * max(0.0, elapsed - POLL_MS / 1000)
        if self._overloaded != (self._lag > (LAG_RECOVER_S if self._overloaded
                                             else LAG_OVERLOAD_S)):
            self._overloaded = not self._overloaded
            logger.warning("worker %d %s: loop %.0f ms late", self.index,
                           "overloaded" if self._overloaded else "caught up", self._lag * 1000)
            self.send({"ev": "load", "overloaded": self._overloaded, "lag": round(self._lag, 3)})

    def _handle(self, msg: Message, give_up: float | None = None) -> None:
        op = msg.get("op")
        try:
            if op == "dial":
                self.dial(msg, give_up)
            elif op == "hangup":
                att = self.attempts.get(str(msg.get("call_id")))
                if att is not None:
                    self._hangup(att, abort=oc.ON_REQUEST)
                waiting = [m for _, m in self._redial if m.get("call_id") == msg.get("call_id")]
                if waiting:
                    self._redial = [(g, m) for g, m in self._redial if m not in waiting]
                    self._send_failed(str(msg.get("call_id")), oc.ON_REQUEST)
            elif op == "trust":
                self.filter.trusted = trust.networks(msg.get("allowed_sources") or [])
                logger.info("trusted SIP sources now %s", msg.get("allowed_sources"))
                if self._listeners and not self._tcp_refusing:
                    self._guard_listener(closed=False)
            elif op == "trunk":
                trunk = self.trunks.get(str(msg.get("trunk")))
                if trunk is not None and msg.get("up"):
                    trunk.down = None
                elif trunk is not None:
                    self._trunk_down(trunk, str(msg.get("reason") or "not registered"),
                                     report=False)
            elif op == "shutdown":
                self._stopping = True
            elif op == "retire":
                logger.info("retiring: finishing %d call(s), then exiting", len(self._carried()))
                self._retiring = True
            else:
                logger.warning("unknown IPC op %r", op)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the worker
            logger.exception("error handling %r", op)
            if op == "dial" and msg.get("call_id") not in self.attempts:
                self._send_failed(str(msg.get("call_id")), f"worker error: {exc}")

    def _tick(self) -> None:
        """Fire due ring timeouts and dialogue timers."""
        now = time.monotonic()
        for att in list(self.attempts.values()):
            try:
                ring = oc.ring_timeout(now=now, deadline=att.ring_deadline,
                                       answered=att.answered_at is not None,
                                       sip_confirmed=att.sip_confirmed,
                                       aborting=att.abort_reason is not None)
                if ring is not oc.RingTimeout.WAIT:
                    att.ring_deadline = float("inf")
                    if ring is oc.RingTimeout.NO_AUDIO:
                        logger.warning("call %s: answered without audio", att.call_id)
                        self._hangup(att, abort=oc.ANSWERED_WITHOUT_AUDIO)
                    else:
                        logger.info("call %s: ring timeout, cancelling", att.call_id)
                        self._hangup(att)  # CANCEL -> 487 -> no_answer
                if not att.responded and now >= att.invite_deadline:
                    att.invite_deadline = float("inf")
                    seconds = att.trunk.invite_timeout
                    logger.warning("call %s: no response to the INVITE in %.0f s: unreachable",
                                   att.call_id, seconds)
                    self._terminate(att, 408, oc.invite_timeout_outcome(
                        trunk_down=att.trunk.down is not None, seconds=seconds))
                elif att.hangup_deadline is not None and now >= att.hangup_deadline:
                    att.hangup_deadline = None
                    logger.warning("call %s: still not over %.0f s after hanging up: ending it",
                                   att.call_id, att.trunk.invite_timeout)
                    self._terminate(att, oc.hangup_status(att.answered_at is not None), None)
                if att.timer is not None and now >= att.timer[0]:
                    token, att.timer = att.timer[1], None
                    self._feed(att, dlg.TimerFired(token, time.time()))
            except Exception:  # noqa: BLE001 - contain the failure to this call
                logger.exception("call %s: timer handling failed", att.call_id)
                self._hangup(att, abort="worker error")

    # ----- calls -----

    def dial(self, msg: Message, give_up: float | None = None) -> None:
        """Place one call; every path ends in exactly one ``ended`` for this ``call_id``.

        ``give_up``: when a dial refused with PJ_ETOOMANY stops being retried."""
        call_id = str(msg["call_id"])
        trunk = self.trunks.get(str(msg.get("trunk")))
        if trunk is not None and self._lingering and not self._stopping \
                and len(self.attempts) + len(self._lingering) >= MAX_CALLS:
            # Every slot is taken, some by finished calls whose CANCEL/BYE is unanswered: they
            # are freed within invite_timeout (_reap_lingering). Wait without asking pjsua.
            now = time.monotonic()
            if give_up is None:
                logger.info("call %s: waiting for a call slot to be freed", call_id)
                give_up = now + trunk.invite_timeout + 1
            if now < give_up:
                self._redial.append((give_up, msg))
                return
        if call_id in self.attempts:
            self._send_failed(call_id, "duplicate call_id")
            return
        if self._retiring:
            self._send_failed(call_id, "worker retiring", Outcome.INTERRUPTED)
            return
        if trunk is None or trunk.account is None:
            self._send_failed(call_id, f"unknown trunk {msg.get('trunk')!r}")
            return
        if len(self.attempts) + len(self._rejected) >= MAX_CALLS:
            self._send_failed(call_id, f"worker busy: {MAX_CALLS} calls already")
            return
        names = {f.name for f in fields(DialogueSettings)}
        settings = DialogueSettings(**{k: v for k, v in (msg.get("dialogue") or {}).items()
                                       if k in names})
        now = time.monotonic()
        att = Attempt(call_id=call_id, trunk=trunk, media=dict(msg.get("media") or {}),
                      ring_deadline=now + float(msg.get("ring_timeout") or 30.0),
                      state=dlg.start(settings), invite_deadline=now + trunk.invite_timeout)
        from_uri = msg.get("from_uri")
        if from_uri and not str(from_uri).lower().startswith(("sip:", "sips:", "tel:")):
            from_uri = f"sip:{from_uri}@{_sip_hostport(trunk.uri)}"  # a bare caller number
        target = _with_transport(str(msg["uri"]), trunk.transport)
        prm = pj.CallOpParam(True)
        prm.opt.customCallId = call_id  # the SIP Call-ID is the attempt id
        prm.txOption.localUri = _name_addr(str(msg.get("display") or ""),
                                           str(from_uri or trunk.id_uri))
        att.call = OutboundCall(self, trunk.account, call_id)
        self.attempts[call_id] = att  # before makeCall: callbacks may run inside it
        self.filter.call_started(call_id)  # its dialog is protected before the INVITE leaves
        try:
            att.call.makeCall(target, prm)
        except pj.Error as exc:
            del self.attempts[call_id]
            self.filter.call_ended(call_id)
            att.call = None
            now = time.monotonic()
            until = oc.redial_until(status=exc.status, now=now, give_up=give_up,
                                    stopping=self._stopping, invite_timeout=trunk.invite_timeout)
            if until is not None:
                # A slot still held by a finished call's SIP transaction is freed within
                # invite_timeout (_reap_lingering): wait that long, logged once.
                if give_up is None:
                    logger.info("call %s: no free pjsua call slot yet, retrying for %.0f s",
                                call_id, until - now)
                self._redial.append((until, msg))
                return
            logger.warning("call %s: makeCall failed: %s", call_id, exc.info())
            self._send_failed(call_id, f"makeCall failed: {exc.reason} ({exc.status})")
            return
        logger.info("call %s: dialling %s via %s", call_id, msg["uri"], trunk.name)

    def _send_failed(self, call_id: str, reason: str,
                     outcome: Outcome = Outcome.FAILED) -> None:
        logger.warning("call %s: %s: %s", call_id, outcome.value, reason)
        self.send({"ev": "ended", "call_id": call_id, "status": None, "reason": reason,
                   "q850": None, "outcome": outcome.value, "answered_at": None,
                   "keys": "", "answer_confirmed_at": None, "listen_confirmed_at": None,
                   "at": time.time()})

    def on_call_state(self, call: OutboundCall, prm: pj.OnCallStateParam) -> None:
        att = self.attempts.get(call.attempt_id)
        if att is None:
            return
        ci = call.getInfo()  # still allowed inside the DISCONNECTED callback, not after
        if ci.state == pj.PJSIP_INV_STATE_EARLY and not att.ringing_sent \
                and ci.lastStatusCode in (180, 183):
            att.ringing_sent = True
            self.send({"ev": "ringing", "call_id": att.call_id, "at": time.time()})
        elif ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
            att.sip_confirmed = True
            att.ring_deadline = time.monotonic() + MEDIA_GRACE  # now guards the audio
            self._maybe_answered(att)
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            q850 = None
            if prm.e.type == pj.PJSIP_EVENT_TSX_STATE:
                try:
                    q850 = q850_cause(prm.e.body.tsxState.src.rdata.wholeMsg or "")
                except Exception:  # noqa: BLE001 - no received message behind this event
                    q850 = None
            self._finish(att, ci.lastStatusCode, ci.lastReason, q850)

    def on_media_state(self, call: OutboundCall) -> None:
        att = self.attempts.get(call.attempt_id)
        if att is None:
            return
        ci = call.getInfo()  # keep it: the media vector points into it (SWIG)
        active = [m.index for m in ci.media if m.type == pj.PJMEDIA_TYPE_AUDIO
                  and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE]
        att.media_up = bool(active)
        for index in active:
            self._guard_media(att, call, index)
        self._maybe_answered(att)

    def _guard_media(self, att: Attempt, call: OutboundCall, index: int) -> None:
        """Only the far end's SDP address (and the trusted networks) may send this call RTP.

        Applied again on every media change (a re-INVITE from the peer moves it legitimately)."""
        try:
            remote = call.getStreamInfo(index).remoteRtpAddress
            local = call.getMedTransportInfo(index).localRtpName
        except pj.Error as exc:
            logger.warning("call %s: cannot read its media addresses: %s", att.call_id,
                           exc.info())
            return
        host = remote.rsplit(":", 1)[0].strip("[]")
        port = int(local.rsplit(":", 1)[1])
        try:
            nets = [*trust.networks([host]), *self.filter.trusted]
        except ValueError:
            nets = list(self.filter.trusted)
        prog = sockfilter.program(nets)
        for p in (port, port + 1):  # RTP, and RTCP beside it
            for fd in sockfilter.udp_sockets(p):
                sockfilter.attach(fd, prog)
        logger.debug("call %s: RTP on %d accepted from %s only", att.call_id, port, host)

    def _maybe_answered(self, att: Attempt) -> None:
        if att.answered_at is not None or not (att.sip_confirmed and att.media_up):
            return
        if att.abort_reason is not None:
            return  # answered just as we were hanging up: nothing to play
        att.answered_at = time.time()
        logger.info("call %s: answered", att.call_id)
        self.send({"ev": "answered", "call_id": att.call_id, "at": att.answered_at})
        self._feed(att, dlg.Answered(att.answered_at))

    def on_digit(self, call_id: str, digit: str) -> None:
        att = self.attempts.get(call_id)
        if att is None or att.answered_at is None:
            return
        now = time.time()
        logger.info("call %s: key %s", call_id, digit)
        self.send({"ev": "key", "call_id": call_id, "key": digit, "at": now})
        self._feed(att, dlg.Digit(digit, now))

    def _feed(self, att: Attempt, event: dlg.Event) -> None:
        """Step the dialogue and carry out its commands; the one place transitions are logged."""
        before = att.state.phase
        att.state, commands = dlg.step(att.state, event)
        logger.debug("call %s: %s %s -> %s %s", att.call_id, type(event).__name__, before.value,
                     att.state.phase.value, commands)
        for cmd in commands:
            if isinstance(cmd, dlg.Play):
                self._play(att, cmd.prompt.value)
                self.send({"ev": "played", "call_id": att.call_id, "prompt": cmd.prompt.value,
                           "at": time.time()})
            elif isinstance(cmd, dlg.StartTimer):
                att.timer = (time.monotonic() + cmd.seconds, cmd.token)
            elif isinstance(cmd, dlg.HangUp):
                self._hangup(att)
            elif isinstance(cmd, dlg.Confirmed):
                self.send({"ev": "confirmed", "call_id": att.call_id, "what": cmd.what,
                           "at": cmd.at})

    def _play(self, att: Attempt, prompt: str) -> None:
        """Replace the call's player with a fresh one on ``prompt`` (played once, from start)."""
        self._stop_player(att, connected=True)
        path = att.media.get(prompt)
        if not path or att.call is None:
            logger.warning("call %s: no audio for %s", att.call_id, prompt)
            return
        try:
            player = pj.AudioMediaPlayer()
            player.createPlayer(path, pj.PJMEDIA_FILE_NO_LOOP)
            sink = att.call.getAudioMedia(-1)
            player.startTransmit(sink)
            att.player, att.sink = player, sink
        except pj.Error as exc:
            # The dialogue's timer still runs, so the call goes on (silently) and ends.
            logger.error("call %s: cannot play %s: %s", att.call_id, path, exc.info())
            self._log_event("error", f"cannot play {path}: {exc.reason}")

    def _stop_player(self, att: Attempt, connected: bool = False) -> None:
        """Disconnect the call's player now and destroy it ``PLAYER_RETIRE_S`` later.

        ``connected``: the call is still up, so its audio port is valid and the player must stop
        transmitting to it (it would otherwise go on under the next prompt). A call that has
        disconnected had its port removed from the bridge by pjsua, connections included.
        """
        player, sink = att.player, att.sink
        att.player = att.sink = None
        if player is None:
            return
        if connected and sink is not None:
            try:
                player.stopTransmit(sink)
            except pj.Error as exc:
                logger.debug("call %s: stopTransmit: %s", att.call_id, exc.info())
        self._retired.append((time.monotonic() + PLAYER_RETIRE_S, player))

    def _destroy_retired(self, now: float) -> None:
        while self._retired and self._retired[0][0] <= now:
            self._retired.pop(0)  # the last reference: pjsua_player_destroy

    def _hangup(self, att: Attempt, abort: str | None = None) -> None:
        att.abort_reason = oc.abort_reason_after(att.abort_reason, abort, att.state.outcome)
        if att.call is None:
            return
        if att.hangup_deadline is None:
            att.hangup_deadline = time.monotonic() + att.trunk.invite_timeout
        try:
            att.call.hangup(pj.CallOpParam(True))
        except pj.Error as exc:  # already disconnecting: DISCONNECTED follows anyway
            logger.debug("call %s: hangup: %s", att.call_id, exc.info())

    def _finish(self, att: Attempt, status: int, reason: str, q850: int | None) -> None:
        """The call is over: report it once and drop every reference to it."""
        answered = att.answered_at is not None
        if oc.remote_hangup_counts(answered=answered, abort_reason=att.abort_reason):
            self._feed(att, dlg.RemoteHangup(time.time()))  # no-op if the dialogue ended it
        outcome, reason = oc.decide(oc.CallEnd(
            status=status, reason=reason, answered=answered,
            dialogue_outcome=att.state.outcome, dialogue_success=att.state.success,
            abort_reason=att.abort_reason, forced=att.forced))
        logger.info("call %s: ended %s %s (q850 %s): %s", att.call_id, status, reason, q850,
                    outcome.value)
        self.send({"ev": "ended", "call_id": att.call_id, "status": status, "reason": reason,
                   "q850": q850, "outcome": outcome.value, "answered_at": att.answered_at,
                   "keys": att.state.keys, "answer_confirmed_at": att.state.answer_confirmed_at,
                   "listen_confirmed_at": att.state.listen_confirmed_at, "at": time.time()})
        self._stop_player(att)
        att.timer = None
        self.attempts.pop(att.call_id, None)
        self.filter.call_ended(att.call_id)
        if att.local_tag:
            self._lingering[att.call_id] = (att.local_tag, att.remote_tag,
                                            time.monotonic() + att.trunk.invite_timeout)
        if att.call is not None:
            self._graveyard.append(att.call)  # freed once this callback has returned
            att.call = None

    def _terminate(self, att: Attempt, code: int, forced: tuple[Outcome, str] | None) -> None:
        """End the call's INVITE session at once; pjsua reports DISCONNECTED, which finishes it.

        When the session cannot be found (no INVITE seen leaving), the call is reported over
        anyway: the daemon must never wait for an end that will not come."""
        if forced is not None:
            att.forced = forced
        done = self.module is not None and att.local_tag != "" and \
            self.module.terminate(att.call_id, att.local_tag, att.remote_tag, code)
        if not done and att.call_id in self.attempts:
            logger.warning("call %s: no INVITE session to end: reporting it over", att.call_id)
            if att.call is not None:
                self._graveyard.append(att.call)
                att.call = None
            self._finish(att, code, "ended by the worker", None)

    # ----- the source filter and registration health -----

    def _on_rx(self, rx: Rx) -> trust.Verdict:
        """Every received message, before PJSIP's transactions: the filter's verdict."""
        verdict = self.filter.decide(trust.Seen(src=rx.src, request=rx.request, method=rx.method,
                                                call_id=rx.call_id, to_tag=rx.to_tag,
                                                status=rx.status))
        if verdict is not trust.PASS or rx.request:
            return verdict
        att = self.attempts.get(rx.call_id)
        if att is not None:
            if rx.method == "INVITE":
                att.responded = True
                # The dialog's remote tag: from a provisional or a 2xx (which wins), never
                # from a 401/407 challenge, which a proxy tags with its own.
                if rx.to_tag and 100 < rx.status < 300 and (rx.status >= 200
                                                            or not att.remote_tag):
                    att.remote_tag = rx.to_tag
            return verdict
        if rx.method == "REGISTER" and rx.status >= 200:
            self._registers.pop((rx.call_id, rx.cseq), None)
        elif rx.method == "OPTIONS":
            for trunk in self.trunks.values():
                if trunk.probe_call_id and rx.call_id == trunk.probe_call_id:
                    self._probe_answered(trunk, rx.status)
                    return trust.DROP  # ours: no transaction waits for it
        return verdict

    def _on_tx(self, tx: Tx) -> None:
        if tx.method == "REGISTER":
            if self._creating is not None:  # pjsua sends the first one inside Account.create
                self._register_ids.setdefault(tx.call_id, self._creating)
            self._registers.setdefault((tx.call_id, tx.cseq), (time.monotonic(), tx.call_id))
        elif tx.method == "INVITE":
            att = self.attempts.get(tx.call_id)
            if att is not None and not att.local_tag:
                att.local_tag = tx.from_tag

    def _probe_answered(self, trunk: Trunk, status: int) -> None:
        trunk.probe_waiting = None
        if trunk.down is not None and time.monotonic() >= trunk.reregister_at:
            logger.info("trunk %s: the registrar answers again (%d): registering", trunk.name,
                        status)
            self._reregister(trunk)

    def _reregister(self, trunk: Trunk) -> None:
        trunk.reregister_at = time.monotonic() + max(trunk.register_timeout,
                                                     trunk.keepalive_interval)
        if trunk.account is None:
            return
        try:
            trunk.account.setRegistration(True)
        except pj.Error as exc:  # a REGISTER is already on its way: its answer will do
            logger.debug("trunk %s: setRegistration: %s", trunk.name, exc.info())

    def _trunk_down(self, trunk: Trunk, why: str, report: bool = True) -> None:
        """The trunk is down: said to the daemon (``report``; the worker that registers it
        found out), or said by the daemon (every other worker)."""
        if trunk.down is not None:
            return
        trunk.down = why
        if report:
            logger.warning("trunk %s not registered: %s", trunk.name, why)
            self.send_reg({"ev": "reg", "trunk": trunk.name, "code": 408, "reason": why,
                       "expires": 0})
        # Calls whose INVITE has had no answer went into the dead registrar/proxy: nobody rang.
        # End them now (their slots free) as trunk_down, which costs the recipient no attempt.
        for att in list(self.attempts.values()):
            if att.trunk is trunk and not att.responded and att.forced is None:
                self._terminate(att, 408, oc.trunk_down_outcome(why))

    def registration_changed(self, trunk_name: str, code: int, expires: int) -> None:
        trunk = self.trunks.get(trunk_name)
        if trunk is not None and 200 <= code < 300 and expires > 0:
            trunk.down = None

    def _check_trunks(self, now: float) -> None:
        """Keep-alives out, and unanswered REGISTERs and keep-alives reported."""
        for key, (sent, call_id) in list(self._registers.items()):
            trunk = self.trunks.get(self._register_ids.get(call_id, ""))
            if trunk is None or now - sent > 64:  # not one of ours, or long forgotten
                self._registers.pop(key, None)
            elif now - sent > trunk.register_timeout:
                self._registers.pop(key, None)
                self._trunk_down(trunk, f"REGISTER unanswered for {trunk.register_timeout:g} s")
        for trunk in self.trunks.values():
            if not trunk.registers or trunk.keepalive_interval <= 0 or self.module is None:
                continue
            if trunk.probe_waiting is not None and \
                    now - trunk.probe_waiting > trunk.keepalive_timeout:
                self._trunk_down(trunk, f"registrar {trunk.probe_uri} did not answer OPTIONS "
                                        f"in {trunk.keepalive_timeout:g} s")
            if now >= trunk.probe_next:
                trunk.probe_next = now + trunk.keepalive_interval
                trunk.probe_cseq += 1
                if self.module.send_options(trunk.probe_uri, trunk.id_uri, trunk.probe_call_id,
                                            trunk.probe_cseq):
                    if trunk.probe_waiting is None:
                        trunk.probe_waiting = now
                elif trunk.probe_waiting is None:
                    trunk.probe_waiting = now  # not even sent (TCP refused): unanswered

    def _reap_lingering(self, now: float) -> None:
        """Forget finished sessions, end those past their time; tell the daemon the slots held."""
        if self.module is None:
            return
        for call_id, (local, remote, end_by) in list(self._lingering.items()):
            if not self.module.session_alive(call_id, local, remote):
                del self._lingering[call_id]
            elif now >= end_by:
                logger.warning("call %s: its SIP transaction is still unanswered: ending it",
                               call_id)
                self.module.terminate(call_id, local, remote, 408)
                del self._lingering[call_id]
        if len(self._lingering) != self._held_reported:
            self._held_reported = len(self._lingering)
            self.send({"ev": "slots", "held": self._held_reported})

    def _on_connection(self, made: bool) -> None:
        if made:
            self._tcp_open += 1
        else:
            self._tcp_open = max(0, self._tcp_open - 1)
            self._tcp_closed.append(time.monotonic())
        self._check_connections(time.monotonic())

    def _check_connections(self, now: float) -> None:
        """Refuse TCP connections while the ioqueue's sockets run short; accept them again after."""
        if not self._listeners:
            return
        while self._tcp_closed and now - self._tcp_closed[0] > TCP_REUSE_S:
            self._tcp_closed.pop(0)
        in_use = self._tcp_open + len(self._tcp_closed)
        if not self._tcp_refusing and in_use >= TCP_SOCKET_BUDGET:
            logger.warning("%d TCP connections open or just closed: refusing new ones for now",
                           in_use)
            self._guard_listener(closed=True)
        elif self._tcp_refusing and in_use < TCP_SOCKET_BUDGET // 2:
            logger.info("accepting TCP connections again")
            self._guard_listener(closed=False)

    def _guard_listener(self, closed: bool) -> None:
        prog = sockfilter.program([] if closed else self.filter.trusted)
        for fd in self._listeners:
            sockfilter.attach(fd, prog)
        self._tcp_refusing = closed

    def _report_drops(self, now: float) -> None:
        if now < self._drops_at:
            return
        self._drops_at = now + DROP_REPORT_S
        counts = self.filter.take_dropped()
        if counts:
            last = self.filter.last_dropped
            self.send({"ev": "dropped", "counts": counts,
                       "last": f"{last.method} from {last.src}" if last else None})

    # ----- incoming calls -----

    def reject_incoming(self, account: pj.Account, pj_call_id: int) -> None:
        """Take the call (so pjsua2 does not answer it itself); the loop refuses it."""
        call = RejectedCall(self, account, pj_call_id)
        self._rejected.add(call)
        self._to_reject.append(call)

    def _reject_pending(self) -> None:
        # Not inside onIncomingCall: a final answer there to an INVITE without SDP makes
        # pjsua 2.15 free the cloned rdata twice and abort the process (measured).
        while self._to_reject:
            call = self._to_reject.pop()
            logger.warning("refusing an incoming call with 403")
            prm = pj.CallOpParam(True)
            prm.statusCode = 403
            try:
                call.hangup(prm)
            except pj.Error as exc:
                logger.warning("rejecting incoming call: %s", exc.info())
                self.drop_rejected(call)

    def drop_rejected(self, call: RejectedCall) -> None:
        if call in self._rejected:
            self._rejected.discard(call)
            self._graveyard.append(call)

    # ----- shutdown -----

    def shutdown(self) -> None:
        """Hang up every call, report them, drop every pjsua2 object, destroy the library."""
        if self.ep is None:
            return
        for _, msg in self._redial:
            self._send_failed(str(msg.get("call_id")), SHUTTING_DOWN, Outcome.INTERRUPTED)
        self._redial.clear()
        for att in list(self.attempts.values()):
            self._hangup(att, abort=SHUTTING_DOWN)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while (self.attempts or self._rejected) and time.monotonic() < deadline:
            self.ep.libHandleEvents(POLL_MS)
            self._graveyard.clear()
            self._reject_pending()
        for att in list(self.attempts.values()):  # no DISCONNECTED in time: report anyway
            self._finish(att, 0, SHUTTING_DOWN, None)
        if self._retired:  # let the bridge drop the last players before they are destroyed
            last = self._retired[-1][0]
            while self._retired and time.monotonic() < last + POLL_MS / 1000:
                self.ep.libHandleEvents(POLL_MS)
                self._destroy_retired(time.monotonic())
        self._graveyard.clear()
        self._rejected.clear()
        self._to_reject.clear()
        self._retired.clear()
        for trunk in self.trunks.values():
            trunk.account = None
        self.trunks.clear()
        gc.collect()
        destroy_endpoint(self.ep)
        self.ep = None
        logger.info("worker %d stopped", self.index)


def _read_first(channel: Channel) -> list[Message]:
    """Block until the first messages (``init`` first) arrive; empty at EOF."""
    while not channel.closed:
        select.select([channel], [], [], 1.0)
        messages = channel.receive()
        if messages:
            return messages
    return []


def _first_daemon(listener: socket.socket, timeout: float) -> Channel | None:
    """The connection of the daemon that started us (it connects at once)."""
    ready, _, _ = select.select([listener], [], [], timeout)
    if not ready:
        return None
    conn, _ = listener.accept()
    return Channel(conn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    wire = parser.add_mutually_exclusive_group(required=True)
    wire.add_argument("--ipc-fd", type=int, help="a connected socket: exit when it closes")
    wire.add_argument("--listen-fd", type=int,
                      help="a listening Unix socket: outlive the daemon, let the next attach")
    parser.add_argument("--socket", help="the path of the --listen-fd socket (removed at exit)")
    args = parser.parse_args(argv)
    setup_logging(3)
    faulthandler.enable()  # a crash in the library still names the Python line it came from
    listener: socket.socket | None = None
    if args.listen_fd is not None:
        listener = socket.socket(fileno=args.listen_fd)
        channel = _first_daemon(listener, 10.0)
        if channel is None:
            logger.error("no daemon connected")
            listener.close()
            _unlink(args.socket)
            return 2
    else:
        channel = Channel.from_fd(args.ipc_fd)
    first = _read_first(channel)
    if not first:
        _unlink(args.socket)
        return 0  # the daemon went away before init
    init = first[0]
    if init.get("op") != "init":
        logger.error("expected init, got %r", init.get("op"))
        _unlink(args.socket)
        return 2
    logging.getLogger().setLevel(logging.DEBUG if pjsua_level(init.get("log_level")) >= 4
                                 else logging.INFO)
    worker = Worker(channel, listener, args.socket)
    try:
        worker.start(init)
        worker.run(first[1:])
    except Exception as exc:  # noqa: BLE001 - report, then exit non-zero
        logger.exception("worker failed")
        worker.send({"ev": "log", "level": "error", "message": f"worker failed: {exc}"})
        return 1
    finally:
        _unlink(args.socket)  # first: no daemon may attach to a worker on its way out
        worker.link.write_undelivered()
        worker.link.close()
    return 0


def _unlink(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    sys.exit(main())
