"""Connect to a person (issue 15): the connect key in the pure dialogue. Pressed after the
message or at a prompt it plays "connecting", asks for a blind transfer and waits for the far
end's report; a transfer that fails says so and the dialogue goes on where the key was pressed."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialer.core import dialogue as dlg
from dialer.core.dialogue import (
    HangUp,
    Phase,
    Play,
    Prompt,
    StartTimer,
    Transfer,
    Transferred,
    TransferStatus,
)
from dialer.core.domain import Outcome
from tests.test_dialogue import BASE, LISTEN_WAIT, Run, run, shape

A, M, L, G = Prompt.ANSWER_PROMPT, Prompt.MESSAGE, Prompt.LISTEN_PROMPT, Prompt.GOODBYE
OFFER, CONNECTING, FAILED = Prompt.CONNECT_OFFER, Prompt.CONNECTING, Prompt.TRANSFER_FAILED
BRIDGE = "sip:bridge@pbx.example"
CONNECT = replace(BASE, connect_key="0", connect_to=BRIDGE, connect_offer_seconds=2.5,
                  transfer_failed_seconds=1.8, transfer_wait=35.0)
OFFER_WAIT = 2.5 + 5.0


def status(r: Run, code: int, final: bool) -> list[dlg.Command]:
    r.clock += 1
    return r.feed(TransferStatus(code, final, r.clock))


def flat(cmds: list[dlg.Command]) -> list[object]:
    """``shape`` with a Transferred shown as (result, code)."""
    return [("transferred", c.result, c.code) if isinstance(c, Transferred) else c
            for c in shape(cmds)]


def confirmed_then_offer(r: Run) -> None:
    r.answer(), r.key("1"), r.timer()
    assert flat(r.key("9")) == [("confirmed", "listen"), Play(OFFER), ("timer", OFFER_WAIT)]
    assert r.state.phase is Phase.OFFER and r.state.success


def test_after_the_last_confirmation_the_key_is_offered_then_goodbye() -> None:
    r = run(CONNECT)
    confirmed_then_offer(r)
    assert flat(r.timer()) == [Play(G), ("timer", 1.5)]
    assert flat(r.timer()) == [HangUp()]
    assert r.state.outcome is Outcome.CONTACTED
    assert r.plays() == [A, M, L, OFFER, G]


def test_no_connect_key_no_offer() -> None:
    r = run(replace(CONNECT, connect_key=None))
    r.answer(), r.key("1"), r.timer()
    assert flat(r.key("9")) == [("confirmed", "listen"), Play(G), ("timer", 1.5)]
    assert flat(r.key("0")) == []  # a 0 during the goodbye is just a key
    assert r.state.phase is Phase.GOODBYE


def test_without_listen_confirmation_the_offer_follows_the_message() -> None:
    r = run(replace(CONNECT, listen_confirm=False))
    r.answer(), r.key("1")
    assert flat(r.timer()) == [Play(OFFER), ("timer", OFFER_WAIT)]


def test_key_at_the_offer_transfers_and_a_final_2xx_is_contacted() -> None:
    r = run(CONNECT)
    confirmed_then_offer(r)
    assert flat(r.key("0")) == [Play(CONNECTING), ("transferred", "requested", 0),
                                Transfer(BRIDGE), ("timer", 35.0)]
    assert r.state.phase is Phase.TRANSFER and r.state.resume is Phase.OFFER
    assert flat(status(r, 202, False)) == [("transferred", "accepted", 202)]
    assert flat(status(r, 100, False)) == []  # a NOTIFY "100 Trying": still waiting
    assert flat(status(r, 200, True)) == [("transferred", "connected", 200), HangUp()]
    assert r.state.outcome is Outcome.CONTACTED and r.state.keys == "190"


def test_transfer_before_the_confirmations_is_not_confirmed_by_default() -> None:
    r = run(CONNECT)
    r.answer()
    assert flat(r.key("0"))[2] == Transfer(BRIDGE)  # at the answer prompt
    status(r, 202, False)
    assert flat(status(r, 200, True))[-1] == HangUp()
    assert r.state.outcome is Outcome.NOT_CONFIRMED
    assert r.state.answer_confirmed_at is None


def test_connect_confirms_makes_any_transfer_contacted() -> None:
    r = run(replace(CONNECT, connect_confirms=True))
    r.answer(), r.key("0"), status(r, 202, False), status(r, 200, True)
    assert r.state.outcome is Outcome.CONTACTED and r.state.success


def test_the_far_end_hanging_up_after_accepting_is_a_transfer() -> None:
    r = run(CONNECT)
    confirmed_then_offer(r)
    r.key("0"), status(r, 202, False)
    assert flat(r.bye()) == [("transferred", "connected", 0)]  # our leg is already over
    assert r.state.outcome is Outcome.CONTACTED


def test_hanging_up_before_the_refer_is_accepted_is_a_hang_up() -> None:
    r = run(CONNECT)
    r.answer(), r.key("1"), r.timer()
    r.key("0")  # at the listen prompt: not confirmed yet
    assert flat(r.bye()) == []
    assert r.state.outcome is Outcome.HUNG_UP


def test_accepted_but_never_reported_done_is_a_transfer_when_the_wait_ends() -> None:
    r = run(CONNECT)
    confirmed_then_offer(r)
    r.key("0"), status(r, 202, False)
    assert flat(r.timer()) == [("transferred", "connected", 0), HangUp()]
    assert r.state.outcome is Outcome.CONTACTED


@pytest.mark.parametrize("code", [403, 405, 501, 603])
def test_a_refused_refer_says_so_and_the_listen_prompt_comes_back(code: int) -> None:
    r = run(CONNECT)
    r.answer(), r.key("1"), r.timer()
    repeats = r.state.repeats
    r.key("0")
    assert flat(status(r, code, True)) == [("transferred", "failed", code), Play(FAILED),
                                           ("timer", 1.8)]
    assert r.state.phase is Phase.TRANSFER_FAILED and r.state.outcome is None
    assert flat(r.timer()) == [Play(L), ("timer", LISTEN_WAIT)]  # where the key was pressed
    assert r.state.repeats == repeats
    # the key is not honoured again, and the dialogue goes on to the end
    assert flat(r.key("0")) == [Play(M), ("timer", 10.0)]  # a wrong key: the message again
    r.timer()
    assert flat(r.key("9")) == [("confirmed", "listen"), Play(G), ("timer", 1.5)]  # no offer
    r.timer()
    assert r.state.outcome is Outcome.CONTACTED


def test_a_failure_after_acceptance_resumes_too() -> None:
    r = run(CONNECT)
    r.answer()
    r.key("0"), status(r, 202, False)
    assert flat(status(r, 486, True))[0] == ("transferred", "failed", 486)
    assert flat(r.timer()) == [Play(A), ("timer", 7.0)]  # the answer prompt again
    assert flat(r.key("1"))[0] == ("confirmed", "answer")


def test_a_refer_never_answered_fails_when_the_wait_ends() -> None:
    r = run(CONNECT)
    confirmed_then_offer(r)
    r.key("0")
    assert flat(r.timer()) == [("transferred", "failed", 0), Play(FAILED), ("timer", 1.8)]
    assert flat(r.timer()) == [Play(G), ("timer", 1.5)]  # the offer gives way to the goodbye
    assert flat(status(r, 202, False)) == []  # a late report changes nothing
    r.timer()
    assert r.state.outcome is Outcome.CONTACTED


def test_the_key_during_the_message_changes_nothing() -> None:
    r = run(CONNECT)
    r.answer(), r.key("1")
    assert r.state.phase is Phase.MESSAGE
    assert flat(r.key("0")) == []
    assert r.state.phase is Phase.MESSAGE


def test_the_key_during_the_goodbye_transfers() -> None:
    r = run(CONNECT)
    confirmed_then_offer(r)
    r.timer()
    assert r.state.phase is Phase.GOODBYE
    assert Transfer(BRIDGE) in r.key("0")


def test_a_transfer_status_outside_a_transfer_is_ignored() -> None:
    r = run(CONNECT)
    r.answer()
    before = r.state
    assert status(r, 200, True) == [] and r.state == before


def test_the_connect_key_at_a_random_key_prompt_is_not_a_wrong_digit() -> None:
    r = run(replace(CONNECT, answer_key="5", answer_random=True))
    r.answer()
    cmds = r.key("0")
    assert not any(isinstance(c, dlg.Refused) for c in cmds) and Transfer(BRIDGE) in cmds
    assert r.state.wrong == 0


EVENTS = st.lists(st.one_of(
    st.sampled_from(["1", "9", "0", "5"]).map(lambda k: ("key", k)),
    st.just(("timer", "")), st.just(("bye", "")),
    st.sampled_from([100, 202, 200, 403, 486, 603]).flatmap(
        lambda c: st.booleans().map(lambda f: ("status", (c, f))))), max_size=30)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.booleans())
def test_any_sequence_ends_in_one_outcome_and_transfers_at_most_once_per_failure(
        events: list[tuple[str, object]], counts: bool) -> None:
    r = run(replace(CONNECT, connect_confirms=counts))
    r.answer()
    transfers = failures = 0
    pressed = ""
    for kind, value in events:
        if r.state.outcome is not None:
            break
        if kind == "key":
            pressed += str(value)
            cmds = r.key(str(value))
        elif kind == "timer":
            cmds = r.timer()
        elif kind == "bye":
            cmds = r.bye()
        else:
            assert isinstance(value, tuple)
            code, final = value
            cmds = status(r, int(code), bool(final))
        transfers += sum(isinstance(c, Transfer) for c in cmds)
        failures += sum(isinstance(c, Transferred) and c.result == "failed" for c in cmds)
        if any(isinstance(c, StartTimer) for c in cmds):
            assert r.state.phase is not Phase.DONE
        if r.state.outcome is Outcome.CONTACTED and not counts:
            assert r.state.success  # contacted only with every confirmation
    assert transfers <= 1  # once failed, the key is off for the call
    assert failures <= transfers
    if r.state.outcome is not None:
        assert r.state.phase is Phase.DONE
    assert r.state.keys == pressed
