"""The per-call dialogue as a pure state machine.

After the far end answers, the dialogue decides what to play and when to hang up. It never touches
SIP or audio: ``step(state, event)`` returns the next state and the commands the SIP worker carries
out (play a prompt, arm the call's single timer, hang up, record a confirmation). Prompt durations
are known values (audio is normalised on import), so the end of a playback is simply the timer the
dialogue arms for it: the worker needs no end-of-file callback from the media thread.

Flow (SPEC section 4, step 3)::

    answered --(answer confirmation on)--> ANSWER_KEY: "press 1", wait; wrong key / no key repeats
             --(off, or 1 pressed)-------> MESSAGE: the recorded message
    MESSAGE  --(listen confirmation on)--> LISTEN_KEY: "press 9", wait; wrong/no key replays MESSAGE
             --(off, or 9 pressed)-------> GOODBYE --> hang up, outcome contacted

Repeats are bounded by ``max_repeats``; past it the dialogue hangs up with ``not_confirmed``. The
far end hanging up before every required confirmation ends ``hung_up``.

A key drawn for the call (``answer_random``/``listen_random``, ``dialer.core.keys``) is
unguessable: a wrong digit at its prompt is refused (``Refused``) and repeats the prompt (the
message and the prompt, for the listen key) as a wrong key always does, but only once: the
``WRONG_DIGITS``-th wrong digit at that prompt ends the call ``not_confirmed``. A far end that
sweeps the digits therefore gets two guesses, not seven. Fixed keys keep the rule above.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from dialer.core.domain import DialogueSettings, Outcome


class Prompt(str, enum.Enum):
    """What a ``Play`` command plays."""

    ANSWER_PROMPT = "answer_prompt"  # "press 1 to listen to the message"
    MESSAGE = "message"
    LISTEN_PROMPT = "listen_prompt"  # "press 9 to confirm"
    GOODBYE = "goodbye"


class Phase(str, enum.Enum):
    """Where the dialogue stands."""

    ANSWER_KEY = "answer_key"
    MESSAGE = "message"
    LISTEN_KEY = "listen_key"
    GOODBYE = "goodbye"
    DONE = "done"


# ----- events (from the worker) -----


@dataclass(frozen=True)
class Answered:
    """The far end answered (200 OK, media up)."""

    at: float


@dataclass(frozen=True)
class Digit:
    """A DTMF key arrived (RFC 2833 telephone event or SIP INFO)."""

    key: str
    at: float


@dataclass(frozen=True)
class TimerFired:
    """The call's timer armed with ``token`` expired."""

    token: int
    at: float


@dataclass(frozen=True)
class RemoteHangup:
    """The far end hung up (BYE) or the media went away."""

    at: float


Event = Answered | Digit | TimerFired | RemoteHangup


# ----- commands (to the worker) -----


@dataclass(frozen=True)
class Play:
    """Stop whatever plays and play ``prompt`` from its start."""

    prompt: Prompt


@dataclass(frozen=True)
class StartTimer:
    """Arm the call's only timer (replacing any armed one) to fire after ``seconds``."""

    seconds: float
    token: int


@dataclass(frozen=True)
class HangUp:
    """Hang the call up (BYE)."""


@dataclass(frozen=True)
class Confirmed:
    """Record a confirmation: ``what`` is ``"answer"`` or ``"listen"``."""

    what: str
    at: float


@dataclass(frozen=True)
class Refused:
    """A wrong digit at the prompt of a random key: ``what`` is ``"answer"`` or ``"listen"``."""

    what: str
    key: str
    at: float


Command = Play | StartTimer | HangUp | Confirmed | Refused

WRONG_DIGITS = 2
"""Wrong digits at the prompt of a random key that end the call unconfirmed (the first repeats)."""


@dataclass(frozen=True, kw_only=True)
class DialogueState:
    """Everything the dialogue remembers about one answered call."""

    settings: DialogueSettings
    phase: Phase = Phase.DONE
    repeats: int = 0
    token: int = 0
    keys: str = ""
    wrong: int = 0  # wrong digits at the current random-key prompt
    answered_at: float | None = None  # None: not answered yet, keys and timers mean nothing
    answer_confirmed_at: float | None = None
    listen_confirmed_at: float | None = None
    success: bool = False
    outcome: Outcome | None = None  # set once the dialogue is over


def start(settings: DialogueSettings) -> DialogueState:
    """The state of a call that has not been answered yet."""
    return DialogueState(settings=settings, phase=Phase.ANSWER_KEY)


def step(state: DialogueState, event: Event) -> tuple[DialogueState, list[Command]]:
    """Apply one event; return the next state and the commands to carry out, in order."""
    if state.outcome is not None:
        return state, []
    if isinstance(event, RemoteHangup):
        outcome = Outcome.CONTACTED if state.success else Outcome.HUNG_UP
        return replace(state, phase=Phase.DONE, outcome=outcome), []
    if isinstance(event, Answered):
        if state.answered_at is not None:
            return state, []  # a repeated answer must not restart the dialogue (and its repeats)
        return _on_answered(replace(state, answered_at=event.at), event.at)
    if isinstance(event, (Digit, TimerFired)) and state.answered_at is None:
        return state, []  # early-media keys or a stray timer before the answer: not a confirmation
    if isinstance(event, Digit):
        return _on_digit(replace(state, keys=state.keys + event.key), event)
    if isinstance(event, TimerFired):
        if event.token != state.token:
            return state, []  # a stale timer: a newer one replaced it
        return _on_timer(state, event.at)
    raise TypeError(f"unknown dialogue event {event!r}")


def _arm(state: DialogueState, phase: Phase, prompt: Prompt, seconds: float,
         repeats: int | None = None) -> tuple[DialogueState, list[Command]]:
    token = state.token + 1
    new = replace(state, phase=phase, token=token,
                  repeats=state.repeats if repeats is None else repeats)
    return new, [Play(prompt), StartTimer(seconds, token)]


def _on_answered(state: DialogueState, at: float) -> tuple[DialogueState, list[Command]]:
    s = state.settings
    if s.answer_confirm:
        return _arm(state, Phase.ANSWER_KEY, Prompt.ANSWER_PROMPT,
                    s.answer_prompt_seconds + s.key_timeout, repeats=0)
    return _message(state, repeats=0)


def _message(state: DialogueState,
             repeats: int | None = None) -> tuple[DialogueState, list[Command]]:
    return _arm(state, Phase.MESSAGE, Prompt.MESSAGE, state.settings.message_seconds, repeats)


def _goodbye(state: DialogueState) -> tuple[DialogueState, list[Command]]:
    new, cmds = _arm(replace(state, success=True), Phase.GOODBYE, Prompt.GOODBYE,
                     state.settings.goodbye_seconds)
    return new, cmds


def _give_up(state: DialogueState) -> tuple[DialogueState, list[Command]]:
    return replace(state, phase=Phase.DONE, outcome=Outcome.NOT_CONFIRMED), [HangUp()]


def _on_digit(state: DialogueState, event: Digit) -> tuple[DialogueState, list[Command]]:
    s = state.settings
    if state.phase is Phase.ANSWER_KEY:
        if event.key == s.answer_key:
            confirmed = replace(state, answer_confirmed_at=event.at, wrong=0)
            new, cmds = _message(confirmed, repeats=0)
            return new, [Confirmed("answer", event.at), *cmds]
        if s.answer_random:
            return _refuse(state, "answer", event)
        return _retry(state)
    if state.phase is Phase.LISTEN_KEY:
        if event.key == s.listen_key:
            confirmed = replace(state, listen_confirmed_at=event.at, wrong=0)
            new, cmds = _goodbye(confirmed)
            return new, [Confirmed("listen", event.at), *cmds]
        if s.listen_random:
            return _refuse(state, "listen", event)
        return _retry(state)
    # Keys during the message or the goodbye are kept in `keys` but change nothing.
    return state, []


def _refuse(state: DialogueState, what: str,
            event: Digit) -> tuple[DialogueState, list[Command]]:
    """A wrong digit at a random key's prompt: refused; the first repeats, the second ends."""
    refused = Refused(what, event.key, event.at)
    state = replace(state, wrong=state.wrong + 1)
    new, cmds = _give_up(state) if state.wrong >= WRONG_DIGITS else _retry(state)
    return new, [refused, *cmds]


def _retry(state: DialogueState) -> tuple[DialogueState, list[Command]]:
    """No key or a wrong key: repeat the prompt (answer) or the message (listen), bounded."""
    s = state.settings
    repeats = state.repeats + 1
    if repeats > s.max_repeats:
        return _give_up(state)
    if state.phase is Phase.ANSWER_KEY:
        return _arm(state, Phase.ANSWER_KEY, Prompt.ANSWER_PROMPT,
                    s.answer_prompt_seconds + s.key_timeout, repeats=repeats)
    return _message(state, repeats=repeats)


def _on_timer(state: DialogueState, at: float) -> tuple[DialogueState, list[Command]]:
    s = state.settings
    if state.phase in (Phase.ANSWER_KEY, Phase.LISTEN_KEY):
        return _retry(state)
    if state.phase is Phase.MESSAGE:
        if s.listen_confirm:
            return _arm(state, Phase.LISTEN_KEY, Prompt.LISTEN_PROMPT,
                        s.listen_prompt_seconds + s.key_timeout)
        return _goodbye(state)
    if state.phase is Phase.GOODBYE:
        return replace(state, phase=Phase.DONE, outcome=Outcome.CONTACTED), [HangUp()]
    return state, []
