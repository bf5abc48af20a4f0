"""One SIP worker process: a single-threaded PJSUA2 endpoint with at most 4 calls.

Run by the daemon as ``python -m sip.worker --listen-fd N --socket PATH`` (a listening Unix
socket in the node's state directory: the worker outlives its daemon and a restarted daemon
re-attaches, ``sip.link``), or as ``python -m sip.worker --ipc-fd N`` (one connected socket: the
worker hangs up and exits when it closes, as the tests drive it). The daemon speaks ``dialer.ipc``.
The main thread alternates between ``libHandleEvents`` (where every pjsua2 callback runs) and a
non-blocking read of the IPC socket, then checks the calls' timers. ``dialer.core.dialogue``
(pure) drives each answered call; this module turns its commands into SIP and audio, and back.

Decisions worth knowing:

* Caller ID: the From header of each call is set per call through ``SipTxOption.localUri``
  (``"display" <from_uri>``), so one account per trunk serves every campaign's caller number.
* Every received SIP message first goes through the source filter (``sip.trust`` decides,
  ``sip.pjmodule`` reads and acts, before PJSIP's transaction layer): only the trunks' addresses
  are heard, in-dialog requests only from the dialog's far end, and unsolicited requests are
  answered (INVITE 403 by default: a dial-out-only UA refuses service; OPTIONS 200) or dropped
  before pjsua can spend a call slot, a media port or a socket on them.
* Registration health and keep-alives: ``sip.trunks``; the pjsua2 Account and Call subclasses,
  the players and each call's handling of SIP events: ``sip.calls``; outcomes:
  ``dialer.core.outcome``.
* No call holds a pjsua call slot for PJSIP's 32 s transaction timeout: an INVITE without any
  response after ``invite_timeout`` ends ``unreachable`` (408), and a call we hung up that is not
  over ``invite_timeout`` later (an unanswered CANCEL, a malformed 487) is terminated.
* A call ended on the daemon's request (``hangup``) before the dialogue finished ends
  ``failed``, by ``shutdown`` or past the node's lease (``lease``) ``interrupted`` (or
  ``contacted`` if every confirmation came), never ``no_answer``: the recipient did nothing wrong.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import logging
import os
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pjsua2 as pj

from dialer import ipc, logs
from dialer.core import dialogue as dlg
from dialer.core import outcome as oc
from dialer.core.domain import DialogueSettings, Outcome
from dialer.ipc import Channel
from sip import sockfilter, trust
from sip.calls import (
    Attempt,
    CallEvents,
    OutboundCall,
    Players,
    RejectedCall,
    TrunkAccount,
    wait_ms,
)
from sip.cpuwait import LoadGate
from sip.endpoint import (
    create_endpoint,
    create_transports,
    destroy_endpoint,
    pjsua_level,
    setup_logging,
    sip_header,
)
from sip.link import Link, attach, unlink_socket
from sip.pjmodule import Module, Rx, Tx
from sip.tcpguard import TcpGuard
from sip.trunks import Registrations, Trunk, account_config, name_addr, sip_hostport, with_transport

logger = logging.getLogger(__name__)

MAX_CALLS = 4  # PJSUA_MAX_CALLS of the wheel
MAX_ACCOUNTS = 8  # the 9th Account.create() aborts the process
# The longest wait in libHandleEvents: SIP, RTP, pjsua's timers and the calls' own deadlines
# (sip.calls.wait_ms) end it sooner; what the daemon sends waits for it (issue 16: 100, not 50).
POLL_MS = 100
SHUTDOWN_GRACE = 3.0  # seconds to wait for BYE/CANCEL transactions when shutting down
SHUTTING_DOWN = oc.SHUTTING_DOWN  # the reason of the calls a stopping worker cuts
USER_AGENT = "alert-dialer"  # names no worker, version or library



class Worker(CallEvents):
    """Owns the endpoint, the trunk accounts and the calls of one worker process."""

    def __init__(self, channel: Channel | None, listener: Any = None,
                 socket_path: str | None = None) -> None:
        self.link = Link(channel, listener, hello=self._hello, state=self._state,
                         calls=self._carried,
                         state_dir=Path(socket_path).parent if socket_path else None)
        self.socket_path = socket_path
        self.digest = ""
        self.rtp_port = 0
        self._reg_last: dict[str, ipc.Reg] = {}  # trunk -> its last ``reg`` event
        self._retiring = False  # finish the calls, take no new one, then exit
        self.ep: pj.Endpoint | None = None
        self._writer: Any = None
        self.index = 0
        self.sip_port = 0
        self.regs = Registrations(self.send_reg, self._on_trunk_down)
        self.trunks: dict[str, Trunk] = self.regs.trunks
        self.attempts: dict[str, Attempt] = {}
        self._rejected: set[RejectedCall] = set()
        self._to_reject: list[RejectedCall] = []
        self._graveyard: list[pj.Call] = []  # disconnected calls, dropped after the callback
        self.players = Players()
        self._redial: list[tuple[float, ipc.Dial]] = []  # (give up at, dial) after PJ_ETOOMANY
        self._stopping = False
        self.gate = LoadGate()  # the overload gate (sip.cpuwait)
        self.filter = trust.SourceFilter([])
        self.module: Module | None = None
        self._drops_at = 0.0
        # Calls reported over whose INVITE session pjsua still keeps (a hang-up is reported at
        # once; its CANCEL or BYE may go unanswered): call_id -> (local tag, remote tag, end by)
        self._lingering: dict[str, tuple[str, str, float]] = {}
        self._held_reported = 0
        self.tcp = TcpGuard(lambda: self.filter.trusted)
        self.fence_at: float | None = None  # monotonic; the node's lease ends for us then
        self.fenced = False  # past it: calls hung up, none taken until the next ``lease``

    # ----- IPC -----

    def send(self, msg: ipc.Event) -> None:
        self.link.send(msg)

    def send_reg(self, msg: ipc.Reg) -> None:
        self._reg_last[msg.trunk] = msg
        self.send(msg)

    def _hello(self) -> dict[str, Any]:
        return {"worker": self.index, "sip_port": self.sip_port, "digest": self.digest,
                "rtp_port": self.rtp_port,
                "ready": self.ep is not None and not self._retiring}

    def _state(self) -> list[ipc.Event]:
        """What a daemon that attaches must know of this worker's state."""
        out: list[ipc.Event] = list(self._reg_last.values())
        if self.gate.overloaded:
            out.append(ipc.Load(overloaded=True, lag=round(self.gate.lag, 3),
                                wait=round(self.gate.wait, 3)))
        if self._held_reported:
            out.append(ipc.Slots(held=self._held_reported))
        return out

    def _carried(self) -> list[str]:
        """The calls this worker carries: each will end with one ``ended``."""
        return [*self.attempts, *(m.call_id for _, m in self._redial)]

    def _log_event(self, level: str, message: str) -> None:
        self.send(ipc.Log(level=level, message=message))

    # ----- start-up -----

    def start(self, init: ipc.Init) -> None:
        """Create the endpoint, transports and trunk accounts from the ``init`` message."""
        level = pjsua_level(init.log_level)
        self.index = init.worker
        self.digest = init.digest or ""
        self.rtp_port = init.rtp_port or 0
        self.link.alone_s = float(init.orphan_timeout or self.link.alone_s)
        bind = init.bind or "127.0.0.1"
        self.ep, self._writer = create_endpoint(level, USER_AGENT)
        self.filter = trust.SourceFilter(trust.networks(init.allowed_sources),
                                         init.reject_code or 403)
        if not self.filter.trusted:
            logger.error("no trusted SIP source: every SIP message will be dropped")
        # Registered before any transport exists: no message is ever seen unfiltered.
        self.module = Module(self._on_rx, self._on_tx)
        trunks = init.trunks
        transports = {str(t.get("transport") or "udp").lower() for t in trunks.values()}
        tp_ids = create_transports(self.ep, bind, [init.sip_port or 0, init.sip_port_alt or 0],
                                   tcp="tcp" in transports)
        self.sip_port = tp_ids.pop("port")
        if "tcp" in transports:
            listeners = sockfilter.tcp_listeners(self.sip_port)
            if not listeners:
                raise RuntimeError("cannot find the SIP TCP listener to filter")
            self.tcp.start(listeners)  # strangers' SYNs dropped in the kernel
            self.module.watch_connections(self.tcp.on_connection)
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
        self.send(ipc.Ready(worker=self.index, pid=os.getpid(), sip_port=self.sip_port))

    def _add_trunk(self, name: str, t: dict[str, Any], bind: str, init: ipc.Init,
                   tp_ids: dict[str, int]) -> None:
        trunk, cfg = account_config(name, t, bind, init, tp_ids)
        trunk.account = TrunkAccount(self, name)
        self.regs.creating = name
        try:
            trunk.account.create(cfg, not self.trunks)  # the first one: the default account
        finally:
            self.regs.creating = None
        self.trunks[name] = trunk

    # ----- main loop -----

    def run(self, pending: list[ipc.Op]) -> None:
        """Handle ``pending`` (what arrived with ``init``), then loop until shutdown or EOF."""
        assert self.ep is not None
        for msg in pending:
            self._handle(msg)
        last, wait = time.monotonic(), POLL_MS
        while not self._stopping:
            self.ep.libHandleEvents(wait)
            now = time.monotonic()
            self._watch_load(now - last - wait / 1000)
            last = now
            self._graveyard.clear()  # before any new makeCall can reuse a call slot
            if self.players.due(time.monotonic()):
                self.players.destroy_due(time.monotonic())
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
            self._check_fence(time.monotonic())
            self.regs.check(time.monotonic(), self.module)
            self._report_drops(time.monotonic())
            self._reap_lingering(time.monotonic())
            if self.tcp.refusing:
                self.tcp.check(time.monotonic())
            wait = wait_ms(time.monotonic(), self.attempts.values(), self.players.retired,
                           self.fence_at, POLL_MS)
        self.shutdown()

    def _watch_load(self, late: float) -> None:
        """The overload gate (``sip.cpuwait.LoadGate``), fed how late this turn came round."""
        r = self.gate.step(late)
        if r is None:
            return
        if r.changed:
            logger.warning("worker %d %s: loop %.0f ms late, threads waited %.0f%% of a second "
                           "for a CPU", self.index, "overloaded" if r.overloaded else "caught up",
                           r.lag * 1000, r.wait * 100)
        self.send(ipc.Load(overloaded=r.overloaded, lag=r.lag, wait=r.wait))

    def _handle(self, msg: ipc.Op, give_up: float | None = None) -> None:
        try:
            if isinstance(msg, ipc.Dial):
                self.dial(msg, give_up)
            elif isinstance(msg, ipc.Hangup):
                att = self.attempts.get(msg.call_id)
                if att is not None:
                    self._hangup(att, abort=oc.ON_REQUEST)
                waiting = [m for _, m in self._redial if m.call_id == msg.call_id]
                if waiting:
                    self._redial = [(g, m) for g, m in self._redial if m not in waiting]
                    self._send_failed(msg.call_id, oc.ON_REQUEST)
            elif isinstance(msg, ipc.Trust):
                self.filter.trusted = trust.networks(msg.allowed_sources)
                logger.info("trusted SIP sources now %s", msg.allowed_sources)
                self.tcp.trust_changed()
            elif isinstance(msg, ipc.TrunkState):
                trunk = self.trunks.get(msg.trunk)
                if trunk is not None and msg.up:
                    trunk.down = None
                elif trunk is not None:
                    self.regs.trunk_down(trunk, msg.reason or "not registered", report=False)
            elif isinstance(msg, ipc.Lease):
                self.fence_at = time.monotonic() + msg.valid_for
                self.fenced = self.fenced and msg.valid_for <= 0  # renewed: take calls again
                self._check_fence(time.monotonic())
            elif isinstance(msg, ipc.Shutdown):
                self._stopping = True
            elif isinstance(msg, ipc.Retire):
                logger.info("retiring: finishing %d call(s), then exiting", len(self._carried()))
                self._retiring = True
            else:
                logger.warning("unexpected IPC op %r", msg.OP)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the worker
            logger.exception("error handling %r", msg.OP)
            if isinstance(msg, ipc.Dial) and msg.call_id not in self.attempts:
                self._send_failed(msg.call_id, f"worker error: {exc}")

    def _check_fence(self, now: float) -> None:
        """Past the node's lease (dialer.core.cluster): hang up every call, on our own clock."""
        if self.fenced or self.fence_at is None or now < self.fence_at:
            return
        self.fenced = True
        logger.warning("the node's lease ran out: hanging up %d call(s), taking none",
                       len(self._carried()))
        for att in list(self.attempts.values()):
            self._hangup(att, abort=oc.FENCED)
        redial, self._redial = self._redial, []
        for _, m in redial:
            self._send_failed(m.call_id, oc.FENCED, Outcome.INTERRUPTED)

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

    def dial(self, msg: ipc.Dial, give_up: float | None = None) -> None:
        """Place one call; every path ends in exactly one ``ended`` for this ``call_id``.

        ``give_up``: when a dial refused with PJ_ETOOMANY stops being retried."""
        call_id = msg.call_id
        if self.fenced:
            self._send_failed(call_id, oc.FENCED, Outcome.INTERRUPTED)
            return
        trunk = self.trunks.get(msg.trunk)
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
            self._send_failed(call_id, f"unknown trunk {msg.trunk!r}")
            return
        if len(self.attempts) + len(self._rejected) >= MAX_CALLS:
            self._send_failed(call_id, f"worker busy: {MAX_CALLS} calls already")
            return
        names = {f.name for f in fields(DialogueSettings)}
        settings = DialogueSettings(**{k: v for k, v in msg.dialogue.items()
                                       if k in names})
        now = time.monotonic()
        att = Attempt(call_id=call_id, trunk=trunk, media=dict(msg.media),
                      ring_deadline=now + float(msg.ring_timeout or 30.0),
                      state=dlg.start(settings), invite_deadline=now + trunk.invite_timeout)
        from_uri = msg.from_uri
        if from_uri and not str(from_uri).lower().startswith(("sip:", "sips:", "tel:")):
            from_uri = f"sip:{from_uri}@{sip_hostport(trunk.uri)}"  # a bare caller number
        target = with_transport(msg.uri, trunk.transport)
        prm = pj.CallOpParam(True)
        prm.opt.customCallId = call_id  # the SIP Call-ID is the attempt id
        prm.txOption.localUri = name_addr(msg.display or "",
                                           str(from_uri or trunk.id_uri))
        if trunk.pai and from_uri:  # the caller shows though From must be the auth user
            prm.txOption.headers.append(sip_header("P-Asserted-Identity", str(from_uri)))
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
        logger.info("call %s: dialling %s via %s", call_id, msg.uri, trunk.name)

    def _send_failed(self, call_id: str, reason: str,
                     outcome: Outcome = Outcome.FAILED) -> None:
        logger.warning("call %s: %s: %s", call_id, outcome.value, reason)
        self.send(ipc.Ended(call_id=call_id, status=None, reason=reason, q850=None,
                            outcome=outcome.value, answered_at=None, keys="",
                            answer_confirmed_at=None, listen_confirmed_at=None, at=time.time()))

    def _finish(self, att: Attempt, status: int, reason: str, q850: int | None) -> None:
        """The call is over: report it once and drop every reference to it."""
        answered = att.answered_at is not None
        if oc.remote_hangup_counts(answered=answered, abort_reason=att.abort_reason):
            self._feed(att, dlg.RemoteHangup(time.time()))  # no-op if the dialogue ended it
        outcome, reason = oc.decide(oc.CallEnd(
            status=status, reason=reason, answered=answered,
            dialogue_outcome=att.state.outcome, dialogue_success=att.state.success,
            abort_reason=att.abort_reason, forced=att.forced, q850=q850,
            responded=att.responded))
        logger.info("call %s: ended %s %s (q850 %s): %s", att.call_id, status, reason, q850,
                    outcome.value)
        self.send(ipc.Ended(call_id=att.call_id, status=status, reason=reason, q850=q850,
                            outcome=outcome.value, answered_at=att.answered_at,
                            keys=att.state.keys, answer_confirmed_at=att.state.answer_confirmed_at,
                            listen_confirmed_at=att.state.listen_confirmed_at, at=time.time()))
        self.players.stop(att)
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
        return trust.DROP if self.regs.on_rx(rx) else verdict  # our keep-alive's: dropped

    def _on_tx(self, tx: Tx) -> None:
        if tx.method == "REGISTER":
            self.regs.on_tx(tx)
        elif tx.method == "INVITE":
            att = self.attempts.get(tx.call_id)
            if att is not None and not att.local_tag:
                att.local_tag = tx.from_tag

    def on_reg_state(self, trunk: str, code: int, reason: str, expires: int) -> None:
        self.regs.registration_changed(trunk, code, expires)
        self.send_reg(ipc.Reg(trunk=trunk, code=code, reason=reason, expires=expires))

    def _on_trunk_down(self, trunk: Trunk, why: str) -> None:
        """Calls whose INVITE has had no answer went into the dead registrar/proxy: nobody
        rang. End them now (their slots free) as trunk_down, which costs the recipient no
        attempt."""
        for att in list(self.attempts.values()):
            if att.trunk is trunk and not att.responded and att.forced is None:
                self._terminate(att, 408, oc.trunk_down_outcome(why))

    # ----- shutdown -----

    def shutdown(self) -> None:
        """Hang up every call, report them, drop every pjsua2 object, destroy the library."""
        if self.ep is None:
            return
        for _, msg in self._redial:
            self._send_failed(msg.call_id, SHUTTING_DOWN, Outcome.INTERRUPTED)
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
        retired = self.players.retired
        if retired:  # let the bridge drop the last players before they are destroyed
            last = retired[-1][0]
            while retired and time.monotonic() < last + POLL_MS / 1000:
                self.ep.libHandleEvents(POLL_MS)
                self.players.destroy_due(time.monotonic())
        self._graveyard.clear()
        self._rejected.clear()
        self._to_reject.clear()
        retired.clear()
        for trunk in self.trunks.values():
            trunk.account = None
        self.trunks.clear()
        gc.collect()
        destroy_endpoint(self.ep)
        self.ep = None
        logger.info("worker %d stopped", self.index)


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
    attached = attach(args.ipc_fd, args.listen_fd, args.socket)
    if isinstance(attached, int):
        return attached
    channel, listener, init, pending = attached
    logs.setup(init.log_format or "text",
               logging.DEBUG if pjsua_level(init.log_level) >= 4 else logging.INFO,
               worker=init.worker)
    worker = Worker(channel, listener, args.socket)
    try:
        worker.start(init)
        worker.run(pending)
    except Exception as exc:  # noqa: BLE001 - report, then exit non-zero
        logger.exception("worker failed")
        worker.send(ipc.Log(level="error", message=f"worker failed: {exc}"))
        return 1
    finally:
        unlink_socket(args.socket)  # first: no daemon may attach to a worker on its way out
        worker.link.write_undelivered()
        worker.link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
