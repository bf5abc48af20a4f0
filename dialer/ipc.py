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
  addresses SIP is accepted from), ``log_level``, ``rtp_port`` (first RTP port of this worker)
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
* ``slots``: ``held``: call slots held by finished calls whose CANCEL or BYE is still
  unanswered (freed within the trunk's ``invite_timeout``); the pool counts them as busy.
* ``dropped``: ``counts`` (reason -> messages), ``last``: what the source filter dropped.
* ``ended``: ``call_id``, ``status``, ``reason``, ``q850``, ``outcome``, ``answered_at``,
  ``keys``, ``answer_confirmed_at``, ``listen_confirmed_at``, ``at``. Exactly one per ``dial``.
* ``log``: ``level``, ``message`` (worker-side problems worth the daemon's log).
* ``load``: ``overloaded`` (bool), ``lag`` (s): the worker's loop runs late (the machine is short
  of CPU) or has caught up; an overloaded worker is given no new calls.

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

Typed: every message above is a frozen dataclass of this module (``Init``, ``Dial``, ... for
the operations, ``Ready``, ``Reg``, ... for the events, and ``WorkerLost``, which the gateway
itself reports when a worker process died: ``worker``, ``pid``, ``calls``, ``retiring``), and
``encode``/``decode`` are the one pair that turns them into the JSON objects above and back.
The keys on the wire are the dataclass fields, in order, after ``op``/``ev``; ``seq`` comes
last, and only when set. ``decode`` rejects an unknown ``op``/``ev``, a missing field or a
field of the wrong type with a logged error (the message is dropped); keys it does not know
are ignored. ``Channel`` moves the JSON objects; ``send_msg``/``receive_msgs`` move messages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

logger = logging.getLogger(__name__)

Raw = dict[str, Any]
"""One message as JSON has it: what ``Channel`` sends and receives."""

MAX_LINE = 1 << 20
WIRE_VERSION = 2  # grows with every change of the wire a daemon and a worker must agree on
ALONE_S = 60.0  # a worker with no daemon attached this long finishes its calls and exits


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
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
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
                messages.append(json.loads(line))
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

_OMIT = {"omit_none": True}  # a field left out of the JSON when None


@dataclass(frozen=True, kw_only=True)
class Op:
    """Daemon to worker."""

    OP: ClassVar[str] = ""


@dataclass(frozen=True, kw_only=True)
class Event:
    """Worker (or gateway) to daemon. ``seq``: numbered by ``sip.link`` (see above)."""

    EV: ClassVar[str] = ""
    seq: int | None = field(default=None, metadata=_OMIT)


@dataclass(frozen=True, kw_only=True)
class Init(Op):
    OP: ClassVar[str] = "init"
    worker: int = 0
    bind: str = "127.0.0.1"
    trunks: dict[str, dict[str, Any]] = field(default_factory=dict)
    allowed_sources: list[str] = field(default_factory=list)
    reject_code: int | None = None
    orphan_timeout: float | None = None
    log_level: int | str | None = None
    rtp_port: int | None = None
    rtp_port_range: int | None = None
    # its SIP port (UDP and TCP; None or 0: any), and the one to take when that is held (by a
    # retiring worker of the same index finishing its calls)
    sip_port: int | None = field(default=None, metadata=_OMIT)
    sip_port_alt: int | None = field(default=None, metadata=_OMIT)
    wire: int | None = field(default=None, metadata=_OMIT)
    digest: str | None = field(default=None, metadata=_OMIT)


@dataclass(frozen=True, kw_only=True)
class Dial(Op):
    OP: ClassVar[str] = "dial"
    call_id: str
    trunk: str = ""
    uri: str = ""
    from_uri: str | None = None
    display: str = ""
    ring_timeout: float = 30.0
    media: dict[str, str] = field(default_factory=dict)
    dialogue: dict[str, Any] = field(default_factory=dict)  # the fields of DialogueSettings


@dataclass(frozen=True, kw_only=True)
class Hangup(Op):
    OP: ClassVar[str] = "hangup"
    call_id: str


@dataclass(frozen=True, kw_only=True)
class Trust(Op):
    OP: ClassVar[str] = "trust"
    allowed_sources: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class TrunkState(Op):
    OP: ClassVar[str] = "trunk"
    trunk: str
    up: bool
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class Shutdown(Op):
    OP: ClassVar[str] = "shutdown"


@dataclass(frozen=True, kw_only=True)
class Attach(Op):
    OP: ClassVar[str] = "attach"
    wire: int | None = None


@dataclass(frozen=True, kw_only=True)
class Retire(Op):
    OP: ClassVar[str] = "retire"


@dataclass(frozen=True, kw_only=True)
class Lease(Op):
    """The node's lease covers the next ``valid_for`` seconds (0: no longer): past them the
    worker hangs up its calls and takes none until the next ``lease`` (dialer.core.cluster)."""

    OP: ClassVar[str] = "lease"
    valid_for: float


@dataclass(frozen=True, kw_only=True)
class Ack(Op):
    OP: ClassVar[str] = "ack"
    seq: int


@dataclass(frozen=True, kw_only=True)
class Ready(Event):
    EV: ClassVar[str] = "ready"
    worker: int | None = None
    pid: int | None = None
    sip_port: int | None = None


@dataclass(frozen=True, kw_only=True)
class Reg(Event):
    EV: ClassVar[str] = "reg"
    trunk: str
    code: int = 0
    reason: str | None = None
    expires: int = 0


@dataclass(frozen=True, kw_only=True)
class Ringing(Event):
    EV: ClassVar[str] = "ringing"
    call_id: str
    at: float | None = None


@dataclass(frozen=True, kw_only=True)
class Answered(Event):
    EV: ClassVar[str] = "answered"
    call_id: str
    at: float | None = None


@dataclass(frozen=True, kw_only=True)
class Played(Event):
    EV: ClassVar[str] = "played"
    call_id: str
    prompt: str | None = None
    at: float | None = None


@dataclass(frozen=True, kw_only=True)
class Key(Event):
    EV: ClassVar[str] = "key"
    call_id: str
    key: str | None = None
    at: float | None = None


@dataclass(frozen=True, kw_only=True)
class Confirmed(Event):
    EV: ClassVar[str] = "confirmed"
    call_id: str
    what: str | None = None
    at: float | None = None


@dataclass(frozen=True, kw_only=True)
class Slots(Event):
    EV: ClassVar[str] = "slots"
    held: int = 0


@dataclass(frozen=True, kw_only=True)
class Dropped(Event):
    EV: ClassVar[str] = "dropped"
    counts: dict[str, int] = field(default_factory=dict)
    last: str | None = None


@dataclass(frozen=True, kw_only=True)
class Ended(Event):
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


@dataclass(frozen=True, kw_only=True)
class Log(Event):
    EV: ClassVar[str] = "log"
    level: str | int = "info"
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Load(Event):
    EV: ClassVar[str] = "load"
    overloaded: bool
    lag: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Hello(Event):
    EV: ClassVar[str] = "hello"
    wire: int | None = None
    pid: int = 0
    worker: int = 0
    sip_port: int | None = None
    digest: str | None = None
    ready: bool | None = field(default=None, metadata=_OMIT)
    rtp_port: int | None = field(default=None, metadata=_OMIT)  # its half (dialer.pool)


@dataclass(frozen=True, kw_only=True)
class Attached(Event):
    EV: ClassVar[str] = "attached"
    calls: list[str] = field(default_factory=list)
    dropped: int = 0
    alone: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Refused(Event):
    EV: ClassVar[str] = "refused"
    reason: str = ""
    pid: int | None = None


@dataclass(frozen=True, kw_only=True)
class WorkerLost(Event):
    """Not from a worker: the gateway's own report of a worker process that died."""

    EV: ClassVar[str] = "worker_lost"
    worker: int
    pid: int | None = None
    calls: list[str] = field(default_factory=list)
    retiring: bool = False


Message = Op | Event
"""Any message of the wire (an ``Op`` or an ``Event``)."""

OPS: dict[str, type[Op]] = {c.OP: c for c in (Init, Dial, Hangup, Trust, TrunkState, Shutdown,
                                              Attach, Retire, Ack, Lease)}
EVENTS: dict[str, type[Event]] = {c.EV: c for c in (
    Ready, Reg, Ringing, Answered, Played, Key, Confirmed, Slots, Dropped, Ended, Log, Load,
    Hello, Attached, Refused, WorkerLost)}


class WireError(ValueError):
    """A message that is not one of the wire's."""


def encode(msg: Message) -> Raw:
    """The JSON object of ``msg``: ``op``/``ev`` first, then the fields in order, ``seq`` last."""
    out: Raw = {"op": msg.OP} if isinstance(msg, Op) else {"ev": msg.EV}
    seq: int | None = None
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if f.name == "seq" and isinstance(msg, Event):
            seq = value
            continue
        if value is None and f.metadata.get("omit_none"):
            continue
        out[f.name] = value
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
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise WireError(f"{cls.__name__}: {f.name} missing")
            continue
        value = raw[f.name]
        if not _fits(value, hints[f.name]):
            raise WireError(f"{cls.__name__}: {f.name} is {_short(value)}")
        kwargs[f.name] = value
    return cls(**kwargs)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _fits(value: object, tp: Any) -> bool:
    """Whether a JSON value is of the field type ``tp`` (an int does for a float)."""
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return any(_fits(value, t) for t in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        key, val = typing.get_args(tp)
        return isinstance(value, dict) and all(_fits(k, key) and _fits(v, val)
                                               for k, v in value.items())
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return False


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
