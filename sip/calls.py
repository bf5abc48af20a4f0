"""A SIP worker's calls: the pjsua2 Account and Call subclasses, the state of one dialled call,
its audio players and the guard on its RTP port.

The pjsua2 subclasses are thin: each callback goes to the worker (``sip.worker``, a ``Host``)
with the attempt's id, and no call object holds a reference to its ``Attempt``, so dropping the
Attempt frees it (issue 3856).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pjsua2 as pj

from dialer import ipc
from dialer.core import dialogue as dlg
from dialer.core import outcome as oc
from dialer.core.domain import Outcome
from sip import sockfilter, trust
from sip.endpoint import guarded, q850_cause
from sip.pjmodule import Module
from sip.trunks import Trunk

logger = logging.getLogger(__name__)

DROP_REPORT_S = 2.0  # how often dropped-message counts go to the daemon (one line each there)

# A replaced or finished player is destroyed only this long after it was disconnected. PJSIP
# 2.15's conference bridge applies connect/disconnect/remove on its clock thread, so a player
# destroyed at once can still be read by that thread: a use-after-free that killed workers
# with SIGSEGV in the clock thread under load (about 1 call in 150 at 100 concurrent calls,
# bench/RESULTS.md). Half a second is 25 clock ticks.
PLAYER_RETIRE_S = 0.5
MEDIA_GRACE = 5.0  # seconds an answered call may go without active audio before we give up


class Host(Protocol):
    """What the pjsua2 callbacks tell the worker."""

    def on_reg_state(self, trunk: str, code: int, reason: str, expires: int) -> None: ...

    def reject_incoming(self, account: Any, pj_call_id: int) -> None: ...

    def drop_rejected(self, call: RejectedCall) -> None: ...

    def on_call_state(self, call: OutboundCall, prm: Any) -> None: ...

    def on_media_state(self, call: OutboundCall) -> None: ...

    def on_digit(self, call_id: str, digit: str) -> None: ...

    def on_transfer_status(self, call_id: str, code: int, reason: str, final: bool) -> None: ...


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


class Deadlines(Protocol):
    """What ``wait_ms`` reads of a call (an ``Attempt``)."""

    timer: tuple[float, int] | None
    ring_deadline: float
    invite_deadline: float
    hangup_deadline: float | None


def wait_ms(now: float, attempts: Iterable[Deadlines], retired: list[tuple[float, Any]],
            also: float | None, cap_ms: int) -> int:
    """How long the worker's loop may wait in ``libHandleEvents`` (SIP and RTP wake it anyway):
    ``cap_ms``, or less when a call's deadline (its dialogue timer, ring, INVITE or hang-up
    timeout), the next retired player or ``also`` comes sooner. A deadline already past is the
    current turn's business, never a reason to wait 0 (no busy loop on a stale one)."""
    first = math.inf
    for att in attempts:
        for due in (att.timer[0] if att.timer else math.inf, att.ring_deadline,
                    att.invite_deadline, att.hangup_deadline or math.inf):
            if now < due < first:
                first = due
    for due in (retired[0][0] if retired else math.inf, also or math.inf):
        if now < due < first:
            first = due
    return cap_ms if first == math.inf else max(1, min(cap_ms, math.ceil((first - now) * 1000)))


class TrunkAccount(pj.Account):  # type: ignore[misc]
    """A trunk's account: registration events go to the daemon, incoming calls are refused."""

    def __init__(self, host: Host, trunk: str) -> None:
        super().__init__()
        self._host = host
        self._trunk = trunk

    @guarded
    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        logger.info("trunk %s registration: %s %s (expires %s)", self._trunk, prm.code,
                    prm.reason, prm.expiration)
        self._host.on_reg_state(self._trunk, prm.code, prm.reason, prm.expiration)

    @guarded
    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self._host.reject_incoming(self, prm.callId)


class RejectedCall(pj.Call):  # type: ignore[misc]
    """An unsolicited incoming call, held only until pjsua reports it disconnected."""

    def __init__(self, host: Host, account: pj.Account, call_id: int) -> None:
        super().__init__(account, call_id)
        self._host = host

    @guarded
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._host.drop_rejected(self)


class OutboundCall(pj.Call):  # type: ignore[misc]
    """A thin pjsua2 call: forwards each callback to the worker with the attempt's id.

    It holds no reference to its Attempt, so dropping the Attempt frees it (issue 3856).
    """

    def __init__(self, host: Host, account: pj.Account, call_id: str) -> None:
        super().__init__(account)
        self._host = host
        self.attempt_id = call_id

    @guarded
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        self._host.on_call_state(self, prm)

    @guarded
    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self._host.on_media_state(self)

    @guarded
    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        self._host.on_digit(self.attempt_id, prm.digit)

    @guarded
    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        # Our REFER's fate: its response, then each NOTIFY's sipfrag. The dialogue decides what
        # follows: pjsua must not hang up on its own (its default on a final 2xx), so that one
        # place ends the call.
        prm.cont = True
        self._host.on_transfer_status(self.attempt_id, prm.statusCode, prm.reason,
                                      bool(prm.finalNotify))

    @guarded
    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        # A REFER from the far end: pjsua would accept it and dial the Refer-To itself, a call
        # nobody recorded, to wherever the far end says. A dial-out-only UA refuses it.
        logger.warning("call %s: refusing a transfer request (REFER) from the far end",
                       self.attempt_id)
        prm.statusCode = 403


class Players:
    """The calls' audio players, and those retired, destroyed ``PLAYER_RETIRE_S`` later."""

    def __init__(self) -> None:
        self.retired: list[tuple[float, pj.AudioMediaPlayer]] = []  # (destroy at, player)

    def play(self, att: Attempt, prompt: str) -> str | None:
        """Replace the call's player with a fresh one on ``prompt`` (played once, from start).

        Made before broken: the new player transmits before the old one stops. The bridge's
        clock thread sends no RTP for a call that no player transmits to, so a tick between the
        two (this thread preempted on a busy machine) was a gap in the audio at every prompt
        change (tests/test_players.py, bench/RESULTS.md).

        Returns what went wrong worth the daemon's log, if anything."""
        path = att.media.get(prompt)
        if not path or att.call is None:
            self.stop(att, connected=True)
            logger.warning("call %s: no audio for %s", att.call_id, prompt)
            return None
        try:
            player = pj.AudioMediaPlayer()
            player.createPlayer(path, pj.PJMEDIA_FILE_NO_LOOP)
            sink = att.call.getAudioMedia(-1)
            player.startTransmit(sink)
            self.stop(att, connected=True)  # the old one: after the new one transmits
            att.player, att.sink = player, sink
        except pj.Error as exc:
            self.stop(att, connected=True)  # the new one failed: the old one stops all the same
            # The dialogue's timer still runs, so the call goes on (silently) and ends.
            logger.error("call %s: cannot play %s: %s", att.call_id, path, exc.info())
            return f"cannot play {path}: {exc.reason}"
        return None

    def stop(self, att: Attempt, connected: bool = False) -> None:
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
        self.retired.append((time.monotonic() + PLAYER_RETIRE_S, player))

    def due(self, now: float) -> bool:
        return bool(self.retired) and self.retired[0][0] <= now

    def destroy_due(self, now: float) -> None:
        while self.retired and self.retired[0][0] <= now:
            self.retired.pop(0)  # the last reference: pjsua_player_destroy


def guard_media(call_id: str, call: OutboundCall, index: int,
                trusted: list[Any]) -> None:
    """Only the far end's SDP address (and the trusted networks) may send this call RTP.

    Applied again on every media change (a re-INVITE from the peer moves it legitimately)."""
    try:
        remote = call.getStreamInfo(index).remoteRtpAddress
        local = call.getMedTransportInfo(index).localRtpName
    except pj.Error as exc:
        logger.warning("call %s: cannot read its media addresses: %s", call_id, exc.info())
        return
    host = remote.rsplit(":", 1)[0].strip("[]")
    port = int(local.rsplit(":", 1)[1])
    try:
        nets = [*trust.networks([host]), *trusted]
    except ValueError:
        nets = list(trusted)
    prog = sockfilter.program(nets)
    for p in (port, port + 1):  # RTP, and RTCP beside it
        for fd in sockfilter.udp_sockets(p):
            sockfilter.attach(fd, prog)
    logger.debug("call %s: RTP on %d accepted from %s only", call_id, port, host)


class CallEvents:
    """The worker's handling of its calls' pjsua2 callbacks (``Host``): SIP and audio events
    into dialogue events, the dialogue's commands into SIP and audio, incoming calls refused.

    A part of ``sip.worker.Worker``, which provides what is declared here."""

    attempts: dict[str, Attempt]
    players: Players
    filter: trust.SourceFilter
    _rejected: set[RejectedCall]
    _to_reject: list[RejectedCall]
    _graveyard: list[pj.Call]
    module: Module | None
    _lingering: dict[str, tuple[str, str, float]]
    _held_reported: int
    _drops_at: float

    def send(self, msg: ipc.Event) -> None:
        raise NotImplementedError

    def _log_event(self, level: str, message: str) -> None:
        raise NotImplementedError

    def _finish(self, att: Attempt, status: int, reason: str, q850: int | None) -> None:
        raise NotImplementedError

    def on_reg_state(self, trunk: str, code: int, reason: str, expires: int) -> None:
        raise NotImplementedError

    def on_call_state(self, call: OutboundCall, prm: pj.OnCallStateParam) -> None:
        att = self.attempts.get(call.attempt_id)
        if att is None:
            return
        ci = call.getInfo()  # still allowed inside the DISCONNECTED callback, not after
        if ci.state == pj.PJSIP_INV_STATE_EARLY and not att.ringing_sent \
                and ci.lastStatusCode in (180, 183):
            att.ringing_sent = True
            self.send(ipc.Ringing(call_id=att.call_id, at=time.time()))
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
            guard_media(att.call_id, call, index, self.filter.trusted)
        self._maybe_answered(att)

    def _maybe_answered(self, att: Attempt) -> None:
        if att.answered_at is not None or not (att.sip_confirmed and att.media_up):
            return
        if att.abort_reason is not None:
            return  # answered just as we were hanging up: nothing to play
        att.answered_at = time.time()
        logger.info("call %s: answered", att.call_id)
        self.send(ipc.Answered(call_id=att.call_id, at=att.answered_at))
        self._feed(att, dlg.Answered(att.answered_at))

    def on_digit(self, call_id: str, digit: str) -> None:
        att = self.attempts.get(call_id)
        if att is None or att.answered_at is None:
            return
        now = time.time()
        logger.info("call %s: key %s", call_id, digit)
        self.send(ipc.Key(call_id=call_id, key=digit, at=now))
        self._feed(att, dlg.Digit(digit, now))

    def on_transfer_status(self, call_id: str, code: int, reason: str, final: bool) -> None:
        att = self.attempts.get(call_id)
        if att is None:
            return
        logger.info("call %s: transfer %s %s%s", call_id, code, reason, " (final)" if final else "")
        self._feed(att, dlg.TransferStatus(code, final, time.time()))

    def _feed(self, att: Attempt, event: dlg.Event) -> None:
        """Step the dialogue and carry out its commands; the one place transitions are logged."""
        before = att.state.phase
        att.state, commands = dlg.step(att.state, event)
        failed: int | None = None
        logger.debug("call %s: %s %s -> %s %s", att.call_id, type(event).__name__, before.value,
                     att.state.phase.value, commands)
        for cmd in commands:
            if isinstance(cmd, dlg.Play):
                problem = self.players.play(att, cmd.prompt.value)
                if problem is not None:
                    self._log_event("error", problem)
                self.send(ipc.Played(call_id=att.call_id, prompt=cmd.prompt.value,
                                     at=time.time()))
            elif isinstance(cmd, dlg.StartTimer):
                att.timer = (time.monotonic() + cmd.seconds, cmd.token)
            elif isinstance(cmd, dlg.HangUp):
                self._hangup(att)
            elif isinstance(cmd, dlg.Confirmed):
                self.send(ipc.Confirmed(call_id=att.call_id, what=cmd.what, at=cmd.at))
            elif isinstance(cmd, dlg.Refused):
                self.send(ipc.Refusal(call_id=att.call_id, what=cmd.what, key=cmd.key, at=cmd.at))
            elif isinstance(cmd, dlg.Transferred):
                self.send(ipc.Transfer(call_id=att.call_id, result=cmd.result, code=cmd.code,
                                       to=att.state.settings.connect_to, at=cmd.at))
            elif isinstance(cmd, dlg.Transfer):
                failed = self._refer(att, cmd.uri)
        if failed is not None:  # the REFER could not even be sent: the dialogue goes on
            self._feed(att, dlg.TransferStatus(failed, True, time.time()))

    def _refer(self, att: Attempt, uri: str) -> int | None:
        """Send the blind transfer's REFER; the SIP-like code of a failure to send it, if any."""
        if att.call is None:
            return 500
        try:
            att.call.xfer(uri, pj.CallOpParam(True))
        except pj.Error as exc:
            logger.warning("call %s: cannot transfer to %s: %s", att.call_id, uri, exc.info())
            return 500
        logger.info("call %s: transferring to %s", att.call_id, uri)
        return None

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
            self.send(ipc.Slots(held=self._held_reported))

    def _report_drops(self, now: float) -> None:
        if now < self._drops_at:
            return
        self._drops_at = now + DROP_REPORT_S
        counts = self.filter.take_dropped()
        if counts:
            last = self.filter.last_dropped
            self.send(ipc.Dropped(counts=counts,
                                  last=f"{last.method} from {last.src}" if last else None))
