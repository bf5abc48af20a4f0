"""How many SIP workers the pool keeps (pure): grow ahead of demand, shrink idle workers late.

The pool asks ``decide`` at every scheduling pass with what it sees: its workers (calls each
carries, since when each has carried none), how many are still starting, and the demand, i.e.
the calls in progress plus the calls the scheduler could place now (the daemon's estimate: the
room under the global limit when the last pass filled every free slot, else what it placed).

* The target is the workers that demand needs, ``ceil(demand / calls_per_worker)``, plus
  ``margin`` spare workers, within ``[minimum, maximum]``. Below it, start the missing workers
  at once (``step`` at a time: each start costs the daemon's loop a fork request): a worker
  takes a good fraction of a second to become ready, so it is started before the calls that
  will need it (a pass that filled every slot says more are wanted: the daemon's demand is
  then the whole limit, and the pool grows towards it at every pass until it is there).
* Above it, retire (finish calls, take none, exit) only workers that carry no call and have
  carried none for ``idle_grace`` seconds: hysteresis, so that a campaign's tail, a limit
  lowered for a minute or the gap between two campaigns does not stop and start processes.
  The highest indexes go first (the pool then stays a prefix of its SIP ports and RTP ranges).
  A worker with calls is never retired, nor a pinned one (worker 0: the trunks' registrations).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

MARGIN = 1  # spare workers beyond the demand
# Workers started per decision at most: a start costs the daemon's loop a fork request (~18 ms
# each on a loaded 2-core machine: 124 at once blocked it 2.2 s, bench/RESULTS.md); each new
# worker's ``ready`` runs a pass, and that pass's decision starts the next ones.
GROW_STEP = 16
IDLE_GRACE = 60.0  # seconds a worker must have been idle (and not needed) before it retires


@dataclass(frozen=True)
class WorkerLoad:
    """One running worker of the pool, as ``decide`` sees it. ``idle_since``: when it last
    became free of calls (None: it carries calls now)."""

    index: int
    calls: int
    idle_since: float | None


@dataclass(frozen=True)
class Scale:
    """What to do: start ``start`` workers, retire the workers of these indexes."""

    start: int = 0
    retire: tuple[int, ...] = ()


def demand(*, in_progress: int, placed: int, capacity: int, limit: int | None,
           ceiling: int) -> int:
    """The daemon's estimate of the calls wanted after a pass: those in progress (the ones it
    just placed included), plus, when the pass used every free slot it was offered (more
    recipients may be waiting), the room left under the global ``limit`` (None: the pool's
    ``ceiling`` of calls). A pass offered no slot says nothing: the spare worker filled means
    an earlier pass was full already."""
    if capacity > 0 and placed >= capacity:
        top = ceiling if limit is None else min(limit, ceiling)
        return max(in_progress, top)
    return in_progress


def target(demand: int, *, calls_per_worker: int, maximum: int, minimum: int = 1,
           margin: int = MARGIN) -> int:
    """Workers for ``demand`` calls, with ``margin`` spare, within ``[minimum, maximum]``."""
    need = -(-max(0, demand) // max(1, calls_per_worker)) + margin
    return max(min(minimum, maximum), min(maximum, need))


def decide(workers: Sequence[WorkerLoad], *, starting: int, demand: int, calls_per_worker: int,
           maximum: int, now: float, minimum: int = 1, margin: int = MARGIN,
           idle_grace: float = IDLE_GRACE, pinned: Collection[int] = (),
           step: int = GROW_STEP) -> Scale:
    """Start or retire workers for ``demand`` (see the module docstring). ``workers``: those
    running and not retiring; ``starting``: started, not ready yet (they count as workers);
    ``pinned``: indexes never retired (worker 0 holds the trunks' registrations); ``step``: at
    most that many started at once."""
    want = target(demand, calls_per_worker=calls_per_worker, maximum=maximum, minimum=minimum,
                  margin=margin)
    have = len(workers) + starting
    if have < want:
        return Scale(start=min(want - have, max(1, step)))
    if have == want:
        return Scale()
    idle = [w for w in workers if w.calls == 0 and w.idle_since is not None
            and now - w.idle_since >= idle_grace and w.index not in pinned]
    idle.sort(key=lambda w: -w.index)
    return Scale(retire=tuple(w.index for w in idle[:have - want]))
