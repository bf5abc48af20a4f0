"""The wire between the daemon and its SIP workers: JSON objects, one per line, on a stream.

``dialer serve`` gives each worker a listening Unix socket in the node's state directory and
connects to it (``dialer.pool``); when the daemon dies the worker keeps its calls and waits for
the next daemon to attach (``sip.link``). The tests also drive a worker over one end of a
``socket.socketpair()`` (``--ipc-fd N``): when that closes, the worker hangs up and exits. The
worker's stdout and stderr stay free for logs. When a worker dies the daemon reads end-of-file
and accounts for the worker's calls.

Daemon to worker (``op``):

* ``init``: ``worker`` (index), ``bind`` (address for SIP and RTP), ``trunks`` (name ->
  ``{uri, registrar, username, password, transport, register}``), ``allowed_sources`` (IP
  addresses SIP is accepted from), ``log_level``, ``log_format`` (``json``; absent: text, as
  ``dialer.logs``), ``rtp_port`` (first RTP port of this worker)
  and ``rtp_port_range``. The password travels only here, never on a command line.
* ``dial``: ``call_id`` (the SIP Call-ID, also the attempt id), ``trunk``, ``uri``,
  ``from_uri`` (or null), ``display``, ``ring_timeout``, ``media`` (prompt name -> WAV path),
  ``dialogue`` (the fields of ``DialogueSettings``).
* ``hangup``: ``call_id``.
* ``trunk``: ``trunk``, ``up`` (bool), ``reason``: the trunk's registration was lost (or is
  back); calls on it that have had no answer yet end ``trunk_down``.
* ``shutdown``.
* ``lease``: ``valid_for`` (s): how long the node's lease still covers the worker (0: no longer);
  past it the worker hangs up its calls (``interrupted``) and takes none until the next
  ``lease`` (``dialer.core.cluster``; sent only when several nodes may share the database).

Worker to daemon (``ev``):

* ``ready``: ``worker``, ``pid``, ``sip_port``.
* ``reg``: ``trunk``, ``code``, ``reason``, ``expires``: every registration state change.
* ``ringing`` / ``answered``: ``call_id``, ``at``.
* ``played``: ``call_id``, ``prompt``, ``at``: a prompt or the message starts playing.
* ``key``: ``call_id``, ``key``, ``at``;  ``confirmed``: ``call_id``, ``what``, ``at``.
* ``refusal``: ``call_id``, ``what``, ``key``, ``at``: a wrong digit at the prompt of a random
  key (wire version 3; the dial's ``dialogue`` then has ``answer_random``/``listen_random``).
* ``transfer``: ``call_id``, ``result`` (``requested``, ``accepted``, ``connected``, ``failed``),
  ``code`` (the SIP code that said so, 0: none), ``to`` (the Refer-To URI), ``at``: a step of a
  blind transfer to the connect key's URI (wire version 4; the dial's ``dialogue`` then has
  ``connect_key``/``connect_to``).
* ``slots``: ``held``: call slots held by finished calls whose CANCEL or BYE is still
  unanswered (freed within the trunk's ``invite_timeout``); the pool counts them as busy.
* ``dropped``: ``counts`` (reason -> messages), ``last``: what the source filter dropped.
* ``ended``: ``call_id``, ``status``, ``reason``, ``q850``, ``outcome``, ``answered_at``,
  ``keys``, ``answer_confirmed_at``, ``listen_confirmed_at``, ``at``. Exactly one per ``dial``.
* ``log``: ``level``, ``message`` (worker-side problems worth the daemon's log).
* ``load``: ``overloaded`` (bool), ``lag`` (s), ``wait`` (share of a second): the worker's
  threads wait for a CPU or its loop runs late (the machine is short of CPU), or it has caught
  up; sent when that changes and every ``LOAD_REPORT_S`` (wire version 4); an overloaded worker
  is given no new calls.

Attaching (``sip.link``; this part of the wire does not change between versions, so that a
daemon can let a worker of another version finish its calls):

* daemon to worker ``attach``: ``wire`` (the daemon's wire version). A worker the daemon did
  not start itself answers ``hello`` (``wire``, ``worker``, ``pid``, ``sip_port``, ``digest``,
  ``ready``, ``rtp_port``), then every event it kept while no daemon was attached, in order,
  then its state (``reg``, ``load``, ``slots``), then ``attached``: ``calls`` (the call_ids it
  carries, each to end with one ``ended``), ``dropped`` (progress events a full buffer lost),
  ``alone`` (s).
  A worker attached to another daemon answers ``refused`` (``reason``, ``pid``) and hangs up.
* daemon to worker ``retire``: finish the calls, take no new one, exit.
* Every event but ``reg``, ``load`` and ``slots`` carries ``seq`` (1, 2, ... per worker
  process); the daemon answers ``ack`` (``seq``: the last one whose effect is committed) and
  the worker keeps each event until then, to hand it over again to the next daemon.
* ``init`` carries ``wire`` and ``digest`` (a hash of the rest of ``init``), which the worker
  reports in ``hello``: a daemon adopts a worker of the same wire and digest, and retires others.

Times are POSIX timestamps (float seconds).

Typed: every message above is a frozen ``msgspec.Struct`` of this module (``Init``, ``Dial``,
... for the operations, ``Ready``, ``Reg``, ... for the events, and ``WorkerLost``, which the
gateway itself reports when a worker process died: ``worker``, ``pid``, ``calls``,
``retiring``), and
``encode``/``decode`` are the one pair that turns them into the JSON objects above and back.
The keys on the wire are the struct fields, in order, after ``op``/``ev``; ``seq`` comes
last, and only when set. ``decode`` rejects an unknown ``op``/``ev``, a missing field or a
field of the wrong type with a logged error (the message is dropped); keys it does not know
are ignored. ``Channel`` moves the JSON objects; ``send_msg``/``receive_msgs`` move messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import msgspec

logger = logging.getLogger(__name__)

Raw = dict[str, Any]
"""One message as JSON has it: what ``Channel`` sends and receives."""

MAX_LINE = 1 << 20
WIRE_VERSION = 4  # grows with every change of the wire a daemon and a worker must agree on
ALONE_S = 60.0  # a worker with no daemon attached this long finishes its calls and exits


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class Channel:
    """A non-blocking, line-framed JSON channel over a connected stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self._buf = b""
        self.closed = False

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: Raw) -> None:
        """Send one JSON object; blocks briefly if the peer's buffer is full."""
        data = _encoder.encode(msg) + b"\n"
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True
        finally:
            if not self.closed:
                self.sock.setblocking(False)

    def receive(self) -> list[Raw]:
        """Read what has arrived and return the complete JSON objects; sets ``closed`` at EOF."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self._buf += chunk
            if len(self._buf) > MAX_LINE and b"\n" not in self._buf:
                raise ValueError("IPC line too long")
        messages: list[Raw] = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            if line.strip():
                messages.append(_decoder.decode(line))
        return messages

    def send_msg(self, msg: Message) -> None:
        """Send one typed message."""
        self.send(encode(msg))

    def receive_msgs(self) -> list[Message]:
        """What has arrived, decoded; what is unknown or malformed is logged and dropped."""
        return decode_all(self.receive())

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


def inheritable_pair() -> tuple[Channel, int]:
    """A channel for the parent and a raw fd for the child (to pass with ``pass_fds``)."""
    parent, child = socket.socketpair()
    fd = child.detach()
    os.set_inheritable(fd, True)
    return Channel(parent), fd


# ----- the messages -----

class Op(msgspec.Struct, frozen=True, kw_only=True):
    """Daemon to worker. ``OMIT``: the fields left out of the JSON when None."""

    OP: ClassVar[str] = ""
    OMIT: ClassVar[frozenset[str]] = frozenset()


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Worker (or gateway) to daemon. ``seq``: numbered by ``sip.link`` (see above)."""

    EV: ClassVar[str] = ""
    OMIT: ClassVar[frozenset[str]] = frozenset({"seq"})
    seq: int | None = None


class Init(Op, frozen=True, kw_only=True):
    OP: ClassVar[str] = "init"
    OMIT: ClassVar[frozenset[str]] = frozenset({"sip_port", "sip_port_alt", "wire", "digest",
                                                "log_format"})
    worker: int = 0
    bind: str = "127.0.0.1"
    trunks: dict[str, dict[str, Any]] = {}
    allowed_sources: list[str] = []
    reject_code: int | None = None
    orphan_timeout: float | None = None
    log_level: int | str | None = None
    rtp_port: int | None = None
    rtp_port_range: int | None = None
    # its SIP port (UDP and TCP; None or 0: any), and the one to take when that is held (by a
    # retiring worker of the same index finishing its calls)
    sip_port: int | None = None
    sip_port_alt: int | None = None
    wire: int | None = None
    digest: str | None = None
    log_format: str | None = None  # dialer.logs: "json", or None for text


class Dial(Op, frozen=True, kw_only=True):
    OP: ClassVar[str] = "dial"
    call_id: str
    trunk: str = ""
    uri: str = ""
    from_uri: str | None = None
    display: str = ""
    ring_timeout: float = 30.0
    media: dict[str, str] = {}
    dialogue: dict[str, Any] = {}  # the fields of DialogueSettings


class Hangup(Op, frozen=True, kw_only=True):
    OP: ClassVar[str] = "hangup"
    call_id: str


class Trust(Op, frozen=True, kw_only=True):
    OP: ClassVar[str] = "trust"
    allowed_sources: list[str] = []


class TrunkState(Op, frozen=True, kw_only=True):
    OP: ClassVar[str] = "trunk"
    trunk: str
    up: bool
    reason: str = ""


class Shutdown(Op, frozen=True, kw_only=True):
    OP: ClassVar[str] = "shutdown"


class Attach(Op, frozen=True, kw_only=True):
    OP: ClassVar[str] = "attach"
    wire: int | None = None


class Retire(Op, frozen=True, kw_only=True):
    OP: ClassVar[str] = "retire"


class Lease(Op, frozen=True, kw_only=True):
    """The node's lease covers the next ``valid_for`` seconds (0: no longer): past them the
    worker hangs up its calls and takes none until the next ``lease`` (dialer.core.cluster)."""

    OP: ClassVar[str] = "lease"
    valid_for: float


class Ack(Op, frozen=True, kw_only=True):
    OP: ClassVar[str] = "ack"
    seq: int


class Ready(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "ready"
    worker: int | None = None
    pid: int | None = None
    sip_port: int | None = None


class Reg(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "reg"
    trunk: str
    code: int = 0
    reason: str | None = None
    expires: int = 0


class Ringing(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "ringing"
    call_id: str
    at: float | None = None


class Answered(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "answered"
    call_id: str
    at: float | None = None


class Played(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "played"
    call_id: str
    prompt: str | None = None
    at: float | None = None


class Key(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "key"
    call_id: str
    key: str | None = None
    at: float | None = None


class Confirmed(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "confirmed"
    call_id: str
    what: str | None = None
    at: float | None = None


class Refusal(Event, frozen=True, kw_only=True):
    """A wrong digit at the prompt of a random key (``dialer.core.dialogue.Refused``)."""

    EV: ClassVar[str] = "refusal"
    call_id: str
    what: str | None = None
    key: str | None = None
    at: float | None = None


class Transfer(Event, frozen=True, kw_only=True):
    """A step of a blind transfer (``dialer.core.dialogue.Transferred``)."""

    EV: ClassVar[str] = "transfer"
    call_id: str
    result: str | None = None
    code: int | None = None
    to: str | None = None
    at: float | None = None


class Slots(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "slots"
    held: int = 0


class Dropped(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "dropped"
    counts: dict[str, int] = {}
    last: str | None = None


class Ended(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "ended"
    call_id: str
    status: int | None = None
    reason: str | None = None
    q850: int | None = None
    outcome: str | None = "failed"  # a dialer.core.domain.Outcome value (else: failed)
    answered_at: float | None = None
    keys: str | None = ""
    answer_confirmed_at: float | None = None
    listen_confirmed_at: float | None = None
    at: float | None = None


class Log(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "log"
    level: str | int = "info"
    message: str = ""


class Load(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "load"
    OMIT: ClassVar[frozenset[str]] = frozenset({"seq", "wait"})
    overloaded: bool
    lag: float = 0.0
    wait: float | None = None  # the largest share of the last second a thread waited for a CPU


class Hello(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "hello"
    OMIT: ClassVar[frozenset[str]] = frozenset({"seq", "ready", "rtp_port"})
    wire: int | None = None
    pid: int = 0
    worker: int = 0
    sip_port: int | None = None
    digest: str | None = None
    ready: bool | None = None
    rtp_port: int | None = None  # its half (dialer.pool)


class Attached(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "attached"
    calls: list[str] = []
    dropped: int = 0
    alone: float = 0.0


class Refused(Event, frozen=True, kw_only=True):
    EV: ClassVar[str] = "refused"
    reason: str = ""
    pid: int | None = None


class WorkerLost(Event, frozen=True, kw_only=True):
    """Not from a worker: the gateway's own report of a worker process that died."""

    EV: ClassVar[str] = "worker_lost"
    worker: int
    pid: int | None = None
    calls: list[str] = []
    retiring: bool = False


Message = Op | Event
"""Any message of the wire (an ``Op`` or an ``Event``)."""

OPS: dict[str, type[Op]] = {c.OP: c for c in (Init, Dial, Hangup, Trust, TrunkState, Shutdown,
                                              Attach, Retire, Ack, Lease)}
EVENTS: dict[str, type[Event]] = {c.EV: c for c in (
    Ready, Reg, Ringing, Answered, Played, Key, Confirmed, Refusal, Transfer, Slots, Dropped,
    Ended, Log, Load, Hello, Attached, Refused, WorkerLost)}


M = TypeVar("M", bound=Message)


def replace(msg: M, **changes: Any) -> M:
    """A copy of ``msg`` with ``changes`` (messages are frozen)."""
    return msgspec.structs.replace(msg, **changes)


class WireError(ValueError):
    """A message that is not one of the wire's."""


def encode(msg: Message) -> Raw:
    """The JSON object of ``msg``: ``op``/``ev`` first, then the fields in order, ``seq`` last."""
    out: Raw = {"op": msg.OP} if isinstance(msg, Op) else {"ev": msg.EV}
    fields = msgspec.structs.asdict(msg)
    seq = fields.pop("seq", None) if isinstance(msg, Event) else None
    out.update((k, v) for k, v in fields.items() if v is not None or k not in msg.OMIT)
    if seq is not None:
        out["seq"] = seq
    return out


def decode(raw: object) -> Message | None:
    """The message a JSON object stands for; None (with a logged error) when it is unknown or
    malformed: such a message is dropped, never a crash."""
    try:
        return parse(raw)
    except WireError as exc:
        logger.error("IPC: dropped a message: %s", exc)
        return None


def decode_all(raws: Iterable[object]) -> list[Message]:
    """``decode`` each; what is rejected is dropped."""
    return [m for m in (decode(r) for r in raws) if m is not None]


def parse(raw: object) -> Message:
    """Like ``decode``, but raises ``WireError``."""
    if not isinstance(raw, Mapping):
        raise WireError(f"not a JSON object: {_short(raw)}")
    cls: type[Op] | type[Event]
    if "op" in raw:
        op = OPS.get(raw["op"]) if isinstance(raw["op"], str) else None
        if op is None:
            raise WireError(f"unknown op {_short(raw['op'])}")
        cls = op
    elif "ev" in raw:
        ev = EVENTS.get(raw["ev"]) if isinstance(raw["ev"], str) else None
        if ev is None:
            raise WireError(f"unknown event {_short(raw['ev'])}")
        cls = ev
    else:
        raise WireError(f"neither op nor ev: {_short(raw)}")
    try:
        return msgspec.convert(raw, cls, strict=True)
    except msgspec.ValidationError as exc:
        raise WireError(f"{cls.__name__}: {exc}") from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
