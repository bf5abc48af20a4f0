"""End to end: the SIP failures that a trunk over UDP hides, through Kamailio as the PBX.

* A registrar (and outbound proxy) outage over UDP: a REGISTER refresh sent while Kamailio is
  down is only retransmitted, and answered once it is back, so pjsua reports no failure. The
  dialer must notice the outage itself (OPTIONS keep-alives to the registrar,
  ``keepalive_interval``; a bounded REGISTER, ``register_timeout``), dial nothing through the dead
  proxy, log the outage in a few lines instead of one per refused call, and resume once the
  registrar answers again. The outage lasts ``DIALER_OUTAGE_SECONDS`` (20 s in the suite); the
  full version of the measurement by hand is::

      DIALER_OUTAGE_SECONDS=60 pytest tests/test_registrar_outage.py

* A cancelled call whose 487 never arrives (a far end that builds it from the proxy's CANCEL,
  ``tests/sipp/no_answer_bad_487.xml``) may not hold its call slot for the 32 s of the INVITE
  transaction; with a correct far end (``tests/sipp/no_answer.xml``) the cancelled calls end at the
  ring timeout and the 4 slots of a worker are enough for any number of recipients.
* An INVITE that gets no answer at all ends ``unreachable`` (408) in about 10 s, not 32 s.

Every wait is a condition with a deadline; the figures each test measured go into its
assertion messages (and are printed, ``pytest -s``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from testkit import LOCALHOST, Kamailio, Sipp, free_port
from testkit.harness import Dialer

pytestmark = [pytest.mark.sip, pytest.mark.kamailio]

PASSWORD = "s3cret-pw"
PASSWORD_ENV = {"TEST_TRUNK_PASSWORD": PASSWORD}
# answer_confirm.xml: key 1 one second into the "press 1" prompt, key 9 1.5 s into the "press 9"
# prompt that follows a MESSAGE-second message (a confirmed call lasts about 6.5 s).
MESSAGE = 1.0
KEY1_MS = 1000
KEY9_MS = int((MESSAGE + 1.5) * 1000)
OUTAGE = float(os.environ.get("DIALER_OUTAGE_SECONDS", "20"))
# Daemon log lines that are about the outage (case-insensitive).
OUTAGE_LINE = re.compile(r"PJ_ETOOMANY|not registered|keep-?alive|registrar", re.IGNORECASE)
LOG_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def numbers(n: int, first: int = 1001) -> list[str]:
    return [str(first + i) for i in range(n)]


def epoch(iso: str | None) -> float:
    """POSIX time of a timestamp of ``SqlStore.attempts_of`` (aware UTC ISO 8601)."""
    assert iso is not None
    value = dt.datetime.fromisoformat(iso)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def line_time(line: str) -> float | None:
    """POSIX time of a daemon log line (its local ``asctime``), or None."""
    m = LOG_STAMP.match(line)
    if m is None:
        return None
    return dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def log_since(d: Dialer, offset: int) -> list[str]:
    """The daemon log's lines from byte ``offset`` on."""
    with open(d.log, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace").splitlines()


def kamailio_trunk(kam: Kamailio, **extra: Any) -> dict[str, Any]:
    """A trunk through ``kam``: INVITEs digest-authenticated as ``kam.user`` over UDP."""
    return {"uri": kam.uri, "username": kam.user, "password_env": "TEST_TRUNK_PASSWORD",
            "transport": "udp", **extra}


@pytest.fixture
def black_hole() -> Iterator[socket.socket]:
    """A UDP socket on loopback that takes every datagram and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCALHOST, free_port()))
    sock.setblocking(False)
    yield sock
    sock.close()


def datagrams(sock: socket.socket, limit: int = 1000) -> list[bytes]:
    """What arrived at a non-blocking socket so far (at most ``limit`` datagrams)."""
    got: list[bytes] = []
    for _ in range(limit):
        try:
            got.append(sock.recv(65535))
        except BlockingIOError:
            break
    return got


# --------------------------------------------------------------------------------------------
# Registrar outage over UDP


def test_registrar_outage_over_udp_stops_dialling_and_resumes(
        start_sipp: Callable[..., Sipp], start_kamailio: Callable[..., Kamailio],
        dialer: Callable[..., Dialer]) -> None:
    """Kamailio (registrar and proxy of the internal trunk, over UDP) stops for OUTAGE seconds
    in the middle of a campaign of 30 answering recipients, then starts again on its port.

    Wanted: the trunk is reported not registered within a few seconds (keep-alive every 2 s,
    REGISTER bounded to 3 s); from then until Kamailio is back no attempt is created; fewer than
    20 daemon log lines are about the outage; calls resume within 10 s of Kamailio's return;
    every recipient ends contacted (3 attempts: the calls the outage caught are retried).
    """
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    kam = start_kamailio(user="dialer", password=PASSWORD, routes={"*": sipp.address})
    internal = kamailio_trunk(kam, registrar=kam.uri, expires=60, retry_interval=5,
                              keepalive_interval=2, register_timeout=3)
    d = dialer(internal=internal, external={"uri": sipp.uri}, workers=2, env=PASSWORD_ENV)
    d.cli("settings", "set", "--max-calls", "8")
    d.template("T", numbers(30), message=MESSAGE, attempts=3, retry_delay=3, ring_timeout=15)
    cid = d.start_campaign("T")
    d.serve()
    d.wait(lambda: "trunk internal registered" in d.log_text() or None, 30,
           "the trunk to register with Kamailio")
    kam.wait_registered(timeout=10)

    def contacted() -> int:
        return sum(a["outcome"] == "contacted" for a in d.attempts(cid))

    d.wait(lambda: contacted() >= 6 or None, 60, "6 calls contacted before the outage")
    assert d.campaign(cid)["state"] == "active"

    # ----- the outage -----
    offset = d.log.stat().st_size
    killed_at = time.time()
    kam.stop()
    back_by = time.monotonic() + OUTAGE
    detected_at: float | None = None

    def outage_over() -> bool:
        nonlocal detected_at
        if detected_at is None:
            for line in log_since(d, offset):
                if "trunk internal not registered" in line:
                    detected_at = line_time(line) or time.time()
                    break
        return time.monotonic() >= back_by

    d.wait(outage_over, OUTAGE + 30, f"the {OUTAGE:.0f} s outage to pass")
    # Kamailio's return: when it is started (it answers a moment later, before start() returns).
    restarted_at = time.time()
    kam.start()
    detail = d.wait_state(cid, ["completed", "incomplete"], 120 + 2 * OUTAGE)

    # ----- what happened -----
    attempts = d.attempts(cid)
    created = sorted(epoch(a["created_at"]) for a in attempts)
    quiet_from = detected_at if detected_at is not None else killed_at
    before_detection = [t for t in created if killed_at <= t < quiet_from]
    during = [t for t in created if quiet_from <= t < restarted_at]
    after = [t for t in created if t >= restarted_at]
    resumed = after[0] - restarted_at if after else None
    outage_lines = [line for line in log_since(d, offset) if OUTAGE_LINE.search(line)]
    toomany = sum("PJ_ETOOMANY" in line for line in outage_lines)
    states: dict[str, int] = {}
    for rec in detail["recipients"]:
        states[rec["state"]] = states.get(rec["state"], 0) + 1
    outcomes: dict[str, int] = {}
    for a in attempts:
        how = a["status"] or ("PJ_ETOOMANY" if "PJ_ETOOMANY" in (a["reason"] or "")
                              else (a["reason"] or "")[:40])
        key = f"{a['outcome']} {how}".strip()
        outcomes[key] = outcomes.get(key, 0) + 1
    figures = (
        f"outage {OUTAGE:.0f} s; detected "
        + (f"{detected_at - killed_at:.1f} s after the kill" if detected_at is not None
           else "never")
        + f"; attempts created kill..detection {len(before_detection)}, "
        f"{'detection' if detected_at is not None else 'kill'}..restart {len(during)}, "
        f"after restart {len(after)}; first after restart "
        + (f"+{resumed:.1f} s" if resumed is not None else "none")
        + f"; outage log lines {len(outage_lines)} ({toomany} PJ_ETOOMANY); "
        f"recipients {states}; attempts {outcomes}; campaign {detail['state']}")
    print("\n" + figures)
    sample = "\n".join(outage_lines if len(outage_lines) <= 10
                       else outage_lines[:5] + ["..."] + outage_lines[-5:])

    assert detected_at is not None, (
        f"the registrar outage was never noticed (no 'trunk internal not registered' in the "
        f"daemon log during {OUTAGE:.0f} s): {figures}\n{sample}")
    assert detected_at - killed_at < 10, f"the outage was noticed late: {figures}"
    assert not during, f"{len(during)} attempt(s) were placed into the dead proxy: {figures}"
    assert len(outage_lines) < 20, f"the outage flooded the log: {figures}\n{sample}"
    assert resumed is not None and resumed < 10, \
        f"calls did not resume within 10 s of Kamailio's return: {figures}"
    assert states == {"contacted": 30}, f"not every recipient was contacted: {figures}"
    assert detail["state"] == "completed", figures


# --------------------------------------------------------------------------------------------
# Cancelled calls through the proxy


def ring_timeout_campaign(start_sipp: Callable[..., Sipp],
                          start_kamailio: Callable[..., Kamailio],
                          dialer: Callable[..., Dialer], scenario: str, recipients: int,
                          ring_timeout: float) -> tuple[Dialer, int, Sipp]:
    """One worker (4 call slots) dialling ``recipients`` numbers through Kamailio to a SIPp that
    rings until cancelled; one attempt each; returns once the campaign has ended."""
    sipp = start_sipp(scenario, trace_msg=True)
    kam = start_kamailio(user="dialer", password=PASSWORD, routes={"*": sipp.address})
    d = dialer(internal=kamailio_trunk(kam), external={"uri": sipp.uri}, workers=1,
               env=PASSWORD_ENV)
    d.template("T", numbers(recipients), attempts=1, ring_timeout=ring_timeout)
    cid = d.start_campaign("T")
    d.serve()
    # Rounds of 4 calls, each ending at the ring timeout (+ 32 s if a slot is held to the end
    # of the INVITE transaction): generous, the assertions say what went wrong.
    rounds = -(-recipients // 4)
    d.wait_state(cid, ["completed", "incomplete"], rounds * (ring_timeout + 40) + 20)
    return d, cid, sipp


def call_lengths(d: Dialer, cid: int) -> list[float]:
    """Seconds from each attempt's creation to its end, in creation order."""
    return [round(epoch(a["ended_at"]) - epoch(a["created_at"]), 1) for a in d.attempts(cid)]


def test_cancelled_calls_through_the_proxy_free_their_slots(
        start_sipp: Callable[..., Sipp], start_kamailio: Callable[..., Kamailio],
        dialer: Callable[..., Dialer]) -> None:
    """With a far end that answers the INVITE's 487 correctly (tests/sipp/no_answer.xml), every
    cancelled call ends at the ring timeout, and 8 recipients on 4 slots need no retry of a
    refused makeCall."""
    ring = 5.0
    d, cid, sipp = ring_timeout_campaign(start_sipp, start_kamailio, dialer, "no_answer", 8,
                                         ring)
    attempts = d.attempts(cid)
    lengths = call_lengths(d, cid)
    assert [(a["outcome"], a["status"]) for a in attempts] == [("no_answer", 487)] * 8, \
        d.log_tail()
    assert max(lengths) <= ring + 5, f"cancelled calls ended late: {lengths}"
    assert sorted(sipp.ended_call_ids()) == sorted(a["id"] for a in attempts)
    assert set(sipp.ended_call_ids().values()) == {"cancelled"}
    # The relayed 487 carried the dialer's own Via, so pjsua took it.
    assert "PJSIP_EMISSINGHDR" not in d.log_text()
    assert "PJ_ETOOMANY" not in d.log_text(), d.log_tail()


def test_a_cancel_without_a_487_holds_its_slot_only_briefly(
        start_sipp: Callable[..., Sipp], start_kamailio: Callable[..., Kamailio],
        dialer: Callable[..., Dialer]) -> None:
    """The far end answers CANCEL 200 but builds the INVITE's 487 from the CANCEL
    (tests/sipp/no_answer_bad_487.xml): through Kamailio that 487 has no Via for the dialer,
    which drops it (PJSIP_EMISSINGHDR), so its INVITE transaction waits for a final answer that
    never comes. The cancelled call may still hold its slot only until ring timeout + 8 s, not to
    the end of that transaction (32 s): 8 recipients on one worker's 4 slots are all called,
    each attempt over within ring timeout + 8 s of its creation."""
    ring = 5.0
    d, cid, sipp = ring_timeout_campaign(start_sipp, start_kamailio, dialer,
                                         "no_answer_bad_487", 8, ring)
    attempts = d.attempts(cid)
    lengths = call_lengths(d, cid)
    outcomes = [f"{a['outcome']} {a['status'] or a['reason']}" for a in attempts]
    reached = len(sipp.received_call_ids())
    figures = (f"{reached} of {len(attempts)} calls reached the far end; call lengths {lengths} s "
               f"(ring timeout {ring:.0f} s); outcomes {outcomes}; "
               f"{d.log_text().count('PJ_ETOOMANY')} PJ_ETOOMANY log lines")
    print("\n" + figures)
    # The far end did get the CANCEL of every call it saw: the dialer is the one left waiting.
    assert set(sipp.ended_call_ids().values()) <= {"cancelled"}, figures
    assert "PJSIP_EMISSINGHDR" in d.log_text(), "the 487 was not dropped: nothing to check"
    assert sorted(sipp.received_call_ids()) == sorted(a["id"] for a in attempts), (
        f"calls were refused for want of a free slot: {figures}")
    assert all(a["outcome"] == "no_answer" for a in attempts), figures
    assert max(lengths) <= ring + 8, f"a cancelled call held its slot too long: {figures}"


# --------------------------------------------------------------------------------------------
# No answer at all


def test_an_invite_without_any_answer_is_unreachable_in_about_ten_seconds(
        black_hole: socket.socket, dialer: Callable[..., Dialer]) -> None:
    """The trunk points at a UDP port where a socket takes the INVITE and never answers: the
    attempt ends ``unreachable`` with 408 in about 10 s (not after the 32 s of timer B, nor at
    the 30 s ring timeout)."""
    ring_timeout = 30.0
    port = black_hole.getsockname()[1]
    d = dialer(internal={"uri": f"sip:{LOCALHOST}:{port}"},
               external={"uri": f"sip:{LOCALHOST}:{port}"}, workers=1)
    d.template("T", ["1001"], attempts=1, ring_timeout=ring_timeout)
    cid = d.start_campaign("T")
    d.serve()
    [attempt] = d.wait(lambda: [a for a in d.attempts(cid) if a["ended_at"]] or None,
                       ring_timeout + 15, "the unanswered attempt to end")
    length = epoch(attempt["ended_at"]) - epoch(attempt["created_at"])
    invites = [p for p in datagrams(black_hole) if p.startswith(b"INVITE ")]
    assert invites, "the INVITE never reached the silent port"
    assert all(attempt["id"].encode() in p for p in invites)
    got = (attempt["outcome"], attempt["status"])
    # About 10 s wanted; 15 s leaves room for a busy machine and is still far from 30-32 s.
    assert length <= 15 and got == ("unreachable", 408), (
        f"an unanswered INVITE ended {got} after {length:.1f} s "
        f"({len(invites)} INVITE transmissions)")
    d.wait_state(cid, ["completed", "incomplete"], 10)
