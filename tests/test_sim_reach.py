"""The time to reach everyone (issue 16, part 4) at a small size, in virtual time
(``bench/reach.py``; the full-size figures are in bench/RESULTS.md).

A campaign of 400 recipients under a global limit of 20 calls, a tenth busy and a tenth not
answering on their first call (both confirm on the retry 60 s later): every recipient must be
final within 1.1 x the bound of ``bench/reach.py`` (the work the lines carry over the limit, or
the retry chain). The simulator's clock is virtual, so this asserts a mechanism (no slot left
idle between a call's end and the next one, retries placed at their instant), not the
machine's speed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "reach.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_reach", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_reach"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_the_bound_of_the_docstring() -> None:
    reach = _bench()
    assert reach.call_seconds(20.0, 2.0) == 26.0  # ring + key + message + key + goodbye
    # 10,000 x 26 s on 500 lines: 20 waves of 520 s, plus 1,000 busy (2 s) and 1,000 rung out
    # (30 s) spread over the lines: 64 s
    assert reach.bound(recipients=10_000, limit=500, message=20.0, ring=2.0, ring_timeout=30.0,
                       retry_delay=60.0, busy=1000, no_answer=1000) == 584.0
    # few recipients: the retry chain (2 s busy, 60 s delay, 26 s call) is the bound
    assert reach.bound(recipients=10, limit=500, message=20.0, ring=2.0, ring_timeout=30.0,
                       retry_delay=60.0, busy=1, no_answer=1) == 88.0


def test_400_recipients_on_20_lines_are_final_within_1_1_times_the_bound(tmp_path: Path) -> None:
    reach = _bench()
    r = reach.run(recipients=400, limit=20, data_dir=tmp_path)
    assert r.busy == 40 and r.no_answer == 40
    assert r.calls == 480  # each failed first call retried once, nobody called again
    assert r.peak_calls == 20  # the limit, and all of it
    assert r.idle_early_line_s == 0.0  # no line free while a recipient waited for a first call
    assert r.bound_s == pytest.approx(20 * 26 + (40 * 2 + 40 * 30) / 20)
    assert r.time_to_final_s <= 1.1 * r.bound_s, r
