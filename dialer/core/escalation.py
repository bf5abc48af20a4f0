"""Escalation (issue 15): a template may name a follow-up template that the dialer launches by
itself, once per run, when the run ends incomplete or when fewer than N recipients are reached M
minutes after its start (pure).

The rule is part of the campaign's frozen settings (``CampaignSettings.escalate_*``), so editing
the template later changes only the campaigns launched after. ``decide`` looks at one run and
says launch now, wait (until when, or until it ends) or never; the store carries a launch out in
one transaction that also marks the run as escalated, so a restart or a second node never
launches it twice.

* ``incomplete``: launched when the run ends incomplete (its attempts spent without reaching its
  threshold); a completed run never escalates.
* ``below``: at the run's start time + ``after`` seconds, launched if fewer than ``below``
  recipients are contacted; at once if the run ends earlier with fewer than that; never once
  that many are contacted (the count cannot go down).
* A run stopped by an operator (``terminated``) never escalates: the operator decided.

The follow-up calls its own template's list, and with ``pass_unreached`` also the first run's
recipients who were not contacted, after its own and without the numbers already on it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dialer.core.domain import CampaignSettings, CampaignState
from dialer.core.errors import ValidationError
from dialer.core.recipients import Recipient


class When(str, enum.Enum):
    """When a run escalates."""

    INCOMPLETE = "incomplete"  # it ended incomplete
    BELOW = "below"  # fewer than N contacted M minutes after its start


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A run's escalation rule, from its settings."""

    to: str  # the follow-up template
    when: When
    below: int | None = None  # BELOW: the recipients to have reached
    after: float | None = None  # BELOW: seconds after the start
    pass_unreached: bool = False


class Verdict(str, enum.Enum):
    LAUNCH = "launch"
    WAIT = "wait"
    NEVER = "never"


@dataclass(frozen=True, kw_only=True)
class Decision:
    verdict: Verdict
    cause: str = ""
    check_at: float | None = None  # WAIT: decide again then (None: when the run changes state)


def rule_of(st: CampaignSettings) -> Rule | None:
    """The escalation rule of a campaign's settings, None without one."""
    if st.escalate_to is None:
        return None
    return Rule(to=st.escalate_to, when=When(st.escalate_when), below=st.escalate_below,
                after=st.escalate_after, pass_unreached=st.escalate_unreached)


def check(st: CampaignSettings, template: str | None = None) -> None:
    """Refuse an escalation rule that cannot work (``template``: the template it belongs to)."""
    if st.escalate_to is None:
        return
    if template is not None and st.escalate_to == template:
        raise ValidationError(f"template {template!r} cannot escalate to itself")
    try:
        when = When(st.escalate_when)
    except ValueError:
        raise ValidationError(f"escalation {st.escalate_when!r}: incomplete or below") from None
    if when is When.BELOW:
        if st.escalate_below is None or st.escalate_after is None:
            raise ValidationError("--when below needs --below N and --after MINUTES")
        if st.escalate_below < 1:
            raise ValidationError("--below must be 1 or more")
        if not 0 < st.escalate_after <= 7 * 86400:
            raise ValidationError("--after must be more than 0 and at most 7 days")
    elif st.escalate_below is not None or st.escalate_after is not None:
        raise ValidationError("--below and --after go with --when below")


def decide(rule: Rule, *, state: CampaignState, contacted: int, start_at: float,
           now: float) -> Decision:
    """Whether a run with escalation ``rule`` escalates now."""
    if state is CampaignState.TERMINATED:
        return Decision(verdict=Verdict.NEVER, cause="stopped by an operator")
    ended = state in (CampaignState.COMPLETED, CampaignState.INCOMPLETE)
    if rule.when is When.INCOMPLETE:
        if state is CampaignState.INCOMPLETE:
            return Decision(verdict=Verdict.LAUNCH, cause="ended incomplete")
        if state is CampaignState.COMPLETED:
            return Decision(verdict=Verdict.NEVER, cause="completed")
        return Decision(verdict=Verdict.WAIT)
    assert rule.below is not None and rule.after is not None
    if contacted >= rule.below:
        return Decision(verdict=Verdict.NEVER, cause=f"{contacted} reached")
    due = start_at + rule.after
    minutes = f"{rule.after / 60:g} min"
    if now >= due:
        return Decision(verdict=Verdict.LAUNCH,
                        cause=f"{contacted} of {rule.below} reached {minutes} after the start")
    if ended:
        return Decision(verdict=Verdict.LAUNCH,
                        cause=f"ended with {contacted} of {rule.below} reached")
    return Decision(verdict=Verdict.WAIT, check_at=due)


def followup_list(own: Sequence[Recipient], unreached: Sequence[Recipient],
                  pass_unreached: bool) -> list[Recipient]:
    """The follow-up's recipients: its template's own list, then (``pass_unreached``) the first
    run's unreached recipients whose number is not on it already, in their order."""
    out = list(own)
    if pass_unreached:
        seen = {(r.kind, r.number) for r in out}
        for r in unreached:
            if (r.kind, r.number) not in seen:
                seen.add((r.kind, r.number))
                out.append(r)
    return out


def links(settings: Mapping[str, Any], state: str | None, escalated_from: int | None,
          escalated_to: int | None) -> dict[str, Any] | None:
    """What ``campaign show`` tells of a run's escalation: its rule in words, where it stands
    (``armed``, ``launched``, ``never``, ``failed``) and the runs it links; None when there is
    nothing to tell."""
    rule = rule_of(settings_from(settings))
    if rule is None and escalated_from is None:
        return None
    return {"rule": describe(rule) if rule else None,
            "state": (state or "armed") if rule else None,
            "escalated_from": escalated_from, "escalated_to": escalated_to}


def settings_from(settings: Mapping[str, Any]) -> CampaignSettings:
    """The escalation fields of a settings snapshot (JSON), the others left at their default."""
    keys = ("escalate_to", "escalate_when", "escalate_below", "escalate_after",
            "escalate_unreached")
    return CampaignSettings(**{k: settings[k] for k in keys if k in settings})


def summary(settings: Mapping[str, Any], escalated_from: int | None,
            escalated_to: int | None) -> str | None:
    """A run's escalation in one line (the HTML report): its rule and the runs it links."""
    rule = rule_of(settings_from(settings))
    parts = [describe(rule)] if rule else []
    if escalated_from is not None:
        parts.append(f"escalation of run {escalated_from}")
    if escalated_to is not None:
        parts.append(f"escalated to run {escalated_to}")
    return "; ".join(parts) or None


def describe(rule: Rule | None) -> str:
    """The rule in words, for ``template show`` and ``campaign show``."""
    if rule is None:
        return "none"
    if rule.when is When.INCOMPLETE:
        text = f"to {rule.to!r} when it ends incomplete"
    else:
        assert rule.after is not None
        text = (f"to {rule.to!r} when fewer than {rule.below} are reached "
                f"{rule.after / 60:g} min after the start")
    return text + (", passing on the unreached" if rule.pass_unreached else "")


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one check did with one run (``DispatchPort.escalate``)."""

    campaign_id: int
    verdict: Verdict  # LAUNCH: launched (followup_id) or failed (followup_id None); NEVER
    cause: str
    followup_id: int | None = None
    error: str | None = None  # why a launch failed (the follow-up template is gone, ...)


@dataclass(frozen=True, kw_only=True)
class Pass:
    """One check of every armed run: what it did, and when the next is due (None: only when a
    run changes state)."""

    outcomes: tuple[Outcome, ...] = ()
    check_at: float | None = None
