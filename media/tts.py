"""Text to speech with espeak-ng, and the regeneration of the shipped prompts.

``synthesize`` turns a text into a normalised WAV through ``import_audio``, so speech gets the
same checks as any uploaded file; ``render_tts`` is what ``--tts "text" [--voice it|en]`` calls.
``python -m media.tts`` rewrites ``media/prompts/*/*.wav`` from ``media.prompts.PROMPT_TEXTS``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from dialer.core.errors import AudioError
from media.audio import AudioInfo, import_audio, wav_seconds
from media.prompts import (
    LANGUAGES,
    PROMPT_TEXTS,
    PROMPTS_DIR,
    connect_prompt_texts,
    key_prompt_texts,
    normalise_language,
)

logger = logging.getLogger(__name__)

ESPEAK = "espeak-ng"
SPEED_WPM = 150  # espeak-ng's default 175 words a minute is hard to follow over a phone line


def espeak_command(text: str, language: str, wav: Path) -> list[str]:
    """The exact espeak-ng command that speaks ``text`` into ``wav`` (22.05 kHz WAV)."""
    return [ESPEAK, "-v", normalise_language(language), "-s", str(SPEED_WPM), "-w", str(wav),
            "--", text]


def synthesize(text: str, language: str, dest_dir: Path, *, rate: int = 8000,
               timeout: float = 60.0) -> AudioInfo:
    """Speak ``text`` in ``language`` with espeak-ng and import it into ``dest_dir``.

    Raises ``AudioError`` if espeak-ng is missing or fails, and whatever ``import_audio`` raises.
    """
    if shutil.which(ESPEAK) is None:
        raise AudioError(f"{ESPEAK} is not installed: cannot synthesize speech")
    with tempfile.TemporaryDirectory(prefix="dialer-tts-") as tmp:
        wav = Path(tmp) / "speech.wav"
        cmd = espeak_command(text, language, wav)
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=timeout,
                           env={**os.environ, "LC_ALL": "C.UTF-8"})
        except (OSError, subprocess.SubprocessError) as exc:
            raise AudioError(f"{ESPEAK} failed on {text[:40]!r}: {exc}") from exc
        return import_audio(wav, dest_dir, rate=rate)


MAX_TTS_CHARS = 2000  # about three minutes of speech at 150 words a minute


def render_tts(text: str, voice: str, dest_dir: Path, *, rate: int = 8000,
               timeout: float = 60.0) -> AudioInfo:
    """The message of ``--tts "text" [--voice it|en]``: speech as a normalised WAV in ``dest_dir``.

    ``voice`` is a language with a shipped prompt set (``en``, ``it``, or forms such as
    ``it-IT``). Raises ``AudioError`` with one line when espeak-ng is not installed, when the
    text is empty or too long, or when espeak-ng fails; ``ValidationError`` for an unknown voice.
    """
    language = normalise_language(voice)
    spoken = " ".join(text.split())  # newlines and tabs read as pauses at best, noise at worst
    if not spoken:
        raise AudioError("the text to speak is empty")
    if len(spoken) > MAX_TTS_CHARS:
        raise AudioError(f"the text to speak has {len(spoken)} characters; at most "
                         f"{MAX_TTS_CHARS} (record longer messages and use --audio)")
    if shutil.which(ESPEAK) is None:
        raise AudioError(f"text to speech needs {ESPEAK}, which is not installed "
                         f"(apt-get install {ESPEAK}), or record the message and use --audio")
    return synthesize(spoken, language, Path(dest_dir), rate=rate, timeout=timeout)


def regenerate_prompts(prompts_dir: Path = PROMPTS_DIR, *,
                       only_keys: bool = False) -> dict[str, dict[str, float]]:
    """Rewrite every shipped prompt from ``PROMPT_TEXTS``, the per-digit ones of random keys
    (``key_prompt_texts``) and the connect offers (``connect_prompt_texts``); return their
    durations in seconds. ``only_keys``: just the per-key ones."""
    durations: dict[str, dict[str, float]] = {}
    for language in LANGUAGES:
        target = prompts_dir / language
        target.mkdir(parents=True, exist_ok=True)
        durations[language] = {}
        texts = {} if only_keys else dict(PROMPT_TEXTS[language])
        keyed = {**key_prompt_texts(language), **connect_prompt_texts(language)}
        for name, text in {**texts, **keyed}.items():
            info = synthesize(text, language, target)
            final = target / f"{name}.wav"
            os.replace(info.path, final)  # same directory: atomic
            durations[language][name] = wav_seconds(final)
    return durations


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m media.tts [--dir DIR]`` regenerates the shipped prompts."""
    parser = argparse.ArgumentParser(description="Regenerate the shipped prompts with espeak-ng.")
    parser.add_argument("--dir", type=Path, default=PROMPTS_DIR, help="prompts directory")
    parser.add_argument("--only-keys", action="store_true",
                        help="only the per-key prompts (random keys, connect offers)")
    args = parser.parse_args(argv)
    for language, prompts in regenerate_prompts(args.dir, only_keys=args.only_keys).items():
        for name, seconds in prompts.items():
            print(f"{language}/{name}.wav  {seconds:.3f} s")


if __name__ == "__main__":
    main()
