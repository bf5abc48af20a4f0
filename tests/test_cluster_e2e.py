"""Several real ``dialer serve`` nodes on one PostgreSQL database, calling one SIPp far end.

Each node has its own loopback address (127.0.0.2, .3, .4: its SIP and RTP bind there), data
directory and SIP workers; the database is a throwaway one. The scenarios of the issue:

* three nodes under a global limit of 12: SIPp never sees a 13th call, every node places calls,
  no recipient is in two calls at once, attempts = INVITEs by Call-ID, the campaign completes;
* ``kill -9`` of a node and its workers mid-campaign: within 30 s the others settle its open
  calls as ``node_lost``, nobody goes past their attempts, the campaign completes;
* a node cut off from the database (its connections go through a TCP relay the test cuts):
  it hangs its calls up before its lease ends (SIPp sees them end), nobody calls those
  recipients before then, and it rejoins with a new generation when the link comes back;
* two live nodes with one name: the second refuses to start; so does a second node on SQLite.

CI runs the first with ``DIALER_CLUSTER_RECIPIENTS`` recipients (default 60); the full size of
the issue is ``DIALER_CLUSTER_RECIPIENTS=300 pytest tests/test_cluster_e2e.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from testkit import Sipp
from testkit.harness import ROOT, Dialer
from testkit.tcpproxy import TcpProxy
from testkit.wait import until
from tests.fixtures_core import PG_HOST, PG_PORT, _reset_pg, pg_database  # noqa: F401

pytestmark = [pytest.mark.sip, pytest.mark.postgres]

MESSAGE = 1.0
KEYS = {"key1_ms": 1000, "key9_ms": int((MESSAGE + 1.5) * 1000)}
RECIPIENTS = int(os.environ.get("DIALER_CLUSTER_RECIPIENTS", "60"))


@pytest.fixture
def pg(pg_database: str) -> str:  # noqa: F811
    _reset_pg(pg_database)
    return pg_database


def numbers(n: int) -> list[str]:
    return [str(2000 + i) for i in range(n)]


def make_nodes(dialer: Callable[..., Dialer], sipp: Sipp, url: str, n: int, *,
               workers: int = 4, cluster: dict[str, Any] | None = None,
               urls: dict[int, str] | None = None) -> list[Dialer]:
    trunk = {"uri": sipp.uri}
    return [dialer(internal=trunk, external=trunk, workers=workers,
                   db_url=(urls or {}).get(i, url), check_url=url, node=f"n{i + 1}",
                   bind=f"127.0.0.{i + 2}", cluster=cluster) for i in range(n)]


def overlapping(attempts: list[dict[str, Any]]) -> list[int]:
    """Recipients with two attempts open at the same time (by the database's own times)."""
    by: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for a in attempts:
        by[a["recipient_id"]].append((a["created_at"], a["ended_at"] or "9999"))
    bad = []
    for rid, spans in by.items():
        spans.sort()
        if any(nxt[0] < cur[1] for cur, nxt in zip(spans, spans[1:], strict=False)):
            bad.append(rid)
    return bad


def finished(d: Dialer, cid: int, timeout: float) -> dict[str, Any]:
    return d.wait_state(cid, ["completed", "incomplete"], timeout)


def test_three_nodes_share_a_global_limit_of_twelve(start_sipp, dialer, pg: str) -> None:
    sipp = start_sipp("answer_confirm", keys=KEYS)
    nodes = make_nodes(dialer, sipp, pg, 3)
    first = nodes[0]
    first.cli("settings", "set", "--max-calls", "12")
    first.template("T", numbers(RECIPIENTS), message=MESSAGE, attempts=3, ring_timeout=10)
    cid = first.start_campaign("T")
    for d in nodes:
        d.serve()
    detail = finished(first, cid, 60 + RECIPIENTS * 1.5)
    assert detail["state"] == "completed"
    attempts = first.attempts(cid)
    assert sipp.peak_calls() <= 12, f"SIPp saw {sipp.peak_calls()} calls at once"
    assert sorted(a["id"] for a in attempts) == sorted(sipp.received_call_ids())
    per_node = Counter(a["node"] for a in attempts)
    assert set(per_node) == {"n1", "n2", "n3"}, per_node
    assert not overlapping(attempts)
    assert {a["outcome"] for a in attempts} == {"contacted"}
    assert len(attempts) == RECIPIENTS  # one call each
    rows = {n["name"]: n for n in first.store.nodes()}
    assert {k: v["state"] for k, v in rows.items()} == {"n1": "live", "n2": "live", "n3": "live"}
    print(f"\n{RECIPIENTS} recipients: peak {sipp.peak_calls()} at SIPp, per node "
          f"{dict(sorted(per_node.items()))}, {len(attempts)} attempts = INVITEs")


def test_kill_9_of_a_node_settles_its_calls_within_30_s(start_sipp, dialer, pg: str) -> None:
    sipp = start_sipp("answer_confirm", keys=KEYS)
    nodes = make_nodes(dialer, sipp, pg, 3)
    first, victim = nodes[0], nodes[1]
    first.cli("settings", "set", "--max-calls", "12")
    first.template("T", numbers(30), message=MESSAGE, attempts=3, ring_timeout=10,
                   retry_delay=5)  # n2's recipients are retried soon after they are settled
    cid = first.start_campaign("T")
    for d in nodes:
        d.serve()

    def victim_calls() -> list[str] | None:
        ids = [a["id"] for a in first.attempts(cid) if a["node"] == "n2" and not a["ended_at"]]
        answered = [a for a in first.attempts(cid) if a["id"] in ids and a["answered_at"]]
        return ids if len(answered) >= 2 else None

    carried = first.wait(victim_calls, 60, "node n2 carrying two answered calls")
    assert victim.daemon is not None
    victim.daemon.kill()  # kill -9 of the daemon and of its workers
    victim.kill_workers()
    killed = time.monotonic()
    victim.daemon.wait()

    def settled() -> dict[str, Any] | None:
        got = {a["id"]: a for a in first.attempts(cid) if a["id"] in carried}
        return got if all(a["ended_at"] for a in got.values()) else None

    got = first.wait(settled, 35, "the other nodes settling n2's calls")
    took = time.monotonic() - killed
    assert took <= 30, f"{took:.1f} s"
    assert {a["outcome"] for a in got.values()} <= {"node_lost", "contacted"}
    assert "node_lost" in {a["outcome"] for a in got.values()}
    detail = finished(first, cid, 120)
    assert detail["state"] == "completed"
    attempts = first.attempts(cid)
    counted = Counter(a["recipient_id"] for a in attempts
                      if a["outcome"] not in ("interrupted", "trunk_down"))
    assert max(counted.values()) <= 3
    assert not overlapping(attempts)
    # every INVITE has its attempt; an attempt without one is a call n2 had claimed but not
    # yet sent when it was killed (the attempt is recorded first): settled node_lost
    invites = set(sipp.received_call_ids())
    assert invites <= {a["id"] for a in attempts}
    assert {(a["node"], a["outcome"]) for a in attempts if a["id"] not in invites} \
        <= {("n2", "node_lost")}
    states = {n["name"]: n["state"] for n in first.store.nodes()}
    assert states["n2"] == "lost" and states["n1"] == states["n3"] == "live"
    print(f"\nn2 killed with {len(carried)} call(s): settled node_lost after {took:.1f} s")


def test_a_node_cut_off_from_the_database_hangs_up_before_its_lease_ends(
        start_sipp, dialer, pg: str) -> None:
    lease = {"lease": 10, "heartbeat": 1}  # calls cut 2 s before the lease ends: room to spare
    proxy = TcpProxy((PG_HOST, PG_PORT)).start()
    try:
        sipp = start_sipp("answer_confirm", keys={"key1_ms": 1000, "key9_ms": 10_000})
        via = pg.replace(f"@{PG_HOST}:{PG_PORT}/", f"@127.0.0.1:{proxy.port}/")
        nodes = make_nodes(dialer, sipp, pg, 2, cluster=lease, urls={0: via})
        cut_node, other = nodes
        other.cli("settings", "set", "--max-calls", "6")
        other.template("T", numbers(12), message=8.0, attempts=3, ring_timeout=10,
                       retry_delay=5)  # a settled recipient is not called inside the lease
        cid = other.start_campaign("T")
        for d in nodes:
            d.serve()

        def answered_on_n1() -> list[str] | None:
            ids = [a["id"] for a in other.attempts(cid)
                   if a["node"] == "n1" and a["answered_at"] and not a["ended_at"]]
            return ids if len(ids) >= 2 else None

        carried = other.wait(answered_on_n1, 60, "n1 carrying two answered calls")
        row = other.store.node_lease("n1")
        assert row is not None
        proxy.cut()
        # SIPp sees n1's calls end, before n1's lease ends
        until(lambda: all(c in sipp.ended_call_ids() for c in carried) or None,
              row.lease_until - time.time() + 1, "n1 hanging up its calls",
              detail=cut_node.log_tail)
        hung_up = time.time()
        assert hung_up < row.lease_until, f"hung up {hung_up - row.lease_until:.1f} s late"
        assert all(sipp.ended_call_ids()[c] == "bye-received" for c in carried)
        # nobody calls those recipients before n1's lease (and its margin) ran out
        events = sipp.events()
        ends = {e.call_id: i for i, e in enumerate(events) if e.kind == "END"}
        by_id = {a["id"]: a for a in other.attempts(cid)}
        for c in carried:
            rid = by_id[c]["recipient_id"]
            later = [i for i, e in enumerate(events) if e.kind == "INVITE"
                     and by_id.get(e.call_id, {}).get("recipient_id") == rid and e.call_id != c]
            assert all(i > ends[c] for i in later), "a recipient was called while n1 held it"
        def settled() -> dict[str, dict[str, Any]] | None:
            now = {a["id"]: a for a in other.attempts(cid)}
            return now if all(now[c]["ended_at"] for c in carried) else None

        ended = other.wait(settled, 30, "n1's calls closed")
        for c in carried:  # and by the database's clock: not before the lease ended
            rid = ended[c]["recipient_id"]
            for a in ended.values():
                if a["recipient_id"] == rid and a["id"] != c:
                    started = dt.datetime.fromisoformat(a["created_at"]).timestamp()
                    assert started >= row.lease_until, "called again inside n1's lease"
        # interrupted: n1's own report of its fenced calls, when it got the database back
        # before n2 passed; node_lost: settled by n2
        assert {ended[c]["outcome"] for c in carried} <= {"node_lost", "interrupted"}
        assert "fenced" in cut_node.log_text()
        # the link comes back: n1 rejoins with a new lease
        proxy.restore()

        def rejoined() -> dict[str, Any] | None:
            n1 = {n["name"]: n for n in other.store.nodes()}["n1"]
            return n1 if n1["state"] == "live" and n1["generation"] >= 2 else None

        n1 = cut_node.wait(rejoined, 30, "n1 rejoining")
        assert n1["generation"] >= 2
        detail = finished(other, cid, 120)
        assert detail["state"] == "completed"
        attempts = other.attempts(cid)
        assert not overlapping(attempts)
        # every INVITE has its attempt; one without (a dial that reached a worker just past
        # its fence) is n1's and did not count
        invites = set(sipp.received_call_ids())
        assert invites <= {a["id"] for a in attempts}
        assert {(a["node"], a["outcome"]) for a in attempts if a["id"] not in invites} \
            <= {("n1", "interrupted"), ("n1", "node_lost")}
    finally:
        proxy.stop()


def test_two_live_nodes_with_one_name_refuse_to_run_together(start_sipp, dialer,
                                                            pg: str) -> None:
    sipp = start_sipp("answer_confirm", keys=KEYS)
    a, b = make_nodes(dialer, sipp, pg, 2)
    b.config.write_text(b.config.read_text().replace('node = "n2"', 'node = "n1"'))
    a.serve()
    proc = serve_once(b)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "node 'n1' is already running" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_a_second_node_on_sqlite_is_refused(start_sipp, dialer) -> None:
    sipp = start_sipp("answer_confirm", keys=KEYS)
    a = dialer(internal={"uri": sipp.uri}, external={"uri": sipp.uri})
    a.serve()
    second = a.tmp / "second.toml"
    second.write_text(a.config.read_text().replace(f'dir = "{a.tmp}/data"',
                                                   f'dir = "{a.tmp}/data2"'))
    proc = subprocess.run([sys.executable, "-m", "cli.app", "serve", "--config", str(second)],
                          cwd=ROOT, env={**a.env, "DIALER_DB": a.db_url}, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "SQLite serves one node" in lines[0], proc.stderr


def serve_once(d: Dialer) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.app", "serve", "--config", str(d.config)],
                          cwd=ROOT, env={**d.env, "DIALER_DB": d.db_url}, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)

