"""The default prompts shipped with the dialer, in English and Italian.

The files under ``media/prompts/<language>/`` are normalised WAVs (8 kHz, 16-bit, mono) made
from ``PROMPT_TEXTS`` with espeak-ng; ``python -m media.tts`` regenerates them (see
``media/prompts/README.md``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from dialer.core.errors import AudioError, ValidationError

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
