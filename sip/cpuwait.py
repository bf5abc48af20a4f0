"""The overload gate of a SIP worker (``sip.worker``): how late its loop runs, and how long its
threads waited for a CPU, the measure of a machine short of CPU where the audio suffers.

The kernel counts, per thread, the time it was runnable but not running
(``/proc/self/task/<tid>/schedstat``, second field, ns; CONFIG_SCHED_INFO, on in Debian's
kernels). A worker's audio is sent by PJMEDIA's clock thread every 20 ms: when that thread
waits for a CPU, its packets leave late and bunch, which the far end hears as jitter and gaps.
``CpuWait.sample`` returns, for the interval since the previous sample, the largest share of
that interval any one thread of the process spent waiting (0.0: never waited; 0.1: 100 ms of
every second). It reads a few small files: cheap enough once a second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TASKS = Path("/proc/self/task")

# Overload: how late the loop comes round (an average over about a second of iterations) past
# which the worker asks for no new calls, and below which it takes them again. On a machine
# short of CPU every process waits for a core; the calls in progress keep theirs.
LAG_OVERLOAD_S = 0.10
LAG_RECOVER_S = 0.03
# The same gate, measured where the audio suffers: the largest share of a second one of the
# worker's threads (PJMEDIA's clock thread sends the audio) waited for a CPU, over which the
# worker takes no new calls, and under which it takes them again. Set from the capacity bench
# (bench/RESULTS.md, issue 16): at 500 calls on 2 cores, every key recorded, jitter p99 6 ms and
# no loss, the worst thread of any worker waited 0.235 of a second; the gate engages above that.
WAIT_OVERLOAD = 0.25
WAIT_RECOVER = 0.10
LOAD_SAMPLE_S = 1.0  # how often the CPU wait is sampled
LOAD_REPORT_S = 2.0  # the load goes to the daemon on every change of the gate, and at most
# this often when a measure moved by REPORT_STEP or more since it was last sent
REPORT_STEP = 0.01


def overloaded(now: bool, *, lag: float, wait: float) -> bool:
    """The gate, with hysteresis: overloaded once the loop's lag or a thread's CPU wait passes
    its overload threshold, caught up once both are under their recovery thresholds."""
    if now:
        return lag > LAG_RECOVER_S or wait > WAIT_RECOVER
    return lag > LAG_OVERLOAD_S or wait > WAIT_OVERLOAD


def read_waits(tasks: Path = TASKS) -> dict[str, int]:
    """Thread id -> ns it has spent runnable but not running (threads that vanish are skipped;
    an empty dict where the kernel keeps no schedstat)."""
    out: dict[str, int] = {}
    try:
        tids = os.listdir(tasks)
    except OSError:
        return out
    for tid in tids:
        try:
            fields = (tasks / tid / "schedstat").read_text().split()
            out[tid] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


class CpuWait:
    """The largest share of the last interval a thread of this process waited for a CPU."""

    def __init__(self, read: Callable[[], dict[str, int]] = read_waits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read, self._clock = read, clock
        self._last = read()
        self._at = clock()

    def sample(self) -> float | None:
        """The share since the previous sample (None: no schedstat, or no time has passed)."""
        waits, now = self._read(), self._clock()
        elapsed, self._at = now - self._at, now
        previous, self._last = self._last, waits
        if not waits or elapsed <= 0:
            return None
        worst = max((w - previous[t] for t, w in waits.items() if t in previous), default=0)
        return max(0.0, worst / 1e9 / elapsed)


@dataclass(frozen=True)
class LoadReport:
    """What the worker tells the daemon (``ipc.Load``); ``changed``: the gate just moved."""

    overloaded: bool
    lag: float
    wait: float
    changed: bool


class LoadGate:
    """A worker's overload gate: fed how late each loop turn came round, it samples the CPU
    wait every ``LOAD_SAMPLE_S`` and says what to report (``step``): on every change of the
    gate, else at most every ``LOAD_REPORT_S`` when a measure moved by ``REPORT_STEP``."""

    def __init__(self, cpu: CpuWait | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cpu, self._clock = cpu or CpuWait(), clock
        self.lag = 0.0  # moving average of how late each loop turn came round (s)
        self.wait = 0.0  # the last CPU wait sample
        self.overloaded = False
        self._sampled = self._reported_at = clock()
        self._reported = (0.0, 0.0)

    def step(self, late: float) -> LoadReport | None:
        self.lag = 0.95 * self.lag + 0.05 * max(0.0, late)
        now = self._clock()
        if now - self._sampled >= LOAD_SAMPLE_S:
            self._sampled = now
            self.wait = self._cpu.sample() or 0.0
        over = overloaded(self.overloaded, lag=self.lag, wait=self.wait)
        lag, wait = round(self.lag, 3), round(self.wait, 3)
        moved = max(abs(lag - self._reported[0]), abs(wait - self._reported[1]))
        changed = over != self.overloaded
        if not changed and (now - self._reported_at < LOAD_REPORT_S or moved < REPORT_STEP):
            return None
        self._reported_at, self._reported, self.overloaded = now, (lag, wait), over
        return LoadReport(over, lag, wait, changed)
