"""SIPp as the far end: runs one scenario of ``tests/sipp/`` as a UAS (or a UAC with
``remote=``), records every received INVITE's Call-ID and the end of every call in its log, and
computes the peak number of simultaneous calls from that log."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from testkit.net import LOCALHOST, SIPP_DIR, PeerError, _udp_port_bound, free_port
from testkit.wait import until as wait_until

#: Defaults for the ``-key`` values the scenarios use (milliseconds). Tests shorten or lengthen
#: them to fit their prompts and message; unknown keys are harmless to SIPp, so every scenario
#: gets all of them.
SIPP_TIMING_DEFAULTS: dict[str, int] = {
    "answer_ms": 0,  # 180 -> 200 OK
    "key1_ms": 1000,  # ACK -> key 1 ("press 1" prompt)
    "key9_ms": 2000,  # key 1 -> key 9 (message + "press 9" prompt)
    "wrong_ms": 2000,  # wrong_key.xml: key 1 -> key 5 (message + "press 9" prompt)
    "hangup_ms": 1000,  # hangup_mid_message.xml: key 1 -> our BYE
    "keyc_ms": 1000,  # transfer*.xml: the key before -> the connect key
}

#: Other ``-key`` values every scenario gets (tests override them).
SIPP_VALUE_DEFAULTS: dict[str, str] = {
    "connect_key": "0",  # transfer*.xml: the digit of the [dtmfc] capture, as logged
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
        detail = rest[0] if kind in ("KEY", "END", "TOLD", "NOKEY", "REFER", "NOTIFIED",
                                                 "REFERRED") \
            and len(rest) > 1 else ""
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
        self.keys.update(SIPP_VALUE_DEFAULTS)
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

    def tell(self, call_id: str, headers: Mapping[str, str]) -> None:
        """Send the call ``call_id`` of the running scenario a NOTIFY carrying ``headers``: how
        a test hands a scenario a value it learns during the call (``random_key.xml`` reads the
        digits to press from ``X-Answer``/``X-Listen``). SIPp matches it to the call by Call-ID;
        the scenarios answer nothing, so it goes once, over UDP on loopback, from a port of the
        system's choosing."""
        if not self.transport.startswith("u"):
            raise PeerError("Sipp.tell speaks UDP only")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOCALHOST, 0))
            port = sock.getsockname()[1]
            lines = [f"NOTIFY sip:sipp@{self.address} SIP/2.0",
                     f"Via: SIP/2.0/UDP {LOCALHOST}:{port};branch=z9hG4bK-tell-{port}",
                     "Max-Forwards: 70", f"From: <sip:test@{LOCALHOST}>;tag=tell{port}",
                     f"To: <sip:sipp@{self.address}>", f"Call-ID: {call_id}",
                     "CSeq: 1 NOTIFY", "Event: test",
                     *(f"{k}: {v}" for k, v in headers.items()), "Content-Length: 0"]
            sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), (LOCALHOST, self.port))

    def told(self) -> list[tuple[str, str]]:
        """(Call-ID, what it was told) of each NOTIFY a scenario logged as ``PEER TOLD``."""
        return [(e.call_id, e.detail) for e in self.events() if e.kind == "TOLD"]

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

    def refers(self) -> list[tuple[str, str]]:
        """(Call-ID, Refer-To header value) of each REFER a scenario logged, in order."""
        return [(e.call_id, e.detail) for e in self.events() if e.kind == "REFER"]

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


