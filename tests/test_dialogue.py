"""The per-call dialogue (dialer.core.dialogue): scripted event sequences and their whole
command logs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialer.core import dialogue as dlg
from dialer.core.dialogue import (
    Answered,
    Confirmed,
    Digit,
    HangUp,
    Phase,
    Play,
    Prompt,
    RemoteHangup,
    StartTimer,
    TimerFired,
)
from dialer.core.domain import DialogueSettings, Outcome

A, M, L, G = Prompt.ANSWER_PROMPT, Prompt.MESSAGE, Prompt.LISTEN_PROMPT, Prompt.GOODBYE

# Distinct durations, so a StartTimer says which prompt it belongs to.
BASE = DialogueSettings(answer_prompt_seconds=2.0, message_seconds=10.0,
                        listen_prompt_seconds=3.0, goodbye_seconds=1.5, key_timeout=5.0,
                        max_repeats=2)
ANSWER_WAIT = 2.0 + 5.0
LISTEN_WAIT = 3.0 + 5.0


def make(**changes: object) -> DialogueSettings:
    from dataclasses import replace

    return replace(BASE, **changes)  # type: ignore[arg-type]


@dataclass
class Run:
    """Drives a dialogue like the worker does: fires the armed timer on ``Timer()``."""

    state: dlg.DialogueState
    log: list[tuple[str, list[dlg.Command]]] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    outcomes: list[Outcome | None] = field(default_factory=list)
    clock: float = 100.0
    armed: int | None = None

    def feed(self, event: dlg.Event) -> list[dlg.Command]:
        self.state, cmds = dlg.step(self.state, event)
        for c in cmds:
            if isinstance(c, StartTimer):
                self.armed = c.token
        self.log.append((type(event).__name__, cmds))
        self.phases.append(self.state.phase)
        self.outcomes.append(self.state.outcome)
        return cmds

    def answer(self) -> list[dlg.Command]:
        self.clock += 1
        return self.feed(Answered(self.clock))

    def key(self, k: str) -> list[dlg.Command]:
        self.clock += 1
        return self.feed(Digit(k, self.clock))

    def timer(self) -> list[dlg.Command]:
        assert self.armed is not None, "no timer armed"
        self.clock += 1
        return self.feed(TimerFired(self.armed, self.clock))

    def bye(self) -> list[dlg.Command]:
        self.clock += 1
        return self.feed(RemoteHangup(self.clock))

    def plays(self) -> list[Prompt]:
        return [c.prompt for _, cmds in self.log for c in cmds if isinstance(c, Play)]


def run(settings: DialogueSettings = BASE) -> Run:
    return Run(dlg.start(settings))


def shape(cmds: Sequence[dlg.Command]) -> list[object]:
    """Commands with the token and timestamps left out (they are checked separately)."""
    out: list[object] = []
    for c in cmds:
        if isinstance(c, StartTimer):
            out.append(("timer", c.seconds))
        elif isinstance(c, Confirmed):
            out.append(("confirmed", c.what))
        else:
            out.append(c)
    return out


def test_happy_path_both_confirmations() -> None:
    r = run()
    steps = [r.answer(), r.key("1"), r.timer(), r.key("9"), r.timer()]
    assert [shape(s) for s in steps] == [
        [Play(A), ("timer", ANSWER_WAIT)],
        [("confirmed", "answer"), Play(M), ("timer", 10.0)],
        [Play(L), ("timer", LISTEN_WAIT)],
        [("confirmed", "listen"), Play(G), ("timer", 1.5)],
        [HangUp()],
    ]
    assert r.phases == [Phase.ANSWER_KEY, Phase.MESSAGE, Phase.LISTEN_KEY, Phase.GOODBYE,
                        Phase.DONE]
    assert r.outcomes == [None, None, None, None, Outcome.CONTACTED]
    assert r.state.answer_confirmed_at == 102.0 and r.state.listen_confirmed_at == 104.0
    assert r.state.keys == "19"
    # every timer gets a fresh token
    tokens = [c.token for _, cmds in r.log for c in cmds if isinstance(c, StartTimer)]
    assert tokens == sorted(set(tokens))
    # Confirmed carries the time of the key
    confirmed = [c for _, cmds in r.log for c in cmds if isinstance(c, Confirmed)]
    assert confirmed == [Confirmed("answer", 102.0), Confirmed("listen", 104.0)]


def test_answer_confirmation_off() -> None:
    r = run(make(answer_confirm=False))
    steps = [r.answer(), r.timer(), r.key("9"), r.timer()]
    assert [shape(s) for s in steps] == [
        [Play(M), ("timer", 10.0)],
        [Play(L), ("timer", LISTEN_WAIT)],
        [("confirmed", "listen"), Play(G), ("timer", 1.5)],
        [HangUp()],
    ]
    assert r.outcomes[-1] is Outcome.CONTACTED
    assert r.state.answer_confirmed_at is None


def test_listen_confirmation_off() -> None:
    r = run(make(listen_confirm=False))
    steps = [r.answer(), r.key("1"), r.timer(), r.timer()]
    assert [shape(s) for s in steps] == [
        [Play(A), ("timer", ANSWER_WAIT)],
        [("confirmed", "answer"), Play(M), ("timer", 10.0)],
        [Play(G), ("timer", 1.5)],
        [HangUp()],
    ]
    assert r.phases == [Phase.ANSWER_KEY, Phase.MESSAGE, Phase.GOODBYE, Phase.DONE]
    assert r.outcomes[-1] is Outcome.CONTACTED


def test_both_confirmations_off() -> None:
    r = run(make(answer_confirm=False, listen_confirm=False))
    steps = [r.answer(), r.timer(), r.timer()]
    assert [shape(s) for s in steps] == [
        [Play(M), ("timer", 10.0)],
        [Play(G), ("timer", 1.5)],
        [HangUp()],
    ]
    assert r.outcomes == [None, None, Outcome.CONTACTED]


@pytest.mark.parametrize("wrong", ["2", "#", "*", "0"])
def test_wrong_listen_key_repeats_message_then_gives_up(wrong: str) -> None:
    r = run(make(max_repeats=2))
    r.answer()
    r.key("1")
    r.timer()  # message over: listen prompt
    steps = []
    for _ in range(2):  # two repeats allowed
        steps.append(r.key(wrong))  # the message again
        steps.append(r.timer())  # then the listen prompt
    steps.append(r.key(wrong))  # third wrong key: past max_repeats
    assert [shape(s) for s in steps] == [
        [Play(M), ("timer", 10.0)], [Play(L), ("timer", LISTEN_WAIT)],
        [Play(M), ("timer", 10.0)], [Play(L), ("timer", LISTEN_WAIT)],
        [HangUp()],
    ]
    assert r.plays().count(M) == 3
    assert r.outcomes[-1] is Outcome.NOT_CONFIRMED
    assert r.state.listen_confirmed_at is None
    assert r.key("9") == [] and r.state.outcome is Outcome.NOT_CONFIRMED


def test_no_listen_key_timeout_repeats_message() -> None:
    r = run(make(max_repeats=1))
    r.answer()
    r.key("1")
    r.timer()
    steps = [r.timer(), r.timer(), r.timer()]  # no key: message again, prompt, no key: give up
    assert [shape(s) for s in steps] == [
        [Play(M), ("timer", 10.0)], [Play(L), ("timer", LISTEN_WAIT)], [HangUp()],
    ]
    assert r.state.outcome is Outcome.NOT_CONFIRMED


def test_repeat_then_confirm_is_contacted() -> None:
    r = run()
    r.answer(); r.key("1"); r.timer()  # noqa: E702
    r.key("5"); r.timer()  # noqa: E702 - message again, then the listen prompt
    assert shape(r.key("9")) == [("confirmed", "listen"), Play(G), ("timer", 1.5)]
    r.timer()
    assert r.state.outcome is Outcome.CONTACTED
    assert r.plays() == [A, M, L, M, L, G]


def test_answer_prompt_repeats_on_no_key_and_wrong_key_then_gives_up() -> None:
    r = run(make(max_repeats=2))
    steps = [r.answer(), r.timer(), r.key("7"), r.timer()]
    assert [shape(s) for s in steps] == [
        [Play(A), ("timer", ANSWER_WAIT)],
        [Play(A), ("timer", ANSWER_WAIT)],
        [Play(A), ("timer", ANSWER_WAIT)],
        [HangUp()],
    ]
    assert r.state.outcome is Outcome.NOT_CONFIRMED
    assert M not in r.plays()


def test_answer_repeats_do_not_eat_the_message_repeats() -> None:
    r = run(make(max_repeats=1))
    r.answer(); r.timer()  # noqa: E702 - one answer repeat used
    r.key("1")
    assert r.state.repeats == 0
    r.timer(); r.timer()  # noqa: E702 - no listen key: message repeated once
    assert r.plays() == [A, A, M, L, M]


def test_max_repeats_zero_gives_up_at_first_wrong_key() -> None:
    r = run(make(max_repeats=0, answer_confirm=False))
    r.answer(); r.timer()  # noqa: E702
    assert r.key("3") == [HangUp()]
    assert r.state.outcome is Outcome.NOT_CONFIRMED


@pytest.mark.parametrize("when", ["answer_prompt", "message", "listen_prompt"])
def test_remote_hangup_before_confirmations_is_hung_up(when: str) -> None:
    r = run()
    r.answer()
    if when != "answer_prompt":
        r.key("1")
    if when == "listen_prompt":
        r.timer()
    assert r.bye() == []  # the far end is gone: nothing to send
    assert r.state.outcome is Outcome.HUNG_UP and r.state.phase is Phase.DONE


def test_remote_hangup_during_goodbye_after_9_is_contacted() -> None:
    r = run()
    r.answer(); r.key("1"); r.timer(); r.key("9")  # noqa: E702
    assert r.state.phase is Phase.GOODBYE
    assert r.bye() == []
    assert r.outcomes[-2:] == [None, Outcome.CONTACTED]
    assert r.timer() == []  # the goodbye timer after the end changes nothing
    assert r.state.outcome is Outcome.CONTACTED


def test_stale_timer_token_is_ignored() -> None:
    r = run()
    r.answer()
    first = r.armed
    r.key("1")  # arms a new timer (the message)
    assert first is not None and r.armed != first
    before = r.state
    assert r.feed(TimerFired(first, 200.0)) == []
    assert r.state == before
    assert r.feed(TimerFired(999, 200.0)) == []  # a token never armed
    assert r.state == before


def test_keys_during_message_and_goodbye_are_kept_but_change_nothing() -> None:
    r = run()
    r.answer(); r.key("1")  # noqa: E702
    assert r.key("9") == [] and r.state.phase is Phase.MESSAGE  # too early: ignored
    r.timer()
    r.key("9")
    # r.timer() moved the phase on: mypy still narrows it to MESSAGE from the assert above
    assert r.key("5") == [] and r.state.phase is Phase.GOODBYE  # type: ignore[comparison-overlap]
    assert r.state.keys == "1995"


def test_events_after_the_end_are_ignored() -> None:
    r = run(make(max_repeats=0))
    r.answer(); r.timer()  # noqa: E702
    done = r.state
    assert done.outcome is Outcome.NOT_CONFIRMED
    for ev in (Answered(1.0), Digit("1", 1.0), TimerFired(done.token, 1.0), RemoteHangup(1.0)):
        assert dlg.step(done, ev) == (done, [])


def test_events_before_answer_do_nothing() -> None:
    """Keys (early media) and timers before the answer must not confirm or play anything."""
    s0 = dlg.start(BASE)
    for ev in (Digit("1", 1.0), TimerFired(s0.token, 1.0), Digit("9", 2.0)):
        s1, cmds = dlg.step(s0, ev)
        assert cmds == [] and s1.answer_confirmed_at is None and s1.outcome is None
    r = run()
    r.feed(Digit("1", 1.0))
    assert shape(r.answer()) == [Play(A), ("timer", ANSWER_WAIT)]


def test_a_second_answered_does_not_restart_the_dialogue() -> None:
    r = run(make(max_repeats=1, answer_confirm=False))
    r.answer(); r.timer(); r.timer()  # noqa: E702 - message, prompt, message (repeat used)
    before = r.state
    assert r.answer() == []
    assert r.state == before


def test_unknown_event_type_raises() -> None:
    with pytest.raises(TypeError):
        dlg.step(dlg.start(BASE), "hello")  # type: ignore[arg-type]


# ----- properties -----

events = st.one_of(
    st.builds(Answered, st.floats(0, 1e6)),
    st.builds(Digit, st.sampled_from("0123456789*#"), st.floats(0, 1e6)),
    st.builds(TimerFired, st.integers(0, 12), st.floats(0, 1e6)),
    st.just("fire"),  # the armed timer fires (the usual case)
    st.builds(RemoteHangup, st.floats(0, 1e6)),
)
dsettings = st.builds(DialogueSettings, answer_confirm=st.booleans(),
                      listen_confirm=st.booleans(), max_repeats=st.integers(0, 4),
                      answer_key=st.sampled_from("19"), listen_key=st.sampled_from("90"))


@settings(max_examples=300, deadline=None)
@given(dsettings, st.lists(events, max_size=60))
def test_any_sequence_keeps_the_invariants(s: DialogueSettings, evs: list[object]) -> None:
    state = dlg.start(s)
    armed: int | None = None
    outcome: Outcome | None = None
    plays: list[Prompt] = []
    hangups = 0
    answered = 0
    for ev in evs:
        if ev == "fire":
            if armed is None:
                continue
            ev = TimerFired(armed, 1.0)
        prev = state
        state, cmds = dlg.step(state, ev)  # type: ignore[arg-type]
        if isinstance(ev, Answered):
            answered += 1
        # the outcome is set at most once and never changes
        if prev.outcome is not None:
            assert state == prev and cmds == []
        if outcome is not None:
            assert state.outcome is outcome
        outcome = state.outcome
        # a finished dialogue is DONE; a running one is not
        assert (state.outcome is not None) == (state.phase is Phase.DONE)
        timers = [c for c in cmds if isinstance(c, StartTimer)]
        assert len(timers) <= 1
        if timers:
            assert timers[0].token > prev.token
            armed = timers[0].token
        plays += [c.prompt for c in cmds if isinstance(c, Play)]
        hangups += sum(isinstance(c, HangUp) for c in cmds)
        # every Play comes with its timer (its end), and nothing plays after the end
        assert sum(isinstance(c, Play) for c in cmds) == len(timers)
        if state.outcome is not None:
            assert timers == []
        # contacted needs every required confirmation
        if state.outcome is Outcome.CONTACTED:
            assert not s.answer_confirm or state.answer_confirmed_at is not None
            assert not s.listen_confirm or state.listen_confirmed_at is not None
    # nothing plays before the call is answered, and the dialogue runs once per call
    assert answered or plays == []
    # bounded repeats: the message plays at most max_repeats + 1 times, and so does each prompt
    assert plays.count(Prompt.MESSAGE) <= s.max_repeats + 1
    assert plays.count(Prompt.ANSWER_PROMPT) <= s.max_repeats + 1
    assert plays.count(Prompt.LISTEN_PROMPT) <= s.max_repeats + 1
    assert plays.count(Prompt.GOODBYE) <= 1
    assert hangups <= 1
    if not s.answer_confirm:
        assert Prompt.ANSWER_PROMPT not in plays
    if not s.listen_confirm:
        assert Prompt.LISTEN_PROMPT not in plays


# ----- random keys (issue 15): only the drawn digit confirms, two guesses at most -----

RANDOM = make(answer_key="4", listen_key="6", answer_random=True, listen_random=True,
              max_repeats=3)


def test_random_key_right_digit_confirms_like_a_fixed_one() -> None:
    r = run(RANDOM)
    steps = [r.answer(), r.key("4"), r.timer(), r.key("6"), r.timer()]
    assert [shape(s) for s in steps] == [
        [Play(A), ("timer", ANSWER_WAIT)],
        [("confirmed", "answer"), Play(M), ("timer", 10.0)],
        [Play(L), ("timer", LISTEN_WAIT)],
        [("confirmed", "listen"), Play(G), ("timer", 1.5)],
        [HangUp()],
    ]
    assert r.state.outcome is Outcome.CONTACTED


def test_random_answer_key_one_wrong_digit_repeats_the_prompt_then_confirms() -> None:
    r = run(RANDOM)
    r.answer()
    assert shape(r.key("1")) == [dlg.Refused("answer", "1", 102.0), Play(A),
                                 ("timer", ANSWER_WAIT)]
    assert r.state.wrong == 1 and r.state.phase is Phase.ANSWER_KEY
    assert shape(r.key("4"))[0] == ("confirmed", "answer")
    assert r.state.wrong == 0  # the listen prompt has its own two guesses


def test_random_answer_key_second_wrong_digit_ends_unconfirmed() -> None:
    r = run(RANDOM)
    r.answer()
    r.key("2")
    assert shape(r.key("3")) == [dlg.Refused("answer", "3", 103.0), HangUp()]
    assert r.state.outcome is Outcome.NOT_CONFIRMED
    assert r.state.answer_confirmed_at is None
    assert r.key("4") == []  # too late: the dialogue is over


def test_random_listen_key_wrong_digit_replays_the_message_once() -> None:
    r = run(RANDOM)
    r.answer(), r.key("4"), r.timer()
    assert shape(r.key("9")) == [dlg.Refused("listen", "9", 104.0), Play(M), ("timer", 10.0)]
    r.key("6")  # during the message: kept, not a guess and not a confirmation
    assert r.state.listen_confirmed_at is None and r.state.wrong == 1
    r.timer()  # the listen prompt again
    assert shape(r.key("5")) == [dlg.Refused("listen", "5", 107.0), HangUp()]
    assert r.state.outcome is Outcome.NOT_CONFIRMED


def test_random_key_no_key_still_repeats_up_to_max_repeats() -> None:
    r = run(RANDOM)
    r.answer()
    for _ in range(3):
        assert shape(r.timer()) == [Play(A), ("timer", ANSWER_WAIT)]
    assert shape(r.timer()) == [HangUp()]
    assert r.state.outcome is Outcome.NOT_CONFIRMED


def test_random_key_max_repeats_zero_ends_at_the_first_wrong_digit() -> None:
    r = run(make(answer_key="4", answer_random=True, max_repeats=0))
    r.answer()
    assert shape(r.key("5")) == [dlg.Refused("answer", "5", 102.0), HangUp()]


def test_a_fixed_key_never_refuses() -> None:
    r = run(make(max_repeats=5))
    r.answer()
    for k in "234567":
        assert all(not isinstance(c, dlg.Refused) for c in r.key(k))
    assert r.state.wrong == 0 and r.state.outcome is Outcome.NOT_CONFIRMED


def _sweep(settings: DialogueSettings, digits: str) -> dlg.DialogueState:
    r = run(settings)
    r.answer()
    for k in digits:
        r.key(k)
    return r.state


def test_a_sweep_of_every_digit_confirms_a_fixed_key_but_a_random_one_only_in_two_guesses() -> None:
    sweep = "2345678"
    fixed = [_sweep(make(answer_key=d, max_repeats=10), sweep) for d in sweep]
    assert all(s.answer_confirmed_at is not None for s in fixed)  # the fixed key: always found
    drawn = [_sweep(make(answer_key=d, answer_random=True, max_repeats=10), sweep)
             for d in sweep]
    assert [s.answer_confirmed_at is not None for s in drawn] == [
        True, True, False, False, False, False, False]  # only a key among the first two


@settings(max_examples=300, deadline=None)
@given(st.sampled_from("2345678"), st.lists(st.sampled_from("0123456789*#"), max_size=12),
       st.integers(0, 6))
def test_a_random_key_confirms_only_on_its_digit_among_the_first_two(
        key: str, digits: list[str], repeats: int) -> None:
    s = make(answer_key=key, answer_random=True, listen_confirm=False, max_repeats=repeats)
    state = _sweep(s, "".join(digits))
    first = digits[:min(2, repeats + 1)]
    assert (state.answer_confirmed_at is not None) == (key in first)
    if len(digits) >= len(first) == 2 and key not in first:
        assert state.outcome is Outcome.NOT_CONFIRMED  # two wrong digits end it
