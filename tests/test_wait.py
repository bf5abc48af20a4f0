"""How long the worker's loop waits in libHandleEvents (sip.calls.wait_ms): the longest wait
unless a call's deadline is nearer, and never a busy loop on a deadline already past."""

from __future__ import annotations

import math
from typing import Any

from sip.calls import wait_ms


class Att:
    def __init__(self, **kw: Any) -> None:
        self.timer: tuple[float, int] | None = kw.get("timer")
        self.ring_deadline: float = kw.get("ring", math.inf)
        self.invite_deadline: float = kw.get("invite", math.inf)
        self.hangup_deadline: float | None = kw.get("hangup")


def test_nothing_due_waits_the_longest() -> None:
    assert wait_ms(10.0, [], [], None, 100) == 100
    assert wait_ms(10.0, [Att()], [], None, 100) == 100


def test_the_nearest_deadline_ahead_shortens_the_wait() -> None:
    assert wait_ms(10.0, [Att(timer=(10.03, 1))], [], None, 100) == 30
    assert wait_ms(10.0, [Att(ring=12.0), Att(hangup=10.0101)], [], None, 100) == 11
    assert wait_ms(10.0, [Att(invite=10.05)], [(10.02, object())], None, 100) == 20
    assert wait_ms(10.0, [], [], 10.004, 100) == 4  # the node's lease
    assert wait_ms(10.0, [Att(timer=(15.0, 1))], [], None, 100) == 100


def test_a_deadline_past_or_now_never_makes_a_zero_wait() -> None:
    assert wait_ms(10.0, [Att(timer=(9.0, 1), ring=10.0)], [(5.0, object())], 3.0, 100) == 100
    assert wait_ms(10.0, [Att(timer=(10.0000001, 1))], [], None, 100) == 1
