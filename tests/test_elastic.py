"""The elastic pool's decision (dialer.core.elastic): grow ahead of demand at once, retire only
workers idle past the grace, never one with calls."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dialer.core.elastic import Scale, WorkerLoad, decide, demand, target

NOW = 1000.0


def idle(index: int, since: float = 0.0) -> WorkerLoad:
    return WorkerLoad(index=index, calls=0, idle_since=since)


def busy(index: int, calls: int = 4) -> WorkerLoad:
    return WorkerLoad(index=index, calls=calls, idle_since=None)


def test_target_covers_the_demand_plus_the_margin_within_the_bounds() -> None:
    assert target(0, calls_per_worker=4, maximum=125) == 1  # the margin: one spare worker
    assert target(1, calls_per_worker=4, maximum=125) == 2
    assert target(8, calls_per_worker=4, maximum=125) == 3
    assert target(500, calls_per_worker=4, maximum=125) == 125  # never above the maximum
    assert target(0, calls_per_worker=4, maximum=125, margin=0, minimum=0) == 0
    assert target(0, calls_per_worker=4, maximum=125, margin=0, minimum=2) == 2
    assert target(0, calls_per_worker=4, maximum=1, minimum=3) == 1


def test_demand_is_the_calls_in_progress_unless_the_pass_was_full() -> None:
    # 3 placed of 8 offered: nobody else is waiting
    assert demand(in_progress=10, placed=3, capacity=8, limit=500, ceiling=500) == 10
    # every offered slot taken: as many as the limit allows may be wanted
    assert demand(in_progress=10, placed=8, capacity=8, limit=500, ceiling=400) == 400
    assert demand(in_progress=10, placed=8, capacity=8, limit=40, ceiling=400) == 40
    assert demand(in_progress=10, placed=8, capacity=8, limit=None, ceiling=400) == 400
    # offered nothing (workers full, or the setup rate's budget spent): no new information
    assert demand(in_progress=12, placed=0, capacity=0, limit=500, ceiling=500) == 12
    # a limit lowered below the calls in progress: those calls still need their workers
    assert demand(in_progress=30, placed=1, capacity=1, limit=20, ceiling=500) == 30


def test_demand_above_the_pool_starts_the_missing_workers_in_one_step() -> None:
    s = decide([idle(0, NOW)], starting=0, demand=500, calls_per_worker=4, maximum=125,
               now=NOW, step=200)
    assert s == Scale(start=124)


def test_growth_goes_by_steps() -> None:
    s = decide([idle(0, NOW)], starting=0, demand=500, calls_per_worker=4, maximum=125,
               now=NOW, step=16)
    assert s == Scale(start=16)
    s = decide([idle(0, NOW)], starting=112, demand=500, calls_per_worker=4, maximum=125,
               now=NOW, step=16)
    assert s == Scale(start=12)  # the last step: up to the target


def test_workers_still_starting_count() -> None:
    s = decide([busy(0)], starting=3, demand=16, calls_per_worker=4, maximum=125, now=NOW)
    assert s == Scale(start=1)  # 16 calls + 1 spare: 5 workers, 4 there or coming


def test_idle_workers_retire_only_after_the_grace_highest_index_first() -> None:
    pool = [busy(0), idle(1, NOW - 100), idle(2, NOW - 100), idle(3, NOW - 10)]
    s = decide(pool, starting=0, demand=4, calls_per_worker=4, maximum=125, now=NOW,
               idle_grace=60.0)
    assert s == Scale(retire=(2, 1))  # 3 is idle for 10 s only: kept, though not needed
    # within the grace nothing goes
    s = decide(pool, starting=0, demand=4, calls_per_worker=4, maximum=125, now=NOW,
               idle_grace=200.0)
    assert s == Scale()


def test_a_pinned_worker_is_never_retired() -> None:
    pool = [idle(0), busy(1, 1), busy(2, 1)]
    assert decide(pool, starting=0, demand=2, calls_per_worker=4, maximum=125, now=NOW,
                  pinned=(0,)) == Scale()
    assert decide(pool, starting=0, demand=2, calls_per_worker=4, maximum=125,
                  now=NOW) == Scale(retire=(0,))


def test_no_more_retire_than_the_surplus() -> None:
    pool = [idle(i, 0.0) for i in range(10)]
    s = decide(pool, starting=0, demand=8, calls_per_worker=4, maximum=125, now=NOW)
    assert s == Scale(retire=(9, 8, 7, 6, 5, 4, 3))  # 3 kept: 2 for the demand, 1 spare


def test_a_worker_with_calls_is_never_retired() -> None:
    pool = [busy(i, 1) for i in range(10)]
    assert decide(pool, starting=0, demand=0, calls_per_worker=4, maximum=125,
                  now=NOW) == Scale()


loads = st.lists(st.tuples(st.integers(0, 4), st.floats(0, NOW)), max_size=30)


@given(loads=loads, starting=st.integers(0, 5), demand=st.integers(0, 200),
       maximum=st.integers(1, 40), grace=st.floats(0, 2 * NOW),
       pinned=st.sets(st.integers(0, 5), max_size=2), step=st.integers(1, 50))
def test_decisions_keep_the_rules(loads: list[tuple[int, float]], starting: int, demand: int,
                                  maximum: int, grace: float, pinned: set[int],
                                  step: int) -> None:
    pool = [WorkerLoad(index=i, calls=c, idle_since=None if c else since)
            for i, (c, since) in enumerate(loads)]
    s = decide(pool, starting=starting, demand=demand, calls_per_worker=4, maximum=maximum,
               now=NOW, idle_grace=grace, pinned=pinned, step=step)
    want = target(demand, calls_per_worker=4, maximum=maximum)
    have = len(pool) + starting
    assert not (s.start and s.retire)
    assert s.start == min(step, max(0, want - have))
    by_index = {w.index: w for w in pool}
    assert len(set(s.retire)) == len(s.retire) <= max(0, have - want)
    for i in s.retire:
        w = by_index[i]
        assert w.calls == 0 and w.idle_since is not None and NOW - w.idle_since >= grace
        assert i not in pinned
    # every idle-enough worker beyond the target goes (nothing idle is kept for no reason)
    eligible = [w for w in pool if w.calls == 0 and w.idle_since is not None
                and NOW - w.idle_since >= grace and w.index not in pinned]
    assert len(s.retire) == min(len(eligible), max(0, have - want))
