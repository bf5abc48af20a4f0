"""Trunks end to end (issue 13): the real ``dialer serve`` against SIPp far ends, one per trunk.

A trunk where nothing listens is ``unreachable`` within seconds and taken out of service; a
route moves on from a trunk that answers 503; ``max_calls`` and ``max_cps`` hold on the wire;
each template's route reaches only its own trunk; the workers listen on known SIP ports.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable

import pytest

from testkit import Sipp
from testkit.harness import ROOT, Dialer
from testkit.net import free_port
from testkit.wait import until

pytestmark = pytest.mark.sip

MESSAGE = 1.0
KEY1_MS = 1000
KEY9_MS = int((MESSAGE + 1.5) * 1000)
CONFIRMING = {"key1_ms": KEY1_MS, "key9_ms": KEY9_MS}


def ext(n: int, first: int = 0) -> list[str]:
    return [f"+3906698{first + i:05d}" for i in range(n)]


def when(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of ``text`` (labels given must all match)."""
    for line in text.splitlines():
        head = line.split(" ", 1)[0]
        if (head == name or head.startswith(name + "{")) and all(
                f'{k}="{v}"' in head for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def passes(port: int) -> int:
    """Scheduling passes so far (the decision histogram's count)."""
    return int(metric(scrape(port), "dialer_scheduler_decision_seconds_count") or 0)


def test_a_trunk_where_nothing_listens_is_unreachable_fast_then_out_of_service(
        dialer: Callable[..., Dialer], start_sipp: Callable[..., Sipp]) -> None:
    sipp = start_sipp("answer_confirm", keys=CONFIRMING)
    dead = f"sip:127.0.0.1:{free_port()}"  # nothing listens there
    mport = free_port()
    d = dialer(internal={"uri": sipp.uri},
               external={"uri": dead, "health_window": 5, "health_failures": 3,
                         "backoff": 120},
               metrics_port=mport)
    d.cli("settings", "set", "--max-external", "2")
    d.template("T", ext(6), message=MESSAGE, attempts=3, retry_delay=1, ring_timeout=30)
    cid = d.start_campaign("T")
    d.serve()

    def tripped() -> bool | None:
        h = d.store.trunk_health(dt.datetime.now().timestamp())
        return True if "external" in h and not h["external"].healthy else None

    d.wait(tripped, 40, "the dead trunk to be taken out of service")
    tripped_at = dt.datetime.now().timestamp()
    # the retries are due one second after each failure: let a dozen passes go by after that
    first = passes(mport)
    until(lambda: passes(mport) >= first + 12 or None, 30, "scheduling passes")
    attempts = d.attempts(cid)
    assert 3 <= len(attempts) <= 4, attempts  # the 4th was in flight when the 3rd tripped it
    for a in attempts:
        assert a["outcome"] == "unreachable", a
        assert when(a["ended_at"]) - when(a["created_at"]) < 10, a  # not the 30 s ring timeout
        assert when(a["created_at"]) < tripped_at
    detail = d.campaign(cid)
    assert sum(r["calls"] for r in detail["recipients"]) == len(attempts)
    assert metric(scrape(mport), "dialer_trunk_healthy", trunk="external") == 0
    assert metric(scrape(mport), "dialer_trunk_healthy", trunk="internal") == 1
    show = " ".join(d.cli("campaign", "show", str(cid)).stdout.split())  # as wrapped at 80
    assert re.search(r"trunk external: unhealthy until \d\d:\d\d:\d\d \(3 of the last \d "
                     r"attempts 3 unreachable\)", show), show
    events = [e for e in d.store.events_of(cid) if e["kind"] == "trunk_unhealthy"]
    assert len(events) == 1 and events[0]["detail"]["trunk"] == "external"


def test_a_route_moves_on_from_a_trunk_that_answers_503(
        dialer: Callable[..., Dialer], start_sipp: Callable[..., Sipp]) -> None:
    full = start_sipp("congested")
    good = start_sipp("answer_confirm", keys=CONFIRMING)
    d = dialer(internal={"uri": good.uri}, external={"uri": good.uri},
               trunks={"carrier-a": {"uri": full.uri, "health_window": 5,
                                     "health_failures": 3, "backoff": 300},
                       "carrier-b": {"uri": good.uri}},
               routes={"carriers": ["carrier-a", "carrier-b"]})
    numbers = ext(6)
    d.template("T", numbers, message=MESSAGE, attempts=3, retry_delay=1, ring_timeout=10,
               external_route="carriers")
    cid = d.start_campaign("T")
    d.serve()
    detail = d.wait_state(cid, ["completed", "incomplete"], 90)
    assert detail["state"] == "completed"
    assert all(r["state"] == "contacted" for r in detail["recipients"])
    attempts = d.attempts(cid)
    # every attempt is one INVITE one of the two far ends received, and the other way round
    assert sorted(a["id"] for a in attempts) == sorted(
        [*full.received_call_ids(), *good.received_call_ids()])
    by_trunk = collections.Counter((a["trunk"], a["outcome"]) for a in attempts)
    assert by_trunk[("carrier-b", "contacted")] == 6
    assert set(by_trunk) <= {("carrier-a", "congestion"), ("carrier-b", "contacted")}
    congested = by_trunk[("carrier-a", "congestion")]
    assert 3 <= congested <= 6
    for r in detail["recipients"]:  # a congestion attempt counted once, the call that got through
        assert r["calls"] == r["attempts"] + 1 and r["attempts"] <= 1
    h = d.store.trunk_health(dt.datetime.now().timestamp())
    assert not h["carrier-a"].healthy and "congestion" in h["carrier-a"].reason


def test_max_calls_and_max_cps_hold_on_the_wire(
        dialer: Callable[..., Dialer], start_sipp: Callable[..., Sipp]) -> None:
    a = start_sipp("answer_confirm", keys=CONFIRMING)
    b = start_sipp("answer_confirm", keys=CONFIRMING)
    paced = start_sipp("busy")
    d = dialer(internal={"uri": paced.uri, "max_cps": 5}, external={"uri": b.uri},
               trunks={"carrier-a": {"uri": a.uri, "max_calls": 3}},
               routes={"carriers": ["carrier-a", "external"]}, workers=6)
    d.template("A", ext(10), message=MESSAGE, attempts=1, ring_timeout=10,
               external_route="carriers")
    d.template("P", [str(2000 + i) for i in range(20)], message=MESSAGE, attempts=1)
    ca, cp = d.start_campaign("A"), d.start_campaign("P")
    d.serve()
    for cid in (ca, cp):
        d.wait_state(cid, ["completed", "incomplete"], 90)
    assert a.peak_calls() <= 3 and len(a.received_call_ids()) >= 3
    assert len(a.received_call_ids()) + len(b.received_call_ids()) == 10
    invites = [e.clock_ms for e in paced.events() if e.kind == "INVITE"]
    assert len(invites) == 20
    per_second = collections.Counter(ms // 1000 for ms in invites)
    assert max(per_second.values()) <= 5, per_second
    # and the rate was the limit, not something slower: 20 calls took at least 3 s
    assert (max(invites) - min(invites)) >= 3000


def test_each_templates_route_reaches_only_its_own_trunk(
        dialer: Callable[..., Dialer], start_sipp: Callable[..., Sipp]) -> None:
    sa, sb, other = start_sipp("busy"), start_sipp("busy"), start_sipp("busy")
    d = dialer(internal={"uri": other.uri}, external={"uri": other.uri},
               trunks={"carrier-a": {"uri": sa.uri, "pai": True},
                       "carrier-b": {"uri": sb.uri}},
               routes={"ra": ["carrier-a"], "rb": ["carrier-b"]})
    d.template("A", ext(4), message=MESSAGE, attempts=1, external_route="ra",
               caller_number="0612345678")
    d.template("B", ext(4, first=100), message=MESSAGE, attempts=1, external_route="rb",
               caller_number="0612345678")
    ca, cb = d.start_campaign("A"), d.start_campaign("B")
    d.serve()
    for cid in (ca, cb):
        d.wait_state(cid, ["completed", "incomplete"], 60)
    number_of = {at["id"]: at["number"] for cid in (ca, cb) for at in d.attempts(cid)}
    assert sorted(number_of[c] for c in sa.received_call_ids()) == ext(4)
    assert sorted(number_of[c] for c in sb.received_call_ids()) == ext(4, first=100)
    assert other.received_call_ids() == []
    # pai = true on carrier-a only: the caller number asserted on each of its INVITEs
    pai = re.findall(r"(?im)^P-Asserted-Identity: (.*)$", sa.message_file.read_text())
    assert len(pai) == 4 and all("sip:0612345678@" in v for v in pai), pai
    assert "P-Asserted-Identity" not in sb.message_file.read_text()


def test_a_tcp_trunk_that_refuses_the_connection_is_unreachable_at_once(
        dialer: Callable[..., Dialer], start_sipp: Callable[..., Sipp]) -> None:
    sipp = start_sipp("busy")
    d = dialer(internal={"uri": f"sip:127.0.0.1:{free_port()}", "transport": "tcp"},
               external={"uri": sipp.uri})
    d.template("T", ["101", "102"], message=MESSAGE, attempts=1, ring_timeout=30)
    cid = d.start_campaign("T")
    d.serve()
    d.wait_state(cid, ["completed", "incomplete"], 30)
    for a in d.attempts(cid):
        assert a["outcome"] == "unreachable" and a["status"] in (408, 503), a
        assert when(a["ended_at"]) - when(a["created_at"]) < 10, a


def _listening(ports: range) -> dict[int, set[str]]:
    """Which of ``ports`` have a UDP and/or TCP listener, by ``ss``."""
    seen: dict[int, set[str]] = {p: set() for p in ports}
    for proto, flag in (("udp", "-lun"), ("tcp", "-ltn")):
        for line in subprocess.run(["ss", flag], capture_output=True, text=True,
                                   check=True).stdout.splitlines()[1:]:
            local = line.split()[3]
            port = int(local.rsplit(":", 1)[1])
            if port in seen:
                seen[port].add(proto)
    return seen


def test_workers_listen_on_known_ports_and_a_taken_one_is_one_line(
        dialer: Callable[..., Dialer], start_sipp: Callable[..., Sipp]) -> None:
    sipp = start_sipp("busy")
    base = 15060 if all(_port_free(p) for p in range(15060, 15066)) else free_port(6)
    d = dialer(internal={"uri": sipp.uri, "transport": "tcp"}, external={"uri": sipp.uri},
               workers=3, sip={"port": base})
    d.serve()
    until(lambda: len(d.worker_pids()) == 3 or None, 30, "three workers")
    until(lambda: all(v == {"udp", "tcp"} for v in _listening(range(base, base + 3)).values())
          or None, 30, f"workers on {base}-{base + 2}")
    assert f"SIP workers listen on 127.0.0.1:{base}-{base + 2} (UDP and TCP)" in d.log_text()
    assert _listening(range(base + 3, base + 4))[base + 3] == set()
    # a second installation wanting the same ports: one clear line, exit 1
    other = dialer(internal={"uri": sipp.uri}, external={"uri": sipp.uri}, workers=3,
                   sip={"port": base + 1})
    proc = subprocess.run([sys.executable, "-m", "cli.app", "serve", "--config",
                           str(other.config)], cwd=ROOT, env={**other.env}, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and f"ports {base + 1}-{base + 3}" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def _port_free(port: int) -> bool:
    import socket

    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True

