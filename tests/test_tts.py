"""``render_tts``: the message of ``--tts "text" [--voice it|en]``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dialer.core.errors import AudioError, ValidationError
from media.audio import validate_normalised, wav_seconds
from media.tts import MAX_TTS_CHARS, render_tts

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (Debian package espeak-ng)")


@needs_espeak
@pytest.mark.parametrize("voice, text", [
    ("en", "Evacuate building B now. Gather at assembly point three."),
    ("it-IT", "Evacuare subito l'edificio B. Punto di raccolta tre."),
])
def test_speech_becomes_a_normalised_message(tmp_path: Path, voice: str, text: str) -> None:
    info = render_tts(text, voice, tmp_path)
    validate_normalised(info.path)
    assert info.path.parent == tmp_path and info.path.name == f"{info.sha256}.wav"
    assert info.rate == 8000
    assert 2.0 < info.seconds < 15.0
    assert wav_seconds(info.path) == pytest.approx(info.seconds)


@needs_espeak
def test_whitespace_is_read_as_one_line(tmp_path: Path) -> None:
    one = render_tts("Fire in hall 2.", "en", tmp_path / "a")
    two = render_tts("  Fire\nin   hall 2.\t", "en", tmp_path / "b")
    assert one.sha256 == two.sha256


def test_a_clear_error_without_espeak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(AudioError) as err:
        render_tts("Evacuate now.", "en", tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message
    assert "espeak-ng, which is not installed" in message and "--audio" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    ("", "empty"), (" \n\t ", "empty"), ("x" * (MAX_TTS_CHARS + 1), "at most"),
])
def test_text_that_cannot_be_spoken(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        render_tts(text, "en", tmp_path)


def test_an_unknown_voice(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no prompts for language 'fr'"):
        render_tts("Bonjour", "fr", tmp_path)
