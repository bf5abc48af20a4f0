"""Flood ceiling bench: unsolicited INVITEs at the workers while every call slot rings.

One command (from the repository root; SIPp and the test venv needed)::

    python bench/sip_flood.py --rates 100 300 1000 3000 --seconds 10

For each rate: a fresh dialer (``--workers`` workers, SQLite) whose trunks lead to a SIPp
answerer that rings and never answers (``tests/sipp/no_answer.xml``), a campaign of three rounds
of every slot (4 per worker, one attempt each, ring timeout 4 s) so that calls end and start all
through the flood; once every slot rings, one SIPp flooder per worker (``bench/sipp/
flood_invite.xml``, from 127.0.0.3, or from the PBX's 127.0.0.1 with ``--from-pbx``) sends
``rate`` INVITEs a second for ``--seconds`` seconds at that worker's SIP port. Reported per rate:
INVITEs sent (SIPp's own count) and the rate achieved, the ``dialer_sip_dropped_total`` the
daemon counted, worker restarts, attempts that did not end within the ring timeout + 5 s or ended
more than a second early, and whether the campaign finished with attempts == INVITEs the far end
received. Every loop is bounded in count and time; all traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from testkit import Sipp, free_port  # noqa: E402
from testkit.harness import Dialer  # noqa: E402

RING = 4.0
READY = re.compile(r"worker (\d+) ready \(pid (\d+), SIP port (\d+)\)")
STARTED = re.compile(r"worker \d+ started \(pid \d+\)")


def dropped(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(m.group(1)) for m in
               re.finditer(r'^dialer_sip_dropped_total\{[^}]*\} ([0-9.e+]+)$', text, re.M))


def run_one(rate: int, seconds: float, workers: int, source: str, work: Path) -> dict[str, object]:
    sipp = Sipp("no_answer", work / "far").start()
    metrics = free_port()
    d = Dialer(work / "dialer", internal={"uri": sipp.uri, "keepalive_interval": 0},
               external={"uri": sipp.uri, "keepalive_interval": 0}, workers=workers,
               metrics_port=metrics)
    floods: list[subprocess.Popen[bytes]] = []
    try:
        slots = 4 * workers
        d.template("T", [str(1001 + i) for i in range(3 * slots)], message=1.0, attempts=1,
                   ring_timeout=int(RING), max_calls=slots)
        cid = d.start_campaign("T")
        d.serve()
        d.wait(lambda: len(set(READY.findall(d.log_text()))) >= workers or None, 60, "workers")
        sipp.wait_for_invites(slots, 60)
        ports = sorted({int(m.group(3)) for m in READY.finditer(d.log_text())})
        before = dropped(metrics)
        sipp_bin = shutil.which("sipp") or "sipp"
        started = time.monotonic()
        for i, port in enumerate(ports):
            stat = work / f"flood{i}.csv"
            floods.append(subprocess.Popen(
                [sipp_bin, "-sf", str(ROOT / "bench/sipp/flood_invite.xml"), "-i", source,
                 "-p", str(free_port()), "-mp", str(free_port(3)), "-r", str(rate),
                 "-m", str(int(rate * seconds)), "-l", str(int(rate * seconds)), "-nostdin",
                 "-trace_stat", "-stf", str(stat), "-fd", "1",
                 "-timeout", str(int(seconds * 3 + 10)),
                 "-timeout_error", f"127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work))
        for p in floods:
            try:
                p.wait(seconds * 3 + 15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        flood_s = time.monotonic() - started
        sent = 0
        for i in range(len(ports)):
            rows = (work / f"flood{i}.csv").read_text().splitlines()
            if len(rows) >= 2:
                head, last = rows[0].split(";"), rows[-1].split(";")
                sent += int(last[head.index("TotalCallCreated")])
        detail = d.wait_state(cid, ["completed", "incomplete"], 180)
        time.sleep(2.5)  # the workers report drops every 2 s: let the last report in (bench only)
        counted = dropped(metrics) - before
        attempts = d.attempts(cid)

        def span(a: dict[str, object]) -> float:
            return (datetime.fromisoformat(str(a["ended_at"]))
                    - datetime.fromisoformat(str(a["created_at"]))).total_seconds()

        late = sum(1 for a in attempts if span(a) > RING + 5)
        early = sum(1 for a in attempts if span(a) < RING - 1)
        match = sorted(str(a["id"]) for a in attempts) == sorted(sipp.received_call_ids())
        return {"rate": rate, "sent": sent,
                "achieved": round(sent / max(flood_s, 1e-9) / len(ports)),
                "dropped": int(counted), "restarts": len(STARTED.findall(d.log_text())) - workers,
                "late": late, "early": early, "attempts": len(attempts),
                "state": detail["state"], "attempts_match": match}
    finally:
        for p in floods:
            if p.poll() is None:
                p.kill()
        d.stop()
        sipp.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 300, 1000, 3000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--from-pbx", action="store_true",
                        help="flood from the PBX's address (answered 403) instead of 127.0.0.3")
    args = parser.parse_args()
    source = "127.0.0.1" if args.from_pbx else "127.0.0.3"
    print(f"{args.workers} workers, every slot ringing; INVITEs from {source} for "
          f"{args.seconds:g} s at each worker")
    print(f"{'rate/worker':>11} {'sent':>7} {'achieved':>8} {'dropped':>8} {'restarts':>8} "
          f"{'late':>4} {'early':>5} {'attempts':>8}  campaign")
    for rate in args.rates:
        with tempfile.TemporaryDirectory(prefix="flood-") as tmp:
            r = run_one(rate, args.seconds, args.workers, source, Path(tmp))
        print(f"{r['rate']:>11} {r['sent']:>7} {r['achieved']:>8} {r['dropped']:>8} "
              f"{r['restarts']:>8} {r['late']:>4} {r['early']:>5} {r['attempts']:>8}  "
              f"{r['state']}, attempts {'=' if r['attempts_match'] else '!='} INVITEs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
