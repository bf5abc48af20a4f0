"""The phone simulator: script resolution (pure) and its SIP answers on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sip.phones import Phones, request_user

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("line", "user"), [
    ("INVITE sip:101@127.0.0.1:5090 SIP/2.0\r\n", "101"),
    ("INVITE sip:+3902123;phone-context=x@pbx SIP/2.0\r\n", "+3902123"),
    ("INVITE sip:pbx.example SIP/2.0\r\n", ""),
])
def test_request_user(line: str, user: str) -> None:
    assert request_user(line) == user


def test_script_entries_merge_and_sequences_advance_per_number() -> None:
    phones = Phones({"default": {"behaviour": "confirm", "ring": 1.5},
                     "numbers": {"7": {"behaviour": ["busy", "no_answer", "confirm"]}}}, None)
    seen = [phones.params_for("7")[:2] for _ in range(4)]
    assert seen == [("busy", 1), ("no_answer", 2), ("confirm", 3), ("confirm", 4)]
    behaviour, attempt, params = phones.params_for("8")
    assert (behaviour, attempt, params["ring"], params["answer_key"]) == ("confirm", 1, 1.5, "1")


def invite(port: int, number: str) -> list[bytes]:
    """Send a bare INVITE (no SDP) over UDP; return the responses up to the final one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    local = sock.getsockname()[1]
    sock.sendto((
        f"INVITE sip:{number}@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag=1\r\n"
        f"To: <sip:{number}@127.0.0.1>\r\nCall-ID: {uuid.uuid4()}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:tester@127.0.0.1:{local}>\r\nContent-Length: 0\r\n\r\n").encode(),
        ("127.0.0.1", port))
    responses: list[bytes] = []
    while not responses or int(responses[-1].split(b" ", 2)[1]) < 200:
        responses.append(sock.recv(65536))
    sock.close()
    return responses


@pytest.mark.sip
def test_final_answers_carry_code_and_q850(tmp_path: Path) -> None:
    script, log, ready = tmp_path / "s.json", tmp_path / "calls.jsonl", tmp_path / "ready"
    script.write_text(json.dumps({"numbers": {"480": {"behaviour": "unavailable", "q850": 18},
                                              "603": {"behaviour": "reject"}}}))
    proc = subprocess.Popen([sys.executable, "-m", "sip.phones", "--port", "0", "--script",
                             str(script), "--log", str(log), "--ready-file", str(ready)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "phones did not start"
            time.sleep(0.05)
        port = int(ready.read_text())
        unavailable = invite(port, "480")[-1].decode()
        assert unavailable.startswith("SIP/2.0 480") and "Q.850;cause=18" in unavailable
        assert invite(port, "603")[-1].startswith(b"SIP/2.0 603")
        deadline = time.monotonic() + 5
        while len(log.read_text().splitlines() if log.exists() else []) < 2:
            assert time.monotonic() < deadline, "calls not logged"
            time.sleep(0.05)
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert [(r["number"], r["behaviour"], r["status"]) for r in records] == [
            ("480", "unavailable", 480), ("603", "reject", 603)]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


class _Dead:
    """A disconnected pj.Call as the graveyard holds it: only its slot id matters."""

    def __init__(self, slot: int) -> None:
        self.slot = slot

    def getId(self) -> int:  # noqa: N802 - pjsua2's name
        return self.slot


def test_a_dead_call_is_not_freed_while_a_new_call_holds_its_slot() -> None:
    """pjsua2 hangs up a freed Call's slot (upstream issue 3856): when an INVITE reused the slot
    of a call that ended in the same event turn, freeing the old object after the turn declined
    the new call (the demo's 'hangs up, then ok' phone ended 'rejected 603' once in five runs:
    the dialer saw 603 Decline 1 ms after its INVITE). The graveyard keeps such a call until its
    slot is free again."""
    from types import SimpleNamespace

    phones = Phones({}, None)
    phones._graveyard = [_Dead(2), _Dead(3)]
    live = SimpleNamespace(call=_Dead(2))
    phones.calls = {"new": live}  # type: ignore[dict-item]
    phones.sweep_graveyard()
    assert [c.getId() for c in phones._graveyard] == [2]  # slot 3 free: freed; 2 kept
    phones.calls = {}
    phones.sweep_graveyard()
    assert phones._graveyard == []
