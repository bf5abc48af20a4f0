"""The worker processes as the pool sees them: started by the fork server, adopted, or spawned.

``ForkServer`` is the daemon's end of ``sip.forkserver``: one process that has imported the
worker and forks it on request, so that a worker costs a fork instead of an interpreter start
and 75 ms of imports. ``Forked`` is a process it forked (its exit status comes back over the
server's socket), ``Adopted`` one a previous daemon started (watched by pid), and a
``subprocess.Popen`` the fallback when there is no fork server (a test's stand-in worker, or a
server that would not start).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol

logger = logging.getLogger(__name__)

SPAWN_TIMEOUT = 10.0  # s for the fork server to answer a request


class Process(Protocol):
    """What the pool needs of a worker process: ``subprocess.Popen``, ``Forked`` or
    ``Adopted``."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a parent that does not reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Adopted:
    """A worker process a previous daemon started: not a child, so watched by pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def _code(self) -> int | None:
        """Its exit status, once known; -1 when it went to another parent."""
        return None if _alive(self.pid) else -1

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._code()
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.02)
        return code


class Forked(Adopted):
    """A worker the fork server forked: its exit status is the server's report."""

    def __init__(self, pid: int, server: ForkServer) -> None:
        super().__init__(pid)
        self.server = server

    def _code(self) -> int | None:
        code = self.server.exit_code(self.pid)
        if code is None and not _alive(self.pid) and not self.server.running():
            return -1  # the server is gone, and the status with it
        return code


class ForkServer:
    """The daemon's end of ``sip.forkserver`` (see there for the protocol)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = dict(os.environ if env is None else env)
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._exits: dict[int, int] = {}

    def running(self) -> bool:
        if self._sock is not None:
            self._collect(0.0)
        return self._sock is not None

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "sip.forkserver", "--control-fd", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=self._env,
                start_new_session=True)
        finally:
            theirs.close()
        self._sock = ours
        logger.info("fork server started (pid %d)", self._proc.pid)

    def spawn(self, argv: list[str], fd: int, *, session: bool) -> Forked:
        """Fork a worker with ``argv`` (``"{fd}"`` standing for ``fd``, which it receives);
        starts the server when it is not running. Raises OSError when it cannot."""
        if not self.running():
            self.start()
        assert self._sock is not None
        request = json.dumps({"argv": argv, "session": session}).encode()
        try:
            socket.send_fds(self._sock, [request], [fd])
        except OSError:
            self._lost()
            raise
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while time.monotonic() < deadline:
            for msg in self._collect(deadline - time.monotonic()):
                if "pid" in msg:
                    return Forked(int(msg["pid"]), self)
                raise OSError(f"the fork server refused: {msg.get('error')}")
            if self._sock is None:
                break
        self._lost()
        raise OSError("the fork server did not answer")

    def exit_code(self, pid: int) -> int | None:
        """``pid``'s exit status, once the server has reported it."""
        if pid not in self._exits and self._sock is not None:
            self._collect(0.0)
        return self._exits.get(pid)

    def _collect(self, timeout: float) -> list[dict[str, Any]]:
        """Read what the server sent within ``timeout``: exit reports are kept, the rest
        returned. At end-of-file the server is gone."""
        replies: list[dict[str, Any]] = []
        sock = self._sock
        while sock is not None:
            ready, _, _ = select.select([sock], [], [], max(0.0, timeout))
            if not ready:
                break
            timeout = 0.0
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                self._lost()
                break
            msg = json.loads(data)
            if "exited" in msg:
                self._exits[int(msg["exited"])] = int(msg["code"])
            else:
                replies.append(msg)
            if replies:
                break
        return replies

    def _lost(self) -> None:
        if self._sock is not None:
            logger.warning("the fork server exited")
        self.close()

    def close(self) -> None:
        """Let the server go (it exits; the workers it forked do not)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5.0)
            self._proc = None
