"""Adoption (dialer.pool): a daemon that starts finds the workers a previous one left running,
re-attaches, gets what they kept, in order, and the calls they carry; a worker of another
version or configuration retires. Driven with tests/fake_worker.py (the real wire and
``sip.link``, no SIP), so each case takes about a second."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dialer import ipc
from dialer.gateway import GatewayEvent, PoolGateway
from dialer.pool import AnotherDaemon, WorkerPool
from dialer.procs import _alive
from testkit import until

T = TypeVar("T")
FAKE = [sys.executable, "-m", "tests.fake_worker"]
DISOWNED: list[Any] = []  # Popen objects of workers a "dead" daemon let go (reaped at teardown)


class Node:
    """One daemon's gateway over fake workers in ``state_dir``."""

    def __init__(self, state_dir: Path, *, size: int = 2, config: str = "a") -> None:
        self.pool = WorkerPool(size=size, calls_per_worker=4, command=FAKE, state_dir=state_dir,
                               init_message=lambda i: ipc.Init(worker=i, bind=config,
                                                               allowed_sources=["127.0.0.1"]))
        self.gateway = PoolGateway(self.pool)
        self.events: list[GatewayEvent] = []

    def pump(self, seconds: float = 0.05) -> list[GatewayEvent]:
        got = self.gateway.poll(seconds)
        self.gateway.ack()
        self.events += got
        return got

    def ended(self) -> dict[str, str | None]:
        return {m.call_id: m.outcome for _, m in self.events if isinstance(m, ipc.Ended)}

    def wait_ready(self, n: int) -> None:
        until(lambda: (self.pump(), self.pool.ready_count() >= n)[1], 15, f"{n} ready")

    def die(self) -> None:
        """The daemon dies (kill -9): its workers live on."""
        DISOWNED.extend(w.proc for w in self.pool.all_workers())
        self.pool.detach()

    def dial(self, call_id: str, seconds: float) -> int | None:
        return self.gateway.dial(ipc.Dial(call_id=call_id, ring_timeout=seconds))


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "run" / "node"
    yield d
    for p in d.glob("*.sock"):  # whatever a test left: its workers must not outlive it
        p.unlink()
    out = subprocess.run(["pgrep", "-f", str(d)], capture_output=True, text=True).stdout
    for pid in out.split():
        os.kill(int(pid), 9)
    while DISOWNED:
        DISOWNED.pop().wait(10)


def test_a_new_daemon_adopts_the_workers_and_their_calls(state: Path) -> None:
    old = Node(state)
    old.gateway.start(2)
    old.wait_ready(2)
    pids = sorted(w.pid for w in old.pool.workers.values())
    assert old.dial("c1", 1.0) is not None and old.dial("c2", 1.0) is not None
    until(lambda: (old.pump(), sum(1 for _, m in old.events if isinstance(m, ipc.Ringing)) == 2)[1],
          5, "ringing")
    assert state.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in state.glob("*.sock"))
    old.die()

    new = Node(state)
    events, live = new.gateway.attach()
    assert live == {"c1", "c2"}
    assert sorted(w.pid for w in new.pool.workers.values()) == pids
    assert [m.EV for _, m in events if m.EV in ("hello", "attached")] == [
        "hello", "attached"] * 2
    new.gateway.start(2)  # nothing to start: both indexes are adopted
    assert sorted(w.pid for w in new.pool.workers.values()) == pids
    until(lambda: (new.pump(), set(new.ended()) == {"c1", "c2"})[1], 5, "both calls to end")
    assert new.ended() == {"c1": "contacted", "c2": "contacted"}
    assert new.pool.busy_slots() == 0 and new.pool.free_slots() == 8
    new.gateway.close(5)
    assert not list(state.glob("*.sock")) and not any(_alive(p) for p in pids)


def _peek(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def test_an_event_sent_to_the_dead_daemon_is_handed_over_again(state: Path) -> None:
    old = Node(state, size=1)
    old.gateway.start(1)
    old.wait_ready(1)
    old.dial("c1", 0.2)
    sock = old.pool.workers[0].channel.sock
    # the end is written to the old daemon's socket (looked at, never read), then it dies
    until(lambda: b'"ended"' in _peek(sock), 10, "the end in the old daemon's socket")
    old.die()
    new = Node(state, size=1)
    events, live = new.gateway.attach()
    assert [m.call_id for _, m in events if isinstance(m, ipc.Ended)] == ["c1"]
    assert live == set()
    new.gateway.close(5)


def test_a_worker_of_another_configuration_retires_and_a_fresh_one_takes_its_place(
        state: Path) -> None:
    old = Node(state, size=1, config="a")
    old.gateway.start(1)
    old.wait_ready(1)
    old_pid = old.pool.workers[0].pid
    old.dial("c1", 1.0)
    old.die()

    new = Node(state, size=1, config="b")  # say a trunk changed
    _, live = new.gateway.attach()
    assert live == {"c1"} and not new.pool.workers
    assert [w.pid for w in new.pool.retiring.values()] == [old_pid]
    new.gateway.start(1)
    new.wait_ready(1)
    assert new.pool.workers[0].pid != old_pid
    assert new.dial("c2", 0.2) == 0  # new calls go to the fresh worker, never the retiring one
    assert new.pool.workers[0].calls == {"c2"}
    until(lambda: (new.pump(), old_pid not in new.pool.retiring)[1], 10, "the old one to exit")
    assert new.ended() == {"c1": "contacted", "c2": "contacted"}
    lost = [m for _, m in new.events if isinstance(m, ipc.WorkerLost)]
    assert lost == [ipc.WorkerLost(worker=0, pid=old_pid, calls=[], retiring=True)]
    new.gateway.close(5)


def test_a_worker_of_another_wire_version_retires(state: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("FAKE_WIRE", "999")
    old = Node(state, size=1)
    old.gateway.start(1)
    old.wait_ready(1)
    old.die()
    new = Node(state, size=1)
    new.gateway.attach()
    assert len(new.pool.retiring) == 1 and not new.pool.workers
    new.gateway.close(5)


def test_a_second_daemon_of_the_node_is_refused(state: Path) -> None:
    first = Node(state, size=1)
    first.gateway.start(1)
    first.wait_ready(1)
    with pytest.raises(AnotherDaemon, match="attached to another running daemon"):
        Node(state, size=1).gateway.attach()
    first.pump()
    assert first.pool.ready_count() == 1  # the first keeps its worker
    first.gateway.close(5)


def test_stale_sockets_are_removed_and_kept_events_read_once(state: Path) -> None:
    state.mkdir(parents=True)
    (state / "w0-dead.sock").write_bytes(b"")  # a worker killed with its socket left behind
    (state / "undelivered-1.jsonl").write_text('{"ev":"ended","call_id":"x","seq":1}\nnot json\n')
    node = Node(state, size=1)
    events, live = node.gateway.attach()
    assert not (state / "w0-dead.sock").exists()
    assert [m for _, m in events] == [ipc.Ended(call_id="x", seq=1)]
    assert not list(state.glob("undelivered-*"))
    assert node.gateway.attach() == ([], set())


def test_a_socket_path_too_long_for_a_unix_socket_still_works(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "run"
    node = Node(deep, size=1)
    node.gateway.start(1)
    node.wait_ready(1)
    node.die()
    again = Node(deep, size=1)
    again.gateway.attach()
    assert len(again.pool.workers) == 1
    again.gateway.close(5)


def test_a_new_process_for_an_index_never_takes_the_rtp_ports_of_the_one_before(
        tmp_path: Path) -> None:
    """Far ends of a dead worker still send RTP (and DTMF) to its ports: its successor, in this
    daemon or the next one, uses the other half of the index's range."""
    def pool() -> WorkerPool:
        return WorkerPool(size=2, calls_per_worker=4, state_dir=tmp_path,
                          init_message=lambda i: ipc.Init(worker=i, rtp_port=30000 + 20 * i,
                                                          rtp_port_range=20))

    def ports(p: WorkerPool, index: int) -> tuple[int, int]:
        half = p._half(index)
        p._spawns[index] = p._spawns.get(index, 0) + 1  # what _spawn does
        init = p.init_for(index, half)
        assert init.rtp_port is not None and init.rtp_port_range is not None
        return init.rtp_port, init.rtp_port + init.rtp_port_range + 1

    first = pool()
    a = ports(first, 1)
    b = ports(first, 1)  # the worker died and was restarted
    later = pool()  # the daemon was killed with its workers, and started again
    c = ports(later, 1)
    assert a == (30020, 30029) and b == (30030, 30039) and c == (30030, 30039)
    for lo, hi in (a, b, c):
        assert lo >= 30020 and hi < 30040  # inside index 1's range
    assert first.init_for(1, 0).digest == first.init_for(1, 1).digest
