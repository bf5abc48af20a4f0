"""The worker's end of the wire (sip.link): a worker outlives its daemon and hands over what it
kept to the next one, in order, before the calls it still carries."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from dialer import ipc
from dialer.ipc import WIRE_VERSION, Channel, Raw
from sip.link import Link

OPEN: list[Link | Channel] = []


@pytest.fixture(autouse=True)
def _close() -> object:
    yield
    while OPEN:
        OPEN.pop().close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def daemon_pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair()
    OPEN.extend([Channel(a), Channel(b)])
    return OPEN[-2], OPEN[-1]  # type: ignore[return-value]


def listening(tmp: Path) -> tuple[socket.socket, str]:
    path = str(tmp / "w0.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(4)
    return sock, path


def connect(path: str) -> Channel:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    OPEN.append(Channel(s))
    return OPEN[-1]  # type: ignore[return-value]


def read_until(ch: Channel, link: Link, ev: str, turns: int = 50) -> list[Raw]:
    """What the daemon side reads, turning the worker's side (``link.receive``) meanwhile."""
    got: list[Raw] = []
    for _ in range(turns):
        link.receive()
        got += ch.receive()
        if any(m.get("ev") == ev for m in got):
            return got
    raise AssertionError(f"no {ev!r} in {got}")


def make(tmp: Path, clock: Clock, calls: list[str] | None = None,
         **kw: object) -> tuple[Link, Channel, str]:
    listener, path = listening(tmp)
    mine, theirs = daemon_pair()
    link = Link(mine, listener, state_dir=tmp, clock=clock,
                hello=lambda: {"worker": 3, "sip_port": 5099, "digest": "d"},
                state=lambda: [{"ev": "reg", "trunk": "internal", "code": 200}],
                calls=lambda: list(calls or []), **kw)  # type: ignore[arg-type]
    OPEN.append(link)
    return link, theirs, path


def test_events_go_straight_to_an_attached_daemon_and_are_kept_until_acknowledged(
        tmp_path: Path) -> None:
    link, daemon, _ = make(tmp_path, Clock())
    link.send({"ev": "ringing", "call_id": "a"})
    link.send({"ev": "answered", "call_id": "a"})
    link.send({"ev": "reg", "trunk": "internal", "code": 200})  # state: never numbered
    assert daemon.receive() == [{"ev": "ringing", "call_id": "a", "seq": 1},
                                {"ev": "answered", "call_id": "a", "seq": 2},
                                {"ev": "reg", "trunk": "internal", "code": 200}]
    assert [m["seq"] for m in link.buffer] == [1, 2]
    daemon.send({"op": "ack", "seq": 1})
    for _ in range(20):
        assert link.receive() == []  # an ack is the link's own business
        if len(link.buffer) == 1:
            break
    assert [m["seq"] for m in link.buffer] == [2]


def test_an_event_the_killed_daemon_never_read_is_handed_over_again(tmp_path: Path) -> None:
    """Written to the socket, never read (kill -9 in between): not lost."""
    link, daemon, path = make(tmp_path, Clock())
    link.send({"ev": "ended", "call_id": "b", "outcome": "busy"})
    daemon.close()
    link.receive()
    new = connect(path)
    new.send({"op": "attach", "wire": WIRE_VERSION})
    got = read_until(new, link, "attached")
    assert [(m["ev"], m.get("seq")) for m in got] == [
        ("hello", None), ("ended", 1), ("reg", None), ("attached", None)]


def test_a_restarted_daemon_gets_hello_then_the_kept_events_in_order_then_the_calls(
        tmp_path: Path) -> None:
    clock = Clock()
    link, daemon, path = make(tmp_path, clock, calls=["c"])
    daemon.close()  # kill -9 of the daemon
    assert link.receive() == []
    assert not link.attached and link.alone_for() == 0.0
    clock.now += 5
    for m in ({"ev": "answered", "call_id": "b"}, {"ev": "confirmed", "call_id": "b"},
              {"ev": "ended", "call_id": "b", "outcome": "contacted"},
              {"ev": "reg", "trunk": "internal", "code": 200}):  # state: not kept, restated
        link.send(m)
    assert [m["ev"] for m in link.buffer] == ["answered", "confirmed", "ended"]
    new = connect(path)
    new.send({"op": "attach", "wire": WIRE_VERSION})
    got = read_until(new, link, "attached")
    assert [m["ev"] for m in got] == ["hello", "answered", "confirmed", "ended", "reg",
                                      "attached"]
    assert [m.get("seq") for m in got[1:4]] == [1, 2, 3]
    assert got[0] == {"ev": "hello", "wire": WIRE_VERSION, "pid": got[0]["pid"], "worker": 3,
                      "sip_port": 5099, "digest": "d"}
    assert got[-1] == {"ev": "attached", "calls": ["c"], "dropped": 0, "alone": 5.0}
    assert link.attached and link.alone_for() == 0.0
    link.send({"ev": "ringing", "call_id": "d"})  # and from now on, straight through
    assert new.receive() == [{"ev": "ringing", "call_id": "d", "seq": 4}]


def test_nothing_reaches_a_connected_daemon_before_its_attach(tmp_path: Path) -> None:
    link, daemon, path = make(tmp_path, Clock())
    daemon.close()
    link.receive()
    new = connect(path)
    link.receive()  # accepted, not attached
    link.send({"ev": "ended", "call_id": "x"})
    assert new.receive() == []
    new.send({"op": "attach", "wire": WIRE_VERSION})
    got = read_until(new, link, "attached")
    assert [m["ev"] for m in got] == ["hello", "ended", "reg", "attached"]


def first_ops(link: Link, turns: int = 20) -> list[ipc.Op]:
    """What the link returns on the first of ``turns`` turns that returns anything."""
    for _ in range(turns):
        if ops := link.receive():
            return ops
    return []


def test_operations_after_attach_in_the_same_read_are_returned(tmp_path: Path) -> None:
    link, daemon, path = make(tmp_path, Clock())
    daemon.close()
    link.receive()
    new = connect(path)
    new.send({"op": "attach", "wire": WIRE_VERSION})
    new.send({"op": "retire"})
    assert first_ops(link) == [ipc.Retire()]


def test_a_second_daemon_is_refused_while_one_is_attached(tmp_path: Path) -> None:
    link, daemon, path = make(tmp_path, Clock())
    other = connect(path)
    link.receive()
    got = other.receive()
    assert got and got[0]["ev"] == "refused"
    link.send({"ev": "ringing", "call_id": "a"})
    assert daemon.receive() == [{"ev": "ringing", "call_id": "a", "seq": 1}]  # the first keeps it


def test_a_full_buffer_sheds_progress_oldest_first_never_ends_or_confirmations(
        tmp_path: Path) -> None:
    link, daemon, _ = make(tmp_path, Clock(), buffer_max=4)
    daemon.close()
    link.receive()
    for m in ({"ev": "ringing", "call_id": "1"}, {"ev": "confirmed", "call_id": "1"},
              {"ev": "played", "call_id": "1"}, {"ev": "ended", "call_id": "1"},
              {"ev": "ringing", "call_id": "2"}, {"ev": "ended", "call_id": "2"}):
        link.send(m)
    assert [(m["ev"], m["call_id"]) for m in link.buffer] == [
        ("confirmed", "1"), ("ended", "1"), ("ringing", "2"), ("ended", "2")]
    assert link.dropped == 2


def test_alone_past_the_bound_is_abandoned_and_writes_what_it_kept(tmp_path: Path) -> None:
    clock = Clock()
    link, daemon, _ = make(tmp_path, clock, alone_s=60.0)
    daemon.close()
    link.receive()
    link.send({"ev": "ended", "call_id": "z", "outcome": "contacted"})
    clock.now += 59.9
    assert not link.abandoned
    clock.now += 0.2
    assert link.abandoned
    path = link.write_undelivered()
    assert path is not None and path.parent == tmp_path
    assert path.stat().st_mode & 0o777 == 0o600
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        {"ev": "ended", "call_id": "z", "outcome": "contacted", "seq": 1}]


def test_a_worker_tied_to_one_socket_keeps_nothing(tmp_path: Path) -> None:
    mine, theirs = daemon_pair()
    link = Link(mine, None)
    OPEN.append(link)
    theirs.close()
    link.receive()
    link.send({"ev": "ended", "call_id": "a"})
    assert not link.detachable and not link.buffer
    assert link.write_undelivered() is None


@pytest.mark.parametrize("junk", [b"not json\n", b"x" * (2 << 20)])
def test_a_garbled_daemon_is_hung_up_on_and_the_worker_waits_for_the_next(
        tmp_path: Path, junk: bytes) -> None:
    link, daemon, _ = make(tmp_path, Clock())
    sent = 0
    for _ in range(1000):
        if sent < len(junk):
            with contextlib.suppress(BlockingIOError, OSError):
                sent += daemon.sock.send(junk[sent:sent + 65536])
        link.receive()
        if not link.attached:
            break
    assert not link.attached and link.detachable


def test_an_idle_link_makes_no_failing_read_or_accept(tmp_path: Path) -> None:
    """The worker turns ``receive`` 20 times a second: with nothing to read it must not try a
    ``recv`` and an ``accept`` that fail (each an exception; issue 16). Counted, not timed."""
    link, daemon, path = make(tmp_path, Clock())
    assert link.channel is not None
    reads: list[int] = []
    accepts: list[int] = []
    real_receive, real_accept = link.channel.receive, link._accept
    def receive() -> list[dict[str, Any]]:
        reads.append(1)
        return real_receive()

    def accept() -> None:
        accepts.append(1)
        real_accept()

    link.channel.receive = receive  # type: ignore[method-assign]
    link._accept = accept  # type: ignore[method-assign]
    for _ in range(100):
        assert link.receive() == []
    assert (len(reads), len(accepts)) == (0, 0)
    daemon.send({"op": "retire"})  # what arrives is still read, on the next turn
    assert first_ops(link) == [ipc.Retire()]
    assert len(reads) >= 1
    other = connect(path)  # and a daemon that connects is still answered
    for _ in range(20):
        link.receive()
        if accepts:
            break
    assert accepts and other.receive()[0]["ev"] == "refused"
