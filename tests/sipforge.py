"""Hostile SIP traffic for the trust tests: forged in-dialog requests, scanners, floods, torture.

Everything is raw UDP or TCP on loopback. Loopback accepts any 127.x.y.z source without root, so a
socket bound to ``127.0.0.2`` or ``127.0.0.3`` plays a stranger while the PBX (and every SIPp far
end) lives on ``127.0.0.1``.

* ``read_sipp_trace`` / ``dialog_of`` read a SIPp ``-trace_msg`` file and recover the identifiers
  of a real call (Call-ID, both tags, the dialer's Contact), which is all a forger needs.
* ``forge_bye`` / ``forge_reinvite`` / ``options`` / ``invite`` build requests; ``UdpPeer`` sends
  them and collects whatever comes back; ``RtpTrap`` counts packets arriving at an SDP address.
* ``Flooder`` sends a bounded number of INVITEs at a fixed rate from one thread (and ACKs every
  final non-2xx answer, as a real UAC would, so the worker's transactions end).
* ``torture_messages`` loads the RFC 4475 messages; ``send_tcp`` delivers one over its own
  connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from testkit import wait_until

#: Compact header forms (RFC 3261 section 7.3.3) that the parsers below understand.
COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact",
           "l": "content-length", "c": "content-type"}
_TRACE_SEPARATOR = re.compile(r"^-{20,} .*$", re.MULTILINE)
_TRACE_DIRECTION = re.compile(r"^(UDP|TCP|TLS) message (sent|received)")


@dataclasses.dataclass(frozen=True)
class SipMessage:
    """One parsed SIP message: start line, headers in order (lowercase long names), body."""

    start: str
    headers: tuple[tuple[str, str], ...]
    body: str

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case, long or compact form), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    @property
    def is_response(self) -> bool:
        return self.start.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        """The status code of a response (0 for a request)."""
        return int(self.start.split()[1]) if self.is_response else 0

    @property
    def method(self) -> str:
        """The method of a request, or the CSeq method of a response."""
        if self.is_response:
            return (self.header("cseq") or " ").split()[-1]
        return self.start.split()[0]

    @property
    def call_id(self) -> str:
        return self.header("call-id") or ""


def parse(data: bytes | str) -> SipMessage:
    """Parse a SIP message (CRLF or LF line ends, folded header lines joined)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    lines = head.lstrip("\n").split("\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers.append((COMPACT.get(key, key), value.strip()))
    return SipMessage(lines[0].strip(), tuple(headers), body)


def tag_of(value: str) -> str:
    """The ``tag`` parameter of a From/To value ('' if none)."""
    m = re.search(r";\s*tag=([^;>\s]+)", value)
    return m.group(1) if m else ""


def uri_of(value: str) -> str:
    """The URI of a name-addr (``"x" <sip:a@b>;tag=1`` -> ``sip:a@b``) or of a bare addr-spec."""
    m = re.search(r"<([^>]*)>", value)
    return m.group(1) if m else value.split(";", 1)[0].strip()


# --------------------------------------------------------------------------------------------
# SIPp traces and the dialog a forger needs


@dataclasses.dataclass(frozen=True)
class TracedMessage:
    """One message of a SIPp ``-trace_msg`` file, as SIPp sent or received it."""

    direction: str  # "sent" or "received"
    message: SipMessage


def read_sipp_trace(path: Path) -> list[TracedMessage]:
    """Every message of a SIPp message trace, in file order (a missing file: none yet)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for block in _TRACE_SEPARATOR.split(text):
        block = block.lstrip("\n")
        first, _, rest = block.partition("\n")
        m = _TRACE_DIRECTION.match(first)
        if m is None or not rest.strip():
            continue
        out.append(TracedMessage(m.group(2), parse(rest.lstrip("\n"))))
    return out


@dataclasses.dataclass(frozen=True)
class Dialog:
    """What identifies an established call, seen from the far end (SIPp).

    ``local_*`` are the dialer's side (the INVITE's From, its Contact), ``remote_*`` the far
    end's (the INVITE's To with the tag SIPp put in its 200 OK).
    """

    call_id: str
    local_uri: str
    local_tag: str
    remote_uri: str
    remote_tag: str
    contact: str  # the dialer's Contact URI: the Request-URI of in-dialog requests to it
    invite_cseq: int


def dialog_of(trace: Path, call_id: str) -> Dialog | None:
    """The dialog of ``call_id`` once SIPp has sent its 200 OK and received the ACK, else None."""
    invite = ok = None
    acked = False
    for traced in read_sipp_trace(trace):
        msg = traced.message
        if msg.call_id != call_id:
            continue
        if traced.direction == "received" and not msg.is_response and msg.method == "INVITE":
            invite = invite or msg
        elif traced.direction == "sent" and msg.status == 200 and msg.method == "INVITE":
            ok = ok or msg
        elif traced.direction == "received" and not msg.is_response and msg.method == "ACK":
            acked = True
    if invite is None or ok is None or not acked:
        return None
    from_value, to_value = invite.header("from") or "", ok.header("to") or ""
    return Dialog(call_id=call_id, local_uri=uri_of(from_value), local_tag=tag_of(from_value),
                  remote_uri=uri_of(to_value), remote_tag=tag_of(to_value),
                  contact=uri_of(invite.header("contact") or ""),
                  invite_cseq=int((invite.header("cseq") or "1").split()[0]))


# --------------------------------------------------------------------------------------------
# Requests


def _branch() -> str:
    return "z9hG4bK-forge-" + uuid.uuid4().hex[:16]


def _request(method: str, uri: str, *, via: tuple[str, int], from_: str, to: str, call_id: str,
             cseq: int, contact: str | None = None, body: str = "",
             content_type: str = "application/sdp", branch: str | None = None,
             transport: str = "UDP") -> bytes:
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/{transport} {via[0]}:{via[1]};branch={branch or _branch()};rport",
             "Max-Forwards: 70", f"From: {from_}", f"To: {to}", f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}"]
    if contact:
        lines.append(f"Contact: <{contact}>")
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sdp(ip: str, port: int, session: int = 1) -> str:
    """An audio offer/answer with PCMU and telephone-event on payload type 120."""
    return "\r\n".join([
        "v=0", f"o=forger {session} {session} IN IP4 {ip}", "s=-", f"c=IN IP4 {ip}", "t=0 0",
        f"m=audio {port} RTP/AVP 0 120", "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:120 telephone-event/8000", "a=fmtp:120 0-16", "a=sendrecv", ""])


def forge_bye(dialog: Dialog, via: tuple[str, int], cseq: int = 2) -> bytes:
    """A BYE as the far end would send it: From is the far end (its tag), To the dialer."""
    return _request("BYE", dialog.contact, via=via,
                    from_=f"<{dialog.remote_uri}>;tag={dialog.remote_tag}",
                    to=f"<{dialog.local_uri}>;tag={dialog.local_tag}", call_id=dialog.call_id,
                    cseq=cseq)


def forge_reinvite(dialog: Dialog, via: tuple[str, int], rtp: tuple[str, int],
                   cseq: int = 2) -> bytes:
    """A re-INVITE as the far end would send it, moving the call's audio to ``rtp``."""
    return _request("INVITE", dialog.contact, via=via,
                    from_=f"<{dialog.remote_uri}>;tag={dialog.remote_tag}",
                    to=f"<{dialog.local_uri}>;tag={dialog.local_tag}", call_id=dialog.call_id,
                    cseq=cseq, contact=f"sip:forger@{via[0]}:{via[1]}",
                    body=sdp(rtp[0], rtp[1], session=2))


def options(target: tuple[str, int], via: tuple[str, int], call_id: str | None = None,
            transport: str = "UDP") -> bytes:
    """An out-of-dialog OPTIONS, as a scanner (sipvicious, friendly-scanner ...) sends it."""
    return _request("OPTIONS", f"sip:100@{target[0]}:{target[1]}", via=via,
                    from_=f"<sip:scanner@{via[0]}>;tag={uuid.uuid4().hex[:10]}",
                    to=f"<sip:100@{target[0]}>", call_id=call_id or f"scan-{uuid.uuid4().hex}",
                    cseq=1, contact=f"sip:scanner@{via[0]}:{via[1]}", content_type="",
                    transport=transport)


def invite(target: tuple[str, int], via: tuple[str, int], call_id: str,
           rtp_port: int = 9) -> bytes:
    """An unsolicited INVITE with a valid SDP offer (audio towards the sender's address)."""
    return _request("INVITE", f"sip:alert@{target[0]}:{target[1]}", via=via,
                    from_=f"<sip:flood@{via[0]}>;tag={uuid.uuid4().hex[:10]}",
                    to=f"<sip:alert@{target[0]}>", call_id=call_id, cseq=1,
                    contact=f"sip:flood@{via[0]}:{via[1]}", body=sdp(via[0], rtp_port))


def ack_for(request: SipMessage, response: SipMessage) -> bytes:
    """The ACK of a non-2xx final answer (RFC 3261 section 17.1.1.3): same branch, To of the
    answer, CSeq number of the INVITE."""
    return ("\r\n".join([
        f"ACK {request.start.split()[1]} SIP/2.0", f"Via: {request.header('via')}",
        "Max-Forwards: 70", f"From: {request.header('from')}", f"To: {response.header('to')}",
        f"Call-ID: {request.call_id}", f"CSeq: {(request.header('cseq') or '1').split()[0]} ACK",
        "Content-Length: 0"]) + "\r\n\r\n").encode()


# --------------------------------------------------------------------------------------------
# Sockets


class UdpPeer:
    """A UDP socket bound to ``host`` (any 127.x address) that keeps everything it receives."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.received: list[bytes] = []

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()
        return str(host), int(port)

    def send(self, data: bytes, target: tuple[str, int]) -> None:
        self.sock.sendto(data, target)

    def drain(self) -> list[bytes]:
        """Read whatever is queued now (never blocks); the messages read by this call."""
        got = []
        while True:
            try:
                data, _ = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            got.append(data)
        self.received += got
        return got

    def messages(self) -> list[SipMessage]:
        self.drain()
        return [parse(d) for d in self.received]

    def wait_for(self, probe: Callable[[list[SipMessage]], bool], timeout: float,
                 what: str) -> list[SipMessage]:
        """Wait until ``probe`` holds for everything received so far."""
        return wait_until(lambda: (lambda ms: ms if probe(ms) else None)(self.messages()),
                          timeout, what)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RtpTrap:
    """A UDP socket at an SDP address that only counts the packets arriving there."""

    def __init__(self, host: str, port: int) -> None:
        self.peer = UdpPeer(host, port)

    def count(self) -> int:
        self.peer.drain()
        return len(self.peer.received)

    def close(self) -> None:
        self.peer.close()


def send_tcp(target: tuple[str, int], data: bytes, *, source: str = "127.0.0.1",
             linger: float = 0.5) -> bytes:
    """Connect from ``source``, send ``data``, half-close, read until the peer closes or
    ``linger`` seconds pass; what came back. Raises ConnectionRefusedError with no listener.

    A peer that keeps the connection open (an INVITE transaction waiting to answer) costs the
    whole ``linger``; most close at once on the half-close."""
    with socket.create_connection(target, timeout=5.0, source_address=(source, 0)) as sock:
        sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        got = b""
        deadline = time.monotonic() + linger
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65535)
            except OSError:  # timed out, or reset by a peer that gave up on us
                break
            if not chunk:
                break
            got += chunk
        return got


def tcp_listening(target: tuple[str, int]) -> bool:
    """Whether something accepts TCP connections at ``target``."""
    with socket.socket() as sock:
        sock.settimeout(2.0)
        return sock.connect_ex(target) == 0


# --------------------------------------------------------------------------------------------
# Floods


@dataclasses.dataclass
class FloodResult:
    """What one flooder did and got back (per Call-ID: the final status, 0 if none)."""

    target: tuple[str, int]
    sent: int = 0
    finals: dict[str, int] = dataclasses.field(default_factory=dict)
    provisional: int = 0
    error: str = ""

    def codes(self) -> Counter[int]:
        return Counter(self.finals.values())


class Flooder(threading.Thread):
    """Sends ``count`` unsolicited INVITEs at ``rate`` per second to ``target`` from ``source``.

    Bounded in count and in time (it gives up sending at ``count / rate * 2 + 5`` s, whatever
    the pacing achieved); then it keeps reading answers for ``linger`` seconds or until every
    INVITE has a final answer. Each final non-2xx answer is ACKed; a 2xx (which no worker
    should ever give) is recorded and answered with nothing.
    """

    def __init__(self, source: str, target: tuple[str, int], *, count: int, rate: float,
                 linger: float = 10.0) -> None:
        super().__init__(name=f"flood-{target[1]}", daemon=True)
        self.source = source
        self.target = target
        self.count = count
        self.rate = rate
        self.linger = linger
        self.result = FloodResult(target)
        self._requests: dict[str, SipMessage] = {}

    def run(self) -> None:
        try:
            with UdpPeer(self.source) as peer:
                self._flood(peer)
        except Exception as exc:  # noqa: BLE001 - reported to the test through the result
            self.result.error = f"{type(exc).__name__}: {exc}"

    def _flood(self, peer: UdpPeer) -> None:
        start = time.monotonic()
        give_up = start + self.count / self.rate * 2 + 5
        tag = uuid.uuid4().hex[:8]
        for i in range(self.count):
            due = start + i / self.rate
            while (now := time.monotonic()) < due:
                self._answers(peer)
                time.sleep(min(0.005, due - now))
            if now > give_up:
                break
            call_id = f"flood-{tag}-{i}@{self.source}"
            data = invite(self.target, peer.address, call_id)
            self._requests[call_id] = parse(data)
            peer.send(data, self.target)
            self.result.sent += 1
        deadline = time.monotonic() + self.linger
        while time.monotonic() < deadline and len(self.result.finals) < self.result.sent:
            self._answers(peer)
            time.sleep(0.01)
        self._answers(peer)

    def _answers(self, peer: UdpPeer) -> None:
        for data in peer.drain():
            msg = parse(data)
            request = self._requests.get(msg.call_id)
            if not msg.is_response or request is None:
                continue
            if msg.status < 200:
                self.result.provisional += 1
                continue
            self.result.finals.setdefault(msg.call_id, msg.status)
            if msg.status >= 300:
                peer.send(ack_for(request, msg), self.target)
        peer.received.clear()  # keep memory flat: answers are counted, not stored


@contextlib.contextmanager
def flooding(source: str, targets: list[tuple[str, int]], *, count: int, rate: float,
             linger: float = 10.0) -> Iterator[list[Flooder]]:
    """Run one ``Flooder`` per target for the block; joined (bounded) when the block ends."""
    flooders = [Flooder(source, t, count=count, rate=rate, linger=linger) for t in targets]
    for f in flooders:
        f.start()
    try:
        yield flooders
    finally:
        for f in flooders:
            f.join(count / rate * 2 + 5 + linger + 5)


# --------------------------------------------------------------------------------------------
# RFC 4475


#: The ordinary message the torture directory ships beside the RFC's (see its README).
TORTURE_EXTRA = "test"


def torture_messages(directory: Path) -> list[tuple[str, bytes]]:
    """The RFC 4475 ``*.dat`` messages of ``directory`` (name, raw bytes as distributed, CRLF
    line ends and all), sorted; the extra ordinary ``test.dat`` is left out."""
    return [(p.stem, p.read_bytes()) for p in sorted(directory.glob("*.dat"))
            if p.stem != TORTURE_EXTRA]
