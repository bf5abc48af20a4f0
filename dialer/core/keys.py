"""Random confirmation keys (issue 15): which digit confirms this call (pure).

A template's ``answer_key`` or ``listen_key`` may be ``random``: every call then draws its own
digit from ``RANDOM_DIGITS`` (2 to 8), never the digit of the other key in use (fixed, or drawn
first), and only that digit confirms (``dialer.core.dialogue``: a wrong digit repeats the prompt
once, a second one ends the call unconfirmed). A fixed-digit auto-attendant, or a person pressing
the usual 1 or 9 by reflex, does not confirm. The digit is drawn when the attempt is recorded,
from a random source the adapter injects (``secrets.randbelow`` in production), and is kept on
the attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dialer.core.domain import CampaignSettings

RANDOM = "random"
"""The value of ``answer_key``/``listen_key`` that draws a digit per call."""

RANDOM_DIGITS = "2345678"
"""The digits a random key is drawn from: not 1 and 9 (the usual fixed keys, pressed by reflex),
not 0, * and # (an operator, a menu's back key)."""

RandomBelow = Callable[[int], int]
"""A random source: ``below(n)`` returns an integer in ``[0, n)`` (``secrets.randbelow``)."""


def choices(other: str | None) -> str:
    """The digits a random key may take when the other key in use is ``other`` (None: none)."""
    return "".join(d for d in RANDOM_DIGITS if d != other)


def pick(other: str | None, value: int) -> str:
    """The digit for the random value ``value`` (in ``[0, len(choices(other)))``)."""
    options = choices(other)
    if not 0 <= value < len(options):
        raise ValueError(f"random value {value} outside [0, {len(options)})")
    return options[value]


@dataclass(frozen=True)
class DrawnKeys:
    """The digits drawn for one call; None where the key is fixed or its confirmation is off."""

    answer: str | None = None
    listen: str | None = None


def draw(st: CampaignSettings, below: RandomBelow) -> DrawnKeys:
    """Draw the random keys of one call under ``st``: the answer key first, then the listen key
    (which avoids the answer key whenever the answer is confirmed, fixed or drawn)."""
    answer: str | None = None
    listen: str | None = None
    if st.answer_confirm and st.answer_key == RANDOM:
        other = st.listen_key if st.listen_confirm and st.listen_key != RANDOM else None
        answer = pick(other, below(len(choices(other))))
    if st.listen_confirm and st.listen_key == RANDOM:
        other = (answer or st.answer_key) if st.answer_confirm else None
        listen = pick(other, below(len(choices(other))))
    return DrawnKeys(answer=answer, listen=listen)


def detail(drawn: DrawnKeys) -> dict[str, str]:
    """The drawn digits as the history's ``attempt_started`` detail has them (none: empty)."""
    out: dict[str, str] = {}
    if drawn.answer is not None:
        out["answer_key"] = drawn.answer
    if drawn.listen is not None:
        out["listen_key"] = drawn.listen
    return out


def any_random(st: CampaignSettings) -> bool:
    """Whether a call under ``st`` draws a digit."""
    return ((st.answer_confirm and st.answer_key == RANDOM)
            or (st.listen_confirm and st.listen_key == RANDOM))


def setting_text(value: Any) -> str:
    """A key setting as the reports say it."""
    if value == RANDOM:
        return f"random, a digit {RANDOM_DIGITS[0]}-{RANDOM_DIGITS[-1]} drawn per call"
    return str(value)


def drawn_text(attempt: Mapping[str, Any]) -> str:
    """The digits drawn for an attempt (its ``answer_key``/``listen_key``), as ``", answer key
    4, listen key 6"``; empty when its keys are fixed."""
    return "".join(f", {w} key {attempt[f'{w}_key']}" for w in ("answer", "listen")
                   if attempt.get(f"{w}_key"))


def connect_text(st: Mapping[str, Any]) -> str | None:
    """The connect key as the reports say it (None: no connect key)."""
    if not st.get("connect_key"):
        return None
    counts = ("counts as contacted even without the confirmations" if st.get("connect_confirms")
              else "counts as contacted after the confirmations")
    return f"key {st['connect_key']} transfers to {st.get('connect_to')} ({counts})"
