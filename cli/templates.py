"""``dialer template ...``: campaign templates and their recipient lists (campaigns role)."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from cli.choices import Email, Kind, Language, complete_template
from cli.common import (
    JSON_RESULT,
    actor,
    authorized,
    confirm,
    email_policy,
    emit_json,
    fail,
    message_audio,
    out,
    parse_limit,
    read_recipient_lines,
    report,
    rules,
)
from cli.tables import Col, fit, shown
from dialer import zones
from dialer.bootstrap import TemplateView
from dialer.core import validation
from dialer.core import window as windows
from dialer.core.csvcells import cell
from dialer.core.domain import CampaignSettings, Limits
from dialer.core.errors import ValidationError
from dialer.core.permissions import Role
from dialer.core.recipients import make_recipient

template_app = typer.Typer(help="Campaign templates (campaign models) and their recipients.",
                           no_args_is_help=True)
recipients_app = typer.Typer(help="The recipient list of a template, in dialing order.",
                             no_args_is_help=True)
template_app.add_typer(recipients_app, name="recipients")

C, V = Role.CAMPAIGNS, Role.VIEWER


WINDOW_KEYS = ("window", "window_days", "timezone")
WINDOW_HELP = ("Call only between these local times, HH:MM-HH:MM (22:00-06:00 crosses "
               "midnight); outside it nobody is called and no attempt is spent. Default: none "
               "(urgent: any hour).")
DAYS_HELP = "Days of the window: mon-fri, sat,sun, fri-mon... (default: every day)."
ZONE_HELP = ("Time zone of the window, e.g. Europe/Rome (default UTC); a recipient's CSV "
             "column timezone overrides it.")
URGENT_HELP = "Urgent: no calling window, any hour (the default; clears a window on edit)."
CONNECT_KEY_HELP = ("Key that connects the call to --connect-to (after the message or at a "
                    "prompt): 0-9, * or #. Default: none.")
CONNECT_TO_HELP = ("SIP URI the connect key transfers the call to (blind REFER), e.g. "
                   "sip:bridge@pbx.example.com.")
CONNECT_CONFIRMS_HELP = ("Whether a transfer counts as contacted without the confirmations "
                         "(default: only if they were given first).")


def connect_changes(key: Optional[str], to: Optional[str],
                    confirms: Optional[bool]) -> dict[str, Any]:
    """The connect fields of ``CampaignSettings`` that ``--connect-key``, ``--connect-to`` and
    ``--connect-confirms`` set; ``--connect-key none`` clears all three."""
    out: dict[str, Any] = {}
    given, value = _optional_text(key)
    if given:
        out["connect_key"] = value
        if value is None:
            if to is not None and _optional_text(to)[1] is not None:
                fail("--connect-key none has no --connect-to: leave it out")
            out.update(connect_to=None, connect_confirms=False)
    given, value = _optional_text(to)
    if given and "connect_to" not in out:
        out["connect_to"] = value
    if confirms is not None and out.get("connect_key", "") is not None:
        out["connect_confirms"] = confirms
    return out


def window_changes(window: Optional[str], days: Optional[str], zone: Optional[str],
                   urgent: bool) -> dict[str, Optional[str]]:
    """The window fields of ``CampaignSettings`` that ``--window``, ``--window-days``,
    ``--timezone`` and ``--urgent`` set (``none`` clears one; a window ``none`` or ``--urgent``
    clears all three). Checked with ``dialer.core.window`` and the zone database."""
    given = {k: v for k, v in zip(WINDOW_KEYS, (window, days, zone), strict=True)
             if v is not None}
    if urgent and given:
        fail("--urgent has no calling window: leave out --window, --window-days and "
             "--timezone (or --urgent)")
    if urgent or _optional_text(window) == (True, None):
        return dict.fromkeys(WINDOW_KEYS)
    out: dict[str, Optional[str]] = {}
    for key, raw in given.items():
        out[key] = _optional_text(raw)[1]
    if out.get("timezone"):
        out["timezone"] = zones.check(str(out["timezone"]))
    return out


def _optional_text(value: Optional[str]) -> tuple[bool, Optional[str]]:
    """(given, value): ``none`` clears an optional text setting."""
    if value is None:
        return False, None
    return True, None if value.strip().lower() in ("", "none") else value.strip()


@template_app.command("add")
def template_add(
    name: str = typer.Argument(..., help="Letters, digits, spaces, - and _; also the caller "
                                         "display name."),
    audio: Optional[Path] = typer.Option(None, "--audio",
                                         help="The message: WAV, FLAC, OGG or MP3."),
    tts: Optional[str] = typer.Option(None, "--tts", help="The message as text, spoken by "
                                                          "espeak-ng (instead of --audio)."),
    voice: Optional[Language] = typer.Option(None, "--voice",
                                             help="Voice of --tts (default: --language)."),
    email: Email = typer.Option(Email.off, "--email", help="Mail the message to recipients with "
                                                           "an address."),
    caller_number: Optional[str] = typer.Option(None, help="Calling number (From user part)."),
    external_route: Optional[str] = typer.Option(None, help="External route / routing class."),
    priority: int = typer.Option(0, help="Higher runs first when slots are scarce."),
    attempts: int = typer.Option(5, help="Maximum unsuccessful attempts per recipient (1..99)."),
    ring_timeout: float = typer.Option(30.0, help="Seconds to ring before cancelling."),
    answer_confirm: bool = typer.Option(True, "--answer-confirm/--no-answer-confirm",
                                        help="Require the answer key (1) before the message."),
    listen_confirm: bool = typer.Option(True, "--listen-confirm/--no-listen-confirm",
                                        help="Require the listen key (9) after the message."),
    answer_key: str = typer.Option("1", help="Key that confirms the answer: 0-9, * or #, or "
                                             "random (a digit 2-8 drawn per call)."),
    listen_key: str = typer.Option("9", help="Key that confirms the listening, or random."),
    threshold: Optional[str] = typer.Option(None, help="Recipients to reach for Completed (none: "
                                                       "all, the default)."),
    max_calls: Optional[str] = typer.Option(None, help="Concurrent calls of this campaign (none: "
                                                       "unlimited)."),
    max_internal: Optional[str] = typer.Option(None, help="Concurrent internal calls (none: "
                                                          "unlimited)."),
    max_external: Optional[str] = typer.Option(None, help="Concurrent external calls (none: "
                                                          "unlimited)."),
    retry_delay: float = typer.Option(60.0, help="Minimum seconds between two calls to one "
                                                 "recipient."),
    key_timeout: float = typer.Option(5.0, help="Seconds to wait for a key after a prompt."),
    max_repeats: int = typer.Option(3, help="Repeats of a prompt or the message without the key."),
    language: Language = typer.Option(Language.en, help="Language of the prompts."),
    enabled: bool = typer.Option(True, "--enable/--disable",
                                 help="Whether it may launch campaigns."),
    enabled_old: Optional[bool] = typer.Option(None, "--enabled/--disabled", hidden=True),
    keep_calling: bool = typer.Option(
        True, "--keep-calling/--stop-at-threshold",
        help="After the threshold is reached: keep calling everyone (default, as the reference) "
             "or place no new call and complete."),
    window: Optional[str] = typer.Option(None, "--window", help=WINDOW_HELP),
    window_days: Optional[str] = typer.Option(None, "--window-days", help=DAYS_HELP),
    timezone: Optional[str] = typer.Option(None, "--timezone", help=ZONE_HELP),
    urgent: bool = typer.Option(False, "--urgent", help=URGENT_HELP),
    connect_key: Optional[str] = typer.Option(None, "--connect-key", help=CONNECT_KEY_HELP),
    connect_to: Optional[str] = typer.Option(None, "--connect-to", help=CONNECT_TO_HELP),
    connect_confirms: bool = typer.Option(False, "--connect-confirms/--connect-needs-confirmation",
                                          help=CONNECT_CONFIRMS_HELP),
    recipients: Optional[Path] = typer.Option(None, "--recipients",
                                              help="CSV: number[,name,email,kind,timezone]."),
    json_out: bool = typer.Option(False, "--json", help="Print {\"id\": ...}."),
) -> None:
    """Create a template; the message is a recording (--audio) or a text to speak (--tts).

    Example: dialer template add Fire --audio fire.wav --recipients staff.csv --attempts 3

    Not urgent: --window 08:00-20:00 --window-days mon-fri --timezone Europe/Rome

    A person on the line: --connect-key 0 --connect-to sip:bridge@pbx.example.com
    """
    name = validation.template_name(name)
    settings = CampaignSettings(
        caller_number=caller_number, display_name=name, priority=priority, attempts=attempts,
        ring_timeout=ring_timeout, retry_delay=retry_delay, answer_confirm=answer_confirm,
        listen_confirm=listen_confirm, answer_key=answer_key, listen_key=listen_key,
        threshold=parse_limit(threshold, "--threshold")[1], key_timeout=key_timeout,
        max_repeats=max_repeats,
        language=language.value, external_route=external_route,
        email=email_policy(email.value) or "off", keep_calling_after_threshold=keep_calling,
        limits=Limits(total=parse_limit(max_calls, "--max-calls")[1],
                      internal=parse_limit(max_internal, "--max-internal")[1],
                      external=parse_limit(max_external, "--max-external")[1]))
    wc = window_changes(window, window_days, timezone, urgent)  # on add: set or not at all
    settings = dataclasses.replace(settings, window=wc.get("window"),
                                   window_days=wc.get("window_days"),
                                   timezone=wc.get("timezone"),
                                   **connect_changes(connect_key, connect_to, None))
    settings = dataclasses.replace(settings, connect_confirms=connect_confirms)
    validation.settings(settings)
    s = authorized(C, "template add")
    if audio is None and tts is None:
        fail("give the message: --audio FILE or --tts \"text\"")
    recs = [r for _, r in read_recipient_lines(recipients)] if recipients else []
    validation.settings(settings, len(recs))
    sha, seconds, text = message_audio(s, audio, tts, (voice or language).value, required=True)
    assert sha is not None and seconds is not None
    settings = dataclasses.replace(settings, tts_text=text)
    tid = s.add_template(name=name, settings=settings, audio_sha=sha, audio_seconds=seconds,
                         recipients=recs, now=time.time(), actor=actor(),
                         enabled=enabled if enabled_old is None else enabled_old)
    if json_out:
        emit_json({"id": tid})
    else:
        out.print(f"template {name!r} added ({len(recs)} recipients, {seconds:.1f} s message)")


@template_app.command("list")
def template_list(json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """List templates. Example: dialer template list --json"""
    rows = authorized(V, "template list").list_templates()
    if json_out:
        emit_json(rows)
        return
    cols = (Col("name"), Col("enabled"), Col("priority", 3, number=True),
            Col("attempts", 2, number=True), Col("recipients", number=True),
            Col("message s", 2, number=True))
    out.print(fit(cols, [[r["name"], shown(bool(r["enabled"])), str(r["priority"]),
                          str(r["attempts"]), str(r["recipients"]), shown(r["audio_seconds"])]
                         for r in rows], width=out.width))


def template_data(tpl: TemplateView) -> dict[str, Any]:
    return {"id": tpl.id, "name": tpl.name, "enabled": tpl.enabled,
            "settings": dataclasses.asdict(tpl.settings), "audio_sha256": tpl.audio_sha,
            "audio_seconds": tpl.audio_seconds,
            "calling_window": windows.describe(tpl.settings.window, tpl.settings.window_days,
                                               tpl.settings.timezone),
            "recipients": [{"position": i + 1, "number": r.number, "name": r.name,
                            "email": r.email, "kind": r.kind.value, "timezone": r.timezone}
                           for i, r in enumerate(tpl.recipients)]}


def _recipient_rows(title: str, recipients: list[dict[str, Any]]) -> Table:
    zoned = any(r.get("timezone") for r in recipients)
    rt = Table("#", "number", "name", "kind", "email", *(["timezone"] if zoned else []),
               title=title)
    for r in recipients:
        rt.add_row(str(r["position"]), r["number"], r["name"] or "", r["kind"], r["email"] or "",
                   *([r.get("timezone") or ""] if zoned else []))
    return rt


@template_app.command("show")
def template_show(name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template name."),
                  json_out: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """Show a template, its settings and its recipients. Example: dialer template show Fire"""
    data = template_data(authorized(V, "template show").get_template(name))
    if json_out:
        emit_json(data)
        return
    t = Table("setting", "value", title=f"template {data['name']}")
    t.add_row("enabled", shown(bool(data["enabled"])))
    for k, v in data["settings"].items():
        if k not in WINDOW_KEYS:
            t.add_row(k.replace("_", " "), shown(v, k))
    t.add_row("calling window", data["calling_window"])
    t.add_row("message seconds", f"{data['audio_seconds']:.2f}")
    out.print(t)
    out.print(_recipient_rows("recipients", data["recipients"]))


@template_app.command("edit")
def template_edit(
    name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template to change."),
    new_name: Optional[str] = typer.Option(None, "--name", help="Rename (also the display name)."),
    enabled: Optional[bool] = typer.Option(None, "--enable/--disable", help="Enable or disable."),
    caller_number: Optional[str] = typer.Option(None, help="Calling number (none: the trunk's)."),
    external_route: Optional[str] = typer.Option(None, help="External route (none: default)."),
    priority: Optional[int] = typer.Option(None, help="Priority (higher first)."),
    audio: Optional[Path] = typer.Option(None, help="A new message file."),
    tts: Optional[str] = typer.Option(None, "--tts", help="A new message as text, spoken by "
                                                          "espeak-ng."),
    voice: Optional[Language] = typer.Option(None, "--voice", help="Voice of --tts (default: "
                                                                   "the template's language)."),
    email: Optional[Email] = typer.Option(None, "--email", help="Mail the message to recipients "
                                                                "with an address."),
    threshold: Optional[str] = typer.Option(None, help="Recipients to reach (none: all)."),
    attempts: Optional[int] = typer.Option(None, help="Maximum unsuccessful attempts (1..99)."),
    ring_timeout: Optional[float] = typer.Option(None, help="Seconds to ring."),
    answer_confirm: Optional[bool] = typer.Option(None, "--answer-confirm/--no-answer-confirm",
                                                  help="Require the answer key."),
    listen_confirm: Optional[bool] = typer.Option(None, "--listen-confirm/--no-listen-confirm",
                                                  help="Require the listen key."),
    answer_key: Optional[str] = typer.Option(None, help="Key that confirms the answer (or "
                                                        "random: drawn per call)."),
    listen_key: Optional[str] = typer.Option(None, help="Key that confirms the listening (or "
                                                        "random)."),
    max_calls: Optional[str] = typer.Option(None, help="Concurrent calls (none: unlimited)."),
    max_internal: Optional[str] = typer.Option(None, help="Concurrent internal calls (none: "
                                                          "unlimited)."),
    max_external: Optional[str] = typer.Option(None, help="Concurrent external calls (none: "
                                                          "unlimited)."),
    retry_delay: Optional[float] = typer.Option(None, help="Seconds between two calls to one "
                                                           "recipient."),
    key_timeout: Optional[float] = typer.Option(None, help="Seconds to wait for a key."),
    max_repeats: Optional[int] = typer.Option(None, help="Repeats without the key."),
    language: Optional[Language] = typer.Option(None, help="Prompt language."),
    keep_calling: Optional[bool] = typer.Option(
        None, "--keep-calling/--stop-at-threshold",
        help="Keep calling after the threshold is reached, or stop there."),
    window: Optional[str] = typer.Option(None, "--window",
                                         help="Calling window HH:MM-HH:MM (none: urgent)."),
    window_days: Optional[str] = typer.Option(None, "--window-days", help=DAYS_HELP),
    timezone: Optional[str] = typer.Option(None, "--timezone", help=ZONE_HELP),
    urgent: bool = typer.Option(False, "--urgent", help=URGENT_HELP),
    connect_key: Optional[str] = typer.Option(None, "--connect-key",
                                              help="Connect key 0-9, * or # (none: off)."),
    connect_to: Optional[str] = typer.Option(None, "--connect-to", help=CONNECT_TO_HELP),
    connect_confirms: Optional[bool] = typer.Option(
        None, "--connect-confirms/--connect-needs-confirmation", help=CONNECT_CONFIRMS_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the changes as JSON."),
) -> None:
    """Change any field of a template; campaigns already launched keep their snapshot.

    Example: dialer template edit Fire --attempts 3 --max-external none --disable
    """
    s = authorized(C, "template edit")
    tpl = s.get_template(name)
    if new_name is not None:
        new_name = validation.template_name(new_name)
    st = tpl.settings
    changes: dict[str, Any] = {}
    for key, value in (("priority", priority), ("attempts", attempts),
                       ("ring_timeout", ring_timeout), ("answer_confirm", answer_confirm),
                       ("listen_confirm", listen_confirm), ("answer_key", answer_key),
                       ("listen_key", listen_key), ("retry_delay", retry_delay),
                       ("key_timeout", key_timeout), ("max_repeats", max_repeats),
                       ("keep_calling_after_threshold", keep_calling)):
        if value is not None:
            changes[key] = value
    for key, raw in (("caller_number", caller_number), ("external_route", external_route)):
        given, text = _optional_text(raw)
        if given:
            changes[key] = text
    changes.update(window_changes(window, window_days, timezone, urgent))
    changes.update(connect_changes(connect_key, connect_to, connect_confirms))
    if language is not None:
        changes["language"] = language.value
    if email is not None:
        changes["email"] = email_policy(email.value)
    if threshold is not None:
        given, value = parse_limit(threshold, "--threshold")
        changes["threshold"] = value
    limits = st.limits
    for field, raw, option in (("total", max_calls, "--max-calls"),
                               ("internal", max_internal, "--max-internal"),
                               ("external", max_external, "--max-external")):
        given, value = parse_limit(raw, option)
        if given:
            limits = dataclasses.replace(limits, **{field: value})
    new_st = dataclasses.replace(st, limits=limits, **changes)
    validation.settings(new_st, len(tpl.recipients))
    sha, seconds, text = message_audio(s, audio, tts, voice.value if voice else new_st.language,
                                       required=False)
    if sha is not None:  # a new message: its text (None for a recording) replaces the old one
        new_st = dataclasses.replace(new_st, tts_text=text)
    done = s.edit_template(name, actor=actor(), now=time.time(), new_name=new_name,
                           enabled=enabled, audio_sha=sha, audio_seconds=seconds,
                           settings=new_st if new_st != st else None)
    if json_out:
        emit_json({"name": new_name or name, "changes": done})
    elif not done:
        out.print(f"template {name!r}: nothing changed")
    else:
        t = Table("field", "old", "new", title=f"template {new_name or name}")
        for key, (old, new) in done.items():
            t.add_row(key, str(old), str(new))
        out.print(t)


@template_app.command("clone")
def template_clone(name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template to copy."),
                   new_name: str = typer.Argument(..., help="Name of the copy."),
                   json_out: bool = typer.Option(False, "--json",
                                                 help="Print {\"id\": ...}.")) -> None:
    ("Copy a template with its settings, audio and recipients. "
     "Example: dialer template clone Fire Flood")
    new_name = validation.template_name(new_name)
    tid = authorized(C, "template clone").clone_template(name, new_name, actor=actor(),
                                                          now=time.time())
    if json_out:
        emit_json({"id": tid})
    else:
        out.print(f"template {new_name!r} cloned from {name!r}")


def _set_enabled(name: str, enabled: bool, command: str, json_out: bool) -> None:
    done = authorized(C, command).edit_template(name, actor=actor(), now=time.time(),
                                                enabled=enabled)
    report(json_out, {"name": name, "enabled": enabled, "changed": bool(done)},
           f"template {name!r} {'enabled' if enabled else 'disabled'}"
           + ("" if done else " (already)"))


@template_app.command("enable")
def template_enable(name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template name."),
                    json_out: bool = JSON_RESULT) -> None:
    """Allow a template to launch campaigns. Example: dialer template enable Fire"""
    _set_enabled(name, True, "template enable", json_out)


@template_app.command("disable")
def template_disable(name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template name."),
                     json_out: bool = JSON_RESULT) -> None:
    """Forbid launching campaigns from a template. Example: dialer template disable Fire"""
    _set_enabled(name, False, "template disable", json_out)


@template_app.command("delete")
def template_delete(name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template name."),
                    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
                    json_out: bool = JSON_RESULT) -> None:
    """Delete a template; its running campaigns go on with their own snapshot.

    Example: dialer template delete Fire --yes
    """
    s = authorized(C, "template delete")
    s.get_template(name)
    confirm(f"delete template {name!r}?", yes, "not deleted")
    running = s.delete_template(name, actor=actor(), now=time.time())
    more = f"; {running} campaign(s) launched from it go on" if running else ""
    report(json_out, {"name": name, "deleted": True, "running_campaigns": running},
           f"template {name!r} deleted{more}")


# ----- recipients of a template -----


@recipients_app.command("list")
def recipients_list(name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template name."),
                    json_out: bool = typer.Option(False, "--json",
                                                  help="JSON for scripts.")) -> None:
    ("List the recipients of a template in dialing order. "
     "Example: dialer template recipients list Fire")
    data = template_data(authorized(V, "template recipients list").get_template(name))
    if json_out:
        emit_json(data["recipients"])
    else:
        out.print(_recipient_rows(f"recipients of {name}", data["recipients"]))


@recipients_app.command("add")
def recipients_add(
    name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template name."),
    number: str = typer.Argument(..., help="Extension or phone number."),
    person: Optional[str] = typer.Option(None, "--name", help="The person's name."),
    email: Optional[str] = typer.Option(None, "--email", help="E-mail address."),
    kind: Optional[Kind] = typer.Option(None, "--kind", help="How it is dialled (default: "
                                                            "guessed)."),
    position: Optional[int] = typer.Option(None, "--position", help="Insert at this position."),
    timezone: Optional[str] = typer.Option(None, "--timezone",
                                           help="Its own calling-window zone, e.g. Asia/Tokyo "
                                                "(default: the template's)."),
    json_out: bool = JSON_RESULT,
) -> None:
    ("Add one recipient. "
     'Example: dialer template recipients add Fire "+39 06 6982 0000" --name Bob')
    rec = make_recipient(number, name=person, email=email, kind=kind.value if kind else None,
                         rules=rules(), timezone=zones.check(timezone) if timezone else None)
    pos = authorized(C, "template recipients add").template_recipient_add(
        name, rec, actor=actor(), now=time.time(), position=position)
    report(json_out, {"number": rec.number, "kind": rec.kind.value, "position": pos},
           f"{rec.number} added at position {pos}")


@recipients_app.command("remove")
def recipients_remove(name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template name."),
                      recipient: str = typer.Argument(
                          ..., help="Position (#N) or number."),
                      json_out: bool = JSON_RESULT) -> None:
    ("Remove a recipient (by number or position). "
     "Example: dialer template recipients remove Fire 101")
    old = authorized(C, "template recipients remove").template_recipient_remove(
        name, recipient, actor=actor(), now=time.time(), rules=rules())
    report(json_out, {"number": old["number"], "position": old["position"], "removed": True},
           f"{old['number']} removed (was position {old['position']})")


@recipients_app.command("move")
def recipients_move(name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template name."),
                    recipient: str = typer.Argument(..., help="Position (#N) or number."),
                    to: int = typer.Argument(..., help="New position (1 = first)."),
                    json_out: bool = JSON_RESULT) -> None:
    """Move a recipient to another position. Example: dialer template recipients move Fire 102 1"""
    pos = authorized(C, "template recipients move").template_recipient_move(
        name, recipient, to, actor=actor(), now=time.time(), rules=rules())
    report(json_out, {"recipient": recipient, "position": pos}, f"moved to position {pos}")


@recipients_app.command("import")
def recipients_import(
    name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template name."),
    path: Path = typer.Argument(..., help="CSV with a header: number[,name,email,kind,"
                                          "timezone]."),
    replace: bool = typer.Option(False, "--replace", help="Replace the list instead of appending."),
    json_out: bool = JSON_RESULT,
) -> None:
    """Append (or --replace) recipients from a CSV, all or nothing.

    A file with any bad line stores nothing and names every bad line with its reason; a number
    already in the list is refused with the line that repeats it. The ' that export puts before
    a cell starting with = + - @ is removed, so an exported file imports back unchanged.
    Example: dialer template recipients import Fire staff.csv --replace
    """
    s = authorized(C, "template recipients import")
    lines = read_recipient_lines(path)
    s.template_recipients_import(name, [r for _, r in lines], actor=actor(), now=time.time(),
                                 replace=replace, source=str(path),
                                 lines=[n for n, _ in lines])
    report(json_out, {"recipients": len(lines), "replaced": replace},
           f"{len(lines)} recipients {'replaced' if replace else 'added'}")


@recipients_app.command("export")
def recipients_export(
    name: str = typer.Argument(..., autocompletion=complete_template,
                                   help="Template name."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File (default: stdout)."),
) -> None:
    """Write the recipients as a CSV that import reads back. Names and e-mails starting with = + - @
    (spreadsheet formulas) are written with a leading ' that import removes; numbers stay as they
    are. Example: dialer template recipients export Fire -o staff.csv"""
    data = template_data(authorized(V, "template recipients export").get_template(name))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    zoned = any(r["timezone"] for r in data["recipients"])  # the column only when used
    w.writerow(["number", "name", "email", "kind", *(["timezone"] if zoned else [])])
    for r in data["recipients"]:
        w.writerow([cell(r["number"], number=True), cell(r["name"] or ""),
                    cell(r["email"] or ""), cell(r["kind"]),
                    *([cell(r["timezone"] or "")] if zoned else [])])
    if output is None:
        typer.echo(buf.getvalue(), nl=False)
    else:
        try:
            output.write_text(buf.getvalue(), encoding="utf-8")
        except OSError as exc:
            raise ValidationError(f"cannot write {output}: {exc}") from exc
        out.print(f"{len(data['recipients'])} recipients written to {output}")
