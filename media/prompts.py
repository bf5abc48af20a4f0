"""The default prompts shipped with the dialer, in English and Italian.

The files under ``media/prompts/<language>/`` are normalised WAVs (8 kHz, 16-bit, mono) made
from ``PROMPT_TEXTS`` with espeak-ng; ``python -m media.tts`` regenerates them (see
``media/prompts/README.md``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from dialer.core.domain import DEFAULT_ANSWER_KEY, DEFAULT_LISTEN_KEY
from dialer.core.errors import AudioError, ValidationError

logger = logging.getLogger(__name__)

PROMPTS_DIR: Path = Path(__file__).resolve().parent / "prompts"

LANGUAGES: tuple[str, ...] = ("en", "it")
"""Languages with a shipped prompt set (ISO 639-1 codes)."""

PROMPT_NAMES: tuple[str, ...] = ("answer_prompt", "listen_prompt", "goodbye", "demo_message",
                                  "connecting", "transfer_failed")
"""Every prompt set holds these; all but ``demo_message`` are ``dialer.core.dialogue.Prompt``
values (the last two are played by a template with a connect key)."""

PROMPT_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "answer_prompt": "This is an alert call. Press 1 to listen to the message.",
        "listen_prompt": "Press 9 to confirm you have listened to the message.",
        "goodbye": "Thank you. Goodbye.",
        "demo_message": "This is a test of the alert dialer. Everything is fine.",
        "connecting": "Connecting you now. Please hold.",
        "transfer_failed": "Sorry, the call could not be connected.",
    },
    "it": {
        "answer_prompt": "Questa è una chiamata di allerta. Premi 1 per ascoltare il messaggio.",
        "listen_prompt": "Premi 9 per confermare di aver ascoltato il messaggio.",
        "goodbye": "Grazie. Arrivederci.",
        "demo_message": "Questa è una prova del sistema di allerta. Va tutto bene.",
        "connecting": "Ti stiamo collegando. Attendi in linea.",
        "transfer_failed": "Spiacenti, non è stato possibile collegare la chiamata.",
    },
}
"""What each shipped prompt says, by language then prompt name."""

KEY_PROMPT_NAMES: tuple[str, ...] = ("answer_prompt", "listen_prompt")
"""The prompts that say which key confirms: one file a key, ``<name>_<key>.wav`` (``star`` and
``hash`` for * and #), for a random key's drawn digit (``dialer.core.keys``) and for a fixed key
other than the default (1 to answer, 9 to listen: ``answer_prompt.wav``/``listen_prompt.wav``
say those)."""

DEFAULT_KEYS: dict[str, str] = {"answer_prompt": DEFAULT_ANSWER_KEY,
                                "listen_prompt": DEFAULT_LISTEN_KEY}
"""The key each confirmation prompt of ``PROMPT_TEXTS`` says."""

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
"""The texts of the per-key prompts, ``{digit}`` standing for the key as ``KEY_WORDS`` says it
(as PROMPT_TEXTS)."""

CONNECT_PROMPT = "connect_offer"
"""The prompt offering the connect key (``--connect-key``): one file a key,
``connect_offer_<key>.wav``."""

DTMF_KEYS = "0123456789*#"
KEY_FILES: dict[str, str] = {**{d: d for d in "0123456789"}, "*": "star", "#": "hash"}
"""How a key is spelt in a prompt's file name."""

CONNECT_PROMPT_TEXTS: dict[str, str] = {
    "en": "To speak to a person now, press {key}.",
    "it": "Per parlare ora con una persona, premi {key}.",
}
"""The connect offer's text, ``{key}`` standing for the key as ``KEY_WORDS`` says it."""

KEY_WORDS: dict[str, dict[str, str]] = {
    "en": {"*": "star", "#": "hash"},
    "it": {"*": "asterisco", "#": "cancelletto"},
}
"""How a prompt says * and # (a digit is said as itself)."""


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
    """Every per-key prompt of ``language``: file stem (``answer_prompt_4``) -> its text. The
    default key of each prompt has none (the prompt itself says it)."""
    code = normalise_language(language)
    words = KEY_WORDS[code]
    return {f"{name}_{KEY_FILES[k]}": KEY_PROMPT_TEXTS[code][name].format(digit=words.get(k, k))
            for name in KEY_PROMPT_NAMES for k in DTMF_KEYS if k != DEFAULT_KEYS[name]}


def connect_prompt_texts(language: str) -> dict[str, str]:
    """Every connect offer of ``language``: file stem (``connect_offer_0``) -> its text."""
    code = normalise_language(language)
    words = KEY_WORDS[code]
    return {f"{CONNECT_PROMPT}_{KEY_FILES[k]}":
            CONNECT_PROMPT_TEXTS[code].format(key=words.get(k, k)) for k in DTMF_KEYS}


def key_prompt_path(language: str, name: str, digit: str) -> Path:
    """Path of the shipped prompt ``name`` that says "press ``digit``" (a key 0-9, * or #):
    answer_prompt or listen_prompt for a key that confirms (a random key's drawn digit, or a
    fixed key; the default key is the prompt itself), connect_offer for a connect key.
    Raises as ``prompt_path``."""
    code = normalise_language(language)
    if len(digit) != 1 or digit not in DTMF_KEYS or name not in (*KEY_PROMPT_NAMES,
                                                                 CONNECT_PROMPT):
        raise ValidationError(f"no prompt {name!r} for key {digit!r} (prompts "
                              f"{', '.join((*KEY_PROMPT_NAMES, CONNECT_PROMPT))}, keys "
                              f"{DTMF_KEYS})")
    if DEFAULT_KEYS.get(name) == digit:
        return prompt_path(code, name)
    stem = f"{name}_{KEY_FILES[digit]}"
    path = PROMPTS_DIR / code / f"{stem}.wav"
    if not path.is_file():
        raise AudioError(f"{path}: shipped prompt missing from the installation")
    return path
