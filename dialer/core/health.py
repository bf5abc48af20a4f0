"""A trunk's health guard (issue 13), as pure functions: when a trunk is taken out of service.

A trunk is judged by its last attempts: when at least ``failures`` of the last ``window``
attempts that ended since it was last put back in service are ``unreachable`` or
``congestion``, it turns unhealthy for a back-off period, ``backoff`` seconds the first time
and doubled every time it trips again before an attempt on it succeeds, up to
``backoff_max``. Repeated registration failures trip it too (a registrar that answers 403 or
times out over and over). While it is unhealthy no call is placed on it (the router,
``dialer.core.routing``, skips it: its recipients go to the next trunk of their route or wait,
and no attempt is spent); when the back-off ends it is put back in service with a clean window,
and one more run of failures sends it back for twice as long.

The state lives in the database (``trunk_health``, one row per trunk), so that every node
sees the same health; the storage adapter reads the window off the attempts and stores what
``assess`` returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from dialer.core.domain import Outcome

BAD = frozenset({Outcome.UNREACHABLE, Outcome.CONGESTION})
"""The outcomes that tell against the trunk rather than the person called."""
THROUGH = frozenset({Outcome.CONTACTED, Outcome.BUSY, Outcome.NO_ANSWER, Outcome.REJECTED,
                     Outcome.HUNG_UP, Outcome.NOT_CONFIRMED})
"""The outcomes of calls the trunk carried to the far end: it works."""


@dataclass(frozen=True)
class HealthPolicy:
    """``[trunks.<name>]`` ``health_window``, ``health_failures``, ``backoff``, ``backoff_max``."""

    window: int = 10
    failures: int = 5
    backoff: float = 30.0
    backoff_max: float = 600.0

    def backoff_for(self, level: int) -> float:
        """The back-off of the ``level``-th trip in a row (1: the first)."""
        return float(min(self.backoff_max, self.backoff * 2.0 ** max(0, level - 1)))


@dataclass(frozen=True)
class Health:
    """A trunk's health as stored. ``until``: unhealthy until then (None: healthy); ``level``:
    trips since an attempt on it last succeeded; ``since``: the window counts attempts ended
    after this instant (its last return to service); ``reg_failures``: registration failures
    in a row."""

    until: float | None = None
    level: int = 0
    since: float = 0.0
    reason: str = ""
    reg_failures: int = 0

    def healthy(self, now: float) -> bool:
        return self.until is None or now >= self.until


@dataclass(frozen=True)
class Change:
    """A move of a trunk's health worth a history event and a log line."""

    healthy: bool
    reason: str
    until: float | None = None


def assess(policy: HealthPolicy, state: Health, recent: Sequence[Outcome],
           now: float) -> tuple[Health, Change | None]:
    """After an attempt on the trunk ended: ``recent`` holds the outcomes of its last attempts
    ended after ``state.since``, newest first. Returns the new state and the change, if any."""
    if not state.healthy(now):
        return state, None  # already out of service: the back-off runs its course
    state = back_in_service(state, now)[0]
    window = list(recent[:policy.window])
    if window and window[0] in THROUGH:
        # the newest attempt got through the trunk: trips are forgiven
        return (dataclasses.replace(state, level=0) if state.level else state), None
    bad = [o for o in window if o in BAD]
    if len(bad) < policy.failures:
        return state, None
    counts = {o.value: bad.count(o) for o in (Outcome.UNREACHABLE, Outcome.CONGESTION)
              if o in bad}
    reason = (f"{len(bad)} of the last {len(window)} attempts "
              + " and ".join(f"{n} {name}" for name, n in counts.items()))
    return _trip(policy, state, now, reason)


def registration_failed(policy: HealthPolicy, state: Health, now: float,
                        why: str) -> tuple[Health, Change | None]:
    """A registration of the trunk failed: ``failures`` of them in a row trip it."""
    n = state.reg_failures + 1
    state = dataclasses.replace(state, reg_failures=n)
    if n < policy.failures or not state.healthy(now):
        return state, None
    return _trip(policy, dataclasses.replace(state, reg_failures=0), now,
                 f"{n} registration failures in a row ({why})")


def registered(state: Health) -> Health:
    return dataclasses.replace(state, reg_failures=0) if state.reg_failures else state


def back_in_service(state: Health, now: float) -> tuple[Health, Change | None]:
    """The back-off is over: in service again with a clean window (``since`` = its end)."""
    if state.until is None or now < state.until:
        return state, None
    return (dataclasses.replace(state, until=None, since=state.until, reason=""),
            Change(healthy=True, reason=f"back in service after {state.reason}"))


def _trip(policy: HealthPolicy, state: Health, now: float,
          reason: str) -> tuple[Health, Change]:
    level = state.level + 1
    until = now + policy.backoff_for(level)
    return (dataclasses.replace(state, until=until, level=level, reason=reason, since=now),
            Change(healthy=False, reason=reason, until=until))
