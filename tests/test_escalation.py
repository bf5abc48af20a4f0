"""Escalation's decisions (dialer.core.escalation, pure): when a run launches its follow-up,
when it waits and until when, when never; the follow-up's list; the rules refused."""

from __future__ import annotations

import pytest

from dialer.core import escalation as esc
from dialer.core.domain import CampaignSettings, CampaignState, Kind
from dialer.core.errors import ValidationError
from dialer.core.recipients import Recipient

S = CampaignState
START = 1_000.0
INCOMPLETE = esc.Rule(to="Managers", when=esc.When.INCOMPLETE)
BELOW = esc.Rule(to="Managers", when=esc.When.BELOW, below=5, after=600.0)


@pytest.mark.parametrize("state,verdict", [
    (S.SCHEDULED, esc.Verdict.WAIT), (S.BLOCKED, esc.Verdict.WAIT), (S.ACTIVE, esc.Verdict.WAIT),
    (S.SUSPENDED, esc.Verdict.WAIT), (S.INCOMPLETE, esc.Verdict.LAUNCH),
    (S.COMPLETED, esc.Verdict.NEVER), (S.TERMINATED, esc.Verdict.NEVER)])
def test_incomplete_launches_only_when_the_run_ends_incomplete(state: CampaignState,
                                                               verdict: esc.Verdict) -> None:
    d = esc.decide(INCOMPLETE, state=state, contacted=0, start_at=START, now=START + 10**6)
    assert d.verdict is verdict and d.check_at is None


def test_below_waits_for_its_time_then_launches_if_too_few_were_reached() -> None:
    early = esc.decide(BELOW, state=S.ACTIVE, contacted=4, start_at=START, now=START + 599)
    assert (early.verdict, early.check_at) == (esc.Verdict.WAIT, START + 600)
    due = esc.decide(BELOW, state=S.ACTIVE, contacted=4, start_at=START, now=START + 600)
    assert due.verdict is esc.Verdict.LAUNCH
    assert due.cause == "4 of 5 reached 10 min after the start"


@pytest.mark.parametrize("state", [S.ACTIVE, S.COMPLETED, S.INCOMPLETE])
def test_below_never_launches_once_enough_are_reached(state: CampaignState) -> None:
    for now in (START + 1, START + 600, START + 10**6):
        d = esc.decide(BELOW, state=state, contacted=5, start_at=START, now=now)
        assert d.verdict is esc.Verdict.NEVER


@pytest.mark.parametrize("state", [S.COMPLETED, S.INCOMPLETE])
def test_below_launches_at_once_when_the_run_ends_short_before_its_time(
        state: CampaignState) -> None:
    d = esc.decide(BELOW, state=state, contacted=2, start_at=START, now=START + 60)
    assert d.verdict is esc.Verdict.LAUNCH and d.cause == "ended with 2 of 5 reached"


def test_a_run_an_operator_stopped_never_escalates() -> None:
    for rule in (INCOMPLETE, BELOW):
        d = esc.decide(rule, state=S.TERMINATED, contacted=0, start_at=START, now=START + 10**6)
        assert d.verdict is esc.Verdict.NEVER and d.cause == "stopped by an operator"


def r(number: str) -> Recipient:
    return Recipient(number=number, kind=Kind.INTERNAL)


def test_the_followup_list_is_its_own_then_the_unreached_without_repeats() -> None:
    own, unreached = [r("201"), r("101")], [r("101"), r("102"), r("103"), r("102")]
    assert esc.followup_list(own, unreached, False) == own
    assert [x.number for x in esc.followup_list(own, unreached, True)] == \
        ["201", "101", "102", "103"]


@pytest.mark.parametrize("changes,error", [
    ({"escalate_to": "Fire"}, "cannot escalate to itself"),
    ({"escalate_when": "sometimes"}, "incomplete or below"),
    ({"escalate_when": "below", "escalate_below": 3}, "needs --below N and --after"),
    ({"escalate_when": "below", "escalate_below": 0, "escalate_after": 60.0}, "1 or more"),
    ({"escalate_when": "below", "escalate_below": 2, "escalate_after": 0.0}, "more than 0"),
    ({"escalate_below": 2}, "go with --when below")])
def test_rules_that_cannot_work_are_refused(changes: dict[str, object], error: str) -> None:
    st = CampaignSettings(**{"escalate_to": "Managers", **changes})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=error):
        esc.check(st, "Fire")


def test_rule_of_and_its_words() -> None:
    assert esc.rule_of(CampaignSettings()) is None and esc.describe(None) == "none"
    st = CampaignSettings(escalate_to="Managers", escalate_when="below", escalate_below=5,
                          escalate_after=900.0, escalate_unreached=True)
    rule = esc.rule_of(st)
    assert rule == esc.Rule(to="Managers", when=esc.When.BELOW, below=5, after=900.0,
                            pass_unreached=True)
    assert esc.describe(rule) == ("to 'Managers' when fewer than 5 are reached 15 min after the "
                                  "start, passing on the unreached")
