"""A PJSUA2 user agent driven from the calling thread, for checking the peers (not the
dialer)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import TypeVar

from testkit.net import LOCALHOST, PeerError, free_port
from testkit.wait import until as wait_until

T = TypeVar("T")


@dataclasses.dataclass
class ProbeCall:
    """What a ``PjProbe`` call saw: states, final status, DTMF digits."""

    uri: str
    call_id: str = ""
    states: list[str] = dataclasses.field(default_factory=list)
    status: int = 0
    reason: str = ""
    digits: list[str] = dataclasses.field(default_factory=list)
    confirmed: bool = False
    disconnected: bool = False


@dataclasses.dataclass
class ProbeAccount:
    """Registration results a ``PjProbe`` account saw (``codes`` in arrival order)."""

    uri: str
    index: int = -1  # position in the probe's account list
    codes: list[int] = dataclasses.field(default_factory=list)
    expiration: int = 0


class PjProbe:
    """A PJSUA2 user agent on 127.0.0.1 driven from the calling thread.

    PJSUA2 allows one endpoint per process and at most 4 calls, so tests share one probe
    (session fixture) and ``close()`` it once. Only PCMU and PCMA are enabled, so the offer
    carries telephone-event on payload type 120, exactly like the dialer's.
    """

    def __init__(self, port: int | None = None) -> None:
        import pjsua2 as pj

        self._pj = pj
        self.port = port or free_port()
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.logConfig.level = 1
        cfg.logConfig.consoleLevel = 1
        self.ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.port = self.port
        tcfg.boundAddress = LOCALHOST
        tcfg.publicAddress = LOCALHOST
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()
        for codec in self.ep.codecEnum2():
            keep = codec.codecId.startswith(("PCMU/8000", "PCMA/8000"))
            self.ep.codecSetPriority(codec.codecId, 200 if keep else 0)
        self._accounts: list[object | None] = []
        self._calls: list[object] = []
        self.local = self.account()  # direct calls, no registration

    def account(
        self,
        user: str = "probe",
        *,
        registrar: str | None = None,
        password: str | None = None,
        realm: str = "*",
    ) -> ProbeAccount:
        """Create an account; with ``registrar`` it registers there (and uses it as proxy)."""
        pj = self._pj
        host = registrar.removeprefix("sip:") if registrar else LOCALHOST
        record = ProbeAccount(uri=f"sip:{user}@{host.split(':')[0]}")
        acfg = pj.AccountConfig()
        acfg.idUri = record.uri
        # Keep media on loopback like the signalling (the host address works for SIPp too).
        acfg.mediaConfig.transportConfig.boundAddress = LOCALHOST
        acfg.mediaConfig.transportConfig.publicAddress = LOCALHOST
        acfg.mediaConfig.transportConfig.port = free_port(2)  # not pjsua's shared default 4000
        if registrar:
            acfg.regConfig.registrarUri = registrar
            acfg.regConfig.timeoutSec = 60
            acfg.regConfig.retryIntervalSec = 0  # report a failure once, do not retry
            acfg.sipConfig.proxies.append(f"{registrar};lr")
        if password is not None:
            acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", realm, user, 0, password))

        class _Account(pj.Account):  # type: ignore[misc, name-defined]
            def onRegState(self, prm: object) -> None:
                record.codes.append(int(prm.code))  # type: ignore[attr-defined]
                record.expiration = int(prm.expiration)  # type: ignore[attr-defined]

        acc = _Account()
        acc.create(acfg)
        record.index = len(self._accounts)
        self._accounts.append(acc)
        return record

    def drop(self, account: ProbeAccount) -> None:
        """Delete an account (unregisters it): a process may hold only 8, the 9th aborts."""
        acc = self._accounts[account.index]
        if acc is not None:
            acc.shutdown()  # type: ignore[attr-defined]
            self._accounts[account.index] = None

    def call(self, uri: str, account: ProbeAccount | None = None, call_id: str = "") -> ProbeCall:
        """Start a call; watch it through the returned ``ProbeCall`` while polling."""
        pj = self._pj
        record = ProbeCall(uri=uri)
        calls = self._calls

        class _Call(pj.Call):  # type: ignore[misc, name-defined]
            def onCallState(self, prm: object) -> None:
                info = self.getInfo()
                record.call_id = info.callIdString
                record.states.append(info.stateText)
                record.status = int(info.lastStatusCode)
                record.reason = info.lastReason
                if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
                    record.confirmed = True
                if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                    record.disconnected = True
                    # Drop the Call promptly: a late free can hang up a newer call in its slot.
                    with contextlib.suppress(ValueError):
                        calls.remove(self)

            def onDtmfDigit(self, prm: object) -> None:
                record.digits.append(str(prm.digit))  # type: ignore[attr-defined]

        acc = self._accounts[(account or self.local).index]
        if acc is None:
            raise PeerError("account was dropped")
        call = _Call(acc)
        prm = pj.CallOpParam(True)
        if call_id:
            prm.opt.customCallId = call_id
        calls.append(call)
        call.makeCall(uri, prm)
        return record

    def hangup_all(self) -> None:
        self.ep.hangupAllCalls()

    def poll(self, seconds: float) -> None:
        """Handle SIP and media events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.ep.libHandleEvents(20)

    def wait(self, probe: Callable[[], T | None | bool], timeout: float, what: str) -> T:
        """Handle events until ``probe()`` is truthy (deadline ``timeout`` seconds)."""

        def step() -> T | None | bool:
            self.ep.libHandleEvents(20)
            return probe()

        return wait_until(step, timeout, what, interval=0)

    def close(self) -> None:
        import gc

        with contextlib.suppress(Exception):
            self.ep.hangupAllCalls()
        self.poll(0.3)
        self._calls.clear()
        for acc in self._accounts:
            if acc is not None:
                with contextlib.suppress(Exception):
                    acc.shutdown()  # type: ignore[attr-defined]
        self._accounts.clear()
        self.local = None  # type: ignore[assignment]
        gc.collect()
        self.ep.libDestroy()

