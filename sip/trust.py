"""Whom a SIP worker listens to: the decision for every received message, pure.

The worker talks only to its PBX (issue 9). Every message that reaches a worker — request or
response, in or out of a dialog, UDP or TCP — is judged here from a few values read off it
(``Seen``) before PJSIP's transaction layer may act on it (``sip.pjmodule``):

1. From an address outside the trusted networks (the trunks' hosts, resolved at start, plus each
   trunk's ``allowed_sources``): dropped without a word (a scanner learns nothing), counted as
   ``foreign_source``.
2. A response to one of our calls: the first trusted address that answers our INVITE becomes a
   peer of that dialog; a response from another trusted address is dropped (``not_dialog_peer``).
3. A request inside one of our dialogs (BYE, re-INVITE, UPDATE, INFO, NOTIFY, ...): accepted only
   from a peer of that dialog, else dropped (``not_dialog_peer``); so a forged BYE or re-INVITE
   never reaches the dialog and changes nothing about it. A request with a To tag that names no
   call of ours gets 481 (an ACK is just dropped: it is the ACK of one of our refusals).
4. An unsolicited request from the PBX: INVITE refused with the configured code (403 by default)
   before any call slot, media port or socket is taken; OPTIONS answered 200 (PBX keep-alives are
   normal) with no User-Agent; CANCEL 481; ACK dropped; anything else 403.

``Verdict``: ``PASS`` lets PJSIP handle the message; an int answers it statelessly with that code;
``DROP`` consumes it silently.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from dialer.core.domain import SIP_REJECT_CODES

PASS: Final = None
DROP: Final = "drop"
Verdict = int | Literal["drop"] | None

FOREIGN: Final = "foreign_source"
NOT_PEER: Final = "not_dialog_peer"
REASONS: Final = (FOREIGN, NOT_PEER)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RECENT: Final = 256  # finished calls whose late in-dialog requests still reach PJSIP


@dataclass(frozen=True)
class Seen:
    """What the filter needs of one received message."""

    src: str  # source IP address as text
    request: bool
    method: str  # a request's method, or the CSeq method of a response
    call_id: str
    to_tag: str = ""
    status: int = 0  # a response's status code


def networks(entries: Iterable[str]) -> list[Network]:
    """Addresses and CIDRs (``"10.1.2.3"``, ``"10.1.2.0/24"``) as networks; ValueError if bad."""
    out: list[Network] = []
    for entry in entries:
        net = ipaddress.ip_network(entry.strip(), strict=False)
        if net not in out:
            out.append(net)
    return out


@dataclass
class SourceFilter:
    """The decision for each message, the calls it protects, and the drops it counted."""

    trusted: list[Network]
    reject_code: int = 403
    dropped: Counter[str] = field(default_factory=Counter)
    last_dropped: Seen | None = None
    _peers: dict[str, set[str]] = field(default_factory=dict)  # our call's Call-ID -> peers
    # Calls just over, with their peers: a retransmitted BYE (or its ACK) still goes to PJSIP,
    # whose transactions answer it as before; strangers stay out. The last RECENT calls.
    _ended: OrderedDict[str, frozenset[str]] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.reject_code not in SIP_REJECT_CODES:
            raise ValueError(f"reject code {self.reject_code} is not one of {SIP_REJECT_CODES}")

    # ----- the calls -----

    def call_started(self, call_id: str) -> None:
        """An outgoing call (its INVITE is about to leave): its dialog gets protected."""
        self._peers.setdefault(call_id, set())

    def call_ended(self, call_id: str) -> None:
        peers = self._peers.pop(call_id, None)
        if peers:
            self._ended[call_id] = frozenset(peers)
            while len(self._ended) > RECENT:
                self._ended.popitem(last=False)

    def peers(self, call_id: str) -> frozenset[str]:
        return frozenset(self._peers.get(call_id, ()))

    # ----- the decision -----

    def trusts(self, src: str) -> bool:
        try:
            addr = ipaddress.ip_address(src)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)

    def decide(self, msg: Seen) -> Verdict:
        if not self.trusts(msg.src):
            return self._drop(msg, FOREIGN)
        peers = self._peers.get(msg.call_id)
        if not msg.request:
            if peers is None:
                return PASS  # REGISTER, keep-alives: PJSIP matches them to its transactions
            if not peers:
                peers.add(msg.src)  # the first answer to our INVITE: the dialog's far end
            elif msg.src not in peers:
                return self._drop(msg, NOT_PEER)
            return PASS
        if msg.to_tag:  # inside a dialog
            if peers is None and msg.call_id in self._ended:
                peers = set(self._ended[msg.call_id])
            if peers is None:
                return DROP if msg.method == "ACK" else 481
            if msg.src not in peers:
                return self._drop(msg, NOT_PEER)
            return PASS
        # Out of any dialog: unsolicited (a dial-out-only UA has nothing to offer), whatever
        # Call-ID it carries.
        if msg.method == "INVITE":
            return self.reject_code
        if msg.method == "OPTIONS":
            return 200
        if msg.method == "ACK":
            return DROP
        if msg.method == "CANCEL":
            return 481
        return 403

    def _drop(self, msg: Seen, reason: str) -> Verdict:
        self.dropped[reason] += 1
        self.last_dropped = msg
        return DROP

    def take_dropped(self) -> dict[str, int]:
        """The drops counted since the last call, by reason (and reset)."""
        out = dict(self.dropped)
        self.dropped.clear()
        return out
