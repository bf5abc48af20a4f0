"""Benchmark: one scheduling decision (SqlStore.tick) at scale, and recipient import.

    python bench/scheduler.py                       # 100 campaigns, 1,000,000 recipients
    python bench/scheduler.py --campaigns 5 --recipients 5000 --decisions 50 --import-size 2000

Builds a SQLite database (a temporary file unless ``--db``) through the real store: 100
campaigns of 10,000 recipients each (half internal, half external), then a realistic mix: 90
campaigns active at different priorities, 10 scheduled later or suspended; a third of every
active campaign's recipients already contacted, a tenth failed, a tenth waiting for a retry
(half of those due now); global limits 200 calls / 150 internal / 120 external, 200 calls
running. Each measured decision first ends one running call (busy or contacted, at random; the
end itself is not timed), then times ``tick``: settling, activation, running-call counts,
candidate loading and the claim of the freed slot, committed. The same is done for the safety
pass (a tick when nothing changed). As in ``dialer serve``, the store checkpoints SQLite's
write-ahead log from a background thread (``SqlStore.start_checkpointer``).

Import: 100,000 recipients as CSV text (half extensions, half E.164 numbers, a quarter with an
e-mail address) through the real path: ``parse_csv`` then ``start_campaign`` inserting them.

``--db-url URL`` runs the same on another database through the store (e.g.
``postgresql://postgres@127.0.0.1/bench_h2``, an empty database the bench migrates; it is left
with the bench's tables in it: drop it afterwards).

``--load N`` loads the rest of the machine while measuring: it pins this process (and so the
checker ``parse_csv`` forks, and SQLite's checkpointer thread) to CPU 0 with
``os.sched_setaffinity``, and starts N processes (``multiprocessing``, fork) each pinned to one of
the other CPUs in turn (1, 2, ..., wrapping) that spin in a pure-Python loop (integer additions,
no system calls, no memory traffic) until the bench stops them (SIGTERM after the measured part)
or one hour has passed, whichever comes first. ``--load 1`` on a 2-core machine is "the second
core is busy": the bench has one core to itself, the database server (PostgreSQL) shares the busy
one with the spinner. ``--load 0`` (the default) pins nothing.

Prints p50/p99 (and max) in milliseconds; the CPU time the import used (this process and the
checker it forks: less dependent on the machine's load than the wall clock); the number of SQL
statements the database executes for a decision (in 100 more decisions after the timed ones)
and for one more import, and the calls the store makes to the driver for that import
(``testkit.sqlcount``: SQLite's trace callback, PostgreSQL's protocol trace); and the load
average of the machine before and after the measured part (other work on a 2-core machine shows
in the tail). ``--json`` prints them as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from dialer.core.domain import CampaignSettings, Kind, Limits, Outcome  # noqa: E402
from dialer.core.recipients import Recipient  # noqa: E402
from dialer.csvimport import parse_csv  # noqa: E402
from dialer.storage import counters  # noqa: E402
from dialer.storage.store import EndReport, SqlStore, to_dt  # noqa: E402
from testkit.sqlcount import StatementCounter  # noqa: E402

T0 = 1_900_000_000.0
NODE = "bench"


LOAD_MAX_SECONDS = 3600.0
"""A load process stops by itself after this long, should the bench die without stopping it."""


def _spin(cpu: int, until: float) -> None:
    """A load process: pinned to ``cpu``, busy in pure Python until ``until`` (monotonic)."""
    os.sched_setaffinity(0, {cpu})
    n = 0
    while time.monotonic() < until:
        for _ in range(100_000):
            n += 1


def start_load(n: int) -> list[Any]:
    """Pin this process to CPU 0 and start ``n`` spinners on the other CPUs (see the module
    docstring). Returns them for ``stop_load``."""
    if n <= 0:
        return []
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--load needs at least two CPUs")
    os.sched_setaffinity(0, {cpus[0]})
    until = time.monotonic() + LOAD_MAX_SECONDS
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_spin, args=(cpus[1 + k % (len(cpus) - 1)], until), daemon=True)
             for k in range(n)]
    for p in procs:
        p.start()
    return procs


def stop_load(procs: list[Any]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(timeout=10)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(samples: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in samples]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 3),
            "p99_ms": round(percentile(ms, 99), 3), "max_ms": round(max(ms), 3)}


def build(store: SqlStore, n_campaigns: int, n_recipients: int, rng: random.Random) -> None:
    """The campaigns, through the real store, then the progress mix written in bulk."""
    content = b"bench audio"
    sha = hashlib.sha256(content).hexdigest()
    store.add_media(data=content, sha256=sha, rate=8000, seconds=20.0, source=None, now=T0)
    per = n_recipients // n_campaigns
    serial = 0
    for k in range(n_campaigns):
        recs = []
        for _ in range(per):
            serial += 1
            if serial % 2:
                recs.append(Recipient(number=str(100000 + serial), kind=Kind.INTERNAL))
            else:
                recs.append(Recipient(number=f"+39{3000000000 + serial}", kind=Kind.EXTERNAL))
        cs = CampaignSettings(priority=k % 5, attempts=3, retry_delay=60.0,
                              limits=Limits(total=rng.choice([None, 5, 10, 20])))
        store.add_template(name=f"T{k}", settings=cs, audio_sha=sha, audio_seconds=20.0,
                           recipients=recs, now=T0, actor="bench")
        # 90% start now, the rest later (scheduled) or get suspended below
        start = T0 if k < n_campaigns * 9 // 10 else T0 + 10 * 86400
        store.start_campaign(template=f"T{k}", name=None, now=T0, start_at=start, actor="bench")
    # progress: contacted, failed, waiting for a retry (half due), the rest never called
    with store.engine.begin() as conn:
        past, future = to_dt(T0 - 30), to_dt(T0 + 3600)
        conn.execute(text(
            "UPDATE recipients SET state = CASE "
            " WHEN id % 10 < 3 THEN 'contacted' WHEN id % 10 = 3 THEN 'failed' ELSE state END, "
            " calls = CASE WHEN id % 10 <= 4 THEN 1 ELSE 0 END, "
            " attempts = CASE WHEN id % 10 = 3 THEN 3 WHEN id % 10 = 4 THEN 1 ELSE 0 END, "
            " last_call_at = CASE WHEN id % 10 <= 4 THEN :last END, "
            " next_at = CASE WHEN id % 10 = 4 AND id % 20 < 10 THEN :past "
            "                WHEN id % 10 = 4 THEN :future END "
            "WHERE (id % 10) <= 4 AND (id % 3) < 2"),
            {"last": to_dt(T0 - 120).replace(tzinfo=None),  # type: ignore[union-attr]
             "past": past.replace(tzinfo=None),  # type: ignore[union-attr]
             "future": future.replace(tzinfo=None)})  # type: ignore[union-attr]
    with store.session() as s:
        ids = [r[0] for r in s.execute(text("SELECT id FROM campaigns"))]
        counters.invalidate(s, ids)
    with store.session() as s:
        counters.recount(s, ids)
    store.set_settings(actor="bench", now=T0, max_calls=200, max_internal=150, max_external=120)
    with store.engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def bench_ticks(store: SqlStore, decisions: int, rng: random.Random,
                counter: StatementCounter) -> dict[str, Any]:
    now = T0
    first = store.tick(now=now, node=NODE)  # activation and the first 200 calls (not timed)
    open_calls = [c.attempt_id for c in first.calls]
    # suspend one active campaign with calls in progress: they go on, it places no new ones
    store.set_campaign_state(first.calls[0].campaign_id, "suspend", actor="bench", now=now)
    decision: list[float] = []
    idle: list[float] = []
    statements: list[int] = []
    idle_statements: list[int] = []
    claimed = 0
    counted = min(100, decisions)
    for k in range(decisions + counted):  # the timed ones, then a counted sample (not timed)
        now += 0.25
        aid = open_calls.pop(rng.randrange(len(open_calls)))
        store.finish_attempt(EndReport(attempt_id=aid, at=now,
                                       outcome=rng.choice([Outcome.BUSY, Outcome.CONTACTED])))
        if k >= decisions:
            counter.on()
        t = time.perf_counter()
        tick = store.tick(now=now, node=NODE, capacity=1000)
        spent = time.perf_counter() - t
        if k < decisions:
            decision.append(spent)
            claimed += len(tick.calls)
        else:
            statements.append(counter.off())
            counter.on()
        open_calls += [c.attempt_id for c in tick.calls]
        t = time.perf_counter()
        store.tick(now=now, node=NODE, capacity=1000)  # the safety pass: nothing changed
        if k < decisions:
            idle.append(time.perf_counter() - t)
        else:
            idle_statements.append(counter.off())
    return {"decision": summary(decision), "safety_pass": summary(idle),
            "statements": {"n": len(statements),
                           "decision_mean": round(statistics.mean(statements), 2),
                           "decision_max": max(statements),
                           "safety_pass_mean": round(statistics.mean(idle_statements), 2),
                           "safety_pass_max": max(idle_statements)},
            "calls_claimed": claimed, "calls_running": len(open_calls)}


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its children that have ended."""
    own, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                     resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_import(store: SqlStore, size: int, runs: int,
                 counter: StatementCounter) -> dict[str, Any]:
    lines = ["number,name,email"]
    for i in range(size):
        number = str(100000 + i) if i % 2 else f"+39066{9800000 + i}"
        email = f"person{i}@example.com" if i % 4 == 0 else ""
        lines.append(f"{number},Person {i},{email}")
    csv_text = "\n".join(lines) + "\n"
    parse: list[float] = []
    insert: list[float] = []
    parse_cpu: list[float] = []
    insert_cpu: list[float] = []
    for run in range(runs):
        t, c = time.perf_counter(), cpu_seconds()
        recs = parse_csv(csv_text, source="bench.csv")
        parse.append(time.perf_counter() - t)
        parse_cpu.append(cpu_seconds() - c)
        t, c = time.perf_counter(), cpu_seconds()
        store.start_campaign(template="T0", name=f"import {run}", now=T0, start_at=T0 + 86400,
                             actor="bench", recipients=recs)
        insert.append(time.perf_counter() - t)
        insert_cpu.append(cpu_seconds() - c)
    total = [a + b for a, b in zip(parse, insert, strict=True)]
    # the statements of one more insert (counted, not timed)
    recs = parse_csv(csv_text, source="bench.csv")
    counter.on()
    store.start_campaign(template="T0", name="import counted", now=T0, start_at=T0 + 86400,
                         actor="bench", recipients=recs)
    insert_statements = counter.off()
    return {"size": size, "parse_csv": summary(parse), "store_insert": summary(insert),
            "total": summary(total), "insert_calls": counter.calls,
            "insert_statements": insert_statements,
            "cpu_seconds": {"parse_csv": round(statistics.median(parse_cpu), 3),
                            "store_insert": round(statistics.median(insert_cpu), 3)}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaigns", type=int, default=100)
    ap.add_argument("--recipients", type=int, default=1_000_000)
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--import-size", type=int, default=100_000)
    ap.add_argument("--import-runs", type=int, default=3)
    ap.add_argument("--db", help="SQLite file to build (default: a temporary one)")
    ap.add_argument("--db-url", help="a database URL instead of SQLite (an empty database)")
    ap.add_argument("--load", type=int, default=0, metavar="N",
                    help="pin the bench to CPU 0 and keep N spinning processes on the others")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "bench.db"
        store = SqlStore(args.db_url or f"sqlite:///{path}")
        store.migrate()
        t = time.perf_counter()
        build(store, args.campaigns, args.recipients, rng)
        built = time.perf_counter() - t
        result: dict[str, Any] = {"campaigns": args.campaigns, "recipients": args.recipients,
                                  "build_seconds": round(built, 1)}
        counter = StatementCounter(store.engine)
        if store.sqlite:
            store.start_checkpointer()  # as the daemon does
        result["database"] = store.engine.dialect.name
        result["load_processes"] = args.load
        spinners = start_load(args.load)
        try:
            load_before = os.getloadavg()
            result["tick"] = bench_ticks(store, args.decisions, rng, counter)
            result["load_after_ticks"] = [round(x, 2) for x in os.getloadavg()]
            result["import"] = bench_import(store, args.import_size, args.import_runs, counter)
            result["load_average"] = {"before": [round(x, 2) for x in load_before],
                                      "after": [round(x, 2) for x in os.getloadavg()]}
        finally:
            stop_load(spinners)
        store.dispose()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        tk, im = result["tick"], result["import"]
        print(f"{args.campaigns} campaigns, {args.recipients:,} recipients on "
              f"{result['database']} (built in {built:.0f} s), {args.load} load process(es)")
        for name, s in (("decision (a call ended)", tk["decision"]),
                        ("safety pass (nothing changed)", tk["safety_pass"])):
            print(f"  {name:32} p50 {s['p50_ms']:7.3f} ms  p99 {s['p99_ms']:7.3f} ms  "
                  f"max {s['max_ms']:7.3f} ms  (n={s['n']})")
        for name, s in (("parse_csv", im["parse_csv"]), ("store insert", im["store_insert"]),
                        ("import total", im["total"])):
            print(f"  {name + ' ' + format(im['size'], ','):32} p50 {s['p50_ms'] / 1000:7.3f} s "
                  f"   max {s['max_ms'] / 1000:7.3f} s  (n={s['n']})")
        cpu = im["cpu_seconds"]
        print(f"  CPU time of this process (and its children), median: parse_csv "
              f"{cpu['parse_csv']:.3f} s, store insert {cpu['store_insert']:.3f} s")
        st = tk["statements"]
        print(f"  SQL statements: decision mean {st['decision_mean']} max {st['decision_max']}, "
              f"safety pass mean {st['safety_pass_mean']} max {st['safety_pass_max']}, "
              f"(n={st['n']}); import: {im['insert_statements']} statements, "
              f"{im['insert_calls']} calls to the driver")
        la = result["load_average"]
        print(f"  load average (1, 5, 15 min): before {la['before']}, after {la['after']}")
    return result


if __name__ == "__main__":
    main()
