"""WorkerPool admission without processes: overloaded workers, the setup-rate budget, RTP ranges."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dialer import ipc
from dialer import pool as pool_mod
from dialer.core.cluster import NodeLoad
from dialer.core.errors import ConfigError
from dialer.pool import Worker, WorkerPool
from dialer.workerprep import check_rtp_ranges


class _Channel:
    closed = False

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)

    def send_msg(self, msg: ipc.Message) -> None:
        self.send(ipc.encode(msg))


def _pool(workers: int, per: int = 4) -> WorkerPool:
    p = WorkerPool(size=workers, calls_per_worker=per, init_message=lambda i: ipc.Init(worker=i))
    for i in range(workers):
        p.workers[i] = Worker(index=i, proc=None, channel=_Channel(),  # type: ignore[arg-type]
                              started_at=0.0, ready=True)
    return p


def test_an_overloaded_worker_gets_no_new_calls_until_it_catches_up() -> None:
    p = _pool(3)
    assert p.free_slots() == 12
    p.on_message(p.workers[1], ipc.Load(overloaded=True, lag=0.2))
    assert p.free_slots() == 8
    placed = [p.dial(ipc.Dial(call_id=f"c{i}")) for i in range(8)]
    assert {w.index for w in placed if w is not None} == {0, 2}
    assert p.dial(ipc.Dial(call_id="c9")) is None
    p.on_message(p.workers[1], ipc.Load(overloaded=False, lag=0.01))
    assert p.free_slots() == 4


def test_the_node_load_counts_the_slots_taking_calls_and_the_late_workers() -> None:
    """What the node reports at each renewal (campaign watch's "running late" and "full")."""
    p = _pool(3)
    assert p.node_load() == NodeLoad(slots=12, late=0)
    p.on_message(p.workers[2], ipc.Load(overloaded=True, lag=0.2))
    assert p.node_load() == NodeLoad(slots=8, late=1, lag=0.2)
    p.workers[0].ready = False  # starting: neither slots nor late
    assert p.node_load() == NodeLoad(slots=4, late=1, lag=0.2)
    p.on_message(p.workers[1], ipc.Load(overloaded=False, lag=0.01, wait=0.07))
    assert p.node_load() == NodeLoad(slots=4, late=1, lag=0.2, wait=0.07)  # the worst of each


def test_new_calls_are_paced_by_the_setup_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("dialer.pool.time.monotonic", lambda: now[0])
    p = _pool(100)  # 400 slots
    p._tokens_at = now[0]
    assert p.free_slots() == pool_mod.SETUP_BURST
    for i in range(pool_mod.SETUP_BURST):
        assert p.dial(ipc.Dial(call_id=f"c{i}")) is not None
    assert p.free_slots() == 0
    now[0] += 0.5
    assert p.free_slots() == int(0.5 * pool_mod.SETUP_RATE)
    now[0] += 60
    assert p.free_slots() == pool_mod.SETUP_BURST  # the burst, not a minute's worth


def test_rtp_ranges_past_65535_are_refused() -> None:
    with pytest.raises(ConfigError, match="65535"):
        check_rtp_ranges(64000, 66000)
    check_rtp_ranges(20000, 22000)


def test_the_gateway_holds_the_node_below_its_calls_while_workers_run_late(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The node-level hold (dialer.core.admission) over the pool: 40 workers, 100 calls in
    progress; 2 workers late (5%) step the node's ceiling to 90, so no new call goes out until
    calls end below it; caught up, it rises and is lifted. Logged, and in the node's load."""
    import logging

    from dialer.gateway import PoolGateway

    clock = [1000.0]
    monkeypatch.setattr("dialer.gateway.time.monotonic", lambda: clock[0])
    p = _pool(40)
    p._tokens = 1e9  # the setup-rate budget is not what this test is about
    monkeypatch.setattr(p, "_refill", lambda: 1e9)
    for i in range(100):
        p.dial(ipc.Dial(call_id=f"c{i}"))
    gw = PoolGateway(p)
    cpu = [0.05]
    gw.pressure = SimpleNamespace(sample=lambda: cpu[0])  # type: ignore[assignment]
    assert gw.free_slots() == 60  # no worker late: no hold
    for i in (0, 1):
        p.on_message(p.workers[i], ipc.Load(overloaded=True, lag=0.2, wait=0.3))
    with caplog.at_level(logging.WARNING, logger="dialer.pool"):
        assert gw.free_slots() == 0
    assert gw.hold.ceiling == 90
    asked: list[int] = []
    monkeypatch.setattr(p, "scale", asked.append)
    gw.demand(1200)  # the daemon asks for the whole limit: workers for the ceiling only
    assert asked == [90]
    assert "now carries at most 90 calls at once (100 in progress)" in caplog.text
    assert gw.node_load().held == 90 and gw.node_load().slots == 90
    for w in list(p.workers.values())[2:22]:  # 20 calls end on the workers taking calls
        w.calls.discard(sorted(w.calls)[0])
    assert p.busy_slots() == 80
    clock[0] += 1
    assert gw.free_slots() == 10  # 90 - 80 (the step down waits SETTLE_S)
    for i in (0, 1):
        p.on_message(p.workers[i], ipc.Load(overloaded=False, lag=0.01, wait=0.05))
    clock[0] += 10
    gw.free_slots()
    assert gw.hold.ceiling == 106  # caught up: 5% up, four workers' calls at least
    cpu[0] = 0.40  # the machine still busy (over 2/3 of 0.50): the ceiling stays
    clock[0] += 10
    gw.free_slots()
    assert gw.hold.ceiling == 106
    cpu[0] = 0.05
    for _ in range(40):
        clock[0] += 10
        gw.free_slots()
    assert gw.hold.ceiling is None and gw.node_load().held is None
    cpu[0] = 0.65  # no worker late, but the machine short of CPU: held again
    clock[0] += 10
    with caplog.at_level(logging.WARNING, logger="dialer.pool"):
        gw.free_slots()
    assert gw.hold.ceiling == 72  # 10% below the 80 in progress
    assert "CPU pressure 0.65" in caplog.text
    off = PoolGateway(p, overload_pressure=0)  # [sip] overload_pressure = 0: not read at all
    off.pressure = SimpleNamespace(sample=lambda: 1.0)
    assert off.free_slots() > 0 and off.hold.ceiling is None
