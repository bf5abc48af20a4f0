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

Prints p50/p99 (and max) in milliseconds, and the load average of the machine before and after
the measured part (other work on a 2-core machine shows in the tail); ``--json`` prints them as
JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
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

T0 = 1_900_000_000.0
NODE = "bench"


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


def bench_ticks(store: SqlStore, decisions: int, rng: random.Random) -> dict[str, Any]:
    now = T0
    first = store.tick(now=now, node=NODE)  # activation and the first 200 calls (not timed)
    open_calls = [c.attempt_id for c in first.calls]
    # suspend one active campaign with calls in progress: they go on, it places no new ones
    store.set_campaign_state(first.calls[0].campaign_id, "suspend", actor="bench", now=now)
    decision: list[float] = []
    idle: list[float] = []
    claimed = 0
    for _ in range(decisions):
        now += 0.25
        aid = open_calls.pop(rng.randrange(len(open_calls)))
        store.finish_attempt(EndReport(attempt_id=aid, at=now,
                                       outcome=rng.choice([Outcome.BUSY, Outcome.CONTACTED])))
        t = time.perf_counter()
        tick = store.tick(now=now, node=NODE, capacity=1000)
        decision.append(time.perf_counter() - t)
        claimed += len(tick.calls)
        open_calls += [c.attempt_id for c in tick.calls]
        t = time.perf_counter()
        store.tick(now=now, node=NODE, capacity=1000)  # the safety pass: nothing changed
        idle.append(time.perf_counter() - t)
    return {"decision": summary(decision), "safety_pass": summary(idle),
            "calls_claimed": claimed, "calls_running": len(open_calls)}


def bench_import(store: SqlStore, size: int, runs: int) -> dict[str, Any]:
    lines = ["number,name,email"]
    for i in range(size):
        number = str(100000 + i) if i % 2 else f"+39066{9800000 + i}"
        email = f"person{i}@example.com" if i % 4 == 0 else ""
        lines.append(f"{number},Person {i},{email}")
    csv_text = "\n".join(lines) + "\n"
    parse: list[float] = []
    insert: list[float] = []
    for run in range(runs):
        t = time.perf_counter()
        recs = parse_csv(csv_text, source="bench.csv")
        parse.append(time.perf_counter() - t)
        t = time.perf_counter()
        store.start_campaign(template="T0", name=f"import {run}", now=T0, start_at=T0 + 86400,
                             actor="bench", recipients=recs)
        insert.append(time.perf_counter() - t)
    total = [a + b for a, b in zip(parse, insert, strict=True)]
    return {"size": size, "parse_csv": summary(parse), "store_insert": summary(insert),
            "total": summary(total)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaigns", type=int, default=100)
    ap.add_argument("--recipients", type=int, default=1_000_000)
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--import-size", type=int, default=100_000)
    ap.add_argument("--import-runs", type=int, default=3)
    ap.add_argument("--db", help="SQLite file to build (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "bench.db"
        store = SqlStore(f"sqlite:///{path}")
        store.migrate()
        t = time.perf_counter()
        build(store, args.campaigns, args.recipients, rng)
        built = time.perf_counter() - t
        result: dict[str, Any] = {"campaigns": args.campaigns, "recipients": args.recipients,
                                  "build_seconds": round(built, 1)}
        store.start_checkpointer()  # as the daemon does
        load_before = os.getloadavg()
        result["tick"] = bench_ticks(store, args.decisions, rng)
        result["load_after_ticks"] = [round(x, 2) for x in os.getloadavg()]
        result["import"] = bench_import(store, args.import_size, args.import_runs)
        result["load_average"] = {"before": [round(x, 2) for x in load_before],
                                  "after": [round(x, 2) for x in os.getloadavg()]}
        store.dispose()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        tk, im = result["tick"], result["import"]
        print(f"{args.campaigns} campaigns, {args.recipients:,} recipients "
              f"(built in {built:.0f} s)")
        for name, s in (("decision (a call ended)", tk["decision"]),
                        ("safety pass (nothing changed)", tk["safety_pass"])):
            print(f"  {name:32} p50 {s['p50_ms']:7.3f} ms  p99 {s['p99_ms']:7.3f} ms  "
                  f"max {s['max_ms']:7.3f} ms  (n={s['n']})")
        for name, s in (("parse_csv", im["parse_csv"]), ("store insert", im["store_insert"]),
                        ("import total", im["total"])):
            print(f"  {name + ' ' + format(im['size'], ','):32} p50 {s['p50_ms'] / 1000:7.3f} s "
                  f"   max {s['max_ms'] / 1000:7.3f} s  (n={s['n']})")
        la = result["load_average"]
        print(f"  load average (1, 5, 15 min): before {la['before']}, after {la['after']}")
    return result


if __name__ == "__main__":
    main()
