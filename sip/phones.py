"""Simulated phones: one PJSUA2 UA that answers every INVITE as a JSON script says.

Run as ``python -m sip.phones --bind 127.0.0.1 --port 5090 --script FILE.json --log calls.jsonl``.
The called number (user part of the Request-URI) picks the entry of the script::

    {"default": {"behaviour": "confirm", "ring": 0.2},
     "numbers": {"101": {"behaviour": "busy"},
                 "102": {"behaviour": ["busy", "confirm"]}}}

A list of behaviours is used one per attempt (the last one repeats). Behaviours:

* ``confirm``: ring ``ring`` s, answer, press ``answer_key`` ``answer_key_delay`` s after the
  answer and ``listen_key`` ``listen_key_delay`` s after it; the dialer hangs up.
* ``wrong_key``: as ``confirm``, plus ``wrong_key`` at ``wrong_key_delay`` s (after the message).
* ``hangup_early``: answer, press ``answer_key``, hang up ``hangup_after`` s after the answer.
* ``silent``: answer and never press a key.
* ``no_answer``: ring until the caller cancels.
* ``busy`` (486), ``unavailable`` (480), ``reject`` (``code``, default 603); with ``q850`` set,
  the final response carries ``Reason: Q.850;cause=N``.

Key delays count from the answer (the ACK), so set them from the prompt and message lengths.
DTMF goes out as RFC 2833 telephone events. Each finished call appends one JSON line to the log
(Call-ID, number, From, behaviour, keys sent, status...) for tests to assert on. As one PJSUA2
process holds at most 4 calls, pjsua itself turns a 5th simultaneous INVITE away (486); such
calls are not logged. Needs no privileges: any port above 1024 (or 0 with ``--ready-file``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pjsua2 as pj

from sip.endpoint import create_endpoint, create_transport, destroy_endpoint, guarded, setup_logging

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "behaviour": "confirm",
    "ring": 0.2,
    "answer_key": "1",
    "listen_key": "9",
    "wrong_key": "5",
    "answer_key_delay": 1.0,
    "wrong_key_delay": 3.0,
    "listen_key_delay": 4.0,
    "hangup_after": 1.0,
    "code": 603,
    "max_duration": 120.0,  # hang up an answered call the dialer forgot
}
FINAL_CODES = {"busy": 486, "unavailable": 480}


@dataclass(eq=False)
class PhoneCallRecord:
    """What the simulator knows and logs about one incoming call."""

    call: PhoneCall | None
    call_id: str
    number: str
    from_: str
    behaviour: str
    attempt: int
    params: dict[str, Any]
    invite_at: float
    answered_at: float | None = None
    keys: str = ""
    hung_up_by_phone: bool = False
    timers: list[int] = field(default_factory=list)


class PhoneAccount(pj.Account):  # type: ignore[misc]
    """The one account every INVITE reaches."""

    def __init__(self, phones: Phones) -> None:
        super().__init__()
        self._phones = phones

    @guarded
    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self._phones.on_incoming(self, prm)


class PhoneCall(pj.Call):  # type: ignore[misc]
    """Forwards call state changes to the simulator."""

    def __init__(self, phones: Phones, account: pj.Account, call_id: int) -> None:
        super().__init__(account, call_id)
        self._phones = phones

    @guarded
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        self._phones.on_state(self)

    @guarded
    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self._phones.on_media(self)


def request_user(message: str) -> str:
    """User part of the Request-URI of a raw SIP request (``INVITE sip:101@h SIP/2.0``)."""
    uri = message.split("\n", 1)[0].split(" ")[1]
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[0].split(";", 1)[0] if "@" in rest else ""


class Phones:
    """The simulator: an endpoint, an account, the calls and their timers."""

    def __init__(self, script: dict[str, Any], log_path: Path | None) -> None:
        self.script = script
        self.log_path = log_path
        self.ep: pj.Endpoint | None = None
        self._writer: Any = None
        self.account: PhoneAccount | None = None
        self.calls: dict[str, PhoneCallRecord] = {}
        self.attempts: dict[str, int] = {}
        self._timers: dict[int, tuple[float, str, Callable[[PhoneCallRecord], None]]] = {}
        self._seq = itertools.count()
        self._graveyard: list[pj.Call] = []
        self.stopping = False

    def start(self, bind: str, port: int, level: int) -> int:
        self.ep, self._writer = create_endpoint(level, "alert-dialer phone simulator")
        _, actual = create_transport(self.ep, pj.PJSIP_TRANSPORT_UDP, bind, port)
        create_transport(self.ep, pj.PJSIP_TRANSPORT_TCP, bind, actual)
        self.ep.libStart()
        cfg = pj.AccountConfig()
        cfg.idUri = f"sip:phones@{bind}:{actual}"
        cfg.mediaConfig.transportConfig.boundAddress = bind
        self.account = PhoneAccount(self)
        self.account.create(cfg, True)
        return actual

    def params_for(self, number: str) -> tuple[str, int, dict[str, Any]]:
        """(behaviour, attempt number from 1, parameters) of the next call to ``number``."""
        entry = {**DEFAULTS, **self.script.get("default", {}),
                 **self.script.get("numbers", {}).get(number, {})}
        attempt = self.attempts.get(number, 0) + 1
        self.attempts[number] = attempt
        behaviour = entry["behaviour"]
        if isinstance(behaviour, list):
            behaviour = behaviour[min(attempt, len(behaviour)) - 1]
        return str(behaviour), attempt, entry

    # ----- callbacks -----

    def on_incoming(self, account: pj.Account, prm: pj.OnIncomingCallParam) -> None:
        call = PhoneCall(self, account, prm.callId)
        ci = call.getInfo()
        number = request_user(prm.rdata.wholeMsg)
        behaviour, attempt, params = self.params_for(number)
        rec = PhoneCallRecord(call=call, call_id=ci.callIdString, number=number,
                              from_=ci.remoteUri, behaviour=behaviour, attempt=attempt,
                              params=params, invite_at=time.time())
        self.calls[rec.call_id] = rec
        logger.info("INVITE %s to %s from %s: %s (attempt %d)", rec.call_id, number,
                    rec.from_, behaviour, attempt)
        code = FINAL_CODES.get(behaviour, int(params["code"]) if behaviour == "reject" else 0)
        if behaviour not in ("confirm", "wrong_key", "hangup_early", "silent", "no_answer") \
                and not code:
            logger.error("unknown behaviour %r: answering 500", behaviour)
            code = 500
        if code:
            # Never a final answer inside onIncomingCall: for an INVITE without SDP pjsua 2.15
            # then frees the cloned rdata twice and aborts. The loop answers right after.
            self._after(rec, 0.0, "reject", lambda r: self._answer(r, code))
            return
        self._answer(rec, 180)
        if behaviour != "no_answer":
            self._after(rec, float(params["ring"]), "answer", lambda r: self._answer(r, 200))

    def on_state(self, call: PhoneCall) -> None:
        ci = call.getInfo()
        rec = self.calls.get(ci.callIdString)
        if rec is None:
            return
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and rec.answered_at is None:
            rec.answered_at = time.time()
            self._schedule_keys(rec)
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._log_call(rec, ci.lastStatusCode, ci.lastReason)
            for seq in rec.timers:
                self._timers.pop(seq, None)
            del self.calls[rec.call_id]
            if rec.call is not None:
                self._graveyard.append(rec.call)  # freed after this callback returns
                rec.call = None

    def on_media(self, call: PhoneCall) -> None:
        """Wire the call to the null sound device, both ways.

        Without a connection to it pjsua never opens the null device, the conference bridge is
        never clocked, the stream's put_frame never runs and queued DTMF is never sent. It also
        makes the phone send (silent) RTP like a real handset.
        """
        assert self.ep is not None
        ci = call.getInfo()  # keep it: the media vector points into it (SWIG)
        for m in ci.media:
            if m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                aud = call.getAudioMedia(m.index)
                devices = self.ep.audDevManager()
                devices.getCaptureDevMedia().startTransmit(aud)
                aud.startTransmit(devices.getPlaybackDevMedia())

    # ----- behaviour -----

    def _schedule_keys(self, rec: PhoneCallRecord) -> None:
        p, b = rec.params, rec.behaviour
        if b in ("confirm", "wrong_key", "hangup_early"):
            self._after(rec, float(p["answer_key_delay"]), "key",
                        lambda r: self._key(r, p["answer_key"]))
        if b == "wrong_key":
            self._after(rec, float(p["wrong_key_delay"]), "key",
                        lambda r: self._key(r, p["wrong_key"]))
        if b in ("confirm", "wrong_key"):
            self._after(rec, float(p["listen_key_delay"]), "key",
                        lambda r: self._key(r, p["listen_key"]))
        hangup_after = float(p["hangup_after"] if b == "hangup_early" else p["max_duration"])
        self._after(rec, hangup_after, "hangup", self._hangup)

    def _after(self, rec: PhoneCallRecord, seconds: float, what: str,
               action: Callable[[PhoneCallRecord], None]) -> None:
        seq = next(self._seq)
        self._timers[seq] = (time.monotonic() + seconds, rec.call_id, action)
        rec.timers.append(seq)
        logger.debug("call %s: %s in %.2fs", rec.call_id, what, seconds)

    def _answer(self, rec: PhoneCallRecord, code: int) -> None:
        if rec.call is None:
            return
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        if code >= 300 and rec.params.get("q850"):
            header = pj.SipHeader()
            header.hName = "Reason"
            header.hValue = f"Q.850;cause={int(rec.params['q850'])}"
            prm.txOption.headers.append(header)
        rec.call.answer(prm)

    def _key(self, rec: PhoneCallRecord, digits: str) -> None:
        if rec.call is None:
            return
        rec.call.dialDtmf(str(digits))  # RFC 2833 by default
        rec.keys += str(digits)
        logger.info("call %s: sent key %s", rec.call_id, digits)

    def _hangup(self, rec: PhoneCallRecord) -> None:
        if rec.call is None:
            return
        rec.hung_up_by_phone = True
        rec.call.hangup(pj.CallOpParam(True))

    def _log_call(self, rec: PhoneCallRecord, status: int, reason: str) -> None:
        line = {"call_id": rec.call_id, "number": rec.number, "from": rec.from_,
                "behaviour": rec.behaviour, "attempt": rec.attempt, "keys": rec.keys,
                "status": status, "reason": reason, "invite_at": rec.invite_at,
                "answered_at": rec.answered_at, "hung_up_by": "phone" if rec.hung_up_by_phone
                else "caller" if rec.answered_at is not None else None, "ended_at": time.time()}
        logger.info("call %s ended: %s", rec.call_id, line)
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                f.write(json.dumps(line) + "\n")

    # ----- loop -----

    def run(self) -> None:
        assert self.ep is not None
        while not self.stopping:
            self.ep.libHandleEvents(20)
            self.sweep_graveyard()
            now = time.monotonic()
            for seq, (due, call_id, action) in sorted(self._timers.items(),
                                                      key=lambda kv: kv[1][0]):
                if due > now:
                    break
                del self._timers[seq]
                rec = self.calls.get(call_id)
                if rec is None:
                    continue
                try:
                    action(rec)
                except pj.Error as exc:
                    logger.warning("call %s: %s", call_id, exc.info())
                except Exception:  # noqa: BLE001 - one call's trouble must not stop the others
                    logger.exception("call %s: timer action failed", call_id)
        self.shutdown()

    def sweep_graveyard(self) -> None:
        """Free the disconnected calls, but none whose slot a live call holds now.

        A freed pjsua2 ``Call`` hangs up its slot (upstream issue 3856): an INVITE that arrived
        in the same event turn as the call's end took that slot, and freeing the old object then
        declined it (603) before it was answered. Such a call stays until the slot is free."""
        held: set[int] = set()
        for rec in self.calls.values():
            if rec.call is not None:
                with contextlib.suppress(pj.Error):
                    held.add(rec.call.getId())
        self._graveyard = [c for c in self._graveyard if c.getId() in held]

    def shutdown(self) -> None:
        assert self.ep is not None
        self.ep.hangupAllCalls()
        deadline = time.monotonic() + 2.0
        while self.calls and time.monotonic() < deadline:
            self.ep.libHandleEvents(20)
        self.calls.clear()
        self._graveyard.clear()
        self._timers.clear()
        self.account = None
        destroy_endpoint(self.ep)
        self.ep = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulated phones for the alert dialer.")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5090, help="SIP port (0: the OS picks)")
    parser.add_argument("--script", type=Path, required=True, help="behaviour script (JSON)")
    parser.add_argument("--log", type=Path, help="append one JSON line per finished call")
    parser.add_argument("--ready-file", type=Path, help="written with the SIP port when ready")
    parser.add_argument("--log-level", type=int, default=3, help="pjsua log level 0..6")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    phones = Phones(json.loads(args.script.read_text()), args.log)

    def stop(signum: int, frame: object) -> None:
        phones.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = phones.start(args.bind, args.port, args.log_level)
    logger.info("phones listening on %s:%d", args.bind, port)
    if args.ready_file is not None:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(args.ready_file)  # atomically: readers never see a half-written file
    phones.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
