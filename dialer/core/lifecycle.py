"""Campaign and recipient lifecycle rules (SPEC section 2) as pure functions.

Recipients: an attempt that succeeds makes the recipient ``contacted``; every other outcome is an
unsuccessful attempt (it counts, whatever the cause, because the call was placed): the recipient
goes back to ``idle`` with a retry time, or to ``failed`` when its attempts are used up. Two
outcomes are not counted: ``trunk_down`` (the trunk was found down before the INVITE had any
answer: nobody was called) and ``interrupted`` (the dialer cut the call: its worker or daemon died
or was stopped). The recipient goes back to ``idle`` at once with its attempts untouched; a hard
cap of ``EXTRA_CALLS`` calls beyond its attempts ends it ``failed`` should that repeat without
end. An attempt whose listen confirmation (and the answer one, if required) was recorded is
``contacted`` whatever happened to the call afterwards (``confirmed``).

Campaigns: ``scheduled`` becomes ``active`` when its start time comes, or ``blocked`` while the
global number of active campaigns is reached; blocked campaigns become active by priority, then
start time, when a place frees, and never before their own start time (one whose start is still
ahead goes back to ``scheduled``). An active campaign whose recipients are all done becomes
``completed`` when the threshold of contacted recipients is reached, ``incomplete`` otherwise.

Threshold reached early: by default (as the reference) the campaign keeps calling until every
recipient is done. With ``keep_calling_after_threshold = False`` it places no new call once the
threshold is reached and becomes ``completed`` when the calls in progress end; the recipients not
yet called stay ``idle`` (never called) in its record.

Operator actions (``operator_action``): suspend (scheduled, blocked or active campaigns), resume
(suspended ones), stop (anything not finished) and grant (attempts to recipients of a campaign not
finished; an incomplete one comes back). A campaign that comes back, resumed or granted, goes
where it would stand had it never left (``rejoin``): ``scheduled`` while its start time is ahead,
or when it has never been active (its start is the scheduler's to make, as for any campaign whose
start time comes); otherwise ``active`` when a place is free for it in priority then start-time
order among the campaigns waiting, ``blocked`` only when the maximum of active campaigns leaves
it none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dialer.core.domain import EXTRA_CALLS, CampaignState, Outcome, RecipientState


@dataclass(frozen=True, kw_only=True)
class RecipientUpdate:
    """The new standing of a recipient after one attempt."""

    state: RecipientState
    attempts: int
    next_at: float | None


def confirmed(*, answer_confirm: bool, listen_confirm: bool, answer_confirmed_at: float | None,
              listen_confirmed_at: float | None) -> bool:
    """Whether an attempt's recorded confirmations prove the recipient was reached and heard the
    message: the listen confirmation (after the message), with the answer one if required. A
    campaign without a listen confirmation needs the message played to its end, which only the
    call's own end report can tell."""
    if not listen_confirm:
        return False
    return listen_confirmed_at is not None and (not answer_confirm
                                                or answer_confirmed_at is not None)


def after_attempt(*, attempts: int, max_attempts: int, outcome: Outcome, now: float,
                  retry_delay: float, stopped: bool = False,
                  calls: int = 0) -> RecipientUpdate:
    """Apply the outcome of one call to a recipient that had ``attempts`` unsuccessful ones;
    ``calls``: the calls it received so far, this one included (for the hard cap)."""
    if outcome.success:
        return RecipientUpdate(state=RecipientState.CONTACTED, attempts=attempts, next_at=None)
    if not outcome.counted:
        if stopped or attempts >= max_attempts or calls >= max_attempts + EXTRA_CALLS:
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
    """Transitions of scheduled and blocked campaigns: (campaign id, new state).

    A blocked campaign whose start time is still ahead (written by a version that resumed
    scheduled campaigns as blocked) goes back to ``scheduled``: nothing starts before its time.
    """
    active = sum(1 for c in campaigns if c.state is CampaignState.ACTIVE)
    out: list[tuple[int, CampaignState]] = [
        (c.id, CampaignState.SCHEDULED) for c in campaigns
        if c.state is CampaignState.BLOCKED and c.start_at > now]
    waiting = [c for c in campaigns
               if c.state in (CampaignState.BLOCKED, CampaignState.SCHEDULED)
               and c.start_at <= now]
    waiting.sort(key=lambda c: (-c.priority, c.start_at, c.id))
    for c in waiting:
        if max_active is None or active < max_active:
            out.append((c.id, CampaignState.ACTIVE))
            active += 1
        elif c.state is CampaignState.SCHEDULED:
            out.append((c.id, CampaignState.BLOCKED))
    return out


def rejoin(campaign: Startable, others: Sequence[Startable], max_active: int | None, now: float,
           *, launched: bool) -> CampaignState:
    """Where a campaign that comes back among the live ones (resumed, or an incomplete one granted
    attempts) goes now. ``others`` are the other live campaigns (scheduled, blocked, active);
    ``launched``: whether it has ever been active.

    Never-launched campaigns go back to ``scheduled`` even when due, so that their first start is
    the scheduler's, like any campaign's (``activate``: blocked if the maximum is reached, and the
    first activation that on-launch e-mail follows). A launched one takes a place when
    ``activate`` would give it one among the waiting campaigns, ranked by priority then start
    time, and is ``blocked`` only when the places are all taken.
    """
    if campaign.start_at > now or not launched:
        return CampaignState.SCHEDULED
    waiting = [c for c in others if c.id != campaign.id]
    waiting.append(replace(campaign, state=CampaignState.BLOCKED))
    if (campaign.id, CampaignState.ACTIVE) in activate(waiting, max_active, now):
        return CampaignState.ACTIVE
    return CampaignState.BLOCKED


def activation_cause(old: CampaignState, new: CampaignState) -> str:
    """Why ``activate`` moved a campaign from ``old`` to ``new``, as the history records it."""
    if new is CampaignState.SCHEDULED:
        return "start time not reached"
    if new is CampaignState.BLOCKED:
        return "the maximum of active campaigns is reached"
    return "start time reached" if old is CampaignState.SCHEDULED else "a place freed"


KEYS_MAX = 100  # keys kept per attempt


def stamped_time(what: str, detail: Mapping[str, Any]) -> str | None:
    """The attempt's time field a progress event sets (``ringing_at`` only by the first
    ringing: the caller keeps an earlier one), or None (keys, prompts played)."""
    if what in ("ringing", "answered"):
        return f"{what}_at"
    if what == "confirmed":
        return "answer_confirmed_at" if detail.get("what") == "answer" else "listen_confirmed_at"
    return None


def with_key(keys: str, detail: Mapping[str, Any]) -> str:
    """An attempt's keys after a ``key`` event."""
    return (keys + str(detail.get("key", "")))[:KEYS_MAX]


OPERATOR_ACTIONS = ("suspend", "resume", "stop", "grant")


def operator_action(action: str, campaign: Startable, others: Sequence[Startable],
                    max_active: int | None, now: float, *,
                    launched: bool) -> CampaignState | None:
    """The state of ``campaign`` after an operator ``action`` (one of ``OPERATOR_ACTIONS``), or
    None when its state does not allow the action. ``grant`` leaves the state as it is unless
    the campaign is incomplete (its granted recipients are idle again: it comes back)."""
    state = campaign.state
    if action == "suspend":
        live = (CampaignState.SCHEDULED, CampaignState.BLOCKED, CampaignState.ACTIVE)
        return CampaignState.SUSPENDED if state in live else None
    if action == "resume":
        if state is not CampaignState.SUSPENDED:
            return None
        return rejoin(campaign, others, max_active, now, launched=launched)
    if action == "stop":
        return None if state.finished else CampaignState.TERMINATED
    if action == "grant":
        if state.finished:
            return None
        if state is CampaignState.INCOMPLETE:
            return rejoin(campaign, others, max_active, now, launched=launched)
        return state
    raise ValueError(f"unknown operator action {action!r}")
