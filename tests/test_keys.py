"""Random confirmation keys (dialer.core.keys): the draw, and what validation accepts."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialer.core import keys, validation
from dialer.core.domain import CampaignSettings
from dialer.core.errors import ValidationError

BASE = CampaignSettings()


def test_choices_are_2_to_8_without_the_other_key() -> None:
    assert keys.choices(None) == "2345678"
    assert keys.choices("1") == "2345678"
    assert keys.choices("5") == "234678"


def test_pick_maps_every_value_to_one_digit_and_refuses_outside() -> None:
    assert [keys.pick("5", v) for v in range(6)] == list("234678")
    with pytest.raises(ValueError):
        keys.pick("5", 6)
    with pytest.raises(ValueError):
        keys.pick(None, -1)


@pytest.mark.parametrize(("answer", "listen", "a_confirm", "l_confirm", "want"), [
    ("1", "9", True, True, (None, None)),  # fixed keys draw nothing
    ("random", "9", True, True, ("a", None)),
    ("1", "random", True, True, (None, "l")),
    ("random", "random", True, True, ("a", "l")),
    ("random", "random", False, True, (None, "l")),  # a confirmation that is off draws nothing
    ("random", "random", True, False, ("a", None)),
])
def test_draw_draws_only_the_random_keys_in_use(answer: str, listen: str, a_confirm: bool,
                                                l_confirm: bool,
                                                want: tuple[str | None, str | None]) -> None:
    st_ = replace(BASE, answer_key=answer, listen_key=listen, answer_confirm=a_confirm,
                  listen_confirm=l_confirm)
    got = keys.draw(st_, random.Random(1).randrange)
    assert (got.answer is not None, got.listen is not None) == (want[0] is not None,
                                                                 want[1] is not None)
    assert keys.any_random(st_) == (want != (None, None))


@given(st.sampled_from(["random", *"0123456789*#"]), st.sampled_from(["random", *"0123456789*#"]),
       st.booleans(), st.booleans(), st.integers(0, 2**32))
def test_a_drawn_key_is_2_to_8_and_never_the_other_key(answer: str, listen: str, a_on: bool,
                                                        l_on: bool, seed: int) -> None:
    st_ = replace(BASE, answer_key=answer, listen_key=listen, answer_confirm=a_on,
                  listen_confirm=l_on)
    got = keys.draw(st_, random.Random(seed).randrange)
    a = got.answer or (answer if a_on else None)
    b = got.listen or (listen if l_on else None)
    for d in (got.answer, got.listen):
        assert d is None or d in "2345678"
    if a_on and l_on and (got.answer or got.listen):
        assert a != b


def test_the_draw_is_uniform_over_its_choices() -> None:
    st_ = replace(BASE, answer_key="random", listen_key="5")
    rng = random.Random(7)
    n = 7000
    seen = Counter(keys.draw(st_, rng.randrange).answer for _ in range(n))
    assert set(seen) == set("234678")  # never 5, the listen key
    for count in seen.values():  # each near n/6 (sd about 31): well within 5 sd
        assert abs(count - n / 6) < 5 * (n * (1 / 6) * (5 / 6)) ** 0.5


def test_both_random_listen_avoids_the_drawn_answer() -> None:
    st_ = replace(BASE, answer_key="random", listen_key="random")
    # the answer takes the first of 7 digits; the listen key draws among the 6 left
    got = keys.draw(st_, lambda n: 0)
    assert got == keys.DrawnKeys(answer="2", listen="3")


def test_validation_accepts_random_and_still_refuses_nonsense() -> None:
    validation.settings(replace(BASE, answer_key="random", listen_key="random"))
    validation.settings(replace(BASE, answer_key="random"))
    with pytest.raises(ValidationError, match="or random"):
        validation.settings(replace(BASE, listen_key="rand"))
    with pytest.raises(ValidationError, match="must differ"):
        validation.settings(replace(BASE, answer_key="3", listen_key="3"))
