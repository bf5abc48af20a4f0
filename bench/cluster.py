"""Benchmark: several ``dialer serve`` nodes deciding against one PostgreSQL database.

    python bench/cluster.py                          # 1, 2, 4 and 8 nodes, 100,000 recipients
    python bench/cluster.py --nodes 1 2 --recipients 5000 --seconds 10
    python bench/cluster.py --sip                    # and one real-SIP run: 2 nodes, 200 calls

Each node is a process running the real ``Daemon`` loop on the real ``SqlStore`` (PostgreSQL,
psycopg 3) with its lease, against a fake gateway on the wall clock: a dialled call ends
``contacted`` after 2-4 s (no SIP). One campaign of ``--recipients`` recipients, global limit
``--limit`` (500), every node able to hold the whole limit, so that the limit, not a node,
binds. For ``--seconds`` per configuration, it reports the scheduling decisions per second (all
nodes), their duration p50/p99, the lock wait inside them (the ``FOR UPDATE`` of the settings
row that serialises the decisions of every node), the calls placed per second, and the open
attempts sampled from the database every 50 ms by a separate connection: their peak, and how
many samples exceeded the limit (must be 0).

``--sip`` adds one run with real ``dialer serve`` processes, SIP workers and a SIPp far end:
two nodes on 127.0.0.2 and .3, global limit 200, ``--sip-recipients`` recipients: peak calls
at SIPp, attempts = INVITEs, the split between the nodes, the time to complete.

A throwaway database ``dialer_bench_<random>`` is created on the server of ``--pg`` (default
the machine's 127.0.0.1:5432, trust auth) and dropped at the end. ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from dialer import ipc  # noqa: E402
from dialer.config import Config, TrunkConfig  # noqa: E402
from dialer.core.cluster import NodeLoad  # noqa: E402
from dialer.core.domain import CampaignSettings, Kind  # noqa: E402
from dialer.core.recipients import Recipient  # noqa: E402
from dialer.daemon import Daemon  # noqa: E402
from dialer.gateway import GatewayEvent  # noqa: E402
from dialer.storage.store import SqlStore  # noqa: E402

AUDIO = b"bench audio"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


# ----- one node -----


class TimedStore(SqlStore):
    """``SqlStore`` timing each decision and the lock wait at its start."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.decisions: list[float] = []
        self.lock_waits: list[float] = []

    def _settings_row(self, s: Any) -> Any:
        started = time.perf_counter()
        try:
            return super()._settings_row(s)
        finally:
            self.lock_waits.append(time.perf_counter() - started)

    def tick(self, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().tick(**kw)
        finally:
            self.decisions.append(time.perf_counter() - started)


class WallGateway:
    """A gateway on the wall clock: every call is answered, confirmed and ends after 2-4 s."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.calls: dict[str, float] = {}  # call id -> start
        self.ends: list[tuple[float, str]] = []
        self.rng = random.Random(seed)
        self.dialled = 0

    def attach(self) -> tuple[list[GatewayEvent], set[str]]:
        return [], set()

    def start(self, size: int) -> None:
        pass

    def resize(self, size: int) -> None:
        pass

    def free_slots(self) -> int:
        return self.capacity - len(self.calls)

    def busy_slots(self) -> int:
        return len(self.calls)

    def node_load(self) -> NodeLoad:
        return NodeLoad(slots=self.capacity)

    def demand(self, calls: int) -> None:
        pass  # a fixed number of simulated slots: nothing to start or retire

    def ready_count(self) -> int:
        return 1

    def pool_size(self) -> int:
        return 1

    def dial(self, message: ipc.Dial) -> int | None:
        now = time.time()
        self.calls[message.call_id] = now
        self.ends.append((now + self.rng.uniform(2.0, 4.0), message.call_id))
        self.ends.sort()
        self.dialled += 1
        return 0

    def hangup(self, call_id: str) -> None:
        self.ends = [(t if c != call_id else 0.0, c) for t, c in self.ends]
        self.ends.sort()

    def trust(self, sources: list[str]) -> None:
        pass

    def trunk_state(self, trunk: str, up: bool, reason: str) -> None:
        pass

    def lease(self, valid_for: float) -> None:
        pass

    def poll(self, timeout: float) -> list[GatewayEvent]:
        now = time.time()
        wake = now + timeout
        if self.ends:
            wake = min(wake, self.ends[0][0])
        if wake > now:
            time.sleep(wake - now)
        now = time.time()
        out: list[GatewayEvent] = []
        while self.ends and self.ends[0][0] <= now:
            _, cid = self.ends.pop(0)
            start = self.calls.pop(cid)
            out.append((0, ipc.Ended(call_id=cid, status=200, reason="bench", q850=None,
                                     outcome="contacted", answered_at=start + 0.5, keys="19",
                                     answer_confirmed_at=start + 1.0,
                                     listen_confirmed_at=start + 1.5, at=now)))
        return out

    def ack(self) -> None:
        pass

    def next_wakeup_in(self) -> float | None:
        return None

    def begin_shutdown(self) -> None:
        pass

    def active(self) -> bool:
        return False

    def close(self, timeout: float) -> None:
        pass

    def detach(self) -> None:
        pass


def run_node(name: str, url: str, capacity: int, seconds: float, tmp: str,
             results: Any) -> None:
    store = TimedStore(url)
    gateway = WallGateway(capacity, seed=hash(name) & 0xFFFF)
    config = Config(path=None, database_url=url, node=name, data_dir=Path(tmp) / name,
                    trunks={"internal": TrunkConfig(name="internal", uri="sip:pbx.bench"),
                            "external": TrunkConfig(name="external", uri="sip:gw.bench")})
    d = Daemon(config, store, gateway=gateway, handle_signals=False,
               durations=lambda _path: 2.0)
    d.start()
    end = time.time() + seconds
    started = time.process_time()
    while time.time() < end:
        d.step()
    cpu = time.process_time() - started
    results.put({"node": name, "decisions": store.decisions, "lock_waits": store.lock_waits,
                 "dialled": gateway.dialled, "cpu": cpu})
    for cid in list(gateway.calls):  # leave nothing open for the next configuration
        gateway.hangup(cid)
    time.sleep(0.01)
    while gateway.calls:
        for _, msg in gateway.poll(0.5):
            d._handle(0, msg)
    d.stopping.set()
    store.dispose()


# ----- the database -----


def admin(pg: str) -> psycopg.Connection[Any]:
    return psycopg.connect(pg, autocommit=True)


def fresh(url: str, recipients: int, limit: int) -> int:
    """An initialised schema with the limit and one active campaign of ``recipients``."""
    s = SqlStore(url)
    with s.engine.begin() as c:
        c.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    s.dispose()
    s = SqlStore(url)
    s.migrate()
    now = time.time()
    s.set_settings(actor="bench", now=now, max_calls=limit)
    import hashlib

    sha = hashlib.sha256(AUDIO).hexdigest()
    s.add_media(data=AUDIO, sha256=sha, rate=8000, seconds=4.0, source=None, now=now)
    recs = [Recipient(number=f"{10000 + i}", kind=Kind.INTERNAL) for i in range(recipients)]
    s.add_template(name="Bench", settings=CampaignSettings(attempts=3, retry_delay=0.0),
                   audio_sha=sha, audio_seconds=4.0, recipients=recs, now=now, actor="bench")
    cid = s.start_campaign(template="Bench", name=None, now=now, start_at=now, actor="bench")
    s.dispose()
    return cid


def sample_open(url_pg: str, limit: int, stop: threading.Event, out: dict[str, int]) -> None:
    with psycopg.connect(url_pg, autocommit=True) as con:
        while not stop.is_set():
            n = con.execute("SELECT count(*) FROM attempts WHERE ended_at IS NULL").fetchone()
            k = int(n[0]) if n else 0
            out["samples"] += 1
            out["peak"] = max(out["peak"], k)
            if k > limit:
                out["violations"] += 1
            stop.wait(0.05)


def one_configuration(n: int, url: str, url_pg: str, args: argparse.Namespace,
                      tmp: str) -> dict[str, Any]:
    fresh(url, args.recipients, args.limit)
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    stop = threading.Event()
    sampled = {"samples": 0, "peak": 0, "violations": 0}
    sampler = threading.Thread(target=sample_open, args=(url_pg, args.limit, stop, sampled))
    sampler.start()
    load0 = os.getloadavg()[0]
    procs = [ctx.Process(target=run_node, args=(f"n{i + 1}", url, args.limit, args.seconds,
                                                tmp, results)) for i in range(n)]
    t0 = time.time()
    for p in procs:
        p.start()
    got = [results.get(timeout=args.seconds + 120) for _ in procs]
    for p in procs:
        p.join(60)
    stop.set()
    sampler.join()
    wall = time.time() - t0
    decisions = [x for g in got for x in g["decisions"]]
    waits = [x for g in got for x in g["lock_waits"]]
    return {
        "nodes": n, "seconds": args.seconds, "wall": round(wall, 1),
        "decisions": len(decisions), "decisions_per_s": round(len(decisions) / args.seconds, 1),
        "decision_p50_ms": round(percentile(decisions, 50) * 1000, 2),
        "decision_p99_ms": round(percentile(decisions, 99) * 1000, 2),
        "lock_wait_p50_ms": round(percentile(waits, 50) * 1000, 2),
        "lock_wait_p99_ms": round(percentile(waits, 99) * 1000, 2),
        "lock_wait_share": round(sum(waits) / max(sum(decisions), 1e-9), 3),
        "calls": sum(g["dialled"] for g in got),
        "calls_per_s": round(sum(g["dialled"] for g in got) / args.seconds, 1),
        "calls_per_node": [g["dialled"] for g in sorted(got, key=lambda g: g["node"])],
        "node_cpu_s": round(sum(g["cpu"] for g in got), 1),
        "peak_open": sampled["peak"], "samples": sampled["samples"],
        "violations": sampled["violations"], "load_before": round(load0, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test",
                   help="a database of the server to create the throwaway one on")
    p.add_argument("--nodes", type=int, nargs="*", default=[1, 2, 4, 8],
                   help="node counts to run with the fake gateway (none: only --sip)")
    p.add_argument("--recipients", type=int, default=100_000)
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--sip", action="store_true", help="and one real-SIP run (2 nodes, 200)")
    p.add_argument("--sip-recipients", type=int, default=600)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    name = f"dialer_bench_{uuid.uuid4().hex[:10]}"
    with admin(args.pg) as a:
        a.execute(f'CREATE DATABASE "{name}"')
    base = args.pg.rsplit("/", 1)[0]
    url_pg = f"{base}/{name}"
    url = url_pg.replace("postgresql://", "postgresql+psycopg://", 1)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
            for n in args.nodes:
                row = one_configuration(n, url, url_pg, args, tmp)
                rows.append(row)
                print(json.dumps(row), flush=True)
            sip = run_sip(url, args) if args.sip else None
    finally:
        with admin(args.pg) as a:
            a.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print()
    print("| nodes | decisions/s | decision p50 / p99 (ms) | lock wait p50 / p99 (ms), share "
          "| calls/s | per node | peak open (limit) | violations / samples | node CPU s |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['nodes']} | {r['decisions_per_s']} | {r['decision_p50_ms']} / "
              f"{r['decision_p99_ms']} | {r['lock_wait_p50_ms']} / {r['lock_wait_p99_ms']}, "
              f"{r['lock_wait_share']:.0%} | {r['calls_per_s']} | {r['calls_per_node']} | "
              f"{r['peak_open']} ({args.limit}) | {r['violations']} / {r['samples']} | "
              f"{r['node_cpu_s']} |")
    if sip is not None:
        print("\nreal SIP:", json.dumps(sip))
    if args.json:
        args.json.write_text(json.dumps({"fake": rows, "sip": sip}, indent=2))
    return 0 if all(r["violations"] == 0 for r in rows) else 1


def run_sip(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Two real nodes, SIP workers, a SIPp far end answering and confirming; limit 200."""
    from collections import Counter

    from testkit import Sipp, make_dtmf_captures
    from testkit.harness import Dialer

    s = SqlStore(url)
    with s.engine.begin() as c:
        c.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    s.dispose()
    with tempfile.TemporaryDirectory(prefix="cluster-sip-") as tmp:
        work = Path(tmp)
        dtmf = make_dtmf_captures(work / "dtmf")
        message = 10.0
        sipp = Sipp(ROOT / "tests" / "sipp" / "answer_confirm.xml", work / "sipp", dtmf=dtmf,
                    keys={"key1_ms": 1000, "key9_ms": int((message + 1.5) * 1000)},
                    extra_args=["-max_socket", "60000"]).start()
        nodes = [Dialer(work / f"n{i + 1}", internal={"uri": sipp.uri},
                        external={"uri": sipp.uri}, workers=30, db_url=url,
                        node=f"n{i + 1}", bind=f"127.0.0.{i + 2}") for i in range(2)]
        try:
            nodes[0].cli("settings", "set", "--max-calls", "200")
            nodes[0].template("B", [str(30000 + i) for i in range(args.sip_recipients)],
                              message=message, attempts=3, ring_timeout=10)
            cid = nodes[0].start_campaign("B")
            t0 = time.time()
            for d in nodes:
                d.serve()
            detail = nodes[0].wait_state(cid, ["completed", "incomplete"],
                                         120 + args.sip_recipients)
            took = time.time() - t0
            attempts = nodes[0].attempts(cid)
            return {"recipients": args.sip_recipients, "limit": 200, "state": detail["state"],
                    "seconds": round(took, 1), "peak_at_sipp": sipp.peak_calls(),
                    "attempts": len(attempts), "invites": len(sipp.received_call_ids()),
                    "attempts_equal_invites": sorted(a["id"] for a in attempts)
                    == sorted(sipp.received_call_ids()),
                    "per_node": dict(Counter(a["node"] for a in attempts)),
                    "outcomes": dict(Counter(a["outcome"] for a in attempts))}
        finally:
            for d in nodes:
                d.stop()
            sipp.stop()


if __name__ == "__main__":
    sys.exit(main())
