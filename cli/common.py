"""What every ``dialer`` command module shares: consoles, the store, the caller's identity and
permissions, one-line errors, JSON output, time formatting and input parsing.

Only ``cli/`` imports Typer; the commands live in ``cli/templates.py``, ``cli/campaigns.py``,
``cli/settings.py``, ``cli/history.py`` and ``cli/operators.py``; ``cli/app.py`` is the root.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from dialer.bootstrap import Store, open_store
from dialer.core.errors import ValidationError
from dialer.core.permissions import PermissionDenied, Role, allows
from dialer.core.recipients import NumberRules, Recipient
from dialer.csvimport import parse_csv

DEFAULT_DB = "sqlite:///dialer.db"

out = Console()
err = Console(stderr=True)

_state: dict[str, Any] = {"db": None}


def say(message: str) -> None:
    """The ``error:`` line on stderr, never wrapped (a script greps it)."""
    # escape: messages quote user text and TOML tables ("[trunks.external]") that Rich
    # would otherwise take for markup tags and silently drop
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str) -> NoReturn:
    """One clear line, exit 1."""
    say(message)
    raise typer.Exit(1)


def confirm(question: str, yes: bool, refused: str) -> None:
    """Ask before an irreversible change, unless ``--yes``; no answer (no input) is a no."""
    if yes:
        return
    try:
        agreed = typer.confirm(question, default=False)
    except typer.Abort:
        fail(f"{refused}: no answer to confirm it (add --yes)")
    if not agreed:
        fail(refused)


def login() -> str:
    """The name of the process's real user (its uid in the password database).

    Never LOGNAME, USER or any other environment variable: those are the caller's to set, and
    ``LOGNAME=root dialer ...`` must not make anybody root. A uid with no entry (containers) is
    ``uid<N>``, which no operator is named unless an admin added it."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def actor() -> str:
    """The identity of the caller, as the permissions and the audit log know it."""
    return login()


def db_url() -> str:
    return str(_state["db"] or os.environ.get("DIALER_DB") or DEFAULT_DB)


def store(ready: bool = True, *, create: bool | None = None) -> Store:
    """The store of the database given by --db / $DIALER_DB, which must exist already (only
    ``dialer init`` creates one: ``ready=False``); checked to be initialised. ``create=False``
    with ``ready=False``: any schema, but never a new file (``dialer db``)."""
    s = open_store(db_url(), create=not ready if create is None else create, ready=ready)
    _opened.append(s)  # disposed when the command ends (close_stores)
    return s


_opened: list[Store] = []


def close_stores() -> None:
    """Close the database connections the command opened (the app calls it after each)."""
    while _opened:
        _opened.pop().dispose()


def authorized(needed: Role, command: str) -> Store:
    """The store, once the caller is known to hold a role allowing ``command``.

    Checked before anything is read or changed, so a refused command leaves no trace (and no
    audit entry). When the settings require it (``settings set --require-db-role``), the
    PostgreSQL role of the connection must be the caller's name too."""
    s = store()
    who = actor()
    s.check_db_role(who)
    roles = s.roles_of(who)
    if not allows(roles, needed):
        raise PermissionDenied(who, command, needed, roles)
    return s


def rules() -> NumberRules:
    """How numbers are read (--region, --extension-pattern)."""
    value = _state.get("rules")
    return value if isinstance(value, NumberRules) else NumberRules()


JSON_RESULT = typer.Option(False, "--json", help="Print the result as JSON.")
"""The ``--json`` of a command that changes something: its result for a script."""


def report(json_out: bool, data: Any, text: str) -> None:
    """The result of a command: ``data`` as JSON (``--json``), else ``text`` for a person."""
    if json_out:
        emit_json(data)
    else:
        out.print(text, highlight=False)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def local(iso: str | None) -> str:
    """An ISO UTC timestamp shown in the operator's local zone (with the zone)."""
    if not iso:
        return ""
    return dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def short_time(iso: str | None) -> str:
    """Local time of day for today's timestamps, the date too for older ones."""
    if not iso:
        return ""
    when = dt.datetime.fromisoformat(iso).astimezone()
    if when.date() == dt.datetime.now().astimezone().date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%Y-%m-%d %H:%M")


def parse_when(text: str, option: str) -> float:
    """An ISO date-time (the operator's local zone when it names none) as a timestamp."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(f"{option} {text!r} is not an ISO date-time "
                              "(e.g. 2026-12-01T08:30 or 2026-12-01T08:30+01:00)") from exc
    if when.tzinfo is None:
        when = when.astimezone()  # the operator's local zone
    return when.timestamp()


def parse_start(in_minutes: Optional[float], at: Optional[str], now: float) -> float:
    """Start now, after N minutes, or at an ISO date-time."""
    if in_minutes is not None and at is not None:
        raise ValidationError("give --in or --at, not both")
    if in_minutes is not None:
        if in_minutes < 0:
            raise ValidationError("--in must be 0 or more minutes")
        return now + in_minutes * 60
    if at is not None:
        when = parse_when(at, "--at")
        if when < now - PAST_GRACE:
            shown = dt.datetime.fromtimestamp(when).astimezone().strftime("%Y-%m-%d %H:%M %Z")
            raise ValidationError(f"--at {at}: {shown} is in the past; leave --at out to "
                                  "start now")
        return when
    return now


PAST_GRACE = 60.0  # s: an --at of the minute just gone still means now


def parse_limit(text: Optional[str], option: str) -> tuple[bool, Optional[int]]:
    """(given, value) of a limit option: a number 0 or more, or ``none`` for unlimited."""
    if text is None:
        return False, None
    if text.strip().lower() in ("none", "unlimited", ""):
        return True, None
    try:
        value = int(text)
    except ValueError as exc:
        raise ValidationError(f"{option} {text!r}: give a number or none") from exc
    if value < 0:
        raise ValidationError(f"{option[2:]} must be 0 or more, or none")
    return True, value


def import_audio_file(s: Store, path: Path, max_seconds: float | None = None) -> tuple[str, float]:
    """Decode, normalise and store an audio file; returns (sha256, seconds)."""
    from media.audio import import_audio

    max_seconds = max_seconds or float(_state.get("max_audio") or 600.0)
    with tempfile.TemporaryDirectory() as tmp:
        info = import_audio(path, Path(tmp), rate=8000, max_seconds=max_seconds)
        data = Path(info.path).read_bytes()
    sha = s.add_media(data=data, sha256=info.sha256, rate=info.rate, seconds=info.seconds,
                      source=str(path), now=time.time())
    return sha, info.seconds


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        fail(f"{what} {path} does not exist")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {what} {path}: {exc}")


def read_recipients(path: Path, rules_: NumberRules | None = None) -> list[Recipient]:
    """A whole recipients CSV, all or nothing (CsvError names every bad line)."""
    return parse_csv(read_text(path, "recipients file"), source=str(path),
                     rules=rules_ or rules())


BIG_IMPORT_LINES = 5000  # files longer than this get a progress bar


def read_recipient_lines(path: Path, rules_: NumberRules | None = None
                         ) -> list[tuple[int, Recipient]]:
    """A whole recipients CSV with the line of each recipient, all or nothing; a Rich progress
    bar on stderr while reading a long file (more than ``BIG_IMPORT_LINES`` lines)."""
    from dialer.csvimport import parse_csv_lines

    text = read_text(path, "recipients file")
    total = text.count("\n")
    if total <= BIG_IMPORT_LINES:
        return parse_csv_lines(text, source=str(path), rules=rules_ or rules())
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task(f"checking {path.name}", total=total)
        lines = parse_csv_lines(text, source=str(path), rules=rules_ or rules(),
                                progress=lambda line: bar.update(task, completed=line))
        bar.update(task, completed=total)
    err.print(f"{len(lines)} recipients read from {path}", highlight=False)
    return lines


def message_audio(s: Store, audio: Optional[Path], tts: Optional[str], voice: str,
                  *, required: bool) -> tuple[Optional[str], Optional[float], Optional[str]]:
    """The message of ``--audio FILE`` or ``--tts TEXT [--voice]``: (sha256, seconds, text).

    The text is None for a recorded message; all three are None when neither is given (only
    allowed when not ``required``). Speech is rendered with espeak-ng (``media.tts``).
    """
    if audio is not None and tts is not None:
        raise ValidationError("give --audio or --tts, not both")
    if audio is None and tts is None:
        if required:
            raise ValidationError("give the message: --audio FILE or --tts \"text\"")
        return None, None, None
    if audio is not None:
        sha, seconds = import_audio_file(s, audio)
        return sha, seconds, None
    assert tts is not None
    from media.tts import render_tts

    with tempfile.TemporaryDirectory(prefix="dialer-tts-") as tmp:
        info = render_tts(tts, voice, Path(tmp))
        data = Path(info.path).read_bytes()
    sha = s.add_media(data=data, sha256=info.sha256, rate=info.rate, seconds=info.seconds,
                      source=f"tts:{voice}", now=time.time())
    return sha, info.seconds, " ".join(tts.split())


def email_policy(value: Optional[str]) -> Optional[str]:
    """``--email off|on-launch|unreached`` as the stored setting (None: not given)."""
    if value is None:
        return None
    from dialer.core.domain import EmailPolicy

    stored = value.strip().lower().replace("-", "_")
    if stored not in {p.value for p in EmailPolicy}:
        raise ValidationError(f"--email {value!r}: off, on-launch or unreached")
    return stored
