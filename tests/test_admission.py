"""The node's overload hold (dialer.core.admission): steps down below the calls in progress when
enough workers run late, at most once per settling time, steps back up while none is late, and
is lifted above what the pool carries; driven by a simulated node whose workers run late above
a sound level, it holds near that level instead of swinging between none and all."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialer.core import admission
from dialer.core.admission import Hold, room, step


def test_no_hold_while_no_worker_is_late() -> None:
    h = step(Hold(), now=0.0, in_progress=300, late=0, ready=80, capacity=500)
    assert h == Hold()
    assert room(h, 300) is None


def test_overload_holds_below_the_calls_in_progress_then_waits_to_settle() -> None:
    h = step(Hold(), now=10.0, in_progress=600, late=8, ready=150, capacity=1200)
    assert h == Hold(540, 10.0)  # 10% below
    assert room(h, 600) == 0 and room(h, 500) == 40
    # still late one second later: the step has not had time to show
    assert step(h, now=11.0, in_progress=600, late=9, ready=150, capacity=1200) == h
    h2 = step(h, now=13.0, in_progress=560, late=9, ready=150, capacity=1200)
    assert h2 == Hold(486, 13.0)  # from the ceiling or the calls, whichever is lower


def test_a_few_late_workers_under_the_share_keep_the_ceiling() -> None:
    assert not admission.overloaded(late=1, ready=150)  # 5% of 150 is 8
    h = Hold(540, 0.0)
    assert step(h, now=100.0, in_progress=540, late=1, ready=150, capacity=1200) == h
    assert admission.overloaded(late=1, ready=10)  # at least one


def test_caught_up_the_ceiling_rises_then_the_hold_is_lifted() -> None:
    h = Hold(400, 0.0)
    assert step(h, now=4.0, in_progress=400, late=0, ready=120, capacity=480) == h  # too soon
    h = step(h, now=5.0, in_progress=400, late=0, ready=120, capacity=480)
    assert h == Hold(420, 5.0)  # 5%
    h = step(h, now=10.0, in_progress=420, late=0, ready=120, capacity=480)
    assert h == Hold(441, 10.0)
    h = step(h, now=15.0, in_progress=441, late=0, ready=120, capacity=480)
    assert h == Hold(464, 15.0)
    assert step(h, now=20.0, in_progress=464, late=0, ready=120, capacity=480) == Hold(None, 20.0)
    # low, it rises by four workers' calls at least
    assert step(Hold(40, 0.0), now=5.0, in_progress=40, late=0, ready=120,
                capacity=480) == Hold(56, 5.0)


def test_never_below_one_workers_calls_and_no_hold_of_a_few_calls() -> None:
    assert step(Hold(5), now=0.0, in_progress=30, late=1, ready=1, capacity=400).ceiling == 4
    # the pool's start loads the machine with no call in progress: nothing to hold back
    assert step(Hold(), now=0.0, in_progress=0, late=0, ready=300, capacity=1200,
                pressure=0.84) == Hold()
    assert step(Hold(), now=0.0, in_progress=admission.MIN_CALLS - 1, late=3, ready=10,
                capacity=400) == Hold()


@given(st.integers(0, 2000), st.integers(0, 300), st.integers(1, 300), st.floats(0, 1e6))
def test_the_hold_never_lets_more_calls_in_while_overloaded(in_progress: int, late: int,
                                                              ready: int, now: float) -> None:
    before = Hold(in_progress + 10, now - 100.0)
    after = step(before, now=now, in_progress=in_progress, late=late, ready=ready,
                 capacity=4 * 300)
    if admission.overloaded(late=late, ready=ready) and in_progress >= admission.MIN_CALLS:
        assert after.ceiling is not None
        assert after.ceiling <= max(admission.FLOOR, in_progress)
    else:
        assert after.ceiling is None or after.ceiling >= before.ceiling  # type: ignore[operator]


def test_a_simulated_node_is_held_near_its_sound_level() -> None:
    """A node asked for 1,200 calls whose workers run late above 520 concurrent calls: calls end
    at random over 25 s, a pass every 0.25 s places what the hold lets in. After the first
    minute the calls stay between 430 and 600, never swinging to nothing."""
    import random

    rng = random.Random(7)
    sound, asked, per_worker = 520, 1200, 4
    ends: list[float] = []
    hold = Hold()
    seen: list[int] = []
    now = 0.0
    while now < 600.0:
        ends = [t for t in ends if t > now]
        calls = len(ends)
        late = max(0, math.ceil((calls - sound) / per_worker)) if calls > sound else 0
        hold = step(hold, now=now, in_progress=calls, late=late,
                    ready=math.ceil(asked / per_worker), capacity=asked)
        free = asked - calls
        r = room(hold, calls)
        place = min(free, 25 if r is None else r)  # the pool's setup rate: 100 calls a second
        ends += [now + rng.uniform(20.0, 30.0) for _ in range(place)]
        if now > 60.0:
            seen.append(calls)
        now += 0.25
    assert min(seen) >= 430 and max(seen) <= 600, (min(seen), max(seen))


def test_the_machines_cpu_pressure_holds_the_node_too() -> None:
    h = step(Hold(), now=0.0, in_progress=400, late=0, ready=100, capacity=1200, pressure=0.55)
    assert h == Hold(360, 0.0)
    # under the threshold (0.50) but over 2/3 of it: not caught up, the ceiling stays
    assert step(h, now=10.0, in_progress=360, late=0, ready=100, capacity=1200,
                pressure=0.40) == h
    assert step(h, now=10.0, in_progress=360, late=0, ready=100, capacity=1200,
                pressure=0.10).ceiling == 378
    # another threshold (``[sip] overload_pressure``), and None: not known, not used
    assert step(Hold(), now=0.0, in_progress=400, late=0, ready=100, capacity=1200,
                pressure=0.55, pressure_overload=0.6) == Hold()
    assert step(Hold(), now=0.0, in_progress=400, late=0, ready=100, capacity=1200,
                pressure=None) == Hold()


def test_the_pressure_is_the_share_of_time_tasks_waited(tmp_path: Path) -> None:
    from dialer.pressure import CpuPressure, read_stall_us

    psi = tmp_path / "cpu"
    psi.write_text("some avg10=1.00 avg60=0.50 avg300=0.10 total=1000000\n"
                   "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert read_stall_us(psi) == 1_000_000
    assert read_stall_us(tmp_path / "none") is None
    now = [0.0]
    p = CpuPressure(read=lambda: read_stall_us(psi), clock=lambda: now[0])
    assert p.sample() == 0.0
    psi.write_text("some avg10=1.00 avg60=0.50 avg300=0.10 total=1400000\n")
    now[0] = 0.5
    assert p.sample() == 0.0  # under SAMPLE_S: the last share
    now[0] = 2.0
    assert p.sample() == pytest.approx(0.2)  # 0.4 s of stall in 2 s
    assert CpuPressure(read=lambda: None).sample() is None
