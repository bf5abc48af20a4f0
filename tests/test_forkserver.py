"""The fork server (sip.forkserver, dialer.procs): the pool's real workers are forked from one
process that has imported them, look in ``ps`` as they did, outlive the daemon when they
should, and report their true exit status."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dialer import ipc
from dialer.gateway import PoolGateway
from dialer.pool import WorkerPool
from dialer.procs import Forked, ForkServer, _alive
from testkit import until


def _init(i: int) -> ipc.Init:
    trunk = {"uri": "sip:127.0.0.1:9", "registrar": None, "username": "dialer",
             "password": "s3cret", "transport": "udp", "register": False}
    return ipc.Init(worker=i, bind="127.0.0.1", trunks={"internal": trunk},
                    allowed_sources=["127.0.0.1"], log_level=3, sip_port=0)


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[WorkerPool]:
    p = WorkerPool(size=2, calls_per_worker=4, init_message=_init, state_dir=tmp_path / "run")
    yield p
    p.shutdown(5.0)
    for w in p.all_workers():
        w.proc.kill()


def _ready(pool: WorkerPool, n: int) -> None:
    gateway = PoolGateway(pool)
    until(lambda: (gateway.poll(0.05), pool.ready_count() >= n)[1], 20, f"{n} ready")


def test_the_pool_forks_its_workers_from_one_server(pool: WorkerPool, tmp_path: Path) -> None:
    pool.start(2)
    _ready(pool, 2)
    server = pool._forkserver
    assert server is not None and server._proc is not None
    for w in pool.workers.values():
        assert isinstance(w.proc, Forked)
        state = _stat(w.pid)
        assert int(state[1]) == server._proc.pid  # forked by the server, not started anew
        assert int(state[3]) == w.pid  # its own session: it outlives the daemon
        cmdline = Path(f"/proc/{w.pid}/cmdline").read_bytes()
        assert b"-m sip.worker --listen-fd " in cmdline
        assert str(tmp_path / "run").encode() in cmdline  # what the harness looks for


def test_a_forked_worker_reports_its_true_exit_status(pool: WorkerPool) -> None:
    pool.start(2)
    _ready(pool, 2)
    killed, other = list(pool.workers.values())
    os.kill(killed.pid, signal.SIGKILL)
    until(lambda: killed.proc.poll() is not None, 10, "the kill reported")
    assert killed.proc.poll() == -signal.SIGKILL
    pool.stop_restarts()
    other.channel.send_msg(ipc.Shutdown())
    assert other.proc.wait(10) == 0  # a clean stop is 0, not -9 or -1


def test_workers_outlive_the_server_and_are_then_watched_by_pid(pool: WorkerPool) -> None:
    pool.start(1)
    _ready(pool, 1)
    (w,) = pool.workers.values()
    assert pool._forkserver is not None
    pool._forkserver.close()  # the daemon went: the server exits, its workers carry on
    assert _alive(w.pid) and w.proc.poll() is None
    os.kill(w.pid, signal.SIGKILL)
    until(lambda: w.proc.poll() is not None, 10, "the death seen")
    assert w.proc.poll() == -1  # its status went to init with the server gone


def test_the_server_refuses_a_request_without_a_descriptor_and_goes_on() -> None:
    server = ForkServer()
    server.start()
    try:
        assert server._sock is not None
        server._sock.send(b'{"argv": []}')
        assert server._collect(10.0) == [{"error": "a request is an object with one descriptor"}]
        a, b = socket.socketpair()
        try:
            child = server.spawn(["--ipc-fd", "{fd}"], b.fileno(), session=False)
        finally:
            b.close()
        a.close()  # the worker reads end-of-file before init and exits 0
        assert child.wait(10) == 0
    finally:
        server.close()
