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

Connect to a person (``connect_key``/``connect_to``): after the message the dialogue offers the
key ("press 0 to speak to a person": OFFER, between the last confirmation and the goodbye), and
the key is honoured there, at the answer and listen prompts and during the goodbye, never during
the message. It plays "connecting you" and asks the worker for a blind transfer (``Transfer``:
a SIP REFER to ``connect_to``), then waits (TRANSFER) for the far end's report
(``TransferStatus``):

* a final 2xx (the NOTIFY that closes the REFER's subscription), the far end hanging up once the
  REFER was accepted, or an accepted REFER without a final report within ``transfer_wait``:
  transferred; we hang up our leg. The outcome is ``contacted`` if every required confirmation
  came first, or if ``connect_confirms``; else ``not_confirmed``.
* a REFER refused (3xx-6xx), a final failure report, or no answer to the REFER within
  ``transfer_wait``: "the transfer did not succeed" (TRANSFER_FAILED), then the dialogue goes on
  where the key was pressed (the same prompt again; the goodbye after the offer). The key is not
  offered or honoured again on that call: a bridge that refused once would refuse again.

Each step is a ``Transferred`` command for the record (``requested``, ``accepted``,
``connected``, ``failed``).
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
    CONNECT_OFFER = "connect_offer"  # "press 0 to speak to a person"
    CONNECTING = "connecting"  # "connecting you"
    TRANSFER_FAILED = "transfer_failed"  # "the transfer did not succeed"


class Phase(str, enum.Enum):
    """Where the dialogue stands."""

    ANSWER_KEY = "answer_key"
    MESSAGE = "message"
    LISTEN_KEY = "listen_key"
    OFFER = "offer"  # the connect key offered after the message
    TRANSFER = "transfer"  # a REFER sent: waiting for the far end's report
    TRANSFER_FAILED = "transfer_failed"  # saying so, then back to where the key was pressed
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


@dataclass(frozen=True)
class TransferStatus:
    """What the far end said of our REFER: its response, or a NOTIFY's status line (sipfrag).

    ``final``: nothing more will come (the REFER refused, or the subscription terminated)."""

    code: int
    final: bool
    at: float


Event = Answered | Digit | TimerFired | RemoteHangup | TransferStatus


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


@dataclass(frozen=True)
class Transfer:
    """Transfer the call, blind: send a REFER with ``Refer-To: <uri>``."""

    uri: str


@dataclass(frozen=True)
class Transferred:
    """Record a step of a transfer: ``requested``, ``accepted``, ``connected`` or ``failed``,
    with the SIP code that said so (0: none, the far end hung up or the wait ran out)."""

    result: str
    code: int
    at: float


Command = Play | StartTimer | HangUp | Confirmed | Refused | Transfer | Transferred

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
    # the connect key: where it was pressed (resumed there if the transfer fails), whether the
    # far end accepted the REFER, whether a transfer failed (the key is then off for the call)
    resume: Phase | None = None
    transfer_accepted: bool = False
    transfer_failed: bool = False
    outcome: Outcome | None = None  # set once the dialogue is over


def start(settings: DialogueSettings) -> DialogueState:
    """The state of a call that has not been answered yet."""
    return DialogueState(settings=settings, phase=Phase.ANSWER_KEY)


def step(state: DialogueState, event: Event) -> tuple[DialogueState, list[Command]]:
    """Apply one event; return the next state and the commands to carry out, in order."""
    if state.outcome is not None:
        return state, []
    if isinstance(event, RemoteHangup):
        if state.phase is Phase.TRANSFER and state.transfer_accepted:
            return _connected(state, 0, event.at, hang_up=False)  # the far end took the call
        outcome = Outcome.CONTACTED if state.success else Outcome.HUNG_UP
        return replace(state, phase=Phase.DONE, outcome=outcome), []
    if isinstance(event, TransferStatus):
        return _on_transfer_status(state, event)
    if isinstance(event, Answered):
        if state.answered_at is not None:
            return state, []  # a repeated answer must not restart the dialogue (and its repeats)
        return _on_answered(replace(state, answered_at=event.at), event.at)
    if isinstance(event, (Digit, TimerFired)) and state.answered_at is None:
        return state, []  # early-media keys or a stray timer before the answer: not a confirmation
    if isinstance(event, Digit):
        state = replace(state, keys=state.keys + event.key)
        if _connect_offered(state) and event.key == state.settings.connect_key \
                and state.phase in CONNECT_PHASES:
            return _transfer(state, event.at)
        return _on_digit(state, event)
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
            new, cmds = _after_message(confirmed)
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
            return _listen_prompt(state)
        return _after_message(state)
    if state.phase is Phase.OFFER:
        return _goodbye(state)
    if state.phase is Phase.TRANSFER:
        if state.transfer_accepted:  # accepted, never reported done: the far end has it
            return _connected(state, 0, at, hang_up=True)
        return _transfer_failed(state, 0, at)  # the REFER went unanswered
    if state.phase is Phase.TRANSFER_FAILED:
        return _resume(state)
    if state.phase is Phase.GOODBYE:
        return replace(state, phase=Phase.DONE, outcome=Outcome.CONTACTED), [HangUp()]
    return state, []


def _listen_prompt(state: DialogueState) -> tuple[DialogueState, list[Command]]:
    s = state.settings
    return _arm(state, Phase.LISTEN_KEY, Prompt.LISTEN_PROMPT,
                s.listen_prompt_seconds + s.key_timeout)


# ----- connect to a person -----

CONNECT_PHASES = frozenset({Phase.ANSWER_KEY, Phase.LISTEN_KEY, Phase.OFFER, Phase.GOODBYE})
"""Where the connect key is honoured: at a prompt and after the message, not during it."""


def _connect_offered(state: DialogueState) -> bool:
    s = state.settings
    return bool(s.connect_key and s.connect_to) and not state.transfer_failed


def _after_message(state: DialogueState) -> tuple[DialogueState, list[Command]]:
    """Every confirmation is in: offer the connect key (if any, and not failed), else goodbye."""
    if not _connect_offered(state):
        return _goodbye(state)
    s = state.settings
    return _arm(replace(state, success=True), Phase.OFFER, Prompt.CONNECT_OFFER,
                s.connect_offer_seconds + s.key_timeout)


def _transfer(state: DialogueState, at: float) -> tuple[DialogueState, list[Command]]:
    s = state.settings
    assert s.connect_to is not None
    token = state.token + 1
    new = replace(state, phase=Phase.TRANSFER, token=token, resume=state.phase, wrong=0,
                  transfer_accepted=False)
    return new, [Play(Prompt.CONNECTING), Transferred("requested", 0, at),
                 Transfer(s.connect_to), StartTimer(s.transfer_wait, token)]


def _on_transfer_status(state: DialogueState,
                        event: TransferStatus) -> tuple[DialogueState, list[Command]]:
    if state.phase is not Phase.TRANSFER:
        return state, []  # a late report of a transfer already given up: changes nothing
    if not event.final:
        if state.transfer_accepted:
            return state, []
        return (replace(state, transfer_accepted=True),
                [Transferred("accepted", event.code, event.at)])
    if 200 <= event.code < 300:
        return _connected(state, event.code, event.at, hang_up=True)
    return _transfer_failed(state, event.code, event.at)


def _connected(state: DialogueState, code: int, at: float,
               hang_up: bool) -> tuple[DialogueState, list[Command]]:
    """The far end has the call: our leg ends; contacted if confirmed (or if it counts)."""
    contacted = state.success or state.settings.connect_confirms
    outcome = Outcome.CONTACTED if contacted else Outcome.NOT_CONFIRMED
    done = replace(state, phase=Phase.DONE, outcome=outcome, success=contacted)
    return done, [Transferred("connected", code, at), *([HangUp()] if hang_up else [])]


def _transfer_failed(state: DialogueState, code: int,
                     at: float) -> tuple[DialogueState, list[Command]]:
    token = state.token + 1
    new = replace(state, phase=Phase.TRANSFER_FAILED, token=token, transfer_failed=True)
    return new, [Transferred("failed", code, at), Play(Prompt.TRANSFER_FAILED),
                 StartTimer(state.settings.transfer_failed_seconds, token)]


def _resume(state: DialogueState) -> tuple[DialogueState, list[Command]]:
    """Back where the connect key was pressed: the same prompt again (its repeats unchanged);
    the goodbye after the offer or the goodbye."""
    s = state.settings
    if state.resume is Phase.ANSWER_KEY:
        return _arm(state, Phase.ANSWER_KEY, Prompt.ANSWER_PROMPT,
                    s.answer_prompt_seconds + s.key_timeout)
    if state.resume is Phase.LISTEN_KEY:
        return _listen_prompt(state)
    return _goodbye(state)
