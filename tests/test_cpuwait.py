"""The overload gate's measure (``sip.cpuwait``): the largest share of an interval one thread
of the process waited for a CPU, from the kernel's per-thread schedstat."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sip.cpuwait import CpuWait, read_waits


def test_the_worst_thread_of_the_interval_is_reported() -> None:
    counts = iter([{"1": 0, "2": 0}, {"1": 50_000_000, "2": 200_000_000, "3": 9_000_000_000}])
    clock = iter([10.0, 12.0])
    w = CpuWait(read=lambda: next(counts), clock=lambda: next(clock))
    assert w.sample() == 0.1  # thread 2: 200 ms of 2 s; thread 3 is new: no interval yet


def test_no_schedstat_or_no_time_gives_none() -> None:
    w = CpuWait(read=dict, clock=lambda: 5.0)
    assert w.sample() is None


def test_a_missing_task_directory_reads_as_nothing(tmp_path: Path) -> None:
    assert read_waits(tmp_path / "none") == {}
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "schedstat").write_text("garbage")
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "schedstat").write_text("100 2500 3\n")
    assert read_waits(tmp_path) == {"8": 2500}


def test_a_thread_kept_off_the_cpu_is_seen_waiting() -> None:
    """This process and a spinning child pinned to the same CPU: the kernel makes each wait for
    the other about half of the time, which it counts and the sample reports."""
    if not Path("/proc/self/task").is_dir() or not read_waits():
        import pytest

        pytest.skip("no per-thread schedstat on this kernel")
    cpus = os.sched_getaffinity(0)
    cpu = min(cpus)
    os.sched_setaffinity(0, {cpu})
    child = os.fork()
    if child == 0:  # the spinner: bounded in time, whatever happens to the test
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pass
        os._exit(0)
    try:
        w = CpuWait()
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            pass  # the main thread spins too: two on one CPU
        share = w.sample()
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        os.sched_setaffinity(0, cpus)
    assert share is not None and share > 0.2  # it waited for the child a good part of it


def test_the_gate_has_hysteresis_on_both_measures() -> None:
    from sip.cpuwait import (
        LAG_OVERLOAD_S,
        LAG_RECOVER_S,
        WAIT_OVERLOAD,
        WAIT_RECOVER,
        overloaded,
    )

    between = (WAIT_OVERLOAD + WAIT_RECOVER) / 2
    assert not overloaded(False, lag=0.0, wait=between)  # not yet
    assert overloaded(False, lag=0.0, wait=WAIT_OVERLOAD * 1.01)
    assert overloaded(True, lag=0.0, wait=between)  # not caught up yet
    assert not overloaded(True, lag=0.0, wait=WAIT_RECOVER * 0.99)
    assert overloaded(False, lag=LAG_OVERLOAD_S * 1.01, wait=0.0)
    assert overloaded(True, lag=(LAG_OVERLOAD_S + LAG_RECOVER_S) / 2, wait=0.0)
    assert not overloaded(True, lag=LAG_RECOVER_S * 0.99, wait=WAIT_RECOVER * 0.99)


def test_the_gate_reports_changes_at_once_and_moves_at_most_every_report_interval() -> None:
    from sip.cpuwait import LOAD_REPORT_S, WAIT_OVERLOAD, LoadGate

    now = [0.0]
    waits = iter([0.0, 0.0, WAIT_OVERLOAD * 2, WAIT_OVERLOAD * 2, 0.0, 0.0, 0.0, 0.0])

    class Cpu(CpuWait):
        def __init__(self) -> None:
            pass

        def sample(self) -> float | None:
            return next(waits)

    gate = LoadGate(cpu=Cpu(), clock=lambda: now[0])
    reports = []
    for _ in range(8):  # a turn a second: one CPU sample each
        now[0] += 1.0
        reports.append(gate.step(0.0))
    shown = [(r.overloaded, r.changed) if r else None for r in reports]
    assert shown[0] is None and shown[1] is None  # nothing moved
    assert shown[2] == (True, True)  # the wait passed the threshold: at once
    assert shown[3] is None  # overloaded still, nothing new to say
    assert shown[4] == (False, True)  # caught up: at once
    assert all(s is None for s in shown[5:])  # steady: silent
    assert LOAD_REPORT_S > 1.0 and gate.overloaded is False
