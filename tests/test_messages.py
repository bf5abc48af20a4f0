"""The ``dial`` of a claimed call (``dialer.messages``): the prompts a call plays say the keys
that confirm it and the connect key it offers."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialer.config import TrunkConfig
from dialer.core.domain import CampaignSettings, Kind
from dialer.core.keys import DrawnKeys
from dialer.core.records import ClaimedCall
from dialer.messages import Dials
from media.audio import wav_seconds
from media.prompts import key_prompt_path, prompt_set

TRUNK = TrunkConfig(name="internal", uri="sip:127.0.0.1:5060")
MESSAGE = Path(__file__).resolve().parents[1] / "media" / "prompts" / "en" / "demo_message.wav"


def dial(st: CampaignSettings, drawn: DrawnKeys = DrawnKeys()) -> dict[str, str]:
    call = ClaimedCall(attempt_id="a1", campaign_id=1, recipient_id=1, number="101",
                       kind=Kind.INTERNAL, settings=st, audio_sha="x", audio_seconds=3.0,
                       drawn=drawn)
    msg = Dials(prompt_set, key_prompt_path, lambda p: wav_seconds(Path(p))).message(
        call, TRUNK, MESSAGE)
    return {k: Path(v).name for k, v in msg.media.items()}


def test_the_default_keys_play_the_usual_prompts() -> None:
    media = dial(CampaignSettings())
    assert (media["answer_prompt"], media["listen_prompt"]) == ("answer_prompt.wav",
                                                                "listen_prompt.wav")
    assert "connect_offer" not in media


@pytest.mark.parametrize(("answer", "listen", "files"), [
    ("5", "9", ("answer_prompt_5.wav", "listen_prompt.wav")),
    ("1", "0", ("answer_prompt.wav", "listen_prompt_0.wav")),
    ("*", "#", ("answer_prompt_star.wav", "listen_prompt_hash.wav")),
    ("9", "1", ("answer_prompt_9.wav", "listen_prompt_1.wav")),
])
def test_a_fixed_key_other_than_1_or_9_plays_the_prompt_that_says_it(
        answer: str, listen: str, files: tuple[str, str]) -> None:
    """A template with --answer-key 5 said "press 1" and confirmed only on 5: nobody who
    followed the prompt could confirm."""
    media = dial(CampaignSettings(answer_key=answer, listen_key=listen))
    assert (media["answer_prompt"], media["listen_prompt"]) == files


def test_drawn_keys_and_the_connect_key_play_their_prompts() -> None:
    st = CampaignSettings(answer_key="random", listen_key="random", connect_key="#",
                          connect_to="sip:b@x")
    media = dial(st, DrawnKeys(answer="4", listen="7"))
    assert (media["answer_prompt"], media["listen_prompt"], media["connect_offer"]) == (
        "answer_prompt_4.wav", "listen_prompt_7.wav", "connect_offer_hash.wav")
