"""Who may talk SIP to the workers: forged in-dialog requests, scanners, INVITE floods, RFC 4475
torture messages, against the real ``dialer serve`` with SIPp far ends on loopback.

The PBX (both trunks' host, and every SIPp) is 127.0.0.1. Strangers are sockets bound to
127.0.0.2 (a forger who knows a call's identifiers) and 127.0.0.3 (a scanner / flooder):
loopback accepts any 127.x source without root. A worker must answer nobody but its trunks'
hosts, must let no one but the dialog's own peer end or move a call, and must survive a flood
or a malformed message from anyone without losing a call.

"No answer" is never waited for with a sleep: after the stranger's packet, an OPTIONS from the
PBX goes to the same worker socket. The worker reads its socket in order and answers at once, so
once the PBX's answer is in, any answer to the stranger would already have arrived.

Timing: the default English prompts ("press 1" 4.0 s, "press 9" 3.4 s, goodbye 2.0 s). In the
forged-request tests the far end presses 1 a second into "press 1" and 9 1.5 s into "press 9",
after a MESSAGE-second message: a call of about 11 s, long enough to be forged against.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit import LOCALHOST, PeerError, Sipp, free_port, wait_until
from testkit.harness import ROOT, Dialer
from tests import sipforge

pytestmark = pytest.mark.sip

FORGER = "127.0.0.2"
SCANNER = "127.0.0.3"
TRUSTED_NET = "127.0.0.8/29"  # a trunk's allowed_sources
TRUSTED = "127.0.0.9"
UNTRUSTED = "127.0.0.17"

MESSAGE = 6.0
KEY1_MS = 1000
KEY9_MS = int((MESSAGE + 1.5) * 1000)

# Flood tests: every slot rings when the flood (500 INVITEs at 50/s: 10 s) begins, and calls keep
# ending at the ring timeout and being replaced all through it (ROUNDS rounds of RING seconds):
# it is the freed and reused call slots that a flood gets into.
RING = 4.0
ROUNDS = 3
FLOOD_COUNT = 500
FLOOD_RATE = 50.0

TORTURE_DIR = ROOT.parent / "shared" / "sip-torture"  # shared/ lies beside the checkout
TORTURE_ROUNDS = 3

StartSipp = Callable[..., Sipp]  # the start_sipp fixture (tests/conftest.py)
MakeDialer = Callable[..., Dialer]  # the dialer fixture below

_READY = re.compile(r"worker (\d+) ready \(pid (\d+), SIP port (\d+)\)")
_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


# --------------------------------------------------------------------------------------------
# helpers


def trunk(sipp: Sipp, **extra: Any) -> dict[str, Any]:
    """A trunk to ``sipp`` with the dialer's own OPTIONS keepalives off: SIPp scenarios treat
    any request they do not expect as an error."""
    return {"uri": sipp.uri, "keepalive_interval": 0, **extra}


def numbers(n: int, first: int = 1001) -> list[str]:
    return [str(first + i) for i in range(n)]


def launch(dialer: Callable[..., Dialer], sipp: Sipp, recipients: list[str], *,
           workers: int = 4, metrics_port: int | None = None,
           external: dict[str, Any] | None = None, **template: Any) -> tuple[Dialer, int]:
    """A dialer whose trunks lead to ``sipp`` (``external`` overrides the second one), a
    template "T", one campaign launched, ``dialer serve`` running with every worker ready."""
    d = dialer(internal=trunk(sipp), external=external or trunk(sipp), workers=workers,
               metrics_port=metrics_port)
    d.template("T", recipients, **template)
    cid = d.start_campaign("T")
    d.serve()
    wait_ready(d, workers)
    return d, cid


def serve_idle(dialer: Callable[..., Dialer], sipp: Sipp, *, workers: int = 4,
               metrics_port: int | None = None) -> Dialer:
    """A dialer with no campaign: its workers up and listening, nothing dialled."""
    d = dialer(internal=trunk(sipp), external=trunk(sipp), workers=workers,
               metrics_port=metrics_port)
    d.serve()
    wait_ready(d, workers)
    return d


def sip_ports(d: Dialer) -> dict[int, int]:
    """Worker index -> SIP port of its newest start, from the daemon's log."""
    return {int(m.group(1)): int(m.group(3)) for m in _READY.finditer(d.log_text())}


def wait_ready(d: Dialer, workers: int) -> dict[int, int]:
    return d.wait(lambda: (lambda p: p if len(p) == workers else None)(sip_ports(d)), 60,
                  f"{workers} workers ready")


def starts(d: Dialer) -> int:
    """How many times a worker process was started (restarts included)."""
    return len(_STARTED.findall(d.log_text()))


def restarts_log(d: Dialer) -> str:
    """The daemon's lines about workers starting, exiting and being lost."""
    return "\n".join(line for line in d.log_text().splitlines()
                     if re.search(r"worker \d+ (started|\(pid \d+\) exited)|Fatal Python", line))


def finished(d: Dialer, cid: int, timeout: float = 90) -> dict[str, Any]:
    return d.wait_state(cid, ["completed", "incomplete"], timeout)


def assert_attempts_match_invites(d: Dialer, cid: int, *sipps: Sipp) -> None:
    """Every attempt in the database is an INVITE SIPp received, and the other way round."""
    received = sorted(c for s in sipps for c in s.received_call_ids())
    attempts = sorted(a["id"] for a in d.attempts(cid))
    assert attempts == received, (
        f"{len(attempts)} attempts, {len(received)} INVITEs at SIPp; attempts without INVITE: "
        f"{[a for a in d.attempts(cid) if a['id'] not in received][:5]}")


def assert_alive(d: Dialer) -> None:
    assert d.daemon is not None and d.daemon.poll() is None, "the daemon died\n" + d.log_tail()


def seconds(a: dict[str, Any], start: str, end: str) -> float:
    return (datetime.fromisoformat(a[end]) - datetime.fromisoformat(a[start])).total_seconds()


def barrier(port: int) -> None:
    """An OPTIONS from the PBX's address to a worker, answered: every packet that reached the
    worker's socket before it has been handled (and answered, if it ever would be)."""
    with sipforge.UdpPeer(LOCALHOST) as pbx:
        call_id = f"barrier-{time.monotonic_ns()}"
        pbx.send(sipforge.options((LOCALHOST, port), pbx.address, call_id), (LOCALHOST, port))
        pbx.wait_for(lambda ms: any(m.call_id == call_id and m.is_response for m in ms), 10,
                     f"the worker on port {port} to answer the PBX's OPTIONS")


def answers(peer: sipforge.UdpPeer) -> list[str]:
    return [m.start for m in peer.messages()]


def answered_attempt(d: Dialer, cid: int) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        return next((a for a in d.attempts(cid) if a["answered_at"] and not a["ended_at"]), None)

    return d.wait(probe, 30, "the call to be answered")


def dialog(d: Dialer, sipp: Sipp, call_id: str) -> sipforge.Dialog:
    return d.wait(lambda: sipforge.dialog_of(sipp.message_file, call_id), 10,
                  f"SIPp's trace of the 200 OK and ACK of {call_id}")


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return ""


def dropped(port: int, reason: str) -> float:
    """``dialer_sip_dropped_total{reason=...}`` now (0 while it is not exported)."""
    return sum(s.value for fam in text_string_to_metric_families(scrape(port))
               for s in fam.samples
               if s.name == "dialer_sip_dropped_total" and s.labels.get("reason") == reason)


def wait_dropped(port: int, reason: str, at_least: int, timeout: float = 5) -> float:
    """Wait until the drop counter reaches ``at_least`` (it may be reported up to ~2 s late)."""
    try:
        return wait_until(lambda: (lambda v: v if v >= at_least else None)(dropped(port, reason)),
                          timeout, f"dialer_sip_dropped_total{{reason={reason!r}}} >= {at_least}")
    except PeerError as exc:
        raise AssertionError(f"dialer_sip_dropped_total{{reason={reason!r}}} is "
                             f"{dropped(port, reason)}, wanted >= {at_least}") from exc


# --------------------------------------------------------------------------------------------
# forged in-dialog requests


def test_forged_bye_from_a_stranger_gets_no_answer_and_the_call_goes_on(
        start_sipp: StartSipp, dialer: MakeDialer) -> None:
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    d, cid = launch(dialer, sipp, ["1001"], message=MESSAGE, attempts=1, ring_timeout=10)
    attempt = answered_attempt(d, cid)
    ids = dialog(d, sipp, attempt["id"])
    port = sip_ports(d)[attempt["worker"]]
    with sipforge.UdpPeer(FORGER) as forger:
        forger.send(sipforge.forge_bye(ids, forger.address), (LOCALHOST, port))
        barrier(port)
        assert answers(forger) == [], "the forged BYE from 127.0.0.2 was answered"
        detail = finished(d, cid)
        assert answers(forger) == [], "the forger got an answer later"
    [attempt] = d.attempts(cid)
    assert (attempt["outcome"], attempt["keys"]) == ("contacted", "19"), attempt
    assert detail["state"] == "completed"
    assert sipp.ended_call_ids() == {attempt["id"]: "bye-received"}, \
        "the real far end did not get the dialer's BYE"
    assert_attempts_match_invites(d, cid, sipp)


def test_forged_reinvite_from_a_stranger_gets_no_answer_and_moves_no_audio(
        start_sipp: StartSipp, dialer: MakeDialer) -> None:
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    d, cid = launch(dialer, sipp, ["1001"], message=MESSAGE, attempts=1, ring_timeout=10)
    attempt = answered_attempt(d, cid)
    ids = dialog(d, sipp, attempt["id"])
    port = sip_ports(d)[attempt["worker"]]
    trap = sipforge.RtpTrap(FORGER, free_port(2))
    try:
        with sipforge.UdpPeer(FORGER) as forger:
            reinvite = sipforge.forge_reinvite(ids, forger.address, trap.peer.address)
            forger.send(reinvite, (LOCALHOST, port))
            barrier(port)
            assert answers(forger) == [], "the forged re-INVITE from 127.0.0.2 was answered"
            detail = finished(d, cid)
            assert answers(forger) == [], "the forger got an answer later"
        assert trap.count() == 0, "the call's audio went to the forger's SDP address"
    finally:
        trap.close()
    [attempt] = d.attempts(cid)
    assert (attempt["outcome"], attempt["keys"]) == ("contacted", "19"), attempt
    assert detail["state"] == "completed"
    assert sipp.ended_call_ids() == {attempt["id"]: "bye-received"}, \
        "the real far end did not get the dialer's BYE"
    assert_attempts_match_invites(d, cid, sipp)


# --------------------------------------------------------------------------------------------
# scanners


def test_options_from_a_scanner_get_no_answer(start_sipp: StartSipp, dialer: MakeDialer) -> None:
    sipp = start_sipp("answer_confirm")
    d = serve_idle(dialer, sipp)
    with sipforge.UdpPeer(SCANNER) as scanner:
        for index, port in sorted(sip_ports(d).items()):
            scanner.send(sipforge.options((LOCALHOST, port), scanner.address), (LOCALHOST, port))
            barrier(port)
            assert answers(scanner) == [], f"worker {index} answered a scanner at 127.0.0.3"
    assert_alive(d)


def test_options_from_the_pbx_are_answered_without_naming_the_worker(
        start_sipp: StartSipp, dialer: MakeDialer) -> None:
    sipp = start_sipp("answer_confirm")
    d = serve_idle(dialer, sipp)
    with sipforge.UdpPeer(LOCALHOST) as pbx:
        for index, port in sorted(sip_ports(d).items()):
            call_id = f"pbx-options-{index}"
            pbx.send(sipforge.options((LOCALHOST, port), pbx.address, call_id),
                     (LOCALHOST, port))
            [answer] = [m for m in pbx.wait_for(
                lambda ms: any(m.call_id == call_id for m in ms), 10,  # noqa: B023
                f"worker {index} to answer the PBX") if m.call_id == call_id]
            assert answer.status == 200, answer.start
            agent = answer.header("user-agent") or answer.header("server") or ""
            assert "worker" not in agent.lower(), f"worker {index} names itself: {agent!r}"


def test_allowed_sources_are_trusted_besides_the_trunk_hosts(
        start_sipp: StartSipp, dialer: MakeDialer) -> None:
    """``allowed_sources`` adds networks to the trunk's own host: 127.0.0.9 (in 127.0.0.8/29)
    is answered, 127.0.0.17 (outside it) is not."""
    sipp = start_sipp("answer_confirm")
    d = dialer(internal=trunk(sipp, allowed_sources=[TRUSTED_NET]), external=trunk(sipp))
    d.serve()
    port = wait_ready(d, 4)[0]
    with sipforge.UdpPeer(TRUSTED) as friend, sipforge.UdpPeer(UNTRUSTED) as stranger:
        stranger.send(sipforge.options((LOCALHOST, port), stranger.address), (LOCALHOST, port))
        friend.send(sipforge.options((LOCALHOST, port), friend.address, "friend"),
                    (LOCALHOST, port))
        friend.wait_for(lambda ms: any(m.call_id == "friend" and m.status == 200 for m in ms), 10,
                        f"an answer to {TRUSTED}, inside allowed_sources")
        barrier(port)
        assert answers(stranger) == [], f"{UNTRUSTED}, outside allowed_sources, was answered"


# --------------------------------------------------------------------------------------------
# INVITE floods while every call slot rings


def ringing_campaign(start_sipp: Callable[..., Sipp], dialer: Callable[..., Dialer], *,
                     workers: int) -> tuple[Sipp, Dialer, int]:
    """Every call slot of ``workers`` workers busy with a call that rings for ``RING`` s, and
    ``ROUNDS`` times as many recipients, so that calls end and new ones start all along."""
    sipp = start_sipp("no_answer")
    slots = 4 * workers
    d, cid = launch(dialer, sipp, numbers(ROUNDS * slots), workers=workers, attempts=1,
                    ring_timeout=RING, max_calls=slots)
    sipp.wait_for_invites(slots, 60)
    return sipp, d, cid


def assert_ringing_calls_unharmed(d: Dialer, cid: int, sipp: Sipp, workers: int) -> None:
    """After a flood: no worker restarted, every call rang its full time and no longer."""
    finished(d, cid, RING + 60)
    assert_alive(d)
    assert starts(d) == workers, f"{starts(d) - workers} worker restart(s)\n{restarts_log(d)}"
    attempts = d.attempts(cid)
    lost = [a for a in attempts if a["outcome"] == "worker_lost"]
    assert not lost, f"{len(lost)} call(s) lost with their worker: {lost[:3]}"
    assert all(a["ended_at"] for a in attempts), "an attempt never ended"
    late = [(a["id"], seconds(a, "created_at", "ended_at")) for a in attempts
            if seconds(a, "created_at", "ended_at") > RING + 5]
    assert not late, f"calls ended later than the ring timeout + 5 s: {late}"
    early = [(a["id"], round(seconds(a, "created_at", "ended_at"), 2), a["outcome"], a["reason"])
             for a in attempts
             if not a["answered_at"] and seconds(a, "created_at", "ended_at") < RING - 1]
    assert not early, f"{len(early)} call(s) cut before the ring timeout: {early[:5]}"
    assert_attempts_match_invites(d, cid, sipp)
    assert {a["outcome"] for a in attempts} == {"no_answer"}, \
        sorted((a["outcome"], a["reason"]) for a in attempts)


def flood_every_worker(d: Dialer, source: str, *, linger: float) -> list[sipforge.Flooder]:
    """FLOOD_COUNT INVITEs at FLOOD_RATE from ``source`` at every worker's SIP port, all sent."""
    ports = sorted(sip_ports(d).values())
    with sipforge.flooding(source, [(LOCALHOST, p) for p in ports], count=FLOOD_COUNT,
                           rate=FLOOD_RATE, linger=linger) as flooders:
        pass
    assert all(f.result.sent == FLOOD_COUNT and not f.result.error for f in flooders), \
        [(f.result.sent, f.result.error) for f in flooders]
    return flooders


def test_invite_flood_from_a_stranger_while_every_slot_rings(
        start_sipp: StartSipp, dialer: MakeDialer) -> None:
    sipp, d, cid = ringing_campaign(start_sipp, dialer, workers=4)
    flooders = flood_every_worker(d, SCANNER, linger=1.0)
    assert_ringing_calls_unharmed(d, cid, sipp, workers=4)
    answered = {f.target[1]: dict(f.result.codes()) for f in flooders if f.result.finals}
    assert not answered, f"workers answered the flooder at 127.0.0.3: {answered}"


def test_invite_flood_from_the_pbx_address_gets_403_while_every_slot_rings(
        start_sipp: StartSipp, dialer: MakeDialer) -> None:
    sipp, d, cid = ringing_campaign(start_sipp, dialer, workers=4)
    flooders = flood_every_worker(d, LOCALHOST, linger=10.0)
    assert_ringing_calls_unharmed(d, cid, sipp, workers=4)
    for f in flooders:
        assert f.result.codes() == {403: f.result.sent}, \
            f"worker on port {f.target[1]} answered {dict(f.result.codes())} " \
            f"({f.result.sent - len(f.result.finals)} INVITEs unanswered)"


@pytest.mark.flood_full
@pytest.mark.skipif(os.environ.get("DIALER_FULL_FLOOD") != "1",
                    reason="the full flood runs only with DIALER_FULL_FLOOD=1")
def test_full_invite_flood_kills_no_worker(start_sipp: StartSipp, dialer: MakeDialer) -> None:
    """10 workers, every slot ringing, 500 INVITEs at 100/s at each from a stranger."""
    workers = 10
    sipp, d, cid = ringing_campaign(start_sipp, dialer, workers=workers)
    ports = sorted(sip_ports(d).values())
    with sipforge.flooding(SCANNER, [(LOCALHOST, p) for p in ports], count=500, rate=100.0,
                           linger=1.0) as flooders:
        pass
    assert all(f.result.sent == 500 for f in flooders), [f.result.sent for f in flooders]
    finished(d, cid, RING + 90)
    assert_alive(d)
    assert starts(d) == workers, f"{starts(d) - workers} worker restart(s)\n{restarts_log(d)}"
    assert not [a for a in d.attempts(cid) if a["outcome"] == "worker_lost"]
    assert_attempts_match_invites(d, cid, sipp)


# --------------------------------------------------------------------------------------------
# RFC 4475 torture messages


def torture_tcp(port: int, messages: list[tuple[str, bytes]]) -> str:
    """Each message ``TORTURE_ROUNDS`` times over its own TCP connection to ``port``; why that
    was impossible ('' when it was done)."""
    if not sipforge.tcp_listening((LOCALHOST, port)):
        return f"no TCP listener on the worker's SIP port {port}"
    for _ in range(TORTURE_ROUNDS):
        for name, data in messages:
            try:
                sipforge.send_tcp((LOCALHOST, port), data)
            except OSError as exc:
                return f"{name} to TCP port {port}: {exc}"
    return ""


def test_torture_messages_over_udp_and_tcp_during_a_campaign(
        start_sipp: StartSipp, dialer: MakeDialer) -> None:
    """Each of the 49 messages, three times, at every worker over UDP and over TCP, from the
    PBX's address while a campaign runs. The external trunk (unused by the campaign's
    extensions) is TCP so that every worker listens on TCP too, on its UDP port number."""
    messages = sipforge.torture_messages(TORTURE_DIR)
    assert len(messages) == 49, f"{len(messages)} messages in {TORTURE_DIR}"
    sipp = start_sipp("answer_confirm")
    d, cid = launch(dialer, sipp, numbers(12), message=4.0, attempts=2, retry_delay=0.3,
                    max_calls=4, answer_confirm=False, listen_confirm=False,
                    external=trunk(sipp, transport="tcp"))
    sipp.wait_for_invites(1, 30)
    ports = sip_ports(d)
    with sipforge.UdpPeer(LOCALHOST) as pbx:
        for _ in range(TORTURE_ROUNDS):
            for port in ports.values():
                for _name, data in messages:
                    pbx.send(data, (LOCALHOST, port))
                    pbx.drain()
                barrier(port)
    with ThreadPoolExecutor(len(ports)) as pool:  # one TCP sender per worker
        refused = {i: r for i, r in zip(ports, pool.map(
            lambda port: torture_tcp(port, messages), ports.values()), strict=True) if r}
    detail = finished(d, cid, 120)
    assert_alive(d)
    assert starts(d) == 4, f"{starts(d) - 4} worker restart(s)\n{restarts_log(d)}"
    assert not refused, refused
    assert detail["state"] == "completed", detail["state"]
    assert {r["state"] for r in detail["recipients"]} == {"contacted"}, \
        sorted((r["number"], r["state"]) for r in detail["recipients"])
    assert_attempts_match_invites(d, cid, sipp)
    assert {a["outcome"] for a in d.attempts(cid)} == {"contacted"}


# --------------------------------------------------------------------------------------------
# the drop counter


def test_dropped_foreign_packets_are_counted_in_the_metrics(
        start_sipp: StartSipp, dialer: MakeDialer) -> None:
    sipp = start_sipp("answer_confirm")
    metrics = free_port()
    d = serve_idle(dialer, sipp, metrics_port=metrics)
    wait_until(lambda: scrape(metrics), 10, "the metrics endpoint")
    per_worker = 5
    sent = 0
    with sipforge.UdpPeer(SCANNER) as scanner, sipforge.UdpPeer(FORGER) as forger:
        for port in sip_ports(d).values():
            for i in range(per_worker):
                scanner.send(sipforge.options((LOCALHOST, port), scanner.address),
                             (LOCALHOST, port))
                forger.send(sipforge.invite((LOCALHOST, port), forger.address,
                                            f"forged-{port}-{i}"), (LOCALHOST, port))
                sent += 2
            barrier(port)
    wait_dropped(metrics, "foreign_source", sent)
    assert_alive(d)
