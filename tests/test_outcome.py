"""The end-of-call decisions (dialer.core.outcome), shared by the SIP worker and the simulator."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialer.core import outcome as oc
from dialer.core.domain import (
    Q850_OUTCOMES,
    STATUS_OUTCOMES,
    Outcome,
    outcome_from_answer,
    outcome_from_status,
)
from dialer.core.outcome import CallEnd, RingTimeout, decide


def test_an_unanswered_call_is_classified_by_its_final_status() -> None:
    assert decide(CallEnd(status=486, reason="Busy Here")) == (Outcome.BUSY, "Busy Here")
    assert decide(CallEnd(status=487, reason="Request Terminated"))[0] is Outcome.NO_ANSWER
    assert decide(CallEnd(status=603, reason="Decline"))[0] is Outcome.REJECTED
    assert decide(CallEnd(status=503, reason="x"))[0] is Outcome.CONGESTION
    # the same 503, made up by the stack for a refused TCP connection: nothing answered
    assert decide(CallEnd(status=503, reason="x", responded=False))[0] is Outcome.UNREACHABLE
    assert decide(CallEnd(status=480, reason="x", q850=17))[0] is Outcome.BUSY
    assert decide(CallEnd(status=0, reason="x"))[0] is Outcome.FAILED


def test_a_finished_dialogue_ends_as_it_concluded() -> None:
    end = CallEnd(status=200, reason="BYE", answered=True, dialogue_outcome=Outcome.HUNG_UP)
    assert decide(end) == (Outcome.HUNG_UP, "BYE")
    end = CallEnd(status=200, reason="BYE", answered=True,
                  dialogue_outcome=Outcome.NOT_CONFIRMED)
    assert decide(end)[0] is Outcome.NOT_CONFIRMED


def test_a_call_we_terminated_before_an_answer_ends_as_forced() -> None:
    forced = oc.invite_timeout_outcome(trunk_down=False, seconds=5.0)
    assert forced == (Outcome.UNREACHABLE, "no response from the trunk in 5 s")
    assert decide(CallEnd(status=408, reason="Timeout", forced=forced)) == forced
    assert oc.invite_timeout_outcome(trunk_down=True, seconds=5)[0] is Outcome.TRUNK_DOWN
    down = oc.trunk_down_outcome("REGISTER unanswered")
    assert decide(CallEnd(status=408, reason="x", forced=down)) == (
        Outcome.TRUNK_DOWN, "trunk down: REGISTER unanswered")
    # Answered after all: the forced outcome no longer applies.
    assert decide(CallEnd(status=200, reason="x", answered=True, forced=down,
                          dialogue_outcome=Outcome.HUNG_UP))[0] is Outcome.HUNG_UP


def test_a_call_we_cut_ourselves_is_never_the_recipients_fault() -> None:
    on_request = CallEnd(status=487, reason="x", abort_reason=oc.ON_REQUEST)
    assert decide(on_request) == (Outcome.FAILED, oc.ON_REQUEST)
    stopping = CallEnd(status=200, reason="x", answered=True, abort_reason=oc.SHUTTING_DOWN)
    assert decide(stopping) == (Outcome.INTERRUPTED, oc.SHUTTING_DOWN)
    confirmed = CallEnd(status=200, reason="x", answered=True, dialogue_success=True,
                        abort_reason=oc.SHUTTING_DOWN)
    assert decide(confirmed)[0] is Outcome.CONTACTED
    done = CallEnd(status=200, reason="BYE", answered=True, dialogue_success=True,
                   dialogue_outcome=Outcome.CONTACTED, abort_reason=oc.ON_REQUEST)
    assert decide(done) == (Outcome.CONTACTED, "BYE")


def test_the_first_abort_reason_sticks_and_none_once_the_dialogue_is_over() -> None:
    assert oc.abort_reason_after(None, oc.ON_REQUEST, None) == oc.ON_REQUEST
    assert oc.abort_reason_after(oc.ON_REQUEST, oc.SHUTTING_DOWN, None) == oc.ON_REQUEST
    assert oc.abort_reason_after(None, None, None) is None
    assert oc.abort_reason_after(None, oc.ON_REQUEST, Outcome.CONTACTED) is None


def test_only_an_answered_call_we_did_not_cut_was_hung_up_by_the_far_end() -> None:
    assert oc.remote_hangup_counts(answered=True, abort_reason=None)
    assert not oc.remote_hangup_counts(answered=False, abort_reason=None)
    assert not oc.remote_hangup_counts(answered=True, abort_reason=oc.ON_REQUEST)
    assert oc.hangup_status(False) == 487 and oc.hangup_status(True) == 200


@pytest.mark.parametrize(("now", "answered", "confirmed", "aborting", "want"), [
    (29.9, False, False, False, RingTimeout.WAIT),
    (30.0, False, False, False, RingTimeout.CANCEL),
    (30.0, False, True, False, RingTimeout.NO_AUDIO),
    (30.0, True, True, False, RingTimeout.WAIT),
    (30.0, False, False, True, RingTimeout.WAIT),
])
def test_the_ring_timeout(now: float, answered: bool, confirmed: bool, aborting: bool,
                          want: RingTimeout) -> None:
    assert oc.ring_timeout(now=now, deadline=30.0, answered=answered, sip_confirmed=confirmed,
                           aborting=aborting) is want


def test_a_dial_refused_with_pj_etoomany_is_retried_for_a_while() -> None:
    first = oc.redial_until(status=oc.PJ_ETOOMANY, now=100.0, give_up=None, stopping=False,
                            invite_timeout=0.5)
    assert first == 100.0 + oc.TOOMANY_RETRY_S
    assert oc.redial_until(status=oc.PJ_ETOOMANY, now=100.0, give_up=None, stopping=False,
                           invite_timeout=5.0) == 106.0  # a slot is freed within invite_timeout
    assert oc.redial_until(status=oc.PJ_ETOOMANY, now=101.0, give_up=first, stopping=False,
                           invite_timeout=0.5) == first
    assert oc.redial_until(status=oc.PJ_ETOOMANY, now=first, give_up=first, stopping=False,
                           invite_timeout=0.5) is None
    assert oc.redial_until(status=oc.PJ_ETOOMANY, now=100.0, give_up=None, stopping=True,
                           invite_timeout=0.5) is None
    assert oc.redial_until(status=171001, now=100.0, give_up=None, stopping=False,
                           invite_timeout=0.5) is None


OUTCOMES = st.sampled_from(list(Outcome))
ENDS = st.builds(
    CallEnd, status=st.integers(0, 699), reason=st.text(max_size=8), answered=st.booleans(),
    dialogue_outcome=st.none() | OUTCOMES, dialogue_success=st.booleans(),
    abort_reason=st.none() | st.sampled_from([oc.ON_REQUEST, oc.SHUTTING_DOWN, "worker error"]),
    forced=st.none() | st.tuples(OUTCOMES, st.text(max_size=8)))


@given(ENDS)
def test_property_a_cut_call_never_blames_the_recipient(end: CallEnd) -> None:
    outcome, reason = decide(end)
    if end.forced is not None and not end.answered:
        assert (outcome, reason) == end.forced
    elif end.abort_reason is not None:
        assert outcome not in (Outcome.NO_ANSWER, Outcome.HUNG_UP, Outcome.BUSY) \
            or outcome is end.dialogue_outcome
        if end.dialogue_success:
            assert outcome is Outcome.CONTACTED
    elif end.dialogue_outcome is not None:
        assert (outcome, reason) == (end.dialogue_outcome, end.reason)
    else:
        assert (outcome, reason) == (outcome_from_status(end.status), end.reason)


@given(st.floats(0, 1e6), st.none() | st.floats(0, 1e6), st.floats(0, 60), st.booleans())
def test_property_a_redial_never_outlives_its_first_window(now: float, give_up: float | None,
                                                         invite: float, stopping: bool) -> None:
    until = oc.redial_until(status=oc.PJ_ETOOMANY, now=now, give_up=give_up, stopping=stopping,
                            invite_timeout=invite)
    if until is not None:
        assert not stopping and until > now
        assert until == (give_up if give_up is not None
                         else now + max(oc.TOOMANY_RETRY_S, invite + 1))


# ----- the outcome table (issue 13): the code, row by row, and README's table against it -----

TABLE_ROWS = [
    # (status, q850, responded, outcome)
    (408, None, False, Outcome.UNREACHABLE),  # UDP: the retransmissions went unanswered
    (503, None, False, Outcome.UNREACHABLE),  # TCP: connection refused
    (0, None, False, Outcome.UNREACHABLE),
    (486, None, True, Outcome.BUSY), (600, None, True, Outcome.BUSY),
    (487, None, True, Outcome.NO_ANSWER), (408, None, True, Outcome.NO_ANSWER),
    (603, None, True, Outcome.REJECTED), (404, None, True, Outcome.REJECTED),
    (484, None, True, Outcome.REJECTED), (410, None, True, Outcome.REJECTED),
    (488, None, True, Outcome.REJECTED), (606, None, True, Outcome.REJECTED),
    (401, None, True, Outcome.REJECTED), (407, None, True, Outcome.REJECTED),
    (503, None, True, Outcome.CONGESTION), (480, None, True, Outcome.CONGESTION),
    (403, None, True, Outcome.CONGESTION),
    (502, None, True, Outcome.UNREACHABLE), (504, None, True, Outcome.UNREACHABLE),
    (500, None, True, Outcome.FAILED), (501, None, True, Outcome.FAILED),
    (0, None, True, Outcome.FAILED), (302, None, True, Outcome.FAILED),
    # a Q.850 cause decides before the status
    (480, 17, True, Outcome.BUSY), (503, 18, True, Outcome.NO_ANSWER),
    (480, 19, True, Outcome.NO_ANSWER), (404, 1, True, Outcome.REJECTED),
    (603, 21, True, Outcome.REJECTED), (500, 27, True, Outcome.UNREACHABLE),
    (500, 38, True, Outcome.UNREACHABLE), (486, 34, True, Outcome.CONGESTION),
    (500, 41, True, Outcome.CONGESTION), (500, 42, True, Outcome.CONGESTION),
    (500, 44, True, Outcome.CONGESTION), (500, 47, True, Outcome.CONGESTION),
    (486, 16, True, Outcome.BUSY),  # 16 (normal clearing) says nothing: the status decides
    (503, 34, False, Outcome.UNREACHABLE),  # nothing received: no cause to believe
]


@pytest.mark.parametrize(("status", "q850", "responded", "expected"), TABLE_ROWS)
def test_the_outcome_table_row_by_row(status: int, q850: int | None, responded: bool,
                                      expected: Outcome) -> None:
    assert outcome_from_answer(status, q850, responded=responded) is expected
    assert decide(CallEnd(status=status, reason="r", q850=q850, responded=responded)) == (
        expected, "r")


def _readme_outcome_table() -> list[tuple[str, str, str]]:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    body = text.split("**Outcomes.**", 1)[1]
    rows = []
    for line in body.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.append((cells[0].strip("`"), cells[1], cells[2]))
        elif rows and not line.startswith("|"):
            break
    return rows


def _numbers(cell: str) -> set[int]:
    return {int(n) for n in re.findall(r"\b\d{3}\b|\b\d{1,2}\b", cell)}


def test_readme_outcome_table_matches_the_code() -> None:
    rows = _readme_outcome_table()
    assert rows, "README has no outcome table"
    by_outcome: dict[Outcome, tuple[set[int], set[int]]] = {}
    for name, status, cause in rows:
        if "none received" in status:
            continue  # the rule without a list of its own: checked by the rows above
        codes, causes = by_outcome.setdefault(Outcome(name), (set(), set()))
        if "other" not in status:  # "any other 4xx, 6xx": the fall-through, no list
            codes |= _numbers(status)
        causes |= _numbers(cause)
    code_status: dict[Outcome, set[int]] = {}
    for listed, outcome, _ in STATUS_OUTCOMES:
        code_status.setdefault(outcome, set()).update(listed)
    code_causes: dict[Outcome, set[int]] = {}
    for listed, outcome, _ in Q850_OUTCOMES:
        code_causes.setdefault(outcome, set()).update(listed)
    for outcome in {*by_outcome, *code_status, *code_causes}:
        readme_codes, readme_causes = by_outcome.get(outcome, (set(), set()))
        assert readme_codes == code_status.get(outcome, set()), outcome
        assert readme_causes == code_causes.get(outcome, set()), outcome
    # and every listed number maps to its outcome
    for outcome, (codes, causes) in by_outcome.items():
        for code in codes:
            assert outcome_from_answer(code) is outcome, (code, outcome)
        for q850 in causes:
            assert outcome_from_answer(299, q850) is outcome, (q850, outcome)
    names = [r[0] for r in rows]
    assert names[0] == "unreachable" and "none received" in rows[0][1]
