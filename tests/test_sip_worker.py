"""The real SIP worker over its IPC socket against the real phone simulator on loopback."""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
import uuid
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dialer.ipc import Raw, inheritable_pair
from sip.endpoint import q850_cause
from testkit import wait_until

ROOT = Path(__file__).resolve().parents[1]

# Prompt lengths (s) and the dialogue settings built on them; the phones' key delays below are
# counted from the answer and land inside the right windows:
#   answer prompt 0.5 + key wait 1.5 -> "1" at 0.5 -> message 0.5..1.5 -> listen window 1.5..3.5
#   -> "9" at 2.2 -> goodbye 0.3 -> hang up at ~2.5 s.
# wrong_key: "5" at 2.0 replays the message (2.0..3.0), the listen window reopens at 3.0,
# "9" at 3.6.
LENGTHS = {"answer_prompt": 0.5, "message": 1.0, "listen_prompt": 0.5, "goodbye": 0.3}
DIALOGUE = {"answer_confirm": True, "listen_confirm": True, "answer_key": "1",
            "listen_key": "9", "max_repeats": 2, "key_timeout": 1.5,
            "message_seconds": LENGTHS["message"],
            "answer_prompt_seconds": LENGTHS["answer_prompt"],
            "listen_prompt_seconds": LENGTHS["listen_prompt"],
            "goodbye_seconds": LENGTHS["goodbye"]}
SCRIPT = {
    "default": {"behaviour": "confirm", "ring": 0.1, "answer_key_delay": 0.5,
                "listen_key_delay": 2.2, "wrong_key_delay": 2.0, "wrong_key": "5"},
    "numbers": {
        "101": {"behaviour": "busy", "q850": 17},
        "102": {"behaviour": "no_answer"},
        "103": {"behaviour": "hangup_early", "hangup_after": 1.0},
        "104": {"behaviour": "wrong_key", "listen_key_delay": 3.6},
        "105": {"behaviour": ["busy", "confirm"]},
        "106": {"behaviour": "silent", "hangup_after": 20},
    },
}


def write_tone(path: Path, seconds: float, freq: float) -> None:
    """A 16-bit mono 8 kHz tone, what the media importer hands the worker."""
    t = np.arange(int(8000 * seconds)) / 8000
    samples = (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.tobytes())


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("media")
    paths = {}
    for i, (name, seconds) in enumerate(LENGTHS.items()):
        write_tone(d / f"{name}.wav", seconds, 400 + 100 * i)
        paths[name] = str(d / f"{name}.wav")
    return paths


class PhoneSim:
    """The phone simulator process and its call log."""

    def __init__(self, tmp: Path) -> None:
        script, self.log, ready = tmp / "script.json", tmp / "calls.jsonl", tmp / "ready"
        script.write_text(json.dumps(SCRIPT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sip.phones", "--bind", "127.0.0.1", "--port", "0",
             "--script", str(script), "--log", str(self.log), "--ready-file", str(ready)],
            cwd=ROOT)
        self.port = int(wait_until(lambda: ready.exists() and ready.read_text(), 10,
                                   "the phone simulator"))

    def record(self, call_id: str, timeout: float = 10) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            if not self.log.exists():
                return None
            for line in self.log.read_text().splitlines():
                rec: dict[str, Any] = json.loads(line)
                if rec["call_id"] == call_id:
                    return rec
            return None

        return wait_until(find, timeout, f"the phone's record of {call_id}")


@pytest.fixture(scope="module")
def phones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoneSim]:
    sim = PhoneSim(tmp_path_factory.mktemp("phones"))
    yield sim
    sim.proc.terminate()
    sim.proc.wait(10)


class WorkerProc:
    """A worker process and the daemon's end of its IPC socket."""

    def __init__(self, phones: PhoneSim, media: dict[str, str],
                 trunk: dict[str, Any] | None = None, **init: Any) -> None:
        self.chan, fd = inheritable_pair()
        self.proc = subprocess.Popen([sys.executable, "-m", "sip.worker", "--ipc-fd", str(fd)],
                                     pass_fds=[fd], cwd=ROOT)
        socket.socket(fileno=fd).close()  # the child holds its copy; EOF must be observable
        self.events: list[Raw] = []
        self.phones, self.media = phones, media
        self.target = f"127.0.0.1:{phones.port}"  # where calls go: the phones or a PBX
        if trunk is None:
            trunk = {"uri": f"sip:{self.target}", "registrar": None, "username": "dialer",
                     "password": "s3cret", "transport": "udp", "register": False}
        else:
            self.target = trunk["uri"].removeprefix("sip:")
        self.chan.send({"op": "init", "worker": 7, "bind": "127.0.0.1",
                        "trunks": {"internal": trunk}, "allowed_sources": ["127.0.0.1"],
                        "log_level": 3, "rtp_port": None, "rtp_port_range": None, **init})
        self.ready = self.wait_for(lambda e: e["ev"] == "ready", 10)

    def pump(self, timeout: float) -> None:
        if not self.chan.closed and select.select([self.chan], [], [], timeout)[0]:
            self.events.extend(self.chan.receive())

    def wait_for(self, match: Callable[[Raw], bool], timeout: float) -> Raw:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if match(event):
                    return event
            if time.monotonic() > deadline or self.chan.closed:
                raise AssertionError(f"no matching event; got {self.events}")
            self.pump(0.1)

    def dial(self, number: str, ring_timeout: float = 5.0, **extra: Any) -> str:
        call_id = f"{uuid.uuid4()}@alert-dialer"
        self.chan.send({"op": "dial", "call_id": call_id, "trunk": "internal",
                        "uri": f"sip:{number}@{self.target}",
                        "from_uri": "sip:5551234@dialer.test", "display": "Alert Desk",
                        "ring_timeout": ring_timeout, "media": self.media, "dialogue": DIALOGUE,
                        **extra})  # `extra` may override any field
        return call_id

    def stop(self) -> None:
        """Close the IPC socket (EOF) and expect a clean exit."""
        self.chan.close()
        try:
            assert self.proc.wait(10) == 0  # also catches a worker that pjsua aborted mid-test
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def ended(self, call_id: str, timeout: float = 10) -> Raw:
        return self.wait_for(lambda e: e["ev"] == "ended" and e["call_id"] == call_id, timeout)

    def of(self, call_id: str) -> list[tuple[str, Any]]:
        """The (event, detail) sequence of one call."""
        return [(e["ev"], e.get("key") or e.get("what") or e.get("prompt") or e.get("outcome"))
                for e in self.events if e.get("call_id") == call_id]


@pytest.fixture
def worker(phones: PhoneSim, media: dict[str, str]) -> Iterator[WorkerProc]:
    w = WorkerProc(phones, media)
    yield w
    w.stop()


def _sleeps(pid: int) -> int:
    """How many times the worker's main thread has blocked (each wait in libHandleEvents)."""
    status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


@pytest.mark.sip
def test_an_idle_worker_wakes_about_ten_times_a_second(worker: WorkerProc) -> None:
    """Each turn of the loop costs CPU whether or not there is anything to do (issue 16): an
    idle worker waits POLL_MS = 100 ms per turn, about 10 wake-ups a second (20 before).
    Counted: the main thread's voluntary context switches over at least 3 s."""
    start, before = time.monotonic(), _sleeps(worker.proc.pid)
    while time.monotonic() - start < 3.0:
        worker.pump(0.5)
    elapsed, after = time.monotonic() - start, _sleeps(worker.proc.pid)
    assert (after - before) / elapsed <= 15


def test_q850_cause_is_parsed_from_a_reason_header() -> None:
    msg = "SIP/2.0 486 Busy Here\r\nReason: SIP;cause=486, Q.850;cause=17;text=\"busy\"\r\n\r\n"
    assert q850_cause(msg) == 17
    assert q850_cause("SIP/2.0 486 Busy Here\r\nReason: SIP;cause=486\r\n") is None


@pytest.mark.sip
def test_confirmed_call_is_contacted_with_both_keys(worker: WorkerProc, phones: PhoneSim) -> None:
    assert worker.ready["worker"] == 7 and worker.ready["sip_port"] > 0
    call_id = worker.dial("200")
    ended = worker.ended(call_id)
    assert ended["outcome"] == "contacted", ended
    assert ended["keys"] == "19"
    assert ended["answered_at"] < ended["answer_confirmed_at"] < ended["listen_confirmed_at"]
    assert worker.of(call_id) == [("ringing", None), ("answered", None),
                                  ("played", "answer_prompt"), ("key", "1"),
                                  ("confirmed", "answer"), ("played", "message"),
                                  ("played", "listen_prompt"), ("key", "9"),
                                  ("confirmed", "listen"), ("played", "goodbye"),
                                  ("ended", "contacted")]
    rec = phones.record(call_id)  # the phone saw our Call-ID and caller ID on the wire
    assert rec["call_id"] == call_id and rec["number"] == "200"
    assert rec["keys"] == "19" and rec["hung_up_by"] == "caller"
    assert rec["from"].startswith('"Alert Desk" <sip:5551234@dialer.test')


@pytest.mark.sip
def test_busy_keeps_status_and_q850(worker: WorkerProc) -> None:
    ended = worker.ended(worker.dial("101"))
    assert (ended["status"], ended["outcome"], ended["q850"]) == (486, "busy", 17)
    assert ended["answered_at"] is None


@pytest.mark.sip
def test_ring_timeout_cancels_with_487(worker: WorkerProc, phones: PhoneSim) -> None:
    started = time.time()
    call_id = worker.dial("102", ring_timeout=1.0)
    ended = worker.ended(call_id)
    assert (ended["status"], ended["outcome"]) == (487, "no_answer")
    assert 0.9 < ended["at"] - started < 3
    assert phones.record(call_id)["status"] == 487


@pytest.mark.sip
def test_hanging_up_early_is_hung_up(worker: WorkerProc) -> None:
    ended = worker.ended(worker.dial("103"))
    assert (ended["outcome"], ended["keys"]) == ("hung_up", "1")
    assert ended["answer_confirmed_at"] and ended["listen_confirmed_at"] is None


@pytest.mark.sip
def test_wrong_key_replays_the_message_then_contacted(worker: WorkerProc) -> None:
    ended = worker.ended(worker.dial("104"), timeout=15)
    assert (ended["outcome"], ended["keys"]) == ("contacted", "159")
    # the replayed message pushed the "9" past one message length
    assert ended["listen_confirmed_at"] - ended["answered_at"] > 3


@pytest.mark.sip
def test_behaviour_sequence_per_attempt(worker: WorkerProc) -> None:
    first = worker.ended(worker.dial("105"))
    second = worker.ended(worker.dial("105"))
    assert (first["outcome"], second["outcome"]) == ("busy", "contacted")


@pytest.mark.sip
def test_a_fifth_call_fails_and_every_dial_ends_once(worker: WorkerProc) -> None:
    ids = [worker.dial("102", ring_timeout=1.0) for _ in range(5)]
    for call_id in ids:
        worker.ended(call_id)
    outcomes = sorted(worker.ended(c)["outcome"] for c in ids)
    assert outcomes == ["failed", "no_answer", "no_answer", "no_answer", "no_answer"]
    worker.pump(0.5)
    assert sorted(e["call_id"] for e in worker.events if e["ev"] == "ended") == sorted(ids)


@pytest.mark.sip
def test_unknown_trunk_fails(worker: WorkerProc) -> None:
    ended = worker.ended(worker.dial("200", trunk="nope"))
    assert ended["outcome"] == "failed" and "trunk" in ended["reason"]


@pytest.mark.sip
def test_hangup_op_cancels_a_ringing_call(worker: WorkerProc) -> None:
    call_id = worker.dial("102", ring_timeout=10)
    worker.wait_for(lambda e: e["ev"] == "ringing" and e["call_id"] == call_id, 5)
    worker.chan.send({"op": "hangup", "call_id": call_id})
    ended = worker.ended(call_id)
    assert (ended["status"], ended["outcome"]) == (487, "failed")


@pytest.mark.sip
def test_incoming_invite_is_refused_with_403(worker: WorkerProc) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    port, local = worker.ready["sip_port"], sock.getsockname()[1]
    sock.sendto((
        f"INVITE sip:dialer@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:intruder@127.0.0.1>;tag=1\r\n"
        f"To: <sip:dialer@127.0.0.1:{port}>\r\nCall-ID: {uuid.uuid4()}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:intruder@127.0.0.1:{local}>\r\nContent-Length: 0\r\n\r\n").encode(),
        ("127.0.0.1", port))
    codes: list[int] = []
    while not codes or codes[-1] < 200:
        codes.append(int(sock.recv(65536).split(b" ", 2)[1]))
    sock.close()
    assert codes[-1] == 403
    # An INVITE without SDP refused inside onIncomingCall would have aborted the worker.
    assert worker.ended(worker.dial("101"))["outcome"] == "busy"


@pytest.mark.sip
def test_makecall_error_ends_failed(worker: WorkerProc) -> None:
    call_id = worker.dial("200")
    bad = worker.dial("x", uri="not a sip uri")
    ended = worker.ended(bad)
    assert ended["outcome"] == "failed" and "makeCall" in ended["reason"]
    assert worker.ended(call_id)["outcome"] == "contacted"  # the other call is unaffected


@pytest.mark.sip
def test_shutdown_hangs_up_and_reports_an_answered_call(worker: WorkerProc) -> None:
    call_id = worker.dial("200")
    worker.wait_for(lambda e: e["ev"] == "answered", 5)
    worker.chan.send({"op": "shutdown"})
    ended = worker.ended(call_id)
    assert (ended["outcome"], ended["reason"]) == ("interrupted", "worker shutting down")
    assert worker.proc.wait(5) == 0


@pytest.mark.sip
def test_eof_on_ipc_ends_calls_and_exits(worker: WorkerProc, phones: PhoneSim) -> None:
    call_id = worker.dial("102", ring_timeout=30)
    worker.wait_for(lambda e: e["ev"] == "ringing", 5)
    worker.chan.close()
    assert worker.proc.wait(5) == 0
    assert phones.record(call_id)["status"] == 487  # the phone saw the CANCEL


# ----- the source filter, registration health, bounded slots (issue 9) -----


def _options(src: str, port: int) -> tuple[socket.socket, bytes]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 0))
    local = sock.getsockname()[1]
    msg = (f"OPTIONS sip:dialer@127.0.0.1:{port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP {src}:{local};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:scanner@{src}>;tag=1\r\n"
           f"To: <sip:dialer@127.0.0.1>\r\nCall-ID: {uuid.uuid4()}\r\nCSeq: 1 OPTIONS\r\n"
           "Content-Length: 0\r\n\r\n").encode()
    return sock, msg


def test_a_scanner_gets_no_answer_and_is_counted(worker: WorkerProc) -> None:
    port = worker.ready["sip_port"]
    for src in ("127.0.0.3", "127.0.0.2"):
        sock, msg = _options(src, port)
        sock.settimeout(1.0)
        sock.sendto(msg, ("127.0.0.1", port))
        with pytest.raises(TimeoutError):
            sock.recv(65536)
        sock.close()
    def dropped() -> int:
        return sum(e["counts"].get("foreign_source", 0) for e in worker.events
                   if e["ev"] == "dropped")

    deadline = time.monotonic() + 8  # reports go out every couple of seconds
    while dropped() < 2 and time.monotonic() < deadline:
        worker.pump(0.1)
    assert dropped() == 2
    reports = [e for e in worker.events if e["ev"] == "dropped"]
    assert all(set(e["counts"]) == {"foreign_source"} for e in reports)
    assert "OPTIONS from 127.0.0.2" in reports[-1]["last"]
    assert worker.ended(worker.dial("101"))["outcome"] == "busy"  # the worker is fine


def test_options_from_the_pbx_is_answered_without_naming_the_worker(worker: WorkerProc) -> None:
    port = worker.ready["sip_port"]
    sock, msg = _options("127.0.0.1", port)
    sock.settimeout(5)
    sock.sendto(msg, ("127.0.0.1", port))
    answer = sock.recv(65536).decode()
    sock.close()
    assert answer.startswith("SIP/2.0 200 ")
    assert "worker" not in answer.lower() and "pjsip" not in answer.lower()


def test_tcp_listens_on_the_udp_port_number(phones: PhoneSim, media: dict[str, str]) -> None:
    trunk = {"uri": f"sip:127.0.0.1:{phones.port}", "transport": "tcp", "register": False}
    w = WorkerProc(phones, media, trunk)
    try:
        conn = socket.create_connection(("127.0.0.1", w.ready["sip_port"]), timeout=5)
        conn.close()
    finally:
        w.stop()


class SilentPeer:
    """A UDP socket that receives SIP and never answers (a dead trunk or registrar)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.setblocking(False)

    def close(self) -> None:
        self.sock.close()

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536))
            except BlockingIOError:
                return out


class FakeRegistrar(SilentPeer):
    """Answers REGISTER with 200 (expires 60) and OPTIONS with 200 while ``alive``."""

    def __init__(self) -> None:
        super().__init__()
        self.alive = True
        self.registers = 0
        self.options = 0

    def serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            text = data.decode(errors="replace")
            method = text.split(" ", 1)[0]
            if method == "REGISTER":
                self.registers += 1
            elif method == "OPTIONS":
                self.options += 1
            if not self.alive or method not in ("REGISTER", "OPTIONS"):
                continue
            head = [line for line in text.split("\r\n")
                    if line.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
            extra = ["Contact: <sip:dialer@127.0.0.1>;expires=60", "Expires: 60"] \
                if method == "REGISTER" else []
            reply = "\r\n".join(["SIP/2.0 200 OK", *head, *extra, "Content-Length: 0", "", ""])
            self.sock.sendto(reply.encode(), addr)


def _registering_worker(phones: PhoneSim, media: dict[str, str], registrar_port: int,
                        **extra: Any) -> WorkerProc:
    trunk = {"uri": f"sip:127.0.0.1:{phones.port}", "registrar": f"sip:127.0.0.1:{registrar_port}",
             "username": "dialer", "transport": "udp", "register": True, "expires": 60,
             "retry_interval": 5, **extra}
    return WorkerProc(phones, media, trunk)


def test_an_unanswered_register_reports_the_trunk_down_within_its_timeout(
        phones: PhoneSim, media: dict[str, str]) -> None:
    dead = SilentPeer()
    w = _registering_worker(phones, media, dead.port, register_timeout=1.5, keepalive_interval=0)
    try:
        started = time.monotonic()
        down = w.wait_for(lambda e: e["ev"] == "reg" and e["code"] == 408, 20)
        assert "REGISTER unanswered" in down["reason"]
        assert time.monotonic() - started < 20  # not PJSIP's 32 s transaction timeout
        assert any(m.startswith(b"REGISTER ") for m in dead.received())
    finally:
        w.stop()
        dead.close()


def test_keepalives_find_a_dead_registrar_and_registering_resumes_when_it_answers(
        phones: PhoneSim, media: dict[str, str]) -> None:
    reg = FakeRegistrar()
    w = _registering_worker(phones, media, reg.port, keepalive_interval=0.5,
                            keepalive_timeout=1.0, register_timeout=2.0)

    def step(code: int, after: int, timeout: float) -> Raw:
        """The first ``reg`` event with ``code`` among the events from index ``after``."""
        deadline = time.monotonic() + timeout
        while True:
            reg.serve()
            found = [e for e in w.events[after:] if e["ev"] == "reg" and e["code"] == code]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"timed out; events {w.events}"
            w.pump(0.05)

    try:
        step(200, 0, 10)
        deadline = time.monotonic() + 10
        while reg.options < 2:  # keep-alives flow, and are answered
            assert time.monotonic() < deadline, "no keep-alive reached the registrar"
            reg.serve()
            w.pump(0.05)
        assert not [e for e in w.events if e["ev"] == "reg" and e["code"] != 200]
        reg.alive = False  # the registrar dies between two refreshes (expires 60)
        down = step(408, len(w.events), 10)
        assert "did not answer OPTIONS" in down["reason"]
        registers_before = reg.registers
        reg.alive = True
        step(200, len(w.events), 10)  # a fresh REGISTER, answered
        assert reg.registers > registers_before
    finally:
        w.stop()
        reg.close()


def test_an_invite_with_no_answer_at_all_ends_unreachable_within_its_timeout(
        phones: PhoneSim, media: dict[str, str]) -> None:
    dead = SilentPeer()
    trunk = {"uri": f"sip:127.0.0.1:{dead.port}", "transport": "udp", "register": False,
             "invite_timeout": 1.5}
    w = WorkerProc(phones, media, trunk)
    try:
        started = time.monotonic()
        ended = [w.ended(w.dial("300", ring_timeout=30), 25) for _ in range(4)][-1]
        assert time.monotonic() - started < 20  # invite_timeout (1.5 s), not the ring's 30 s
        assert ended["outcome"] == "unreachable" and ended["status"] == 408
        # The slots are free again at once: four more calls are placed, none PJ_ETOOMANY.
        again = [w.ended(w.dial("301", ring_timeout=30)) for _ in range(4)]
        assert [e["outcome"] for e in again] == ["unreachable"] * 4
        assert sum(m.startswith(b"INVITE ") for m in dead.received()) >= 8
    finally:
        w.stop()
        dead.close()


def test_a_strangers_tcp_connection_never_completes(phones: PhoneSim,
                                                    media: dict[str, str]) -> None:
    trunk = {"uri": f"sip:127.0.0.1:{phones.port}", "transport": "tcp", "register": False}
    w = WorkerProc(phones, media, trunk)
    port = w.ready["sip_port"]
    try:
        stranger = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stranger.bind(("127.0.0.3", 0))
        stranger.settimeout(1.5)
        with pytest.raises(TimeoutError):  # the SYN is dropped: no SYN-ACK, no RST
            stranger.connect(("127.0.0.1", port))
        stranger.close()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # the PBX may
    finally:
        w.stop()


def _dtmf_packets(digit: int, ssrc: int, seq: int) -> list[bytes]:
    """RFC 2833 telephone-event packets (payload type 120) for one key press: start, end x3."""
    out = []
    for i, (end, duration) in enumerate([(0, 160), (0, 320), (1, 480), (1, 480), (1, 480)]):
        header = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | 120, (seq + i) & 0xFFFF,
                             1000 * seq, ssrc)
        out.append(header + struct.pack("!BBH", digit, (end << 7) | 10, duration))
    return out


def test_a_stranger_cannot_take_over_a_calls_audio_or_press_its_keys(
        phones: PhoneSim, media: dict[str, str]) -> None:
    first = 27000 + (os.getpid() % 50) * 20
    w = WorkerProc(phones, media, rtp_port=first, rtp_port_range=20)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.2", 0))
    try:
        call_id = w.dial("106")  # answers and never presses a key
        w.wait_for(lambda e: e["ev"] == "answered" and e["call_id"] == call_id, 10)
        # Bursts of ten and more packets in a row from one address is what pjmedia's latching
        # follows; key 1 then key 9, at every port of the worker's RTP range.
        seq = 1
        for digit in (1, 9) * 3:
            for port in range(first, first + 20):
                for packet in _dtmf_packets(digit, 0x5EC0DE, seq) * 4:
                    stranger.sendto(packet, ("127.0.0.1", port))
            seq += 5
            w.pump(0.2)
        ended = w.ended(call_id, 15)
        assert [e for e in w.events if e["ev"] == "key"] == []
        assert ended["outcome"] == "not_confirmed"
        assert ended["answer_confirmed_at"] is None
        stranger.settimeout(0.2)
        with pytest.raises(TimeoutError):  # and none of the call's audio came our way
            stranger.recv(2048)
    finally:
        stranger.close()
        w.stop()


class DeafAnswerer(SilentPeer):
    """Answers every INVITE 200 OK (G.711, telephone-event 120), then hears nothing: its BYE
    and its CANCEL go unanswered, as through a proxy that died mid-call."""

    def serve(self) -> int:
        answered = 0
        for data in self.received_from():
            text, addr = data[0].decode(errors="replace"), data[1]
            if not text.startswith("INVITE "):
                continue
            head = [line if not line.lower().startswith("to:") else line + ";tag=deaf"
                    for line in text.split("\r\n")
                    if line.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
            sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                   f"m=audio {self.port + 2} RTP/AVP 0 120\r\na=rtpmap:0 PCMU/8000\r\n"
                   "a=rtpmap:120 telephone-event/8000\r\na=sendrecv\r\n")
            reply = "\r\n".join(["SIP/2.0 200 OK", *head,
                                 f"Contact: <sip:deaf@127.0.0.1:{self.port}>",
                                 "Content-Type: application/sdp",
                                 f"Content-Length: {len(sdp)}", "", sdp])
            self.sock.sendto(reply.encode(), addr)
            answered += 1
        return answered

    def received_from(self) -> list[tuple[bytes, Any]]:
        out = []
        while True:
            try:
                out.append(self.sock.recvfrom(65536))
            except BlockingIOError:
                return out


def test_a_call_whose_bye_goes_unanswered_frees_its_slot_within_the_timeout(
        phones: PhoneSim, media: dict[str, str]) -> None:
    deaf = DeafAnswerer()
    trunk = {"uri": f"sip:127.0.0.1:{deaf.port}", "transport": "udp", "register": False,
             "invite_timeout": 2.0}
    w = WorkerProc(phones, media, trunk)
    try:
        calls = [w.dial(f"40{i}", ring_timeout=10) for i in range(4)]
        deadline = time.monotonic() + 10
        answered = 0
        while answered < 4:  # every slot: an answered call, not confirmed, hung up by us
            assert time.monotonic() < deadline, f"only {answered} answered; {w.events}"
            answered += deaf.serve()
            w.pump(0.05)
        ends = [w.ended(c, 15) for c in calls]
        assert [e["outcome"] for e in ends] == ["not_confirmed"] * 4
        held = w.wait_for(lambda e: e["ev"] == "slots" and e["held"] == 4, 5)
        assert held
        # The slots are back within invite_timeout: four more calls are placed and end.
        more = [w.dial(f"41{i}", ring_timeout=10) for i in range(4)]
        w.wait_for(lambda e: e["ev"] == "slots" and e["held"] == 0, 10)
        deadline = time.monotonic() + 10
        while answered < 8:
            assert time.monotonic() < deadline, f"only {answered} answered; {w.events}"
            answered += deaf.serve()
            w.pump(0.05)
        again = [w.ended(c, 15) for c in more]
        assert [e["outcome"] for e in again] == ["not_confirmed"] * 4
    finally:
        w.stop()
        deaf.close()


def test_cancelled_calls_give_their_slots_back_at_once(phones: PhoneSim, media: dict[str, str],
                                                      tmp_path: Path) -> None:
    """A cancelled call's dialog outlives it (Timer D) but its slot does not: the slot comes
    back with the 487, long before the worker would end the session itself (invite_timeout,
    30 s here)."""
    trunk = {"uri": f"sip:127.0.0.1:{phones.port}", "transport": "udp", "register": False,
             "invite_timeout": 30.0}
    w = WorkerProc(phones, media, trunk)
    try:
        first = [w.dial("102", ring_timeout=1.0) for _ in range(4)]
        assert [w.ended(c)["outcome"] for c in first] == ["no_answer"] * 4
        deadline = time.monotonic() + 15
        while True:
            held = [e["held"] for e in w.events if e["ev"] == "slots"]
            if not held or held[-1] == 0:
                break
            assert time.monotonic() < deadline, f"slots still held: {held}"
            w.pump(0.1)
        # The next four go to a second phone process: the first one's own four pjsua slots
        # come back on its schedule, not the worker's (and a freed slot reused at once there
        # meets pjsua2's late Call destructor, PJSUA2-NOTES).
        other = PhoneSim(tmp_path)
        try:
            w.target = f"127.0.0.1:{other.port}"
            again = [w.dial("102", ring_timeout=1.0) for _ in range(4)]
            assert [w.ended(c, 15)["outcome"] for c in again] == ["no_answer"] * 4
        finally:
            other.proc.terminate()
            other.proc.wait(10)
    finally:
        w.stop()


def test_trusted_sources_change_when_the_daemon_says_so(worker: WorkerProc) -> None:
    """A trunk host that re-resolves elsewhere: the daemon sends ``trust``; no restart."""
    port = worker.ready["sip_port"]

    def answered(src: str) -> bool:
        sock, msg = _options(src, port)
        sock.settimeout(1.0)
        sock.sendto(msg, ("127.0.0.1", port))
        try:
            return sock.recv(65536).startswith(b"SIP/2.0 200")
        except TimeoutError:
            return False
        finally:
            sock.close()

    assert not answered("127.0.0.5")
    worker.chan.send({"op": "trust", "allowed_sources": ["127.0.0.1", "127.0.0.5/32"]})
    deadline = time.monotonic() + 5
    while not answered("127.0.0.5"):
        assert time.monotonic() < deadline, "the new source was never heard"
    assert answered("127.0.0.1")
    worker.chan.send({"op": "trust", "allowed_sources": ["127.0.0.5"]})
    deadline = time.monotonic() + 5
    while answered("127.0.0.1"):
        assert time.monotonic() < deadline, "the old source is still heard"


@pytest.mark.sip
def test_the_load_reports_are_well_formed_and_rate_bounded(worker: WorkerProc) -> None:
    """The overload gate's reports (``load``): on every change of the gate, else at most once
    per LOAD_REPORT_S while a measure moves; each carries the loop lag and the CPU wait."""
    from sip.cpuwait import LOAD_REPORT_S

    started = time.monotonic()
    call_id = worker.dial("200")
    assert worker.ended(call_id)["outcome"] == "contacted"
    elapsed = time.monotonic() - started
    loads = [e for e in worker.events if e["ev"] == "load"]
    assert all(isinstance(e["lag"], float) and isinstance(e["wait"], float) for e in loads)
    changes = sum(1 for a, b in zip([{"overloaded": False}, *loads], loads, strict=False)
                  if a["overloaded"] != b["overloaded"])
    assert len(loads) - changes <= elapsed / LOAD_REPORT_S + 1, loads
