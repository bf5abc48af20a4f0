"""The node's overload hold (pure): carry fewer calls at once when the machine is short of CPU,
at the level where it keeps up, rather than degrade every call (issue 16).

Each SIP worker reports whether it runs late (``sip.cpuwait``: its loop comes round late, or one
of its threads, PJMEDIA's clock thread that sends the audio, waits for a CPU). A late worker takes
no new call; that alone is all or nothing per worker, and at a low threshold the node's calls
went up and down as a saw-tooth (bench/RESULTS.md). The hold works on the node as a whole, the
way TCP finds the rate a path carries (additive increase, multiplicative decrease):

* **Overloaded** (at least ``LATE_SHARE`` of the ready workers late, and at least one): the
  node's ceiling steps down to ``DECREASE`` below the calls in progress, and again at most every
  ``SETTLE_S`` (a step takes that long to show in the workers' measures) while it lasts. The
  calls in progress go on; new calls wait until calls end below the ceiling. With fewer than
  ``MIN_CALLS`` in progress there is nothing to hold back: what loads the machine then is not
  the calls (the pool's own start forks hundreds of workers: CPU pressure 0.84 with no call).
* **Caught up** (no worker late) for ``RAISE_EVERY_S``: the ceiling rises by ``INCREASE`` (a
  few workers' calls at least), until it is above what the pool can carry, and the hold is
  lifted.
* Some workers late but under the share: the ceiling stays where it is.

The machine's CPU pressure (``dialer.pressure``: the share of time tasks waited for a CPU, the
kernel's PSI) counts too: over ``pressure_overload`` (``[sip] overload_pressure``, default
``PRESSURE_OVERLOAD``) the node is overloaded, and it has caught up only under
``PRESSURE_RECOVER`` of it. The default is set from the capacity bench (bench/RESULTS.md): the
pressure where the audio stopped being sound on 2 cores.

``step`` is called at every scheduling pass with what the pool sees; ``room`` says how many more
calls the hold lets the node place (None: no hold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LATE_SHARE = 0.05
DECREASE = 0.10
SETTLE_S = 3.0
INCREASE = 0.05
RAISE_EVERY_S = 5.0
FLOOR = 4  # the hold never goes below one worker's calls
MIN_CALLS = 20  # calls in progress under which the node is never held
RAISE_MIN_WORKERS = 4  # the ceiling rises by at least this many workers' calls
PRESSURE_OVERLOAD = 0.50  # the default of [sip] overload_pressure
PRESSURE_RECOVER = 2 / 3  # of the overload threshold: caught up below it


@dataclass(frozen=True)
class Hold:
    """``ceiling``: the calls the node may carry at once (None: no hold); ``at``: when it last
    moved (the caller's clock, seconds)."""

    ceiling: int | None = None
    at: float = -math.inf


def overloaded(*, late: int, ready: int, pressure: float | None = None,
               pressure_overload: float = PRESSURE_OVERLOAD) -> bool:
    """Whether enough of the node's ready workers run late, or the machine's CPU pressure is
    high enough, to step the hold down."""
    return ((late > 0 and late >= max(1, math.ceil(LATE_SHARE * ready)))
            or (pressure is not None and pressure > pressure_overload))


def step(hold: Hold, *, now: float, in_progress: int, late: int, ready: int, capacity: int,
         per_worker: int = 4, pressure: float | None = None,
         pressure_overload: float = PRESSURE_OVERLOAD) -> Hold:
    """The hold after this pass. ``capacity``: the calls the pool could carry with every worker
    it may run (above it a ceiling means nothing: the hold is lifted); ``pressure``: the
    machine's CPU pressure (None: unknown, or not to be used)."""
    if in_progress >= MIN_CALLS and overloaded(late=late, ready=ready, pressure=pressure,
                                               pressure_overload=pressure_overload):
        if now - hold.at < SETTLE_S:
            return hold
        base = in_progress if hold.ceiling is None else min(hold.ceiling, in_progress)
        return Hold(max(FLOOR, math.floor(base * (1.0 - DECREASE))), now)
    if (hold.ceiling is None or late or now - hold.at < RAISE_EVERY_S
            or (pressure is not None and pressure >= PRESSURE_RECOVER * pressure_overload)):
        return hold
    up = hold.ceiling + max(RAISE_MIN_WORKERS * per_worker, math.ceil(hold.ceiling * INCREASE))
    return Hold(None, now) if up >= capacity else Hold(up, now)


def room(hold: Hold, in_progress: int) -> int | None:
    """How many more calls the hold lets the node place now (None: no hold)."""
    return None if hold.ceiling is None else max(0, hold.ceiling - in_progress)
