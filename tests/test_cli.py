"""The ``dialer`` CLI driven through Typer's CliRunner against a real SQLite database file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from cli.app import app
from dialer.storage.models import MediaRow
from dialer.storage.store import SqlStore

REPO = Path(__file__).resolve().parents[1]
WAV = REPO / "media" / "prompts" / "en" / "demo_message.wav"

Invoke = Callable[..., Result]


@pytest.fixture
def dialer(cli_invoke: Invoke) -> Invoke:
    return cli_invoke


@pytest.fixture
def ready(cli_ready: Invoke) -> Invoke:
    return cli_ready


def csv_file(tmp_path: Path, text: str, name: str = "r.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD_CSV = ("number,name,email\n"
            "101,Alice,alice@example.com\n"
            "+39 06 6982 0000,Bob,\n"
            "102,,\n")


def ok_json(r: Result) -> Any:
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout)


def assert_one_error_line(r: Result, *needles: str, code: int = 1) -> str:
    """Exit 1 (``code``: 2 for a usage error, 78 for a config serve refuses), exactly one line
    on stderr starting 'error:', no traceback anywhere."""
    assert r.exit_code == code, (r.stdout, r.stderr, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), lines[0]
    for text in (r.stdout, r.stderr):
        assert "Traceback" not in text
    assert isinstance(r.exception, SystemExit)  # typer.Exit(1), not an escaped exception
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def media_count(db: str) -> int:
    s = SqlStore(db)
    try:
        with s.session() as sess:
            return int(sess.scalar(select(func.count()).select_from(MediaRow)) or 0)
    finally:
        s.dispose()


def add_template(dialer: Invoke, tmp_path: Path, name: str = "Fire", *extra: str) -> Result:
    return dialer("template", "add", name, "--audio", str(WAV), "--recipients",
                  str(csv_file(tmp_path, GOOD_CSV)), *extra)


def bootstrap_head() -> str | None:
    from dialer.storage.migrate import head_revision

    return head_revision()


def test_init_is_idempotent(dialer: Invoke, db: str) -> None:
    r1, r2 = dialer("init"), dialer("init")
    assert (r1.exit_code, r2.exit_code) == (0, 0)
    head = bootstrap_head()
    assert " ".join(r1.stdout.split()) == f"database ready: {db} (schema {head}, new)"
    assert " ".join(r2.stdout.split()) == f"database ready: {db} (schema {head}, up to date)"


def test_commands_before_init_say_so(dialer: Invoke, db: str) -> None:
    assert_one_error_line(dialer("template", "list"), "no database at", "dialer init")
    Path(db[len("sqlite:///"):]).touch()  # a file that is not a dialer database (yet)
    assert_one_error_line(dialer("template", "list"), "not initialised", "dialer init")


def test_template_add_list_show(ready: Invoke, tmp_path: Path) -> None:
    r = add_template(ready, tmp_path, "Fire", "--priority", "4", "--attempts", "2",
                     "--no-answer-confirm", "--max-calls", "3", "--json")
    tid = ok_json(r)["id"]
    rows = ok_json(ready("template", "list", "--json"))
    assert len(rows) == 1
    row = rows[0]
    assert (row["id"], row["name"], row["enabled"], row["priority"], row["attempts"],
            row["recipients"]) == (tid, "Fire", True, 4, 2, 3)
    assert 3.0 < row["audio_seconds"] < 5.0
    shown = ok_json(ready("template", "show", "Fire", "--json"))
    assert shown["id"] == tid and len(shown["audio_sha256"]) == 64
    assert shown["settings"]["answer_confirm"] is False
    assert shown["settings"]["listen_confirm"] is True
    assert shown["settings"]["limits"] == {"total": 3, "internal": None, "external": None}
    assert shown["recipients"] == [  # timezone: their own calling-window zone (none here)
        {"position": 1, "number": "101", "name": "Alice", "email": "alice@example.com",
         "kind": "internal", "timezone": None},
        {"position": 2, "number": "+390669820000", "name": "Bob", "email": None,
         "kind": "external", "timezone": None},
        {"position": 3, "number": "102", "name": None, "email": None, "kind": "internal",
         "timezone": None},
    ]
    # the human forms work too
    assert ready("template", "list").exit_code == 0
    r = ready("template", "show", "Fire")
    assert r.exit_code == 0 and "+390669820000" in r.stdout


def test_campaign_start_show_list(ready: Invoke, tmp_path: Path) -> None:
    assert add_template(ready, tmp_path).exit_code == 0
    started = ok_json(ready("campaign", "start", "Fire", "--name", "Drill", "--json"))
    assert set(started) == {"id"} and isinstance(started["id"], int)
    detail = ok_json(ready("campaign", "show", str(started["id"]), "--json"))
    assert {"id", "name", "state", "recipients"} <= set(detail)
    assert (detail["id"], detail["name"], detail["state"]) == (started["id"], "Drill", "scheduled")
    want = {"position", "number", "name", "kind", "state", "attempts", "last_outcome",
            "answered_at", "confirmed_at"}
    for r in detail["recipients"]:
        assert want <= set(r)
    assert [(r["position"], r["number"], r["name"], r["kind"], r["state"], r["attempts"],
             r["last_outcome"], r["answered_at"], r["confirmed_at"])
            for r in detail["recipients"]] == [
        (1, "101", "Alice", "internal", "idle", 0, None, None, None),
        (2, "+390669820000", "Bob", "external", "idle", 0, None, None, None),
        (3, "102", None, "internal", "idle", 0, None, None, None),
    ]
    listed = ok_json(ready("campaign", "list", "--json"))
    assert [(c["id"], c["name"], c["state"], c["recipients"]) for c in listed] == [
        (started["id"], "Drill", "scheduled", 3)]
    r = ready("campaign", "show", str(started["id"]))
    assert r.exit_code == 0 and "Drill" in r.stdout


def test_campaign_start_later_with_own_recipients(ready: Invoke, tmp_path: Path) -> None:
    assert add_template(ready, tmp_path).exit_code == 0
    other = csv_file(tmp_path, "number\n201\n202\n", "other.csv")
    before = time.time()
    cid = ok_json(ready("campaign", "start", "Fire", "--in", "5", "--recipients", str(other),
                        "--json"))["id"]
    detail = ok_json(ready("campaign", "show", str(cid), "--json"))
    assert [r["number"] for r in detail["recipients"]] == ["201", "202"]
    from datetime import datetime

    start = datetime.fromisoformat(detail["start_at"]).timestamp()
    assert before + 300 - 1 <= start <= time.time() + 300 + 1


def test_campaign_operator_actions(ready: Invoke, tmp_path: Path) -> None:
    assert add_template(ready, tmp_path).exit_code == 0
    cid = str(ok_json(ready("campaign", "start", "Fire", "--json"))["id"])
    outs = [ready("campaign", a, cid, *(["--yes"] if a == "stop" else []))
            for a in ("suspend", "resume", "stop")]
    assert [(r.exit_code, r.stdout.strip()) for r in outs] == [
        (0, "suspended"), (0, "scheduled"), (0, "terminated")]  # resumed: never active yet
    assert_one_error_line(ready("campaign", "resume", cid), "cannot resume", "terminated")
    assert_one_error_line(ready("campaign", "show", "999"), "no campaign with id 999")


# ----- errors: one line, exit 1, nothing stored -----


def test_unknown_template(ready: Invoke, db: str) -> None:
    assert_one_error_line(ready("campaign", "start", "Nope", "--audio", str(WAV)),
                          "no template named 'Nope'")
    assert_one_error_line(ready("template", "show", "Nope"), "no template named 'Nope'")
    assert ok_json(ready("campaign", "list", "--json")) == []
    assert media_count(db) == 0  # the audio was never imported


def test_csv_with_a_bad_number_names_the_line(ready: Invoke, tmp_path: Path, db: str) -> None:
    bad = csv_file(tmp_path, "number,name\n101,A\n102,B\nnot-a-number,C\n", "bad.csv")
    line = assert_one_error_line(
        ready("template", "add", "Fire", "--audio", str(WAV), "--recipients", str(bad)),
        "bad.csv", "line 4", "not-a-number")
    assert "line 2" not in line and "line 3" not in line
    assert ok_json(ready("template", "list", "--json")) == []
    assert media_count(db) == 0


def test_csv_with_a_duplicate_names_both_lines(ready: Invoke, tmp_path: Path) -> None:
    dup = csv_file(tmp_path, "number\n101\n102\n101\n", "dup.csv")
    assert_one_error_line(
        ready("template", "add", "Fire", "--audio", str(WAV), "--recipients", str(dup)),
        "line 4", "repeats line 2")
    assert ok_json(ready("template", "list", "--json")) == []


def test_non_audio_file(ready: Invoke, tmp_path: Path, db: str) -> None:
    text = csv_file(tmp_path, GOOD_CSV)
    assert_one_error_line(
        ready("template", "add", "Fire", "--audio", str(text), "--recipients", str(text)),
        "r.csv", "audio")
    assert ok_json(ready("template", "list", "--json")) == []
    assert media_count(db) == 0


def test_missing_files(ready: Invoke, tmp_path: Path) -> None:
    assert_one_error_line(ready("template", "add", "Fire", "--audio", str(tmp_path / "no.wav")),
                          "no.wav")
    assert_one_error_line(ready("template", "add", "Fire", "--audio", str(WAV), "--recipients",
                                str(tmp_path / "no.csv")), "no.csv", "does not exist")
    assert ok_json(ready("template", "list", "--json")) == []


def test_campaign_start_errors_store_nothing(ready: Invoke, tmp_path: Path, db: str) -> None:
    assert add_template(ready, tmp_path).exit_code == 0
    media_before = media_count(db)
    first = ok_json(ready("campaign", "start", "Fire", "--json"))
    listed = ok_json(ready("campaign", "list", "--json"))
    bad = csv_file(tmp_path, "number\n101\nxyz\n", "bad.csv")
    assert_one_error_line(ready("campaign", "start", "Fire", "--recipients", str(bad)),
                          "line 3")
    assert_one_error_line(ready("campaign", "start", "Fire", "--audio", str(bad)), "bad.csv")
    assert_one_error_line(ready("campaign", "start", "Fire", "--in", "1", "--at",
                                "2030-01-01T00:00"), "--in or --at")
    assert_one_error_line(ready("campaign", "start", "Fire", "--at", "tomorrow"), "ISO")
    assert ok_json(ready("campaign", "list", "--json")) == listed
    assert [c["id"] for c in listed] == [first["id"]]
    assert media_count(db) == media_before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--attempts", "0"], "attempts must be between 1 and 99"),
        (["--threshold", "9"], "threshold 9"),
        (["--max-calls", "-1"], "max-calls must be 0 or more"),
        (["--language", "xx"], "'xx' is not one of 'en', 'it'"),
    ],
)
def test_template_add_validation(ready: Invoke, tmp_path: Path, db: str, args: list[str],
                                 needle: str) -> None:
    usage = args[0] == "--language"  # a choice: refused by Typer before the command runs
    assert_one_error_line(add_template(ready, tmp_path, "Fire", *args), needle,
                          code=2 if usage else 1)
    assert ok_json(ready("template", "list", "--json")) == []
    assert media_count(db) == 0


def test_bad_template_name(ready: Invoke, tmp_path: Path) -> None:
    assert_one_error_line(add_template(ready, tmp_path, "Fire!"), "template name")
    assert ok_json(ready("template", "list", "--json")) == []


def test_duplicate_template_name(ready: Invoke, tmp_path: Path) -> None:
    assert add_template(ready, tmp_path).exit_code == 0
    assert_one_error_line(add_template(ready, tmp_path), "already exists")
    assert len(ok_json(ready("template", "list", "--json"))) == 1


# ----- serve -----

NO_EXTERNAL = '[trunks.internal]\nuri = "sip:pbx.example.com"\n'


def test_serve_with_a_config_missing_a_trunk(ready: Invoke, tmp_path: Path) -> None:
    cfg = csv_file(tmp_path, NO_EXTERNAL, "dialer.toml")
    assert_one_error_line(ready("serve", "--config", str(cfg)),
                          "missing trunk [trunks.external]", code=78)


def test_serve_missing_trunk_from_the_real_command(tmp_path: Path) -> None:
    """The installed console script: one line on stderr, exit 78 (EX_CONFIG), no traceback."""
    cfg = csv_file(tmp_path, NO_EXTERNAL, "dialer.toml")
    exe = Path(sys.executable).with_name("dialer")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cli.app"]
    p = subprocess.run([*cmd, "--db", f"sqlite:///{tmp_path / 'y.db'}", "serve", "--config",
                        str(cfg)], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})
    assert p.returncode == 78, (p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr
    assert "missing trunk [trunks.external]" in lines[0]
    assert p.stdout == ""


def test_serve_with_a_password_in_the_config(ready: Invoke, tmp_path: Path) -> None:
    cfg = csv_file(tmp_path, '[trunks.internal]\nuri = "sip:a"\nusername = "u"\n'
                             'password = "hunter2-secret"\n[trunks.external]\nuri = "sip:b"\n',
                   "dialer.toml")
    line = assert_one_error_line(ready("serve", "--config", str(cfg)), "password", code=78)
    assert "hunter2-secret" not in line


def test_error_text_with_brackets_is_shown_verbatim(ready: Invoke, tmp_path: Path) -> None:
    """User text in a message is not Rich markup: '[bold]' must reach the operator as typed."""
    bad = csv_file(tmp_path, "number\n[bold]123[/bold]\n", "br.csv")
    assert_one_error_line(
        ready("template", "add", "Fire", "--audio", str(WAV), "--recipients", str(bad)),
        "line 2", "[bold]123[/bold]")


def test_region_option_reads_national_numbers_in_that_region(ready: Invoke, db: str,
                                                             tmp_path: Path) -> None:
    csv = csv_file(tmp_path, "number\n(202) 555-0143\n")
    r = CliRunner().invoke(app, ["--db", db, "--region", "US", "template", "add", "US",
                                 "--audio", str(WAV), "--recipients", str(csv)])
    assert r.exit_code == 0, r.stderr
    shown = ok_json(ready("template", "show", "US", "--json"))
    assert [x["number"] for x in shown["recipients"]] == ["+12025550143"]


def test_audio_longer_than_the_maximum_is_refused_and_nothing_stored(ready: Invoke,
                                                                     db: str) -> None:
    r = CliRunner().invoke(app, ["--db", db, "--max-audio-seconds", "1", "template", "add",
                                 "Long", "--audio", str(WAV)])
    assert_one_error_line(r, "longer than the limit")
    assert ok_json(ready("template", "list", "--json")) == []


def test_a_scheduled_campaign_suspended_and_resumed_stays_scheduled(
        ready: Invoke, tmp_path: Path, db: str) -> None:
    """Issue 10: resume used to make it blocked, and the scheduler started it at once."""
    from datetime import datetime

    assert add_template(ready, tmp_path).exit_code == 0
    cid = ok_json(ready("campaign", "start", "Fire", "--in", "30", "--json"))["id"]
    assert ready("campaign", "suspend", str(cid)).stdout.strip() == "suspended"
    r = ready("campaign", "resume", str(cid))
    assert (r.exit_code, r.stdout.strip()) == (0, "scheduled")
    detail = ok_json(ready("campaign", "show", str(cid), "--json"))
    assert detail["state"] == "scheduled"
    start = datetime.fromisoformat(detail["start_at"]).timestamp()
    store = SqlStore(db)
    try:  # the daemon's scheduling passes, on a clock given to them: nothing before start_at
        for at in (time.time(), start - 60, start - 0.001):
            t = store.tick(now=at, node="n")
            assert (t.calls, t.transitions) == ([], [])
            assert t.next_due == pytest.approx(start)
        t = store.tick(now=start, node="n")
        assert t.transitions == [(cid, "scheduled", "active")] and len(t.calls) == 3
    finally:
        store.dispose()


@pytest.mark.parametrize(("declared", "holds"), [(16000, 100), (100, 16000)])
def test_audio_whose_declared_length_disagrees_is_refused_and_nothing_stored(
        ready: Invoke, tmp_path: Path, db: str, declared: int, holds: int) -> None:
    import struct

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + struct.pack("<I", 36 + declared) + b"WAVEfmt "
                    + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
                    + b"data" + struct.pack("<I", declared) + b"\x01\x02" * (holds // 2))
    assert_one_error_line(
        ready("template", "add", "Fire", "--audio", str(bad), "--recipients",
              str(csv_file(tmp_path, GOOD_CSV))),
        "bad.wav", "declared length disagrees with the content")
    assert ok_json(ready("template", "list", "--json")) == []
    assert media_count(db) == 0


def test_a_template_name_may_have_accented_letters(ready: Invoke, tmp_path: Path) -> None:
    """Issue 14: SPEC says letters, and the reference product is Italian."""
    nfd = "Citta\u0300 Allarme"  # the accent typed as a combining mark: the same name
    assert add_template(ready, tmp_path, nfd).exit_code == 0
    assert [t["name"] for t in ok_json(ready("template", "list", "--json"))] == ["Città Allarme"]
    assert ready("template", "show", "Città Allarme", "--json").exit_code == 0


def test_template_escalate_sets_shows_and_removes_the_rule(ready: Invoke, tmp_path: Path) -> None:
    """Issue 15, escalation: ``template escalate`` sets the follow-up rule, ``template show``
    and ``campaign show`` show it; bad rules are one error line and change nothing."""
    assert add_template(ready, tmp_path, "Fire").exit_code == 0
    assert add_template(ready, tmp_path, "Managers").exit_code == 0
    r = ready("template", "escalate", "Fire", "--to", "Managers", "--when", "below", "--below",
              "2", "--after", "10", "--pass-unreached", "--json")
    got = ok_json(r)
    assert got["escalation"] == ("to 'Managers' when fewer than 2 are reached 10 min after the "
                                 "start, passing on the unreached")
    st = ok_json(ready("template", "show", "Fire", "--json"))["settings"]
    assert (st["escalate_to"], st["escalate_when"], st["escalate_below"], st["escalate_after"],
            st["escalate_unreached"]) == ("Managers", "below", 2, 600.0, True)
    before = st
    for args, needle in (
            (("--to", "Fire"), "cannot escalate to itself"),
            (("--to", "Nobody"), "no template named 'Nobody'"),
            (("--to", "Managers", "--when", "below", "--below", "2"), "--after"),
            (("--to", "Managers", "--below", "2"), "go with --when below"),
            ((), "--to TEMPLATE, or --none")):
        assert_one_error_line(ready("template", "escalate", "Fire", *args), needle)
    assert_one_error_line(ready("template", "escalate", "Managers", "--to", "Fire"),
                          "escalation cycle: Managers -> Fire -> Managers")
    assert ok_json(ready("template", "show", "Fire", "--json"))["settings"] == before
    assert ok_json(ready("template", "show", "Managers", "--json"))["settings"][
        "escalate_to"] is None
    cid = int(ok_json(ready("campaign", "start", "Fire", "--json"))["id"])
    shown = " ".join(ready("campaign", "show", str(cid)).stdout.split())
    assert ("escalates to 'Managers' when fewer than 2 are reached 10 min after the start, "
            "passing on the unreached: not decided yet") in shown
    detail = ok_json(ready("campaign", "show", str(cid), "--json"))
    assert detail["escalation"]["state"] == "armed"
    out = ready("template", "escalate", "Fire", "--none")
    assert out.exit_code == 0 and "no escalation" in out.stdout
    assert ok_json(ready("template", "show", "Fire", "--json"))["settings"]["escalate_to"] is None
