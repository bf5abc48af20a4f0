"""Values and field parsers shared by the tables of ``dialer.toml``: the ``Secret`` that holds a
password, and the integer and password fields.

``dialer.config`` (the trunks, ``[sip]``...) and ``dialer.mailer`` (``[smtp]``) both parse with
them; they live here, below both, so that neither has to import the other to read its table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dialer.core.errors import ConfigError


class Secret:
    """A password that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def parse_int(d: dict[str, Any], key: str, default: int | None, where: str,
              lo: int = 0, hi: int | None = None) -> int | None:
    """``d[key]`` (or ``default``) as an integer in ``lo..hi``; a one-line ConfigError otherwise.

    ``where`` names the table in the message (``"[sip]"``).
    """
    v = d.get(key, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{where}.{key} must be an integer {bound}, not {v!r}")
    return v


def parse_password(t: dict[str, Any], where: str, base: Path, *,
                   reveal: bool = True, key: str = "password") -> Secret | None:
    """The password of table ``t``: from ``password_env`` or ``password_file`` (relative to
    ``base``), never from the file itself; None when neither is given. ``reveal=False``: not
    read (``dialer config check`` runs without the passwords), an empty Secret instead.
    ``key``: another secret read the same way (``token``: ``token_env`` / ``token_file``)."""
    env_key, file_key = f"{key}_env", f"{key}_file"
    if key in t:
        raise ConfigError(f"{where}: a {key} is never written in the config; "
                          f"use {env_key} or {file_key}")
    if not reveal:
        return Secret("") if t.get(env_key) or t.get(file_key) else None
    if env := t.get(env_key):
        value = os.environ.get(str(env))
        if value is None:
            raise ConfigError(f"{where}.{env_key}: environment variable {env} is not set")
        return Secret(value)
    if pfile := t.get(file_key):
        try:
            pf = Path(str(pfile))
            return Secret((pf if pf.is_absolute() else base / pf).read_text().strip())
        except OSError as exc:
            raise ConfigError(
                f"{where}.{file_key}: cannot read {pfile}: {exc.strerror}") from exc
    return None
