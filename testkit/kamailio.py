"""Kamailio as the PBX: ``tests/kamailio/kamailio.cfg`` with an in-memory registrar, a
record-routing proxy, digest authentication, numbers routed to SIPp addresses."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from testkit.net import KAMAILIO_CFG, LOCALHOST, PeerError, _udp_port_bound, free_port
from testkit.sipp import Sipp
from testkit.wait import until as wait_until


@dataclasses.dataclass(frozen=True)
class Registration:
    """One contact bound in Kamailio's in-memory location table."""

    aor: str
    contact: str
    expires: int


class Kamailio:
    """Kamailio in the foreground with ``tests/kamailio/kamailio.cfg`` on 127.0.0.1:port.

    Digest credentials (``user``/``password``/``realm``) are passed as ``-A`` defines. Numbers
    are routed through an ``htable`` set over the control socket (``route()``), so routes survive
    ``restart()`` (re-applied) while registrations, which live in memory, do not.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        user: str = "dialer",
        password: str = "s3cret",
        realm: str = "dialer.test",
        routes: Mapping[str, str] | None = None,
        config: Path = KAMAILIO_CFG,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.user = user
        self.password = password
        self.realm = realm
        self.config = config
        self.routes: dict[str, str] = dict(routes or {})
        self.run_dir = workdir / f"kamailio-{self.port}"
        self.ctl_socket = self.run_dir / "ctl.sock"
        self.pid_file = self.run_dir / "kamailio.pid"
        self.log_file = self.run_dir / "kamailio.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def uri(self) -> str:
        """``sip:127.0.0.1:port`` (registrar and outbound proxy)."""
        return f"sip:{self.address}"

    def aor(self, user: str | None = None) -> str:
        return f"{user or self.user}@{LOCALHOST}"

    def command(self) -> list[str]:
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        if not Path(binary).exists():
            raise PeerError("kamailio is not installed (Debian package kamailio)")

        def define(name: str, value: str) -> list[str]:
            if '"' in value or "\\" in value:
                raise PeerError(f"{name} may not contain quotes or backslashes")
            return ["-A", f'{name}="{value}"']

        return [
            binary,
            "-f", str(self.config),
            "-DD", "-E",
            "-l", f"udp:{LOCALHOST}:{self.port}",
            "-l", f"tcp:{LOCALHOST}:{self.port}",
            "-Y", str(self.run_dir),
            "-P", str(self.pid_file),
            "-w", str(self.run_dir),
            "-m", "32", "-M", "4",
            *define("AUTH_USER", self.user),
            *define("AUTH_PASSWORD", self.password),
            *define("AUTH_REALM", self.realm),
            *define("CTL_SOCKET", f"unix:{self.ctl_socket}"),
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> Kamailio:
        """Start Kamailio, wait until it answers on its control socket, apply the routes."""
        if self.running():
            raise PeerError("Kamailio already running")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ctl_socket.unlink(missing_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._ready, timeout, f"Kamailio on {self.address}")
        for number, target in self.routes.items():
            self._set_route(number, target)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise PeerError(
                f"Kamailio exited with {self.process.returncode}: {self.log_tail()}"
            )
        if not (self.ctl_socket.exists() and _udp_port_bound(self.port)):
            return False
        return self.rpc("core.psx", check=False).returncode == 0

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM Kamailio (its main process ends its children), SIGKILL its process group
        after ``timeout``; wait until the port is free again. Idempotent."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        # Children exit right after the main process; wait until none holds the port.
        wait_until(
            lambda: not _udp_port_bound(self.port), timeout, f"port {self.port} released"
        )
        return proc.returncode

    def restart(self, timeout: float = 10.0) -> Kamailio:
        """Stop and start on the same port (registrations are lost, routes re-applied)."""
        self.stop(timeout)
        self.process = None
        return self.start(timeout)

    def __enter__(self) -> Kamailio:
        return self if self.running() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control ----------------------------------------------------------------------------

    def rpc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``kamcmd`` against this instance's control socket.

        kamcmd turns digit-only arguments into integers: prefix ``s:`` to pass a string.
        It exits 0 even when the RPC fails, printing ``error: ...``; ``check`` catches that.
        """
        kamcmd = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
        result = subprocess.run(
            [kamcmd, "-s", f"unix:{self.ctl_socket}", *args],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if check and (result.returncode != 0 or result.stdout.startswith("error:")):
            raise PeerError(f"kamcmd {' '.join(args)} failed: {result.stderr or result.stdout}")
        return result

    def route(self, number: str, target: str) -> None:
        """Send INVITEs for ``sip:<number>@kamailio`` to ``target`` (``host:port``).

        ``number`` ``"*"`` is the default for numbers without a route of their own.
        """
        self.routes[number] = target
        if self.running():
            self._set_route(number, target)

    def _set_route(self, number: str, target: str) -> None:
        uri = target if target.startswith("sip:") else f"sip:{target}"
        self.rpc("htable.sets", "routes", f"s:{number}", f"s:{uri}")

    def registrations(self) -> list[Registration]:
        """Contacts currently in the location table (``ul.dump``)."""
        return parse_ul_dump(self.rpc("ul.dump").stdout)

    def registered(self, user: str | None = None) -> list[Registration]:
        wanted = user or self.user
        return [r for r in self.registrations() if r.aor.split("@")[0] == wanted]

    def wait_registered(self, user: str | None = None, timeout: float = 5.0) -> list[Registration]:
        return wait_until(
            lambda: self.registered(user), timeout, f"registration of {user or self.user}"
        )

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]


def parse_ul_dump(text: str) -> list[Registration]:
    """Parse ``kamcmd ul.dump`` (binrpc's indented ``name: value`` output)."""
    registrations = []
    aor = ""
    contact: str | None = None
    expires = 0
    for raw in text.splitlines():
        line = raw.strip()
        name, _, value = line.partition(":")
        value = value.strip()
        if name == "AoR":
            aor = value
        elif name == "Address":
            if contact is not None:
                registrations.append(Registration(aor, contact, expires))
            contact, expires = value, 0
        elif name == "Expires" and contact is not None:
            with contextlib.suppress(ValueError):
                expires = int(value)
    if contact is not None:
        registrations.append(Registration(aor, contact, expires))
    return registrations


@contextlib.contextmanager
def running(*peers: Sipp | Kamailio) -> Iterator[None]:
    """Start peers in order and stop them all (in reverse) however the block ends."""
    started: list[Sipp | Kamailio] = []
    try:
        for peer in peers:
            peer.start()
            started.append(peer)
        yield
    finally:
        for peer in reversed(started):
            peer.stop()


# --------------------------------------------------------------------------------------------
