"""SIP test peers on loopback: SIPp as the far end, Kamailio as the PBX.

Everything here waits with deadlines (``wait_until``), never with bare sleeps, and every
process is started in the foreground by the test and ended by ``stop()``.

* ``make_dtmf_captures(dir)`` writes RFC 2833 captures with payload type 120 (the type the
  dialer's PJSUA2 offers; pjsua drops telephone events on any other type).
* ``Sipp`` runs one scenario of ``tests/sipp/`` as a UAS (or a UAC with ``remote=``), records
  every received INVITE's Call-ID and the end of every call in its log, and computes the peak
  number of simultaneous calls from that log.
* ``Kamailio`` runs ``tests/kamailio/kamailio.cfg``: in-memory registrar, record-routing proxy,
  digest authentication of REGISTER and INVITE against one user/password, numbers routed to
  SIPp addresses (``route(number, "127.0.0.1:port")``), registrations visible via ``kamcmd``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

TESTS_DIR = Path(__file__).resolve().parent
SIPP_DIR = TESTS_DIR / "sipp"
KAMAILIO_CFG = TESTS_DIR / "kamailio" / "kamailio.cfg"
SHIPPED_DTMF = Path("/usr/share/sip-tester")
LOCALHOST = "127.0.0.1"

#: Payload type the dialer offers for telephone-event/8000 (PCMU/PCMA only enabled).
DTMF_PAYLOAD_TYPE = 120
DTMF_KEYS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")

T = TypeVar("T")


class PeerError(RuntimeError):
    """A test peer failed to start, died, or did not reach the awaited state in time."""


def wait_until(
    probe: Callable[[], T | None | bool],
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> T:
    """Poll ``probe`` until it returns something truthy or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise PeerError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


_rng = random.Random(os.getpid() ^ int(time.time() * 1000))


def free_port(count: int = 1) -> int:
    """A port free on 127.0.0.1 for both UDP and TCP, with ``count - 1`` free ports after it.

    ``count`` > 1 is for SIPp's media port, which also binds port + 2.

    Ports come from 10000-19999, below the kernel's ephemeral range (where the dialer's workers
    and every client socket get theirs) and below the RTP ranges the tests give the dialer
    (20000 and up): between this check and the peer's bind, nobody else takes the port.
    """
    for _ in range(500):
        base = _rng.randrange(10000, 20000 - count)
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise PeerError("no free port found on 127.0.0.1")


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((LOCALHOST, port))
            except OSError:
                return False
    return True


def _udp_port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return True
    return False


# --------------------------------------------------------------------------------------------
# DTMF captures


def make_dtmf_captures(
    directory: Path,
    keys: Sequence[str] = DTMF_KEYS,
    payload_type: int = DTMF_PAYLOAD_TYPE,
) -> dict[str, Path]:
    """Copy the shipped ``dtmf_2833_<key>.pcap`` captures with their RTP payload type rewritten.

    The sip-tester captures carry telephone events on payload type 101; pjsua accepts them only
    on the type of its own offer. Returns ``{key: path}``; the files are named
    ``dtmf_<pt>_<key>.pcap``. Lengths are unchanged (SIPp takes the packet length from the UDP
    header); SIPp recomputes the UDP checksum on replay, dpkt recomputes it here too.
    """
    import dpkt  # test-only dependency

    directory.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    for key in keys:
        source = SHIPPED_DTMF / f"dtmf_2833_{key}.pcap"
        target = directory / f"dtmf_{payload_type}_{key}.pcap"
        with source.open("rb") as src_file, target.open("wb") as dst_file:
            reader = dpkt.pcap.Reader(src_file)
            writer = dpkt.pcap.Writer(dst_file, snaplen=65535, linktype=reader.datalink())
            for stamp, frame in reader:
                eth = dpkt.ethernet.Ethernet(frame)
                ip = eth.data
                udp = ip.data
                rtp = bytearray(udp.data)
                if len(rtp) < 16 or rtp[0] >> 6 != 2:
                    raise PeerError(f"{source}: not an RTP packet")
                rtp[1] = (rtp[1] & 0x80) | payload_type  # keep the marker bit
                udp.data = bytes(rtp)
                udp.sum = 0  # dpkt recomputes both checksums when packing
                ip.sum = 0
                writer.writepkt(bytes(eth), ts=stamp)
        made[key] = target
    return made


def read_rtp_payload_types(capture: Path) -> list[int]:
    """Payload types of the RTP packets in a capture (for checking generated captures)."""
    import dpkt

    types = []
    with capture.open("rb") as handle:
        for _, frame in dpkt.pcap.Reader(handle):
            udp = dpkt.ethernet.Ethernet(frame).data.data
            types.append(udp.data[1] & 0x7F)
    return types


# --------------------------------------------------------------------------------------------
# SIPp


#: Defaults for the ``-key`` values the scenarios use (milliseconds). Tests shorten or lengthen
#: them to fit their prompts and message; unknown keys are harmless to SIPp, so every scenario
#: gets all of them.
SIPP_TIMING_DEFAULTS: dict[str, int] = {
    "answer_ms": 0,  # 180 -> 200 OK
    "key1_ms": 1000,  # ACK -> key 1 ("press 1" prompt)
    "key9_ms": 2000,  # key 1 -> key 9 (message + "press 9" prompt)
    "wrong_ms": 2000,  # wrong_key.xml: key 1 -> key 5 (message + "press 9" prompt)
    "hangup_ms": 1000,  # hangup_mid_message.xml: key 1 -> our BYE
}


@dataclasses.dataclass(frozen=True)
class SippEvent:
    """One line the scenarios log: INVITE received, key sent, or call ended."""

    kind: str  # "INVITE", "KEY", "END"
    call_id: str
    detail: str  # key digit for KEY, how the call ended for END, "" for INVITE
    clock_ms: int  # SIPp's clock_tick, ms since it started


def parse_sipp_log(text: str) -> list[SippEvent]:
    """Parse the ``PEER ...`` lines of a SIPp ``-log_file`` in file (= time) order."""
    events = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[0] != "PEER":
            continue
        kind, call_id, rest = parts[1], parts[2], parts[3:]
        detail = rest[0] if kind in ("KEY", "END") and len(rest) > 1 else ""
        clock = int(rest[-1]) if rest and rest[-1].isdigit() else -1
        events.append(SippEvent(kind, call_id, detail, clock))
    return events


def peak_concurrency(events: Sequence[SippEvent]) -> int:
    """Peak number of calls between their INVITE and their end (BYE/CANCEL/final answer).

    SIPp is single-threaded and flushes each log line, so the file order is the event order;
    a call that never logged its end counts as open to the end.
    """
    open_calls: set[str] = set()
    peak = 0
    for event in events:
        if event.kind == "INVITE":
            open_calls.add(event.call_id)
            peak = max(peak, len(open_calls))
        elif event.kind == "END":
            open_calls.discard(event.call_id)
    return peak


class Sipp:
    """One SIPp process running a scenario of ``tests/sipp``, in the foreground.

    As a UAS (default) it listens on ``127.0.0.1:port`` for calls. With ``remote`` it is a UAC
    calling that address (``calls`` calls, ``limit`` at a time, ``rate`` new calls a second).
    ``keys`` override ``SIPP_TIMING_DEFAULTS`` and add ``-key`` values (e.g. capture paths).
    Files (log, errors, messages, screen) live in ``workdir``.
    """

    def __init__(
        self,
        scenario: str | Path,
        workdir: Path,
        *,
        keys: Mapping[str, str | int] | None = None,
        dtmf: Mapping[str, Path] | None = None,
        port: int | None = None,
        remote: str | None = None,
        service: str | None = None,
        calls: int | None = None,
        limit: int | None = None,
        rate: float | None = None,
        transport: str = "u1",
        extra_args: Sequence[str] = (),
        trace_msg: bool = True,
    ) -> None:
        path = Path(scenario)
        if not path.suffix:
            path = path.with_suffix(".xml")
        if not path.is_absolute() and not path.exists():
            path = SIPP_DIR / path
        if not path.exists():
            raise PeerError(f"no SIPp scenario {path}")
        self.scenario = path
        self.name = path.stem
        self.workdir = workdir
        self.port = port or free_port()
        self.media_port = free_port(3)
        self.remote = remote
        self.keys: dict[str, str] = {k: str(v) for k, v in SIPP_TIMING_DEFAULTS.items()}
        for key, capture in (dtmf or {}).items():
            self.keys[f"dtmf{key}"] = str(capture)
        self.keys.update({k: str(v) for k, v in (keys or {}).items()})
        self.service = service
        self.calls = calls
        self.limit = limit
        self.rate = rate
        self.transport = transport
        self.extra_args = list(extra_args)
        self.trace_msg = trace_msg
        self.log_file = workdir / f"{self.name}-{self.port}.log"
        self.error_file = workdir / f"{self.name}-{self.port}-errors.log"
        self.message_file = workdir / f"{self.name}-{self.port}-messages.log"
        self.screen_file = workdir / f"{self.name}-{self.port}-screen.log"
        self.stderr_file = workdir / f"{self.name}-{self.port}-stderr.log"
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``127.0.0.1:port`` where this SIPp listens (what Kamailio routes to)."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def uri(self) -> str:
        return f"sip:{self.address}"

    def command(self) -> list[str]:
        sipp = shutil.which("sipp")
        if sipp is None:
            raise PeerError("sipp is not installed (Debian package sip-tester)")
        cmd = [
            sipp,
            "-sf", str(self.scenario),
            "-i", LOCALHOST,
            "-p", str(self.port),
            "-mi", LOCALHOST,
            "-mp", str(self.media_port),
            "-t", self.transport,
            "-nostdin",
            "-trace_err", "-error_file", str(self.error_file),
            "-trace_logs", "-log_file", str(self.log_file),
            "-trace_screen", "-screen_file", str(self.screen_file),
        ]  # fmt: skip
        if self.trace_msg:
            cmd += ["-trace_msg", "-message_file", str(self.message_file)]
        for key, value in self.keys.items():
            cmd += ["-key", key, value]
        if self.service:
            cmd += ["-s", self.service]
        if self.calls is not None:
            cmd += ["-m", str(self.calls)]
        if self.limit is not None:
            cmd += ["-l", str(self.limit)]
        if self.rate is not None:
            cmd += ["-r", str(self.rate)]
        cmd += self.extra_args
        if self.remote:
            cmd.append(self.remote)
        return cmd

    def start(self, timeout: float = 5.0) -> Sipp:
        """Start SIPp and, for a UAS, wait until its SIP port is bound."""
        if self.process is not None:
            raise PeerError(f"SIPp {self.name} already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in (self.log_file, self.error_file, self.message_file, self.screen_file):
            stale.unlink(missing_ok=True)
        with self.stderr_file.open("wb") as err:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        if self.remote is None:
            wait_until(self._listening, timeout, f"SIPp {self.name} on UDP {self.port}")
        return self

    def _listening(self) -> bool:
        self._check_alive()
        return _udp_port_bound(self.port)

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise PeerError(
                f"SIPp {self.name} exited with {self.process.returncode}: {self.diagnostics()}"
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for SIPp to exit by itself (a UAC after ``calls`` calls); its exit code.

        SIPp exits 0 when every call succeeded, 1 when at least one failed.
        """
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"SIPp {self.name} still running after {timeout} s") from exc

    def stop(self, timeout: float = 5.0) -> int | None:
        """End SIPp (SIGTERM, then SIGKILL after ``timeout``); its exit code. Idempotent."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def __enter__(self) -> Sipp:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what it saw -----------------------------------------------------------------------

    def events(self) -> list[SippEvent]:
        try:
            return parse_sipp_log(self.log_file.read_text(errors="replace"))
        except FileNotFoundError:
            return []

    def received_call_ids(self) -> list[str]:
        """Call-IDs of the INVITEs this scenario received, in arrival order (with repeats
        if a Call-ID was reused)."""
        return [e.call_id for e in self.events() if e.kind == "INVITE"]

    def ended_call_ids(self) -> dict[str, str]:
        """Call-ID -> how the call ended (``bye-received``, ``bye-sent``, ``cancelled``,
        ``rejected-486`` ...), for calls whose end the scenario logged."""
        return {e.call_id: e.detail for e in self.events() if e.kind == "END"}

    def keys_sent(self) -> list[tuple[str, str]]:
        """(Call-ID, digit) of each DTMF capture played, in order."""
        return [(e.call_id, e.detail) for e in self.events() if e.kind == "KEY"]

    def peak_calls(self) -> int:
        """Peak number of simultaneous calls (INVITE received .. call ended)."""
        return peak_concurrency(self.events())

    def wait_for_invites(self, count: int, timeout: float) -> list[str]:
        """Wait until at least ``count`` INVITEs were received; their Call-IDs."""

        def probe() -> list[str] | None:
            ids = self.received_call_ids()
            if len(ids) >= count:
                return ids
            self._check_alive()
            return None

        return wait_until(probe, timeout, f"{count} INVITE(s) at SIPp {self.name}")

    def wait_for_ended(self, count: int, timeout: float) -> dict[str, str]:
        """Wait until at least ``count`` calls logged their end; Call-ID -> how."""

        def probe() -> dict[str, str] | None:
            ended = self.ended_call_ids()
            if len(ended) >= count:
                return ended
            if not self.running():
                raise PeerError(f"SIPp {self.name} exited: {self.diagnostics()}")
            return None

        return wait_until(probe, timeout, f"{count} ended call(s) at SIPp {self.name}")

    def errors(self) -> str:
        """Content of the ``-trace_err`` file (unexpected messages, aborted calls...)."""
        try:
            return self.error_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self) -> str:
        parts = []
        for path in (self.stderr_file, self.error_file):
            with contextlib.suppress(FileNotFoundError):
                text = path.read_text(errors="replace").strip()
                if text:
                    parts.append(f"{path.name}: {text[-2000:]}")
        return "\n".join(parts) or "(no output)"


# --------------------------------------------------------------------------------------------
# Kamailio


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
# PJSUA2 probe (a caller/registrant for checking the peers, not the dialer)


@dataclasses.dataclass
class ProbeCall:
    """What a ``PjProbe`` call saw: states, final status, DTMF digits."""

    uri: str
    call_id: str = ""
    states: list[str] = dataclasses.field(default_factory=list)
    status: int = 0
    reason: str = ""
    digits: list[str] = dataclasses.field(default_factory=list)
    confirmed: bool = False
    disconnected: bool = False


@dataclasses.dataclass
class ProbeAccount:
    """Registration results a ``PjProbe`` account saw (``codes`` in arrival order)."""

    uri: str
    index: int = -1  # position in the probe's account list
    codes: list[int] = dataclasses.field(default_factory=list)
    expiration: int = 0


class PjProbe:
    """A PJSUA2 user agent on 127.0.0.1 driven from the calling thread.

    PJSUA2 allows one endpoint per process and at most 4 calls, so tests share one probe
    (session fixture) and ``close()`` it once. Only PCMU and PCMA are enabled, so the offer
    carries telephone-event on payload type 120, exactly like the dialer's.
    """

    def __init__(self, port: int | None = None) -> None:
        import pjsua2 as pj

        self._pj = pj
        self.port = port or free_port()
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.logConfig.level = 1
        cfg.logConfig.consoleLevel = 1
        self.ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.port = self.port
        tcfg.boundAddress = LOCALHOST
        tcfg.publicAddress = LOCALHOST
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()
        for codec in self.ep.codecEnum2():
            keep = codec.codecId.startswith(("PCMU/8000", "PCMA/8000"))
            self.ep.codecSetPriority(codec.codecId, 200 if keep else 0)
        self._accounts: list[object | None] = []
        self._calls: list[object] = []
        self.local = self.account()  # direct calls, no registration

    def account(
        self,
        user: str = "probe",
        *,
        registrar: str | None = None,
        password: str | None = None,
        realm: str = "*",
    ) -> ProbeAccount:
        """Create an account; with ``registrar`` it registers there (and uses it as proxy)."""
        pj = self._pj
        host = registrar.removeprefix("sip:") if registrar else LOCALHOST
        record = ProbeAccount(uri=f"sip:{user}@{host.split(':')[0]}")
        acfg = pj.AccountConfig()
        acfg.idUri = record.uri
        # Keep media on loopback like the signalling (the host address works for SIPp too).
        acfg.mediaConfig.transportConfig.boundAddress = LOCALHOST
        acfg.mediaConfig.transportConfig.publicAddress = LOCALHOST
        acfg.mediaConfig.transportConfig.port = free_port(2)  # not pjsua's shared default 4000
        if registrar:
            acfg.regConfig.registrarUri = registrar
            acfg.regConfig.timeoutSec = 60
            acfg.regConfig.retryIntervalSec = 0  # report a failure once, do not retry
            acfg.sipConfig.proxies.append(f"{registrar};lr")
        if password is not None:
            acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", realm, user, 0, password))

        class _Account(pj.Account):  # type: ignore[misc, name-defined]
            def onRegState(self, prm: object) -> None:
                record.codes.append(int(prm.code))  # type: ignore[attr-defined]
                record.expiration = int(prm.expiration)  # type: ignore[attr-defined]

        acc = _Account()
        acc.create(acfg)
        record.index = len(self._accounts)
        self._accounts.append(acc)
        return record

    def drop(self, account: ProbeAccount) -> None:
        """Delete an account (unregisters it): a process may hold only 8, the 9th aborts."""
        acc = self._accounts[account.index]
        if acc is not None:
            acc.shutdown()  # type: ignore[attr-defined]
            self._accounts[account.index] = None

    def call(self, uri: str, account: ProbeAccount | None = None, call_id: str = "") -> ProbeCall:
        """Start a call; watch it through the returned ``ProbeCall`` while polling."""
        pj = self._pj
        record = ProbeCall(uri=uri)
        calls = self._calls

        class _Call(pj.Call):  # type: ignore[misc, name-defined]
            def onCallState(self, prm: object) -> None:
                info = self.getInfo()
                record.call_id = info.callIdString
                record.states.append(info.stateText)
                record.status = int(info.lastStatusCode)
                record.reason = info.lastReason
                if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
                    record.confirmed = True
                if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                    record.disconnected = True
                    # Drop the Call promptly: a late free can hang up a newer call in its slot.
                    with contextlib.suppress(ValueError):
                        calls.remove(self)

            def onDtmfDigit(self, prm: object) -> None:
                record.digits.append(str(prm.digit))  # type: ignore[attr-defined]

        acc = self._accounts[(account or self.local).index]
        if acc is None:
            raise PeerError("account was dropped")
        call = _Call(acc)
        prm = pj.CallOpParam(True)
        if call_id:
            prm.opt.customCallId = call_id
        calls.append(call)
        call.makeCall(uri, prm)
        return record

    def hangup_all(self) -> None:
        self.ep.hangupAllCalls()

    def poll(self, seconds: float) -> None:
        """Handle SIP and media events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.ep.libHandleEvents(20)

    def wait(self, probe: Callable[[], T | None | bool], timeout: float, what: str) -> T:
        """Handle events until ``probe()`` is truthy (deadline ``timeout`` seconds)."""

        def step() -> T | None | bool:
            self.ep.libHandleEvents(20)
            return probe()

        return wait_until(step, timeout, what, interval=0)

    def close(self) -> None:
        import gc

        with contextlib.suppress(Exception):
            self.ep.hangupAllCalls()
        self.poll(0.3)
        self._calls.clear()
        for acc in self._accounts:
            if acc is not None:
                with contextlib.suppress(Exception):
                    acc.shutdown()  # type: ignore[attr-defined]
        self._accounts.clear()
        self.local = None  # type: ignore[assignment]
        gc.collect()
        self.ep.libDestroy()
