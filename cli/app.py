"""The ``dialer`` command line (Typer + Rich).

Every error the user can act on is one line on stderr and exit code 1, never a traceback; every
listing and ``show`` takes ``--json`` for scripts.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from dialer.domain import CampaignSettings, Limits
from dialer.errors import DialerError, ValidationError
from dialer.recipients import (DEFAULT_EXTENSION_PATTERN, DEFAULT_REGION, NumberRules,
                               Recipient, parse_csv)
from dialer.storage.store import SqlStore, ensure_parent_dir

DEFAULT_DB = "sqlite:///dialer.db"

class _Group(TyperGroup):
    """Turns every DialerError raised by a command into one clear line and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except DialerError as exc:
            fail(str(exc))


app = typer.Typer(cls=_Group, help="SIP-native alert dialer: call a list of people, play a message, collect "
                       "DTMF confirmations, retry, keep the record.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
template_app = typer.Typer(help="Campaign templates.", no_args_is_help=True)
campaign_app = typer.Typer(help="Launch and follow campaigns.", no_args_is_help=True)
app.add_typer(template_app, name="template")
app.add_typer(campaign_app, name="campaign")

out = Console()
err = Console(stderr=True)

_state: dict[str, Any] = {"db": None}


def fail(message: str) -> NoReturn:
    """One clear line, exit 1."""
    # escape: messages quote user text and TOML tables ("[trunks.external]") that Rich
    # would otherwise take for markup tags and silently drop
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def actor() -> str:
    """The identity of the caller: the OS login running the command."""
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): fall back to the uid
        return f"uid{os.getuid()}"


def db_url() -> str:
    return str(_state["db"] or os.environ.get("DIALER_DB") or DEFAULT_DB)


def store(ready: bool = True) -> SqlStore:
    url = db_url()
    ensure_parent_dir(url)
    s = SqlStore(url)
    if ready:
        s.check_ready()
    return s


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def local(iso: str | None) -> str:
    """An ISO UTC timestamp shown in the operator's local zone."""
    if not iso:
        return ""
    return dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


@app.callback()
def main_options(
    db: Optional[str] = typer.Option(None, "--db", help="SQLAlchemy database URL "
                                     "(default: $DIALER_DB, else sqlite:///dialer.db)."),
    region: str = typer.Option(DEFAULT_REGION, "--region", envvar="DIALER_REGION",
                               help="Region of numbers written without +CC (ISO code)."),
    extension_pattern: str = typer.Option(DEFAULT_EXTENSION_PATTERN, "--extension-pattern",
                                          envvar="DIALER_EXTENSION_PATTERN",
                                          help="Regular expression of an internal extension."),
    max_audio_seconds: float = typer.Option(600.0, "--max-audio-seconds",
                                            envvar="DIALER_MAX_AUDIO_SECONDS",
                                            help="Longest message accepted on import."),
) -> None:
    """Alert dialer. Example: dialer init && dialer template add Fire --audio fire.wav --recipients staff.csv"""
    import phonenumbers

    if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise typer.BadParameter(f"unknown region {region!r}", param_hint="--region")
    try:
        re.compile(extension_pattern)
    except re.error as exc:
        raise typer.BadParameter(f"not a regular expression: {exc}",
                                 param_hint="--extension-pattern") from exc
    if max_audio_seconds <= 0:
        raise typer.BadParameter("must be positive", param_hint="--max-audio-seconds")
    _state["db"] = db
    _state["rules"] = NumberRules(region=region.upper(), extension_pattern=extension_pattern)
    _state["max_audio"] = max_audio_seconds


@app.command()
def init() -> None:
    """Create or upgrade the database schema. Example: dialer --db sqlite:///alerts.db init"""
    s = store(ready=False)
    s.migrate()
    out.print(f"database ready: {s.safe_url}")


# ----- templates -----


def import_audio_file(s: SqlStore, path: Path, max_seconds: float | None = None) -> tuple[str, float]:
    """Decode, normalise and store an audio file; returns (sha256, seconds)."""
    from media.audio import import_audio

    max_seconds = max_seconds or float(_state.get("max_audio") or 600.0)
    with tempfile.TemporaryDirectory() as tmp:
        info = import_audio(path, Path(tmp), rate=8000, max_seconds=max_seconds)
        data = Path(info.path).read_bytes()
    sha = s.add_media(data=data, sha256=info.sha256, rate=info.rate, seconds=info.seconds,
                      source=str(path), now=time.time())
    return sha, info.seconds


def read_recipients(path: Path, rules: NumberRules | None = None) -> list[Recipient]:
    rules = rules or _state.get("rules") or NumberRules()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        fail(f"recipients file {path} does not exist")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read recipients file {path}: {exc}")
    return parse_csv(text, source=str(path), rules=rules)


def _limit(v: Optional[int], name: str) -> Optional[int]:
    if v is not None and v < 0:
        raise ValidationError(f"{name} must be 0 or more")
    return v


@template_app.command("add")
def template_add(
    name: str = typer.Argument(..., help="Letters, digits, spaces, - and _; also the caller display name."),
    audio: Path = typer.Option(..., "--audio", help="The message: WAV, FLAC, OGG or MP3."),
    caller_number: Optional[str] = typer.Option(None, help="Calling number (From user part)."),
    priority: int = typer.Option(0, help="Higher runs first when slots are scarce."),
    attempts: int = typer.Option(5, help="Maximum unsuccessful attempts per recipient (1..99)."),
    ring_timeout: float = typer.Option(30.0, help="Seconds to ring before cancelling."),
    answer_confirm: bool = typer.Option(True, "--answer-confirm/--no-answer-confirm",
                                        help="Require 1 before the message."),
    listen_confirm: bool = typer.Option(True, "--listen-confirm/--no-listen-confirm",
                                        help="Require 9 after the message."),
    threshold: Optional[int] = typer.Option(None, help="Recipients to reach for Completed (default all)."),
    max_calls: Optional[int] = typer.Option(None, help="Concurrent calls of this campaign."),
    max_internal: Optional[int] = typer.Option(None, help="Concurrent internal calls."),
    max_external: Optional[int] = typer.Option(None, help="Concurrent external calls."),
    retry_delay: float = typer.Option(60.0, help="Minimum seconds between two calls to one recipient."),
    key_timeout: float = typer.Option(5.0, help="Seconds to wait for a key after a prompt."),
    max_repeats: int = typer.Option(3, help="Repeats of a prompt or the message without the key."),
    language: str = typer.Option("en", help="Language of the prompts: en or it."),
    recipients: Optional[Path] = typer.Option(None, "--recipients", help="CSV: number[,name,email,kind]."),
    json_out: bool = typer.Option(False, "--json", help="Print {\"id\": ...}."),
) -> None:
    """Create a template. Example: dialer template add Fire --audio fire.wav --recipients staff.csv"""

    from media.prompts import normalise_language

    if not re.fullmatch(r"[A-Za-z0-9 _-]{1,100}", name) or not name.strip():
        raise ValidationError(f"template name {name!r}: use letters, digits, spaces, - and _")
    if not 1 <= attempts <= 99:
        raise ValidationError("attempts must be between 1 and 99")
    if ring_timeout <= 0 or retry_delay < 0 or key_timeout <= 0 or max_repeats < 0:
        raise ValidationError("ring-timeout and key-timeout must be positive, retry-delay and "
                              "max-repeats not negative")
    recs = read_recipients(recipients) if recipients else []
    if threshold is not None and (threshold < 1 or (recs and threshold > len(recs))):
        raise ValidationError(f"threshold {threshold} must be between 1 and the "
                              f"{len(recs)} recipients")
    settings = CampaignSettings(
        caller_number=caller_number, display_name=name, priority=priority, attempts=attempts,
        ring_timeout=ring_timeout, retry_delay=retry_delay, answer_confirm=answer_confirm,
        listen_confirm=listen_confirm, threshold=threshold, key_timeout=key_timeout,
        max_repeats=max_repeats, language=normalise_language(language),
        limits=Limits(total=_limit(max_calls, "max-calls"),
                      internal=_limit(max_internal, "max-internal"),
                      external=_limit(max_external, "max-external")))
    s = store()
    sha, seconds = import_audio_file(s, audio)
    tid = s.add_template(name=name, settings=settings, audio_sha=sha, audio_seconds=seconds,
                         recipients=recs, now=time.time(), actor=actor())
    if json_out:
        emit_json({"id": tid})
    else:
        out.print(f"template {name!r} added ({len(recs)} recipients, {seconds:.1f} s message)")


@template_app.command("list")
def template_list(json_out: bool = typer.Option(False, "--json")) -> None:
    """List templates. Example: dialer template list --json"""
    rows = store().list_templates()
    if json_out:
        emit_json(rows)
        return
    t = Table("name", "enabled", "priority", "attempts", "recipients", "message s")
    for r in rows:
        t.add_row(r["name"], "yes" if r["enabled"] else "no", str(r["priority"]),
                  str(r["attempts"]), str(r["recipients"]), str(r["audio_seconds"]))
    out.print(t)


@template_app.command("show")
def template_show(name: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """Show a template and its recipients. Example: dialer template show Fire"""
    import dataclasses

    tpl = store().get_template(name)
    data = {"id": tpl.id, "name": tpl.name, "enabled": tpl.enabled,
            "settings": dataclasses.asdict(tpl.settings), "audio_sha256": tpl.audio_sha,
            "audio_seconds": tpl.audio_seconds,
            "recipients": [{"position": i + 1, "number": r.number, "name": r.name,
                            "email": r.email, "kind": r.kind.value}
                           for i, r in enumerate(tpl.recipients)]}
    if json_out:
        emit_json(data)
        return
    t = Table("setting", "value", title=f"template {tpl.name}")
    for k, v in data["settings"].items():
        t.add_row(k, str(v))
    t.add_row("message seconds", f"{tpl.audio_seconds:.2f}")
    out.print(t)
    rt = Table("#", "number", "name", "kind", "email", title="recipients")
    for r in data["recipients"]:
        rt.add_row(str(r["position"]), r["number"], r["name"] or "", r["kind"], r["email"] or "")
    out.print(rt)


# ----- campaigns -----


def parse_start(in_minutes: Optional[float], at: Optional[str], now: float) -> float:
    if in_minutes is not None and at is not None:
        raise ValidationError("give --in or --at, not both")
    if in_minutes is not None:
        if in_minutes < 0:
            raise ValidationError("--in must be 0 or more minutes")
        return now + in_minutes * 60
    if at is not None:
        try:
            when = dt.datetime.fromisoformat(at)
        except ValueError as exc:
            raise ValidationError(f"--at {at!r} is not an ISO date-time "
                                  "(e.g. 2026-12-01T08:30 or 2026-12-01T08:30+01:00)") from exc
        if when.tzinfo is None:
            when = when.astimezone()  # the operator's local zone
        return when.timestamp()
    return now


@campaign_app.command("start")
def campaign_start(
    template: str = typer.Argument(..., help="Template to launch."),
    name: Optional[str] = typer.Option(None, help="Campaign name (default: the template's)."),
    audio: Optional[Path] = typer.Option(None, help="Another message for this launch."),
    recipients: Optional[Path] = typer.Option(None, help="Another recipient list (CSV)."),
    in_minutes: Optional[float] = typer.Option(None, "--in", help="Start after N minutes."),
    at: Optional[str] = typer.Option(None, "--at", help="Start at an ISO date-time (local zone if none)."),
    json_out: bool = typer.Option(False, "--json", help="Print {\"id\": ...}."),
) -> None:
    """Launch a campaign from a template. Example: dialer campaign start Fire --in 5"""
    now = time.time()
    start_at = parse_start(in_minutes, at, now)
    s = store()
    recs = read_recipients(recipients) if recipients else None
    s.get_template(template)  # an unknown template fails before any audio is stored
    sha, seconds = import_audio_file(s, audio) if audio else (None, None)
    cid = s.start_campaign(template=template, name=name, now=now, start_at=start_at,
                           actor=actor(), audio_sha=sha, audio_seconds=seconds, recipients=recs)
    if json_out:
        emit_json({"id": cid})
    else:
        out.print(cid)


@campaign_app.command("list")
def campaign_list(json_out: bool = typer.Option(False, "--json")) -> None:
    """List campaigns. Example: dialer campaign list"""
    rows = store().list_campaigns()
    if json_out:
        emit_json(rows)
        return
    t = Table("id", "name", "state", "priority", "start", "recipients", "contacted", "failed",
              "in call")
    for r in rows:
        t.add_row(str(r["id"]), r["name"], r["state"], str(r["priority"]), local(r["start_at"]),
                  str(r["recipients"]), str(r["contacted"]), str(r["failed"]), str(r["active"]))
    out.print(t)


def short_time(iso: str | None) -> str:
    """Local time of day for today's timestamps, the date too for older ones."""
    if not iso:
        return ""
    when = dt.datetime.fromisoformat(iso).astimezone()
    if when.date() == dt.datetime.now().astimezone().date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%Y-%m-%d %H:%M")


def recipients_table(detail: dict[str, Any], width: int = 80) -> Table:
    """The per-recipient table of a campaign; last call and answer times on wide terminals."""
    wide = width >= 110
    t = Table(title=f"campaign {detail['id']} {detail['name']} ({detail['state']})",
              box=box.SIMPLE_HEAD, pad_edge=False)
    for name, nowrap in (("#", True), ("number", True), ("name", False), ("kind", True),
                         ("state", True), ("att", True), ("last call", True), ("outcome", False),
                         ("answered", True), ("confirmed", True)):
        if name in ("last call", "answered") and not wide:
            continue
        t.add_column(name, no_wrap=nowrap)
    colours = {"contacted": "green", "failed": "red", "active": "yellow", "stopped": "magenta"}
    for r in detail["recipients"]:
        outcome = (r["last_outcome"] or "").replace("_", " ")
        if r["last_status"] and r["last_status"] != 200:
            outcome += f" {r['last_status']}"
        st = r["state"]
        row = [str(r["position"]), r["number"], r["name"] or "", r["kind"][:3],
               f"[{colours.get(st, 'white')}]{st}[/]", str(r["attempts"])]
        if wide:
            row.append(short_time(r["last_call_at"]))
        row.append(outcome)
        if wide:
            row.append(short_time(r["answered_at"]))
        row.append(short_time(r["confirmed_at"]))
        t.add_row(*row)
    return t


@campaign_app.command("show")
def campaign_show(campaign_id: int, json_out: bool = typer.Option(False, "--json")) -> None:
    """Show a campaign with its recipients. Example: dialer campaign show 3 --json"""
    detail = store().campaign_detail(campaign_id)
    if json_out:
        emit_json(detail)
        return
    out.print(recipients_table(detail, out.width))


@campaign_app.command("suspend")
def campaign_suspend(campaign_id: int) -> None:
    """Suspend: no new calls, calls in progress continue. Example: dialer campaign suspend 3"""
    out.print(store().set_campaign_state(campaign_id, "suspend", actor=actor(), now=time.time()))


@campaign_app.command("resume")
def campaign_resume(campaign_id: int) -> None:
    """Resume a suspended campaign. Example: dialer campaign resume 3"""
    out.print(store().set_campaign_state(campaign_id, "resume", actor=actor(), now=time.time()))


@campaign_app.command("stop")
def campaign_stop(campaign_id: int) -> None:
    """Terminate a campaign (final). Example: dialer campaign stop 3"""
    out.print(store().set_campaign_state(campaign_id, "stop", actor=actor(), now=time.time()))


# ----- daemon and demo -----


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", "-c", help="TOML configuration (see dialer.toml)."),
    log_format: str = typer.Option("text", help="text or json."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Run the daemon: SIP workers, registrations, scheduler, metrics. Example: dialer serve -c dialer.toml"""
    from dialer import config as config_mod
    from dialer.daemon import Daemon

    cfg = config_mod.load(config)
    if _state["db"]:
        import dataclasses

        cfg = dataclasses.replace(cfg, database_url=_state["db"])
    setup_logging(verbose, log_format)
    ensure_parent_dir(cfg.database_url)
    s = SqlStore(cfg.database_url)
    s.check_ready()
    Daemon(cfg, s).run()


@app.command()
def demo(
    recipients: int = typer.Option(20, help="Size of the demo campaign."),
    keep: bool = typer.Option(False, help="Keep the throw-away directory and print its path."),
) -> None:
    """Run a whole campaign against simulated phones on loopback. Example: dialer demo"""
    from cli.demo import run_demo

    run_demo(out, recipients=recipients, keep=keep)


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, with the structured fields given through ``extra=``."""

    FIELDS = ("campaign", "recipient", "attempt", "call_id")

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"at": self.formatTime(record), "level": record.levelname,
                                "logger": record.name, "message": record.getMessage()}
        for f in self.FIELDS:
            if hasattr(record, f):
                data[f] = getattr(record, f)
        return json.dumps(data)


def setup_logging(verbose: bool = False, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dialer")


if __name__ == "__main__":
    main()
