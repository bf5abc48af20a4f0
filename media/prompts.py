"""The default prompts shipped with the dialer, in English and Italian.

The files under ``media/prompts/<language>/`` are normalised WAVs (8 kHz, 16-bit, mono) made
from ``PROMPT_TEXTS`` with espeak-ng; ``python -m media.tts`` regenerates them (see
``media/prompts/README.md``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from dialer.core.errors import AudioError, ValidationError
from dialer.core.keys import RANDOM_DIGITS

logger = logging.getLogger(__name__)

PROMPTS_DIR: Path = Path(__file__).resolve().parent / "prompts"

LANGUAGES: tuple[str, ...] = ("en", "it")
"""Languages with a shipped prompt set (ISO 639-1 codes)."""

PROMPT_NAMES: tuple[str, ...] = ("answer_prompt", "listen_prompt", "goodbye", "demo_message")
"""Every prompt set holds these; the first three match ``dialer.core.dialogue.Prompt`` values."""

PROMPT_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "answer_prompt": "This is an alert call. Press 1 to listen to the message.",
        "listen_prompt": "Press 9 to confirm you have listened to the message.",
        "goodbye": "Thank you. Goodbye.",
        "demo_message": "This is a test of the alert dialer. Everything is fine.",
    },
    "it": {
        "answer_prompt": "Questa è una chiamata di allerta. Premi 1 per ascoltare il messaggio.",
        "listen_prompt": "Premi 9 per confermare di aver ascoltato il messaggio.",
        "goodbye": "Grazie. Arrivederci.",
        "demo_message": "Questa è una prova del sistema di allerta. Va tutto bene.",
    },
}
"""What each shipped prompt says, by language then prompt name."""

KEY_PROMPT_NAMES: tuple[str, ...] = ("answer_prompt", "listen_prompt")
"""The prompts of a random key (``dialer.core.keys``): one file a digit of ``RANDOM_DIGITS``,
``<name>_<digit>.wav``, saying the digit drawn for the call."""

KEY_PROMPT_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "answer_prompt": "This is an alert call. Press {digit} to listen to the message.",
        "listen_prompt": "Press {digit} to confirm you have listened to the message.",
    },
    "it": {
        "answer_prompt": "Questa è una chiamata di allerta. Premi {digit} per ascoltare il "
                         "messaggio.",
        "listen_prompt": "Premi {digit} per confermare di aver ascoltato il messaggio.",
    },
}
"""The texts of the per-digit prompts, ``{digit}`` standing for the digit (as PROMPT_TEXTS)."""


def normalise_language(language: str) -> str:
    """Map ``"it"``, ``"IT"``, ``"it-IT"`` or ``"it_IT"`` to a shipped language code.

    Raises ``ValidationError`` for a language without a prompt set.
    """
    code = language.strip().lower().replace("_", "-").split("-", 1)[0]
    if code not in LANGUAGES:
        raise ValidationError(
            f"no prompts for language {language!r} (available: {', '.join(LANGUAGES)})")
    return code


def prompt_path(language: str, name: str) -> Path:
    """Path of the shipped prompt ``name`` in ``language``.

    Raises ``ValidationError`` for an unknown language or prompt name, and ``AudioError`` if the
    file is missing from the installation.
    """
    code = normalise_language(language)
    if name not in PROMPT_NAMES:
        raise ValidationError(
            f"no prompt named {name!r} (available: {', '.join(PROMPT_NAMES)})")
    path = PROMPTS_DIR / code / f"{name}.wav"
    if not path.is_file():
        raise AudioError(f"{path}: shipped prompt missing from the installation")
    return path


def prompt_set(language: str) -> dict[str, Path]:
    """Every shipped prompt of ``language``, by name (see ``PROMPT_NAMES``)."""
    return {name: prompt_path(language, name) for name in PROMPT_NAMES}


def key_prompt_texts(language: str) -> dict[str, str]:
    """Every per-digit prompt of ``language``: file stem (``answer_prompt_4``) -> its text."""
    code = normalise_language(language)
    return {f"{name}_{digit}": KEY_PROMPT_TEXTS[code][name].format(digit=digit)
            for name in KEY_PROMPT_NAMES for digit in RANDOM_DIGITS}


def key_prompt_path(language: str, name: str, digit: str) -> Path:
    """Path of the shipped prompt ``name`` (answer_prompt, listen_prompt) that says "press
    ``digit``", for a random key. Raises as ``prompt_path``."""
    code = normalise_language(language)
    if name not in KEY_PROMPT_NAMES or len(digit) != 1 or digit not in RANDOM_DIGITS:
        raise ValidationError(f"no prompt {name!r} for key {digit!r} (random keys: "
                              f"{', '.join(KEY_PROMPT_NAMES)}, digits {RANDOM_DIGITS})")
    path = PROMPTS_DIR / code / f"{name}_{digit}.wav"
    if not path.is_file():
        raise AudioError(f"{path}: shipped prompt missing from the installation")
    return path
