"""Benchmark: the elastic pool (issue 16, part 6): warm-up time of N workers, memory returned.

    python bench/elastic.py                       # 125 workers (a limit of 500 calls)
    python bench/elastic.py --workers 25 --json

Real SIP workers (``python -m sip.worker`` forked by the fork server, PJSUA2 on 127.0.0.1, no
registration) in a ``WorkerPool`` with a state directory, as ``dialer serve`` runs them:

1. cold start: ``start(N)``, time until all N report ready (and until the first one does);
2. memory of the pool's processes (workers and fork server: RSS and PSS summed from
   ``/proc/<pid>/smaps_rollup``), all N idle;
3. shrink: ``scale(0)`` with the idle grace at 0 (the grace itself is a wait, not a cost): the
   target for no demand is one worker (the spare), worker 0, so the N - 1 others retire; time
   until they have exited; memory again: what was returned;
4. grow again: ``scale(4 * N)`` at every turn of the loop, as the daemon does after each pass
   (a pass that filled every slot under the limit), ``GROW_STEP`` workers at a time: time until
   N are ready (what an alert costs after a quiet spell, compared with 1) and the longest
   ``scale`` call (how long the daemon's loop is blocked).

Prints the figures and the machine's load average before and after; ``--json`` as JSON. Every
process it starts is stopped at the end (``shutdown``, then killed if still there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dialer import ipc  # noqa: E402
from dialer.gateway import PoolGateway  # noqa: E402
from dialer.pool import WorkerPool  # noqa: E402


def _init(i: int) -> ipc.Init:
    trunk = {"uri": "sip:127.0.0.1:9", "registrar": None, "username": "dialer",
             "password": "bench", "transport": "udp", "register": False}
    return ipc.Init(worker=i, bind="127.0.0.1", trunks={"internal": trunk},
                    allowed_sources=["127.0.0.1"], log_level=1, sip_port=0)


def _mem(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in kB; (0, 0) if it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _pool_mem(pool: WorkerPool) -> dict[str, float]:
    pids = [w.pid for w in pool.all_workers()]
    server = pool._forkserver
    if server is not None and server._proc is not None:
        pids.append(server._proc.pid)
    rss = pss = 0
    for pid in pids:
        r, p = _mem(pid)
        rss, pss = rss + r, pss + p
    return {"processes": len(pids), "rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1)}


def _wait(cond: Any, timeout: float, gateway: PoolGateway) -> float:
    """Poll the gateway until ``cond()``; seconds taken. Raises after ``timeout``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"not done in {timeout} s")
        gateway.poll(0.01)
    return time.monotonic() - t0


def run(workers: int, timeout: float = 120.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="elastic-") as tmp:
        pool = WorkerPool(size=workers, calls_per_worker=4, init_message=_init,
                          state_dir=Path(tmp) / "run")
        gateway = PoolGateway(pool)
        try:
            t0 = time.monotonic()
            pool.start(workers)
            started = time.monotonic() - t0  # the fork server and N forks requested
            _wait(lambda: pool.ready_count() >= 1, timeout, gateway)
            first = time.monotonic() - t0
            _wait(lambda: pool.ready_count() >= workers, timeout, gateway)
            cold = time.monotonic() - t0
            time.sleep(1.0)  # let the workers settle (their first allocations)
            full = _pool_mem(pool)
            pool.idle_grace = 0.0
            t1 = time.monotonic()
            decision = pool.scale(0)
            drained = _wait(lambda: not pool.retiring, timeout, gateway)
            shrunk = _pool_mem(pool)
            t2 = time.monotonic()
            regrow_call = 0.0  # the longest scale(): the daemon's loop is blocked that long
            while pool.ready_count() < workers:  # one scale() a pass, as the daemon does
                if time.monotonic() - t2 > timeout:
                    raise TimeoutError(f"not grown in {timeout} s")
                t = time.monotonic()
                pool.scale(4 * workers)
                regrow_call = max(regrow_call, time.monotonic() - t)
                gateway.poll(0.01)
            regrow = time.monotonic() - t2
            regrown = _pool_mem(pool)
            return {"workers": workers, "cold_start_call_s": round(started, 3),
                    "cold_first_ready_s": round(first, 3),
                    "cold_all_ready_s": round(cold, 3), "retired": len(decision.retire),
                    "retire_exit_s": round(drained, 3), "regrow_all_ready_s": round(regrow, 3),
                    "regrow_scale_call_s": round(regrow_call, 3),
                    "memory_full": full, "memory_shrunk": shrunk, "memory_regrown": regrown,
                    "returned_rss_mb": round(full["rss_mb"] - shrunk["rss_mb"], 1),
                    "returned_pss_mb": round(full["pss_mb"] - shrunk["pss_mb"], 1),
                    "started_at": t0, "shrunk_at": t1, "regrow_at": t2}
        finally:
            pool.shutdown(10.0)
            for w in pool.all_workers():
                w.proc.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=125, help="N (default: 500 calls / 4)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    before = os.getloadavg()[0]
    r = run(a.workers)
    r["load_before"], r["load_after"] = before, os.getloadavg()[0]
    for k in ("started_at", "shrunk_at", "regrow_at"):
        r.pop(k)
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    f, s, g = r["memory_full"], r["memory_shrunk"], r["memory_regrown"]
    print(f"{r['workers']} workers: cold start (start() returned in "
          f"{r['cold_start_call_s']:.2f} s), first ready {r['cold_first_ready_s']:.2f} s, "
          f"all ready {r['cold_all_ready_s']:.2f} s")
    print(f"all idle: {f['processes']} processes, RSS {f['rss_mb']:.0f} MB, "
          f"PSS {f['pss_mb']:.0f} MB")
    print(f"retired {r['retired']} idle workers: exited in {r['retire_exit_s']:.2f} s; "
          f"{s['processes']} processes left, RSS {s['rss_mb']:.0f} MB, PSS {s['pss_mb']:.0f} MB "
          f"(returned: RSS {r['returned_rss_mb']:.0f} MB, PSS {r['returned_pss_mb']:.0f} MB)")
    print(f"grown again to {r['workers']}: longest scale() {r['regrow_scale_call_s']:.2f} s, "
          f"all ready in {r['regrow_all_ready_s']:.2f} s; RSS "
          f"{g['rss_mb']:.0f} MB, PSS {g['pss_mb']:.0f} MB")
    print(f"load average {r['load_before']:.2f} before, {r['load_after']:.2f} after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
