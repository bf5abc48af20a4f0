"""The elastic pool (WorkerPool.scale, dialer.core.elastic): it grows at once when demand
comes, retires workers idle past the grace (never one with calls, never worker 0), and real
forked workers told to retire exit; the daemon reports the demand after each pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dialer import ipc
from dialer.gateway import PoolGateway
from dialer.pool import Worker, WorkerPool
from testkit import until


class _Channel:
    closed = False

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_msg(self, msg: ipc.Message) -> None:
        self.sent.append(ipc.encode(msg))


class _Proc:
    def __init__(self, pid: int) -> None:
        self.pid = pid


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr("dialer.pool.time.monotonic", lambda: now[0])
    return now


def _pool(workers: int, size: int = 20) -> WorkerPool:
    """``workers`` ready, idle workers; ``_spawn`` records instead of starting processes."""
    p = WorkerPool(size=size, calls_per_worker=4, init_message=lambda i: ipc.Init(worker=i))
    p.spawned = []  # type: ignore[attr-defined]

    def spawn(index: int) -> Worker:
        w = Worker(index=index, proc=_Proc(10_000 + index),  # type: ignore[arg-type]
                   channel=_Channel(), started_at=0.0)  # type: ignore[arg-type]
        p.workers[index] = w
        p.spawned.append(index)  # type: ignore[attr-defined]
        return w

    p._spawn = spawn  # type: ignore[method-assign]
    for i in range(workers):
        spawn(i)
        p.on_message(p.workers[i], ipc.Ready(sip_port=5060 + i))
    p.spawned.clear()  # type: ignore[attr-defined]
    return p


def _retired(p: WorkerPool) -> list[int]:
    return sorted(w.index for w in p.retiring.values())


def test_demand_beyond_the_pool_starts_the_missing_workers_at_once(clock: list[float]) -> None:
    p = _pool(2)
    p.scale(40)  # 40 calls: 10 workers + 1 spare
    assert p.spawned == list(range(2, 11))  # type: ignore[attr-defined]
    p.scale(40)  # those starting count: nothing more
    assert p.spawned == list(range(2, 11))  # type: ignore[attr-defined]


def test_a_large_growth_goes_by_steps_one_per_pass(clock: list[float]) -> None:
    p = _pool(1, size=50)
    p.grow_step = 16
    p.scale(200)  # 50 workers wanted
    assert len(p.spawned) == 16  # type: ignore[attr-defined]
    p.scale(200)  # the next pass (a new worker's ``ready`` runs one)
    p.scale(200)
    p.scale(200)
    assert p.spawned == list(range(1, 50))  # type: ignore[attr-defined]


def test_never_above_the_ceiling_of_the_limits(clock: list[float]) -> None:
    p = _pool(1)
    p.resize(5)
    p.scale(400)
    assert len(p.workers) == 5


def test_idle_workers_retire_after_the_grace_only(clock: list[float]) -> None:
    p = _pool(6)
    p.idle_grace = 60.0
    p.dial(ipc.Dial(call_id="c1"))  # on worker 0 (least busy, lowest index)
    p.dial(ipc.Dial(call_id="c2"))  # on worker 1
    clock[0] += 30
    p.scale(2)
    assert _retired(p) == []  # idle 30 s only
    clock[0] += 31
    p.scale(2)  # 2 calls: 1 worker + 1 spare = 2 kept: the two with calls
    assert _retired(p) == [2, 3, 4, 5]
    for w in p.retiring.values():
        assert w.channel.sent[-1] == {"op": "retire"}  # type: ignore[attr-defined]
    assert sorted(p.workers) == [0, 1]
    assert p.retired == 4


def test_a_worker_with_calls_or_worker_0_is_never_retired(clock: list[float]) -> None:
    p = _pool(3)
    p.idle_grace = 0.0
    w1, w2 = p.workers[1], p.workers[2]
    w1.calls.add("a")
    w1.idle_since = None
    w2.calls.add("b")
    w2.idle_since = None
    clock[0] += 100
    p.scale(0)
    assert _retired(p) == [] and sorted(p.workers) == [0, 1, 2]
    p.on_message(w2, ipc.Ended(call_id="b", status=200, reason="", q850=None,
                               outcome="contacted", answered_at=None, keys="",
                               answer_confirmed_at=None, listen_confirmed_at=None, at=0.0))
    p.scale(0)
    assert _retired(p) == [2]  # idle now; 0 (pinned) and 1 (a call) stay


def test_a_lowered_limit_shrinks_the_pool_after_the_grace(clock: list[float]) -> None:
    p = _pool(10)
    p.idle_grace = 60.0
    p.resize(3)
    p.scale(0)
    assert _retired(p) == []
    clock[0] += 60
    p.scale(100)  # whatever the demand, no more than the limit's 3 workers
    assert sorted(p.workers) == [0, 1, 2]


def test_growing_again_takes_the_lowest_free_indexes(clock: list[float]) -> None:
    p = _pool(3)
    p.idle_grace = 0.0
    clock[0] += 1
    p.scale(0)
    assert _retired(p) == [1, 2]
    p.scale(8)  # 3 workers wanted: 1 and 2 again, beside the retiring ones (the other RTP
    assert p.spawned == [1, 2]  # type: ignore[attr-defined]  # half, the alternative port)


def _init(i: int) -> ipc.Init:
    trunk = {"uri": "sip:127.0.0.1:9", "registrar": None, "username": "dialer",
             "password": "s3cret", "transport": "udp", "register": False}
    return ipc.Init(worker=i, bind="127.0.0.1", trunks={"internal": trunk},
                    allowed_sources=["127.0.0.1"], log_level=3, sip_port=0)


@pytest.fixture
def real_pool(tmp_path: Path) -> Iterator[WorkerPool]:
    p = WorkerPool(size=3, calls_per_worker=4, init_message=_init, state_dir=tmp_path / "run")
    yield p
    p.shutdown(5.0)
    for w in p.all_workers():
        w.proc.kill()


def test_real_workers_told_to_retire_exit_and_the_pool_grows_again(
        real_pool: WorkerPool) -> None:
    gateway = PoolGateway(real_pool)
    real_pool.start(3)
    until(lambda: (gateway.poll(0.05), real_pool.ready_count() >= 3)[1], 20, "3 ready")
    real_pool.idle_grace = 0.0
    lost: list[ipc.Event] = []
    real_pool.scale(0)
    retiring = [w.proc for w in real_pool.retiring.values()]
    assert sorted(w.index for w in real_pool.retiring.values()) == [1, 2]
    def exited() -> bool:
        lost.extend(m for _, m in gateway.poll(0.05))
        return not real_pool.retiring

    until(exited, 20, "the retired workers exited")
    # a clean exit: the pool lets a retiring worker that closed its socket exit by itself
    assert [p.poll() for p in retiring] == [0, 0]
    gone = [m for m in lost if isinstance(m, ipc.WorkerLost)]
    assert len(gone) == 2 and all(m.retiring and not m.calls for m in gone)
    assert real_pool.restarts == 0  # retired, not replaced
    real_pool.scale(8)
    until(lambda: (gateway.poll(0.05), real_pool.ready_count() >= 3)[1], 20, "3 ready again")


def test_the_daemon_tells_the_demand_the_limit_while_recipients_wait_then_nothing(
        tmp_path: Path) -> None:
    """In the simulator: a campaign of 30 under a limit of 8 on a gateway of 4 free slots. The
    passes that fill every offered slot report the whole limit (grow to it now); once the
    campaign is over the demand is 0 (the idle workers may retire)."""
    from dialer.storage.store import SqlStore
    from tests.sim import T0, Simulation
    from tests.test_sim import campaigns_done, internal, launch

    store = SqlStore(f"sqlite:///{tmp_path / 'sim.db'}")
    store.migrate()
    try:
        store.set_settings(actor="sim", now=T0, max_calls=8)
        launch(store, "T", [internal(n) for n in range(30)], answer_confirm=False,
               listen_confirm=False)
        sim = Simulation(store, tmp_path / "data", capacity=4)
        sim.run(until=T0 + 1)
        assert sim.gateway.demands[0] == 8  # 4 offered, 4 placed: the limit is wanted
        sim.run(done=lambda: campaigns_done(store))
        assert max(sim.gateway.demands) == 8  # never above the limit
        sim.run(until=sim.now + 5)  # safety passes after the end
        assert sim.gateway.demands[-1] == 0
        sim.stop()
    finally:
        store.dispose()


def test_the_pool_size_is_what_the_pool_keeps_not_the_ceiling(clock: list[float]) -> None:
    """``dialer_worker_pool_size`` reported the limit's ceiling (``resize``) whatever the elastic
    pool kept. ``kept``: the workers running or starting, what the gauge now shows."""
    p = _pool(2)
    p.resize(20)
    assert p.kept == 2  # the ceiling is 20: the pool keeps the 2 it has
    p.scale(40)  # 10 workers + 1 spare
    assert p.kept == 11
    assert PoolGateway(p).pool_size() == 11
    for i in range(2, 11):
        p.on_message(p.workers[i], ipc.Ready(sip_port=5060 + i))
    p.idle_grace = 0.0
    clock[0] += 1
    p.scale(0)  # nothing to do: all but worker 0 retire
    assert p.kept == 1


def test_the_daemon_reports_the_pool_kept_and_its_ceiling(tmp_path: Path) -> None:
    from dialer.storage.store import SqlStore
    from tests.sim import T0, Simulation

    store = SqlStore(f"sqlite:///{tmp_path / 'sim.db'}")
    store.migrate()
    try:
        store.set_settings(actor="sim", now=T0, max_calls=400)
        sim = Simulation(store, tmp_path / "data", capacity=4)
        sim.gateway.kept = 3
        sim.run(until=T0 + 1)
        metrics = sim.daemon.metrics
        assert metrics.pool_size._value.get() == 3
        assert metrics.pool_ceiling._value.get() == min(
            sim.daemon.config.workers, 100)
        sim.stop()
    finally:
        store.dispose()
