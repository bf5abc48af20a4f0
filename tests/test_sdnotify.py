"""systemd's notify protocol (dialer.sdnotify; the unit is Type=notify with WatchdogSec): the
real ``dialer serve`` says READY=1 once it serves, pings the watchdog from its loop, and says
STOPPING=1 on SIGTERM; outside systemd nothing is sent."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dialer.sdnotify import Notifier
from testkit import until
from testkit.harness import Dialer


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_outside_systemd_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled and not n.send("READY=1")
    n.ready("x")
    n.alive()
    n.stopping()


def test_the_watchdog_is_pinged_every_half_interval(notify_socket: tuple[socket.socket, str]
                                                    ) -> None:
    sock, path = notify_socket
    now = [100.0]
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, clock=lambda: now[0])
    n.ready("serving")
    assert received(sock) == [f"READY=1\nSTATUS=serving\nMAINPID={__import__('os').getpid()}"]
    for t in (100.4, 100.9, 101.0, 101.5, 102.1, 102.2):
        now[0] = t
        n.alive()
    assert received(sock) == ["WATCHDOG=1", "WATCHDOG=1"]  # at 101.0 and 102.1
    other = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    other.alive()  # the watchdog is another process's
    assert received(sock) == []


def test_an_abstract_socket_name(tmp_path: Path) -> None:
    name = f"dialer-test-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).send("READY=1")
        assert received(sock) == ["READY=1"]
    finally:
        sock.close()


@pytest.mark.sip
def test_serve_is_ready_pings_its_watchdog_and_says_it_stops(
        dialer: Callable[..., Dialer], notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    d = dialer(internal={"uri": "sip:127.0.0.1:5999"}, external={"uri": "sip:127.0.0.1:5998"},
               workers=1, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    d.serve()
    got: list[str] = []

    def seen(what: Callable[[list[str]], bool]) -> bool:
        got.extend(received(sock))
        return what(got)

    until(lambda: seen(lambda g: any("READY=1" in m for m in g)), 30, "READY=1")
    assert any(m.startswith("READY=1\nSTATUS=serving") for m in got)
    until(lambda: seen(lambda g: g.count("WATCHDOG=1") >= 3), 10, "three watchdog pings")
    assert d.daemon is not None
    d.daemon.send_signal(signal.SIGTERM)
    d.daemon.wait(30)
    got.extend(received(sock))
    assert any(m.startswith("STOPPING=1") for m in got), got


@pytest.mark.sip
def test_json_logs_are_one_format_for_the_daemon_its_workers_and_pjsip(
        dialer: Callable[..., Dialer]) -> None:
    """Issue 14: with --log-format json every line of the service is a JSON object, the
    workers' and PJSIP's too (they said their own text before), and a clean stop reports the
    workers' true exit status (0), not -9."""
    import json

    d = dialer(internal={"uri": "sip:127.0.0.1:5999"}, external={"uri": "sip:127.0.0.1:5998"},
               workers=1, sip={"log_level": 4})
    d.serve("--log-format", "json")
    assert d.daemon is not None
    d.daemon.send_signal(signal.SIGTERM)
    d.daemon.wait(30)
    lines = [json.loads(line) for line in d.log_text().splitlines()]  # each one parses
    assert all({"at", "level", "logger", "message"} <= set(r) for r in lines)
    loggers = {r["logger"] for r in lines}
    assert {"dialer.daemon", "dialer.pool", "sip.worker", "pjsua"} <= loggers, loggers
    worker_lines = [r for r in lines if r["logger"] in ("sip.worker", "pjsua")]
    assert all(r["worker"] == 0 and isinstance(r["pid"], int) for r in worker_lines)
    exits = [r["message"] for r in lines if "exited with" in r["message"]]
    assert exits and all("exited with 0 " in m for m in exits), exits
