"""A SIP worker's trunks: their accounts' configuration and their registration health.

Registration health (worker 0, which holds the registrations): a REGISTER without a final
answer within ``register_timeout`` and an OPTIONS keep-alive to the registrar unanswered within
``keepalive_timeout`` both report the trunk not registered at once; when the registrar answers
again the worker registers anew. ``Registrations`` watches the REGISTERs leaving and their
answers (``sip.pjmodule`` shows it every message), sends the keep-alives and says when a trunk
goes down; the worker (``sip.worker``) then ends the calls on it that had no answer yet.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from dialer import ipc
from sip.pjmodule import Module, Rx, Tx

if TYPE_CHECKING:
    from sip.calls import TrunkAccount

logger = logging.getLogger(__name__)


def sip_hostport(uri: str) -> str:
    """``host[:port]`` of a SIP URI such as ``sip:user@pbx:5060;transport=tcp``."""
    rest = uri.split(":", 1)[1] if uri.lower().startswith(("sip:", "sips:")) else uri
    return rest.split(";", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]


def with_transport(uri: str, transport: str) -> str:
    """Add ``;transport=tcp`` to a URI of a TCP trunk so pjsip resolves it to TCP."""
    if transport == "udp" or not uri or ";transport=" in uri.lower():
        return uri
    return f"{uri};transport={transport}"


def name_addr(display: str, uri: str) -> str:
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
    pai: bool = False  # a P-Asserted-Identity with the caller on every INVITE
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


def account_config(name: str, t: dict[str, Any], bind: str, init: ipc.Init,
                   tp_ids: dict[str, int]) -> tuple[Trunk, pj.AccountConfig]:
    """The trunk ``name`` of ``init`` and the configuration of its account."""
    transport = str(t.get("transport") or "udp").lower()
    if transport not in tp_ids:
        raise ValueError(f"transport {transport!r} not supported (udp, tcp)")
    uri = str(t["uri"])
    user = str(t.get("username") or "dialer")
    trunk = Trunk(name=name, uri=uri, transport=transport,
                  id_uri=f"sip:{user}@{sip_hostport(uri)}",
                  invite_timeout=float(t.get("invite_timeout") or 5.0),
                  pai=bool(t.get("pai")))
    cfg = pj.AccountConfig()
    cfg.idUri = trunk.id_uri
    cfg.sipConfig.transportId = tp_ids[transport]
    if t.get("username") and t.get("password"):
        # Realm "*": answer whichever realm challenges (REGISTER or INVITE).
        cfg.sipConfig.authCreds.append(
            pj.AuthCredInfo("digest", "*", str(t["username"]), 0, str(t["password"])))
    if t.get("proxy"):
        cfg.sipConfig.proxies.append(with_transport(str(t["proxy"]), transport))
    if t.get("register") and t.get("registrar"):
        cfg.regConfig.registrarUri = with_transport(str(t["registrar"]), transport)
        cfg.regConfig.timeoutSec = int(t.get("expires", 300))
        cfg.regConfig.retryIntervalSec = int(t.get("retry_interval", 30))
        trunk.registers = True
        trunk.probe_uri = with_transport(str(t.get("proxy") or t["registrar"]), transport)
        trunk.keepalive_interval = float(t.get("keepalive_interval") or 0.0)
        trunk.keepalive_timeout = float(t.get("keepalive_timeout") or 2.0)
        trunk.register_timeout = float(t.get("register_timeout") or 4.0)
        trunk.probe_call_id = f"keepalive-{os.getpid()}-{name}"
    else:
        cfg.regConfig.registrarUri = ""
    tcfg = cfg.mediaConfig.transportConfig
    tcfg.boundAddress = bind
    if init.rtp_port:
        tcfg.port = init.rtp_port
        tcfg.portRange = init.rtp_port_range or 0
    return trunk, cfg


class Registrations:
    """The trunks of one worker and the health of those it registers.

    ``report`` sends a ``reg`` event to the daemon; ``on_down`` is told when a trunk goes down
    (by our finding or the daemon's word), to end the calls on it that had no answer yet."""

    def __init__(self, report: Callable[[ipc.Reg], None],
                 on_down: Callable[[Trunk, str], None]) -> None:
        self.trunks: dict[str, Trunk] = {}
        self._report = report
        self._on_down = on_down
        self._registers: dict[tuple[str, int], tuple[float, str]] = {}  # REGISTERs waiting
        self._register_ids: dict[str, str] = {}  # a registration's Call-ID -> its trunk
        self.creating: str | None = None  # the trunk whose Account.create is running

    def on_rx(self, rx: Rx) -> bool:
        """A response outside any call: True when it answers our own keep-alive (drop it)."""
        if rx.method == "REGISTER" and rx.status >= 200:
            self._registers.pop((rx.call_id, rx.cseq), None)
        elif rx.method == "OPTIONS":
            for trunk in self.trunks.values():
                if trunk.probe_call_id and rx.call_id == trunk.probe_call_id:
                    self._probe_answered(trunk, rx.status)
                    return True  # ours: no transaction waits for it
        return False

    def on_tx(self, tx: Tx) -> None:
        """A REGISTER leaving."""
        if self.creating is not None:  # pjsua sends the first one inside Account.create
            self._register_ids.setdefault(tx.call_id, self.creating)
        self._registers.setdefault((tx.call_id, tx.cseq), (time.monotonic(), tx.call_id))

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

    def trunk_down(self, trunk: Trunk, why: str, report: bool = True) -> None:
        """The trunk is down: said to the daemon (``report``; the worker that registers it
        found out), or said by the daemon (every other worker)."""
        if trunk.down is not None:
            return
        trunk.down = why
        if report:
            logger.warning("trunk %s not registered: %s", trunk.name, why)
            self._report(ipc.Reg(trunk=trunk.name, code=408, reason=why, expires=0))
        self._on_down(trunk, why)

    def registration_changed(self, trunk_name: str, code: int, expires: int) -> None:
        trunk = self.trunks.get(trunk_name)
        if trunk is not None and 200 <= code < 300 and expires > 0:
            trunk.down = None
            # The registrar just answered: a keep-alive that left (or could not) before is
            # answered by that, or its timeout would report the registered trunk down again.
            trunk.probe_waiting = None

    def check(self, now: float, module: Module | None) -> None:
        """Keep-alives out, and unanswered REGISTERs and keep-alives reported."""
        for key, (sent, call_id) in list(self._registers.items()):
            trunk = self.trunks.get(self._register_ids.get(call_id, ""))
            if trunk is None or now - sent > 64:  # not one of ours, or long forgotten
                self._registers.pop(key, None)
            elif now - sent > trunk.register_timeout:
                self._registers.pop(key, None)
                self.trunk_down(trunk, f"REGISTER unanswered for {trunk.register_timeout:g} s")
        for trunk in self.trunks.values():
            if not trunk.registers or trunk.keepalive_interval <= 0 or module is None:
                continue
            if trunk.probe_waiting is not None and \
                    now - trunk.probe_waiting > trunk.keepalive_timeout:
                self.trunk_down(trunk, f"registrar {trunk.probe_uri} did not answer OPTIONS "
                                       f"in {trunk.keepalive_timeout:g} s")
            if now >= trunk.probe_next:
                trunk.probe_next = now + trunk.keepalive_interval
                trunk.probe_cseq += 1
                if module.send_options(trunk.probe_uri, trunk.id_uri, trunk.probe_call_id,
                                       trunk.probe_cseq):
                    if trunk.probe_waiting is None:
                        trunk.probe_waiting = now
                elif trunk.probe_waiting is None:
                    trunk.probe_waiting = now  # not even sent (TCP refused): unanswered
