"""Benchmark: the time to reach everyone (issue 16, part 4), in virtual time.

    python bench/reach.py                          # 10,000 recipients, 20 s message, L = 500
    python bench/reach.py --recipients 400 --limit 20 --json

One campaign runs in the discrete-event simulator (``tests/sim.py``: the real daemon loop, the
real ``SqlStore`` on a SQLite file, the real scheduler, lifecycle and dialogue, a fake SIP
gateway on a virtual clock), so the figure is exact and does not depend on the machine: only
the wall time the simulation took does. The global call limit is ``--limit`` (L); a tenth of
the recipients (``--busy``) answer 486 Busy Here ``--ring`` seconds after the INVITE on their
first attempt, another tenth (``--no-answer``) let it ring until the campaign's ring timeout (we
cancel: 487); both answer and confirm on the retry, ``--retry-delay`` seconds after that first
call ended. Everyone else answers and confirms on the first call. Which recipients fail is
drawn with ``--seed`` (spread over the whole list).

The bound. A confirmed call holds a line for

    C = ring + key + message + key + goodbye

the ring before the answer (``--ring``, 2 s); the answer prompt, cut by the recipient's key 1 s
into it (barge-in: the simulated recipient presses 1 s after a prompt starts); the message; the
listen prompt, cut the same way after 1 s; the goodbye (2 s, the duration the simulator gives
``goodbye``): 2 + 1 + 20 + 1 + 2 = 26 s with the defaults. A busy call holds its line for its
setup time (``--ring``: the 486 comes then), a call nobody answers for the ring timeout R. With
N recipients, B busy and A unanswered first, the lines carry the work

    W = N * C + B * ring + A * R        line-seconds,

and L lines cannot carry it in less than W / L. The confirmed calls all last C, so they take at
least ``ceil(N / L) * C`` (the issue's ceil(recipients x call length / L): waves of L calls),
plus the failed first calls' share ``(B * ring + A * R) / L``. A second bound: a retried
recipient is final no earlier than its first call's end plus the retry delay D plus a confirmed
call, ``min(ring, R) + D + C`` (it matters for small campaigns). The bound is the larger:

    bound = max(ceil(N / L) * C + (B * ring + A * R) / L,  min(ring, R) + D + C)

The goal is a time to final within 1.1 x the bound. Printed: the simulated time from the launch
until every recipient is final (the last attempt's end, and the instant the campaign is
completed), the bound, the ratio, calls placed, how full the lines were (line-seconds used over
L x the time), the tail (time from the last first call starting to the end), and the wall time
the simulation took, with the machine's load average before and after. ``--json`` prints them
as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from dialer.core.domain import CampaignSettings, Kind  # noqa: E402
from dialer.core.recipients import Recipient  # noqa: E402
from dialer.storage.models import CampaignRow  # noqa: E402
from dialer.storage.store import SqlStore, to_ts  # noqa: E402
from tests.sim import T0, Behaviour, Simulation  # noqa: E402

KEY_AFTER = 1.0  # the simulated recipient presses a key 1 s into a prompt (tests/sim.py)
FINAL = ("completed", "incomplete", "terminated")
GOODBYE = 2.0  # the simulator's duration of the goodbye prompt (tests/sim.py _DURATIONS)


@dataclass(frozen=True)
class Reach:
    """One run's figures (virtual seconds, except ``wall_s``)."""

    recipients: int
    limit: int
    call_s: float
    time_to_final_s: float
    completed_at_s: float
    bound_s: float
    ratio: float
    calls: int
    busy: int
    no_answer: int
    utilisation: float
    tail_s: float
    peak_calls: int
    idle_early_line_s: float  # free line-seconds before the last first call: scheduling gaps
    retry_late_max_s: float  # a retry's start after its due time (fresh recipients go first)
    retry_late_mean_s: float
    wall_s: float


def call_seconds(message: float, ring: float) -> float:
    """C: the line time of a confirmed call (see the module docstring)."""
    return ring + KEY_AFTER + message + KEY_AFTER + GOODBYE


def bound(*, recipients: int, limit: int, message: float, ring: float, ring_timeout: float,
          retry_delay: float, busy: int, no_answer: int) -> float:
    """The lower bound on the time to final (see the module docstring)."""
    c = call_seconds(message, ring)
    work = math.ceil(recipients / limit) * c + (busy * ring + no_answer * ring_timeout) / limit
    chain = (min(ring, ring_timeout) + retry_delay + c) if busy or no_answer else 0.0
    return max(work, chain)


def run(*, recipients: int = 10_000, limit: int = 500, message: float = 20.0,
        busy_share: float = 0.10, no_answer_share: float = 0.10, retry_delay: float = 60.0,
        ring: float = 2.0, ring_timeout: float = 30.0, seed: int = 16,
        data_dir: Path | None = None) -> Reach:
    """Run the campaign in the simulator and return its figures."""
    with tempfile.TemporaryDirectory(prefix="reach-") as tmp:
        base = data_dir or Path(tmp)
        store = SqlStore(f"sqlite:///{base / 'reach.db'}")
        store.migrate()
        try:
            return _run(store, base, recipients=recipients, limit=limit, message=message,
                        busy_share=busy_share, no_answer_share=no_answer_share,
                        retry_delay=retry_delay, ring=ring, ring_timeout=ring_timeout,
                        seed=seed)
        finally:
            store.dispose()


def _run(store: SqlStore, base: Path, *, recipients: int, limit: int, message: float,
         busy_share: float, no_answer_share: float, retry_delay: float, ring: float,
         ring_timeout: float, seed: int) -> Reach:
    numbers = [str(100_000 + n) for n in range(recipients)]
    rng = random.Random(seed)
    order = rng.sample(range(recipients), recipients)
    n_busy = round(recipients * busy_share)
    n_none = round(recipients * no_answer_share)
    confirm = Behaviour("confirm", after=ring)
    script: dict[str, list[Behaviour]] = {}
    for i in order[:n_busy]:
        script[numbers[i]] = [Behaviour("busy", after=ring), confirm]
    for i in order[n_busy:n_busy + n_none]:
        script[numbers[i]] = [Behaviour("no_answer"), confirm]
    store.set_settings(actor="bench", now=T0, max_calls=limit)
    audio = b"reach bench message"
    sha = hashlib.sha256(audio).hexdigest()
    store.add_media(data=audio, sha256=sha, rate=8000, seconds=message, source=None, now=T0)
    settings = CampaignSettings(attempts=3, retry_delay=retry_delay, ring_timeout=ring_timeout)
    store.add_template(name="reach", settings=settings, audio_sha=sha, audio_seconds=message,
                       recipients=[Recipient(number=n, kind=Kind.INTERNAL) for n in numbers],
                       now=T0, actor="bench")
    cid = store.start_campaign(template="reach", name=None, now=T0, start_at=T0, actor="bench")
    sim = Simulation(store, base / "data", script, capacity=limit * 2, default=confirm)
    peak = 0
    busy_area = 0.0
    last = (T0, 0)
    last_first = T0  # when the last recipient's first call started

    idle_early = 0.0  # line-seconds left idle while recipients never called remained

    def watch(s: Simulation) -> None:
        nonlocal peak, busy_area, last, last_first, idle_early
        at, n = last
        busy_area += n * (s.now - at)
        if last_first == T0:
            idle_early += (limit - n) * (s.now - at)
        n = s.gateway.busy_slots()
        peak = max(peak, n)
        last = (s.now, n)
        if len(s.gateway.dialled) == recipients and last_first == T0:
            last_first = s.now

    t0 = time.perf_counter()
    def done() -> bool:  # called only when no call is in progress
        with store.session() as s:
            return s.scalar(select(CampaignRow.state).where(CampaignRow.id == cid)) in FINAL

    sim.run(done=done, check=watch, max_steps=5_000_000)
    wall = time.perf_counter() - t0
    completed_at = sim.now - T0
    sim.stop()
    attempts = store.attempts_of(cid)
    final = max(_ts(a["ended_at"]) for a in attempts) - T0
    late = _retry_lateness(attempts, retry_delay)
    calls = sum(sim.gateway.dialled.values())
    b = bound(recipients=recipients, limit=limit, message=message, ring=ring,
              ring_timeout=ring_timeout, retry_delay=retry_delay, busy=n_busy,
              no_answer=n_none)
    return Reach(recipients=recipients, limit=limit, call_s=call_seconds(message, ring),
                 time_to_final_s=round(final, 3), completed_at_s=round(completed_at, 3),
                 bound_s=round(b, 3), ratio=round(final / b, 4), calls=calls, busy=n_busy,
                 no_answer=n_none, utilisation=round(busy_area / (limit * final), 4),
                 tail_s=round(final - (last_first - T0), 3), peak_calls=peak,
                 idle_early_line_s=round(idle_early, 3),
                 retry_late_max_s=round(max(late, default=0.0), 3),
                 retry_late_mean_s=round(sum(late) / len(late), 3) if late else 0.0,
                 wall_s=round(wall, 2))


def _ts(iso: str | None) -> float:
    assert iso is not None
    return to_ts(datetime.fromisoformat(iso)) or 0.0


def _retry_lateness(attempts: list[dict[str, Any]], retry_delay: float) -> list[float]:
    """For each retry: seconds between its due time (the previous call's end plus the retry
    delay) and its start."""
    last_end: dict[int, float] = {}
    late = []
    for a in attempts:  # in the order they were placed
        rid = a["recipient_id"]
        if rid in last_end:
            late.append(_ts(a["created_at"]) - (last_end[rid] + retry_delay))
        last_end[rid] = _ts(a["ended_at"])
    return late


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipients", type=int, default=10_000)
    p.add_argument("--limit", type=int, default=500, help="the global call limit L")
    p.add_argument("--message", type=float, default=20.0, help="message seconds")
    p.add_argument("--busy", type=float, default=0.10, help="share busy on the first call")
    p.add_argument("--no-answer", type=float, default=0.10,
                   help="share not answering the first call")
    p.add_argument("--retry-delay", type=float, default=60.0)
    p.add_argument("--ring", type=float, default=2.0,
                   help="seconds of ringing before an answer or a 486")
    p.add_argument("--ring-timeout", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    load_before = os.getloadavg()[0]
    r = run(recipients=a.recipients, limit=a.limit, message=a.message, busy_share=a.busy,
            no_answer_share=a.no_answer, retry_delay=a.retry_delay, ring=a.ring,
            ring_timeout=a.ring_timeout, seed=a.seed)
    load_after = os.getloadavg()[0]
    out: dict[str, Any] = {**asdict(r), "load_before": load_before, "load_after": load_after}
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{r.recipients} recipients, L = {r.limit}, confirmed call {r.call_s:g} s, "
          f"{r.busy} busy and {r.no_answer} unanswered first")
    print(f"time to final (simulated) {r.time_to_final_s:.1f} s; campaign completed at "
          f"{r.completed_at_s:.1f} s")
    print(f"bound {r.bound_s:.1f} s; ratio {r.ratio:.3f} (goal <= 1.1)")
    print(f"calls placed {r.calls}; peak {r.peak_calls} calls; lines used "
          f"{100 * r.utilisation:.1f}%; tail after the last first call {r.tail_s:.1f} s")
    print(f"line-seconds left free before the last first call started: "
          f"{r.idle_early_line_s:.3f} (scheduling gaps)")
    print(f"retries started after their due time: mean {r.retry_late_mean_s:.1f} s, "
          f"max {r.retry_late_max_s:.1f} s")
    print(f"wall time {r.wall_s:.1f} s; load average {load_before:.2f} before, "
          f"{load_after:.2f} after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
