"""The CLI in an 80-column terminal (issue 14): every command's ``--help``, and every listing and
``show`` on a database with a run in it, fit 80 columns with no header cut, no date folded over
lines, no Python repr; ``cli.tables.fit`` drops columns by priority and keeps the headers whole."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.app import app
from cli.tables import Col, fit, shown
from dialer.core.domain import Outcome, RecipientState
from dialer.storage.store import EndReport, SqlStore
from testkit.harness import ROOT, tone_wav


def _commands(group: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, cmd in getattr(group, "commands", {}).items():
        if getattr(cmd, "hidden", False):
            continue
        yield (*path, name)
        yield from _commands(cmd, (*path, name))


COMMANDS = sorted(_commands(typer.main.get_command(app)))


def test_there_are_commands_to_check() -> None:
    assert len(COMMANDS) > 40 and ("config", "check") in COMMANDS


def _help_width(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    """Typer reads TERMINAL_WIDTH once, when its help renderer is first imported, and keeps it
    for the process: an env= on one invocation fixes the width of every later test's help."""
    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", columns)


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_help_fits_80_columns(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
                                    ) -> None:
    _help_width(monkeypatch, 80)
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.stdout
    assert "Usage:" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout


def run(db: str, *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "cli.app", "--db", db, *args], cwd=ROOT,
                       env={**os.environ, "COLUMNS": "80"}, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("cols")
    url = f"sqlite:///{tmp}/d.db"
    run(url, "init")
    csv = tmp / "staff.csv"
    csv.write_text("number,name,email\n201,Anna Bianchi,anna@example.com\n"
                   "+390669820000,Bruno Verdi Rossi di Montelupo,bruno@example.com\n202,Carla\n")
    run(url, "template", "add", "Evacuation drill", "--audio", str(tone_wav(tmp / "m.wav", 1.0)),
        "--recipients", str(csv), "--max-external", "2",
        # an hour: the module's subprocesses take more than the default minute on a busy
        # machine, and test_watch_says_when_no_daemon_serves_and_streams_json needs the delay
        "--retry-delay", "3600")
    run(url, "campaign", "start", "Evacuation drill", "--name", "Evacuation drill north wing")
    s = SqlStore(url)
    now = time.time() + 1
    for i, call in enumerate(s.tick(now=now, node="n1").calls):
        s.record_progress(call.attempt_id, "ringing", now + 0.1)
        s.finish_attempt(EndReport(attempt_id=call.attempt_id, at=now + 0.5,
                                   outcome=Outcome.CONTACTED if i == 0 else Outcome.BUSY,
                                   status=200 if i == 0 else 486,
                                   answered_at=now + 0.2 if i == 0 else None,
                                   listen_confirmed_at=now + 0.4 if i == 0 else None))
    s.dispose()
    return url


LISTINGS = [
    ("template", "list"), ("template", "show", "Evacuation drill"),
    ("template", "recipients", "list", "Evacuation drill"), ("campaign", "list"),
    ("campaign", "show", "1"), ("campaign", "attempts", "1", "1"), ("history", "list"),
    ("history", "show", "1"), ("operator", "list"), ("audit", "list"), ("settings", "show"),
    ("nodes",), ("campaign", "watch", "1", "--once"),
]
def _header_words() -> set[str]:
    """Every word of every column header the CLI declares (``Col("...")``, ``Table("...")``)."""
    words: set[str] = set()
    for path in (ROOT / "cli").glob("*.py"):
        src = path.read_text()
        headers = re.findall(r'Col\("([^"]+)"', src)
        for args in re.findall(r'Table\(([^)]*)\)', src):
            headers += re.findall(r'"([^"]*)"', args.split("title=")[0])
        words |= {w for h in headers for w in h.split()}
    return words


HEADER_WORDS = _header_words() | {s.value for s in RecipientState}  # watch's columns
DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}|\d{2}:\d{2}:\d{2}")


@pytest.mark.parametrize("args", LISTINGS, ids=[" ".join(a) for a in LISTINGS])
def test_every_listing_fits_80_columns_with_whole_headers(db: str, args: tuple[str, ...]) -> None:
    text = run(db, *args)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    rules = [i for i, line in enumerate(lines) if line.strip() and set(line.strip()) == {"─"}]
    for i in rules:  # each table's header line (above its rule): every header whole
        assert "…" not in lines[i - 1], text
        assert set(lines[i - 1].split()) <= HEADER_WORDS, (lines[i - 1], text)
    for bad in ("None", "True", "False", "{'", "1.7"):  # no Python repr, no epoch seconds
        assert bad not in text, (bad, text)
    for line in lines:  # a date is never folded: every part of one is whole on its line
        for part in re.findall(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{2}:\d{2}(?::\d{2})?\b", line):
            assert DATE.search(line) or re.fullmatch(r"\d{2}:\d{2}", part), (part, line)


def test_campaign_show_counts_calls_not_failures(db: str) -> None:
    """The contacted recipient was called once: 'calls' says 1 (the old 'att' said 0)."""
    text = run(db, "campaign", "show", "1")
    header = next(line for line in text.splitlines() if line.lstrip().startswith("#"))
    assert "calls" in header.split() and "att" not in header.split()
    toks = next(line for line in text.splitlines() if "contacted" in line).split()
    assert toks[toks.index("contacted") + 1] == "1", toks  # calls, right after the state


def test_fit_drops_the_least_needed_columns_first_and_keeps_headers_whole() -> None:
    from rich.console import Console

    cols = (Col("#", number=True), Col("number"), Col("name", 3), Col("state"),
            Col("last call", 5), Col("outcome", 2))
    rows = [["1", "+390669820000", "Bruno Verdi Rossi di Montelupo", "contacted",
             "2026-12-03 08:00", "busy 486"]]
    for width, kept in ((120, 6), (60, 4), (40, 3)):
        console = Console(width=width, file=io.StringIO(), record=True)
        console.print(fit(cols, rows, width=width))
        text = console.export_text()
        header = next(line for line in text.splitlines() if line.strip()).split()
        assert len([h for h in ("#", "number", "name", "state", "last", "outcome")
                    if h in header]) == kept, text
        assert "last call" not in text or width == 120
        assert max(len(line) for line in text.splitlines()) <= width


@pytest.mark.parametrize(("value", "key", "text"), [
    (None, "", "none"), (True, "", "yes"), (False, "", "no"), (2.50, "", "2.5"),
    ({"total": None, "internal": 2}, "limits", "total=none, internal=2"), ([], "", "-"),
    ("2026-12-03T07:00:00+00:00", "start_at", None), (1764745200.0, "created_at", None),
])
def test_one_formatter_for_every_value(value: object, key: str, text: str | None) -> None:
    got = shown(value, key)
    if text is None:  # a time: local, readable, not a float
        assert DATE.search(got) and "." not in got, got
    else:
        assert got == text


def test_watch_says_when_no_daemon_serves_and_streams_json(db: str) -> None:
    """Issue 14: with no live node there is no time to completion, and the view says why;
    with one (a lease running) the ETA comes back. --json: one object per refresh."""
    import json

    from dialer.core.cluster import LeaseTerms

    text = run(db, "campaign", "watch", "1", "--once")
    assert "no daemon is serving this database" in " ".join(text.split())
    assert "about" not in text.split("time to completion")[1].split("\n")[0]
    frames = [json.loads(line) for line in run(db, "campaign", "watch", "1", "--once",
                                               "--json").splitlines()]
    assert len(frames) == 1
    f = frames[0]
    assert (f["id"], f["serving"], f["eta_seconds"], f["finished"]) == (1, False, None, False)
    assert sum(f["recipients"].values()) == 3
    s = SqlStore(db)
    s.join(node="n1", host="h1", address="127.0.0.1", pid=1, now=time.time(),
           terms=LeaseTerms(lease=60.0, heartbeat=3.0), pid_alive=lambda _: True)
    s.dispose()
    live = json.loads(run(db, "campaign", "watch", "1", "--once", "--json"))
    assert live["serving"] is True and live["eta_seconds"] is not None
    assert "about" in run(db, "campaign", "watch", "1", "--once")
    # the two busy recipients wait for their retry delay (an hour), and campaign show says so
    show = " ".join(run(db, "campaign", "show", "1").split())
    assert re.search(r"2 waiting: retry delay until \d\d:\d\d:\d\d", show), show
    assert len(live["waiting"]) == 1 and live["waiting"][0].startswith(
        "2 waiting: retry delay until"), live


def test_choices_show_in_help_and_names_complete(db: str, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    """Issue 14: every choice is an Enum (listed in --help, completed by the shell); template
    names and campaign ids complete from the database."""
    from cli.choices import complete_campaign, complete_template

    _help_width(monkeypatch, 200)
    helps = {args: " ".join(CliRunner().invoke(app, [*args, "--help"],
                                               env={"COLUMNS": "200"}).stdout.split())
             for args in (("template", "add"), ("campaign", "list"), ("operator", "add"),
                          ("history", "export"), ("serve",), ("template", "recipients", "add"))}
    assert "off|on-launch|unreached" in helps[("template", "add")]
    assert "en|it" in helps[("template", "add")]
    assert "scheduled|active|blocked|suspended|incomplete|completed|terminated" in \
        helps[("campaign", "list")]
    assert "admin|campaigns|settings|viewer" in helps[("operator", "add")]
    assert "json|csv" in helps[("history", "export")]
    assert "text|json" in helps[("serve",)]
    assert "internal|external" in helps[("template", "recipients", "add")]
    monkeypatch.setenv("DIALER_DB", db)
    assert complete_template("Evac") == ["Evacuation drill"] and complete_template("x") == []
    assert complete_campaign("") == ["1"]
    monkeypatch.setenv("DIALER_DB", "sqlite:////nonexistent/none.db")
    assert complete_template("") == []  # no database: no completion, and no error


def test_old_flag_spellings_still_work(db: str, tmp_path: Path) -> None:
    """--enable/--disable on add as on edit (the old --enabled/--disabled hidden but kept);
    --threshold takes a number or none on add as on edit."""
    import json

    wav = str(tone_wav(tmp_path / "m.wav", 1.0))
    csv = tmp_path / "r.csv"
    csv.write_text("number\n301\n302\n")
    for name, flag in (("New spelling", "--disable"), ("Old spelling", "--disabled")):
        run(db, "template", "add", name, "--audio", wav, "--recipients", str(csv), flag,
            "--threshold", "none")
    shown = {t["name"]: t["enabled"] for t in json.loads(run(db, "template", "list", "--json"))}
    assert shown["New spelling"] is False and shown["Old spelling"] is False
    assert "--disabled" not in run(db, "template", "add", "--help")
    run(db, "template", "add", "Two", "--audio", wav, "--recipients", str(csv), "--threshold", "2")
    assert json.loads(run(db, "template", "show", "Two", "--json"))["settings"]["threshold"] == 2
