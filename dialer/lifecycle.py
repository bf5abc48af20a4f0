"""Campaign and recipient lifecycle rules (SPEC section 2) as pure functions.

Recipients: an attempt that succeeds makes the recipient ``contacted``; every other outcome is an
unsuccessful attempt (it counts, whatever the cause, because the call was placed): the recipient
goes back to ``idle`` with a retry time, or to ``failed`` when its attempts are used up. The one
exception is ``trunk_down``: the trunk was found down before the INVITE had any answer, nobody was
called, and the recipient goes back to ``idle`` at once with its attempts untouched (nothing is
dialled on a trunk that is down, so it waits for the trunk).

Campaigns: ``scheduled`` becomes ``active`` when its start time comes, or ``blocked`` while the
global number of active campaigns is reached; blocked campaigns become active by priority, then
start time, when a place frees. An active campaign whose recipients are all done becomes
``completed`` when the threshold of contacted recipients is reached, ``incomplete`` otherwise.

Threshold reached early: by default (as the reference) the campaign keeps calling until every
recipient is done. With ``keep_calling_after_threshold = False`` it places no new call once the
threshold is reached and becomes ``completed`` when the calls in progress end; the recipients not
yet called stay ``idle`` (never called) in its record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dialer.domain import CampaignState, Outcome, RecipientState


@dataclass(frozen=True, kw_only=True)
class RecipientUpdate:
    """The new standing of a recipient after one attempt."""

    state: RecipientState
    attempts: int
    next_at: float | None


def after_attempt(*, attempts: int, max_attempts: int, outcome: Outcome, now: float,
                  retry_delay: float, stopped: bool = False) -> RecipientUpdate:
    """Apply the outcome of one call to a recipient that had ``attempts`` unsuccessful ones."""
    if outcome.success:
        return RecipientUpdate(state=RecipientState.CONTACTED, attempts=attempts, next_at=None)
    if not outcome.counted:
        if stopped or attempts >= max_attempts:
            return RecipientUpdate(state=RecipientState.STOPPED if stopped
                                   else RecipientState.FAILED, attempts=attempts, next_at=None)
        return RecipientUpdate(state=RecipientState.IDLE, attempts=attempts, next_at=now)
    used = attempts + 1
    if stopped:
        return RecipientUpdate(state=RecipientState.STOPPED, attempts=used, next_at=None)
    if used >= max_attempts:
        return RecipientUpdate(state=RecipientState.FAILED, attempts=used, next_at=None)
    return RecipientUpdate(state=RecipientState.IDLE, attempts=used, next_at=now + retry_delay)


@dataclass(frozen=True, kw_only=True)
class Tally:
    """How many recipients of a campaign stand in each state."""

    idle: int = 0
    active: int = 0
    contacted: int = 0
    failed: int = 0
    stopped: int = 0

    @property
    def total(self) -> int:
        return self.idle + self.active + self.contacted + self.failed + self.stopped


def threshold_of(threshold: int | None, total: int) -> int:
    """The number of contacted recipients that completes a campaign (default: all)."""
    return total if threshold is None else min(threshold, total)


def may_call(tally: Tally, threshold: int | None, keep_calling: bool) -> bool:
    """Whether an active campaign may still place new calls."""
    if keep_calling:
        return True
    return tally.contacted < threshold_of(threshold, tally.total)


def settle(state: CampaignState, tally: Tally, threshold: int | None,
           keep_calling: bool) -> CampaignState | None:
    """The state an active campaign moves to now, or None to stay. Only active ones settle."""
    if state is not CampaignState.ACTIVE:
        return None
    need = threshold_of(threshold, tally.total)
    if not keep_calling and tally.contacted >= need and tally.active == 0:
        return CampaignState.COMPLETED
    if tally.idle or tally.active:
        return None
    return CampaignState.COMPLETED if tally.contacted >= need else CampaignState.INCOMPLETE


@dataclass(frozen=True, kw_only=True)
class Startable:
    """A campaign that holds or wants a place among the active ones."""

    id: int
    state: CampaignState
    priority: int
    start_at: float


def activate(campaigns: Sequence[Startable], max_active: int | None,
             now: float) -> list[tuple[int, CampaignState]]:
    """Transitions of scheduled and blocked campaigns: (campaign id, new state)."""
    active = sum(1 for c in campaigns if c.state is CampaignState.ACTIVE)
    waiting = [c for c in campaigns
               if c.state is CampaignState.BLOCKED
               or (c.state is CampaignState.SCHEDULED and c.start_at <= now)]
    waiting.sort(key=lambda c: (-c.priority, c.start_at, c.id))
    out: list[tuple[int, CampaignState]] = []
    for c in waiting:
        if max_active is None or active < max_active:
            out.append((c.id, CampaignState.ACTIVE))
            active += 1
        elif c.state is CampaignState.SCHEDULED:
            out.append((c.id, CampaignState.BLOCKED))
    return out
