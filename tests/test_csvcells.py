"""CSV exports neutralise spreadsheet formulas (OWASP CSV injection), and the importer reads its
own exports back (dialer.core.csvcells, `template recipients export`,
`history export --format csv`)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import Result

from cli.history import export_csv
from dialer.core.csvcells import TRIGGERS, cell, neutralise, restore
from dialer.csvimport import parse_csv

REPO = Path(__file__).resolve().parents[1]
WAV = REPO / "media" / "prompts" / "en" / "demo_message.wav"
NAMES = ["=cmd|' /C calc'!A0", "+SUM(1+1)", "-2+3", "@SUM(A1)", "'=already quoted",
         "Plain Name", "O'Brien", "'quoted but harmless"]
# what import stores: "'=" is read as an exported (quoted) "=" (a spreadsheet saves a typed
# '=x as =x, so a quote before a trigger in a CSV comes from an export like ours)
STORED = [n[1:] if n == "'=already quoted" else n for n in NAMES]
HOSTILE_CSV = "number,name,email\n" + "".join(
    f"{101 + i},\"{n.replace(chr(34), chr(34) * 2)}\",{m}\n"
    for i, (n, m) in enumerate(zip(NAMES, ["-ops@example.com", "=x@example.com", "", "", "",
                                           "a@example.com", "", ""], strict=False))
) + "+39 06 6982 0000,\"=HYPERLINK(\"\"http://evil\"\")\",\n"


@pytest.mark.parametrize(("value", "expected"), [
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
    ("+SUM(1)", "'+SUM(1)"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("'=x", "''=x"),  # already quoted: one more, so that the importer gives it back as it was
    ("''+x", "'''+x"),
    ("O'Brien", "O'Brien"), ("'quoted", "'quoted"), ("", ""), ("Alice", "Alice"),
    ("{\"name\": \"=x\"}", "{\"name\": \"=x\"}"),  # a JSON cell starts with '{': inert
])
def test_neutralise(value: str, expected: str) -> None:
    assert neutralise(value) == expected
    assert restore(expected) == value


@pytest.mark.parametrize(("value", "expected"), [
    ("+390669820000", "+390669820000"), ("101", "101"),  # numbers stay numbers
    ("+39 06 6982", "'+39 06 6982"), ("-1", "'-1"), ("+", "'+"), ("=1", "'=1"),
])
def test_number_cells_are_kept_only_when_they_are_numbers(value: str, expected: str) -> None:
    assert cell(value, number=True) == expected


@given(st.text(max_size=30))
def test_neutralised_cells_never_start_a_formula_and_restore_exactly(value: str) -> None:
    safe = neutralise(value)
    assert safe[:1] not in TRIGGERS
    assert restore(safe) == value
    assert safe == value or safe == "'" + value


@given(st.text(max_size=30))
def test_restore_leaves_what_export_would_not_have_written_alone(value: str) -> None:
    """A hand-written cell that is not the export's quote keeps its apostrophe."""
    if value[:1] == "'" and neutralise(value[1:]) == value[1:]:
        assert restore(value) == value


# ----- through the CLI -----


def run(cli_ready: Callable[..., Result], *args: str) -> Result:
    r = cli_ready(*args)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return r


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def assert_no_formula(rows: list[list[str]], number_column: int) -> None:
    """No cell starts a formula, but a number column's E.164 numbers (+39...) stay as they are."""
    for row in rows[1:]:
        for i, value in enumerate(row):
            if i == number_column and re.fullmatch(r"\+?\d+", value):
                continue
            assert value[:1] not in TRIGGERS, (i, value, row)


def test_recipients_export_neutralises_and_import_reads_it_back(
        cli_ready: Callable[..., Result], tmp_path: Path) -> None:
    src = tmp_path / "hostile.csv"
    src.write_text(HOSTILE_CSV)
    run(cli_ready, "template", "add", "Fire", "--audio", str(WAV), "--recipients", str(src))
    original = json.loads(run(cli_ready, "template", "show", "Fire", "--json").stdout)["recipients"]
    assert [r["name"] for r in original][:len(NAMES)] == STORED

    exported = run(cli_ready, "template", "recipients", "export", "Fire").stdout
    rows = rows_of(exported)
    assert rows[0] == ["number", "name", "email", "kind"]
    assert_no_formula(rows, number_column=0)
    assert rows[1][1] == "'=cmd|' /C calc'!A0" and rows[1][2] == "'-ops@example.com"
    assert rows[-1][:2] == ["+390669820000", "'=HYPERLINK(\"http://evil\")"]
    assert rows[7][1] == "O'Brien" and rows[8][1] == "'quoted but harmless"

    # the round trip: importing the export gives back exactly what was stored
    path = tmp_path / "export.csv"
    run(cli_ready, "template", "recipients", "export", "Fire", "--output", str(path))
    run(cli_ready, "template", "add", "Copy", "--audio", str(WAV), "--recipients", str(path))
    copy = json.loads(run(cli_ready, "template", "show", "Copy", "--json").stdout)["recipients"]
    key = [(r["number"], r["name"], r["email"], r["kind"]) for r in original]
    assert [(r["number"], r["name"], r["email"], r["kind"]) for r in copy] == key
    run(cli_ready, "template", "recipients", "import", "Copy", str(path), "--replace")
    again = json.loads(run(cli_ready, "template", "show", "Copy", "--json").stdout)["recipients"]
    assert [(r["number"], r["name"], r["email"], r["kind"]) for r in again] == key
    assert [r.name for r in parse_csv(exported)] == [r["name"] for r in original]


def test_history_csv_export_neutralises_every_text_cell(cli_ready: Callable[..., Result],
                                                        tmp_path: Path) -> None:
    src = tmp_path / "hostile.csv"
    src.write_text(HOSTILE_CSV)
    run(cli_ready, "template", "add", "Fire", "--audio", str(WAV), "--recipients", str(src))
    cid = json.loads(run(cli_ready, "campaign", "start", "Fire", "--json").stdout)["id"]
    run(cli_ready, "campaign", "stop", str(cid), "--yes")
    text = run(cli_ready, "history", "export", str(cid), "--format", "csv").stdout
    rows = rows_of(text)
    header = rows[0]
    assert_no_formula(rows, number_column=header.index("number"))
    assert "+390669820000" in [r[header.index("number")] for r in rows]
    # names travel inside the JSON 'data' cell, which starts with '{' and keeps them whole
    recipients = [json.loads(r[header.index("data")]) for r in rows if r[0] == "recipient"]
    assert [d["name"] for d in recipients][:len(NAMES)] == STORED

    # text columns written from operator input: the actor (an OS login) is neutralised too
    history = json.loads(run(cli_ready, "history", "show", str(cid), "--json").stdout)
    history["run"]["created_by"] = "=evil()"
    for e in history["events"]:
        e["actor"] = "@SUM(1)"
    rows = rows_of(export_csv(history))
    actor = header.index("actor")
    assert rows[1][actor] == "'=evil()"
    assert {r[actor] for r in rows if r[0] == "event"} == {"'@SUM(1)"}
    assert_no_formula(rows, number_column=header.index("number"))
