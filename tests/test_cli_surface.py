"""The whole operator surface of the ``dialer`` CLI, through the real Typer app (CliRunner)
against a real SQLite database file: templates and their recipients, campaigns and per-recipient
actions, settings, history (survives deletion, byte for byte), permissions and the audit log.
JSON outputs are validated against the schemas documented in docs/cli-json.md."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

import cli.common as cli_common
from cli.app import app
from dialer.core.domain import Kind, Outcome
from dialer.core.errors import ValidationError
from dialer.core.recipients import NumberRules, normalise_number
from dialer.storage.store import EndReport, SqlStore

REPO = Path(__file__).resolve().parents[1]
WAV = REPO / "media" / "prompts" / "en" / "demo_message.wav"
GOOD_CSV = ("number,name,email\n"
            "101,Alice,alice@example.com\n"
            "+39 06 6982 0000,Bob,\n"
            "102,,\n")
ADMIN = "chief"

Invoke = Callable[..., Result]


def _schemas() -> dict[str, Any]:
    """The JSON schemas of docs/cli-json.md, by command ("template list", ...)."""
    text = (REPO / "docs" / "cli-json.md").read_text()
    out = {}
    for m in re.finditer(r"^## `([^`]+)`\n(.*?)(?=^## |\Z)", text, re.M | re.S):
        block = re.search(r"```json\n(.*?)```", m.group(2), re.S)
        if block:
            out[m.group(1)] = json.loads(block.group(1))
    return out


SCHEMAS = _schemas()


class Cli:
    """Runs ``dialer --db URL ...`` as a given OS login."""

    def __init__(self, db: str, monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
        self.db, self.mp, self.tmp = db, monkeypatch, tmp
        self.runner = CliRunner()
        self.user = ADMIN

    def __call__(self, *args: str, user: str | None = None, input: str | None = None) -> Result:
        who = user or self.user
        self.mp.setattr(cli_common, "login", lambda: who)
        return self.runner.invoke(app, ["--db", self.db, *args], input=input)

    def json(self, schema: str, *args: str, user: str | None = None) -> Any:
        r = self(*args, "--json", user=user)
        assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
        data = json.loads(r.stdout)
        jsonschema.validate(data, SCHEMAS[schema])
        return data

    def ok(self, *args: str, user: str | None = None, input: str | None = None) -> str:
        r = self(*args, user=user, input=input)
        assert r.exit_code == 0, (args, r.stdout, r.stderr, r.exception)
        return r.stdout

    def csv(self, text: str, name: str = "r.csv") -> str:
        p = self.tmp / name
        p.write_text(text)
        return str(p)

    def store(self) -> SqlStore:
        return SqlStore(self.db)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.delenv("DIALER_DB", raising=False)
    c = Cli(f"sqlite:///{tmp_path / 'x.db'}", monkeypatch, tmp_path)
    r = c("init")
    assert r.exit_code == 0, r.stderr
    return c


def one_error(r: Result, *needles: str, code: int = 1) -> str:
    assert r.exit_code == code, (r.stdout, r.stderr, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def add_fire(cli: Cli, name: str = "Fire", *extra: str) -> int:
    return int(cli.json("template add", "template", "add", name, "--audio", str(WAV),
                        "--recipients", cli.csv(GOOD_CSV), *extra)["id"])


def play(cli: Cli, outcome: Outcome, *, status: int | None = None,
         reason: str | None = None, numbers: set[str] | None = None) -> list[str]:
    """Let the scheduler claim calls and end them with ``outcome`` (no SIP): returns numbers."""
    s = cli.store()
    try:
        now = time.time() + 1
        done = []
        for call in s.tick(now=now, node="test").calls:
            s.record_progress(call.attempt_id, "ringing", now + 0.1)
            if numbers is None or call.number in numbers:
                s.finish_attempt(EndReport(attempt_id=call.attempt_id, outcome=outcome,
                                           at=now + 0.5, status=status, reason=reason))
            else:
                s.finish_attempt(EndReport(attempt_id=call.attempt_id, outcome=Outcome.CONTACTED,
                                           at=now + 0.5, status=200,
                                           answered_at=now + 0.2, listen_confirmed_at=now + 0.4))
            done.append(call.number)
        return done
    finally:
        s.dispose()


# ----- templates -----


def test_template_edit_every_field_and_show(cli: Cli) -> None:
    add_fire(cli)
    changed = cli.json("template edit", "template", "edit", "Fire", "--name", "Fire drill",
                       "--disable", "--caller-number", "5000", "--external-route", "gw-2",
                       "--priority", "7", "--threshold", "2", "--attempts", "4",
                       "--ring-timeout", "20", "--no-answer-confirm", "--no-listen-confirm",
                       "--answer-key", "5", "--listen-key", "#", "--max-calls", "6",
                       "--max-internal", "4", "--max-external", "none", "--retry-delay", "30",
                       "--key-timeout", "7", "--max-repeats", "2", "--language", "it",
                       "--stop-at-threshold", "--audio", str(WAV))
    assert changed["name"] == "Fire drill"
    assert {"name", "enabled", "caller_number", "external_route", "priority", "threshold",
            "attempts", "ring_timeout", "answer_confirm", "listen_confirm", "answer_key",
            "listen_key", "limits", "retry_delay", "key_timeout", "max_repeats", "language",
            "keep_calling_after_threshold"} <= set(changed["changes"])
    shown = cli.json("template show", "template", "show", "Fire drill")
    st_ = shown["settings"]
    assert shown["enabled"] is False and st_["display_name"] == "Fire drill"
    assert (st_["caller_number"], st_["external_route"], st_["priority"], st_["threshold"],
            st_["attempts"], st_["ring_timeout"], st_["answer_confirm"], st_["listen_confirm"],
            st_["answer_key"], st_["listen_key"], st_["retry_delay"], st_["key_timeout"],
            st_["max_repeats"], st_["language"], st_["keep_calling_after_threshold"]) == (
        "5000", "gw-2", 7, 2, 4, 20.0, False, False, "5", "#", 30.0, 7.0, 2, "it", False)
    assert st_["limits"] == {"total": 6, "internal": 4, "external": None}
    one_error(cli("template", "show", "Fire"), "no template named 'Fire'")
    # clearing optional values, and an edit that changes nothing
    cli.ok("template", "edit", "Fire drill", "--caller-number", "none", "--threshold", "none")
    st2 = cli.json("template show", "template", "show", "Fire drill")["settings"]
    assert (st2["caller_number"], st2["threshold"]) == (None, None)
    assert "nothing changed" in cli.ok("template", "edit", "Fire drill", "--priority", "7")


@pytest.mark.parametrize(("args", "needle"), [
    (["--attempts", "0"], "attempts must be between 1 and 99"),
    (["--attempts", "100"], "attempts must be between 1 and 99"),
    (["--threshold", "4"], "threshold 4"),
    (["--max-calls", "-1"], "max-calls must be 0 or more"),
    (["--max-external", "lots"], "give a number or none"),
    (["--name", "Bad!"], "template name"),
    (["--language", "xx"], "'xx' is not one of 'en', 'it'"),
    (["--answer-key", "x"], "answer-key"),
])
def test_template_edit_validation_changes_nothing(cli: Cli, args: list[str], needle: str) -> None:
    add_fire(cli)
    before = cli.json("template show", "template", "show", "Fire")
    one_error(cli("template", "edit", "Fire", *args), needle,
              code=2 if args[0] == "--language" else 1)
    assert cli.json("template show", "template", "show", "Fire") == before


def test_clone_enable_disable_delete(cli: Cli) -> None:
    add_fire(cli)
    new_id = cli.json("template add", "template", "clone", "Fire", "Flood")["id"]
    flood = cli.json("template show", "template", "show", "Flood")
    fire = cli.json("template show", "template", "show", "Fire")
    assert flood["id"] == new_id and flood["recipients"] == fire["recipients"]
    assert flood["settings"]["display_name"] == "Flood"
    one_error(cli("template", "clone", "Fire", "Flood"), "already exists")
    cli.ok("template", "disable", "Fire")
    one_error(cli("campaign", "start", "Fire"), "disabled")
    cli.ok("template", "enable", "Fire")
    cid = cli.json("campaign start", "campaign", "start", "Fire")["id"]
    # delete asks; "n" keeps it
    one_error(cli("template", "delete", "Fire", input="n\n"), "not deleted")
    assert [t["name"] for t in cli.json("template list", "template", "list")] == ["Fire", "Flood"]
    out = cli.ok("template", "delete", "Fire", input="y\n")
    assert "1 campaign(s)" in out
    assert [t["name"] for t in cli.json("template list", "template", "list")] == ["Flood"]
    # its running campaign goes on with its own snapshot
    detail = cli.json("campaign show", "campaign", "show", str(cid))
    assert detail["template"] == "Fire" and len(detail["recipients"]) == 3
    assert play(cli, Outcome.CONTACTED) == ["101", "+390669820000", "102"]
    cli.ok("template", "delete", "Flood", "--yes")
    one_error(cli("template", "delete", "Flood", "--yes"), "no template named 'Flood'")


def test_template_recipients_commands(cli: Cli) -> None:
    add_fire(cli)

    def numbers() -> list[str]:
        rows = cli.json("template recipients list", "template", "recipients", "list", "Fire")
        assert [r["position"] for r in rows] == list(range(1, len(rows) + 1))
        return [r["number"] for r in rows]

    assert numbers() == ["101", "+390669820000", "102"]
    cli.ok("template", "recipients", "add", "Fire", "06 6982 0001", "--name", "Carla",
           "--email", "carla@example.com")
    cli.ok("template", "recipients", "add", "Fire", "103", "--position", "1")
    assert numbers() == ["103", "101", "+390669820000", "102", "+390669820001"]
    one_error(cli("template", "recipients", "add", "Fire", "101"), "101 is already recipient 2")
    one_error(cli("template", "recipients", "add", "Fire", "12ab"), "not a")
    one_error(cli("template", "recipients", "add", "Fire", "104", "--email", "nope"), "e-mail")
    one_error(cli("template", "recipients", "add", "Fire", "104", "--kind", "moon"),
              "'moon' is not one of 'internal', 'external'", code=2)
    cli.ok("template", "recipients", "move", "Fire", "103", "5")
    cli.ok("template", "recipients", "move", "Fire", "+39 06 6982 0000", "1")
    assert numbers() == ["+390669820000", "101", "102", "+390669820001", "103"]
    cli.ok("template", "recipients", "remove", "Fire", "#4")
    cli.ok("template", "recipients", "remove", "Fire", "101")
    assert numbers() == ["+390669820000", "102", "103"]
    one_error(cli("template", "recipients", "remove", "Fire", "999"), "no recipient '999'")
    # export reads back through import --replace
    exported = cli.ok("template", "recipients", "export", "Fire")
    assert exported.splitlines()[0] == "number,name,email,kind"
    path = cli.tmp / "export.csv"
    cli.ok("template", "recipients", "export", "Fire", "--output", str(path))
    assert path.read_text() == exported
    cli.ok("template", "recipients", "import", "Fire", str(path), "--replace")
    assert numbers() == ["+390669820000", "102", "103"]
    cli.ok("template", "recipients", "import", "Fire", cli.csv("number,name\n201,X\n202,Y\n"))
    assert numbers() == ["+390669820000", "102", "103", "201", "202"]


def test_recipients_import_is_all_or_nothing_and_names_every_bad_line(cli: Cli) -> None:
    add_fire(cli)
    before = cli.json("template recipients list", "template", "recipients", "list", "Fire")
    bad = cli.csv("number,name,email\n201,A,\nxyz,B,\n202,C,bad-mail\n203,D,\n201,E,\n", "bad.csv")
    line = one_error(cli("template", "recipients", "import", "Fire", bad), "bad.csv")
    assert all(f"line {n}:" in line for n in (3, 4, 6)) and "line 2:" not in line
    assert "repeats line 2" in line
    # a number already in the template: the line that repeats it
    dup = cli.csv("number\n301\n102\n", "dup.csv")
    one_error(cli("template", "recipients", "import", "Fire", dup), "line 3",
              "102 is already recipient 3")
    assert cli.json("template recipients list", "template", "recipients", "list",
                    "Fire") == before


# ----- campaigns -----


def test_campaign_lifecycle_from_the_cli(cli: Cli) -> None:
    add_fire(cli, "Fire", "--attempts", "1", "--retry-delay", "0")
    later = cli.json("campaign start", "campaign", "start", "Fire", "--name", "Later",
                     "--at", "2030-01-01T08:30+01:00")["id"]
    cid = cli.json("campaign start", "campaign", "start", "Fire", "--name", "Drill")["id"]
    shown = cli.json("campaign show", "campaign", "show", str(later))
    assert shown["start_at"] == "2030-01-01T07:30:00+00:00"
    assert [c["id"] for c in cli.json("campaign list", "campaign", "list", "--state",
                                      "scheduled")] == [later, cid]
    # Bob busy, the others contacted: attempts 1, so Bob fails and the campaign is incomplete
    play(cli, Outcome.BUSY, status=486, reason="Busy Here", numbers={"+390669820000"})
    s = cli.store()
    s.tick(now=time.time() + 2, node="test")
    s.dispose()
    detail = cli.json("campaign show", "campaign", "show", str(cid))
    assert detail["state"] == "incomplete"
    bob = detail["recipients"][1]
    assert (bob["state"], bob["attempts"], bob["last_outcome"], bob["last_status"],
            bob["last_reason"]) == ("failed", 1, "busy", 486, "Busy Here")
    alice = detail["recipients"][0]
    assert alice["state"] == "contacted" and alice["answered_at"] and alice["confirmed_at"]
    assert alice["last_call_at"]
    human = cli.ok("campaign", "show", str(cid))
    assert "486" in human and "Drill" in human
    att = cli.json("campaign attempts", "campaign", "attempts", str(cid), "+39 06 6982 0000")
    assert [a["status"] for a in att["attempts"]] == [486]
    assert [e["kind"] for e in att["attempts"][0]["events"]] == [
        "attempt_started", "ringing", "attempt_ended"]
    assert "attempt 1" in cli.ok("campaign", "attempts", str(cid), "2")
    # grant: every failed recipient when none is named; with no maximum of active campaigns
    # the campaign is active again at once, and the next scheduling pass calls
    one_error(cli("campaign", "grant", str(cid), "101", "--attempts", "1"), "contacted")
    cli.ok("campaign", "grant", str(cid), "--attempts", "2")
    assert cli.json("campaign show", "campaign", "show", str(cid))["state"] == "active"
    st = cli.store()
    calls = st.tick(now=time.time() + 5, node="test").calls
    placed = [c.number for c in calls]
    st.dispose()
    detail = cli.json("campaign show", "campaign", "show", str(cid))
    assert detail["state"] == "active"
    # that pass placed the granted recipient's next call at once
    assert placed == [detail["recipients"][1]["number"]]
    assert (detail["recipients"][1]["state"], detail["recipients"][1]["max_attempts"]) == (
        "active", 3)
    one_error(cli("campaign", "grant", str(cid), "--attempts", "1"), "no failed recipient")
    one_error(cli("campaign", "stop-recipient", str(cid), "#2", input="n\n"), "not stopped")
    cli.ok("campaign", "stop-recipient", str(cid), "#2", input="y\n")
    one_error(cli("campaign", "stop-recipient", str(cid), "#2", "--yes"), "already stopped")
    assert cli.json("campaign show", "campaign", "show", str(cid))["recipients"][1]["state"] == \
        "stopped"
    before_delete = cli.json("campaign attempts", "campaign", "attempts", str(cid), "2")
    assert (before_delete["attempts"][0] == att["attempts"][0]
            and len(before_delete["attempts"]) == 2)
    # delete: only finished campaigns
    one_error(cli("campaign", "delete", str(cid), "--yes"), "stop it first")
    one_error(cli("campaign", "stop", str(cid)), "not stopped: no answer to confirm it (add --yes)")
    assert cli.ok("campaign", "stop", str(cid), "--yes").strip() == "terminated"
    one_error(cli("campaign", "grant", str(cid), "--attempts", "1"), "terminated")
    # its call is still being hung up: its end must find the recipient it accounts for
    one_error(cli("campaign", "delete", str(cid), "--yes"), "1 call still in progress")
    st = cli.store()
    st.finish_attempt(EndReport(attempt_id=calls[0].attempt_id, outcome=Outcome.FAILED,
                                at=time.time() + 6, reason="hung up by the dialer"))
    st.dispose()
    before_delete = cli.json("campaign attempts", "campaign", "attempts", str(cid), "2")
    cli.ok("campaign", "delete", str(cid), "--yes")
    one_error(cli("campaign", "show", str(cid)), f"no campaign with id {cid}")
    runs = cli.json("history list", "history", "list")
    assert [(r["id"], r["campaign_deleted"], r["state"]) for r in runs] == [
        (later, False, "scheduled"), (cid, True, "terminated")]
    # the attempts of a deleted campaign are still there
    att2 = cli.json("campaign attempts", "campaign", "attempts", str(cid), "2")
    assert att2["attempts"] == before_delete["attempts"]
    one_error(cli("campaign", "list", "--state", "bogus"), "'bogus' is not one of", code=2)


def test_campaign_ids_are_never_reused_after_delete(cli: Cli) -> None:
    add_fire(cli)
    cid = cli.json("campaign start", "campaign", "start", "Fire")["id"]
    cli.ok("campaign", "stop", str(cid), "--yes")
    cli.ok("campaign", "delete", str(cid), "--yes")
    assert cli.json("campaign start", "campaign", "start", "Fire")["id"] == cid + 1


def test_threshold_above_the_recipients_at_launch(cli: Cli) -> None:
    add_fire(cli, "Fire", "--threshold", "3")
    one_error(cli("campaign", "start", "Fire", "--recipients", cli.csv("number\n201\n")),
              "threshold 3", "1 recipients")


# ----- settings -----


def test_settings_show_and_set(cli: Cli) -> None:
    first = cli.json("settings show", "settings", "show")
    assert (first["max_calls"], first["updated_by"]) == (None, None)
    cli.ok("settings", "set", "--max-campaigns", "2", "--max-calls", "10", "--max-internal",
           "8", "--max-external", "6")
    now = cli.json("settings show", "settings", "set", "--max-external", "none")
    assert (now["max_campaigns"], now["max_calls"], now["max_internal"], now["max_external"],
            now["updated_by"]) == (2, 10, 8, None, ADMIN)
    assert now["version"] == first["version"] + 2
    one_error(cli("settings", "set", "--max-calls", "-3"), "max-calls must be 0 or more")
    one_error(cli("settings", "set"), "nothing to set")
    # the daemon's scheduling pass reads the new limits at once
    s = cli.store()
    assert s.tick(now=time.time(), node="n").settings.limits.total == 10
    s.dispose()


# ----- history -----


def test_history_export_is_byte_identical_after_deleting_template_and_campaign(cli: Cli) -> None:
    add_fire(cli, "Fire", "--attempts", "2", "--retry-delay", "0")
    cid = cli.json("campaign start", "campaign", "start", "Fire")["id"]
    play(cli, Outcome.NO_ANSWER, status=487, reason="Request Terminated",
         numbers={"+390669820000"})
    cli.ok("campaign", "suspend", str(cid))
    cli.ok("campaign", "stop", str(cid), "--yes")
    j1 = cli.ok("history", "export", str(cid), "--format", "json")
    c1 = cli.ok("history", "export", str(cid), "--format", "csv")
    f1 = cli.tmp / "before.json"
    cli.ok("history", "export", str(cid), "--output", str(f1))
    shown = cli.json("history show", "history", "show", str(cid))
    assert json.loads(j1) == shown
    assert [r["number"] for r in shown["recipients"]] == ["101", "+390669820000", "102"]
    assert len(shown["attempts"]) == 3 and shown["run"]["state"] == "terminated"
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds[0] == "campaign_created" and kinds.count("attempt_ended") == 3
    assert ("campaign_state", "suspended") in [(e["kind"], e["detail"].get("new"))
                                               for e in shown["events"]]
    assert shown["settings"]["attempts"] == 2
    csv_records = [line.split(",", 1)[0] for line in c1.splitlines()[1:]]
    assert csv_records.count("run") == 1 and csv_records.count("recipient") == 3
    assert csv_records.count("attempt") == 3

    cli.ok("template", "delete", "Fire", "--yes")
    cli.ok("campaign", "delete", str(cid), "--yes")
    assert cli.ok("history", "export", str(cid), "--format", "json") == j1
    assert cli.ok("history", "export", str(cid), "--format", "csv") == c1
    f2 = cli.tmp / "after.json"
    cli.ok("history", "export", str(cid), "--output", str(f2))
    assert f1.read_bytes() == f2.read_bytes() == j1.encode()
    assert "status=487" in " ".join(cli.ok("history", "show", str(cid)).split())
    one_error(cli("history", "export", str(cid), "--format", "xml"),
              "'xml' is not one of 'json', 'csv'", code=2)
    one_error(cli("history", "show", "999"), "no run with id 999")


# ----- permissions and audit -----


COMMANDS_BY_ROLE: dict[str, list[list[str]]] = {
    "campaigns": [
        ["template", "add", "T2", "--audio", str(WAV)],
        ["template", "edit", "Fire", "--priority", "3"],
        ["template", "clone", "Fire", "Copy"],
        ["template", "disable", "Fire"],
        ["template", "enable", "Fire"],
        ["template", "recipients", "add", "Fire", "109"],
        ["template", "recipients", "move", "Fire", "109", "1"],
        ["template", "recipients", "remove", "Fire", "109"],
        ["campaign", "start", "Fire"],
        ["campaign", "suspend", "{cid}"],
        ["campaign", "resume", "{cid}"],
        ["campaign", "stop-recipient", "{cid}", "101", "--yes"],
        ["campaign", "stop", "{cid}", "--yes"],
        ["campaign", "delete", "{cid}", "--yes"],
        ["template", "delete", "Copy", "--yes"],
    ],
    "settings": [["settings", "set", "--max-calls", "9"]],
    "admin": [["operator", "add", "zed", "--role", "viewer"], ["operator", "remove", "zed"]],
}
READS = [["template", "list"], ["template", "show", "Fire"], ["campaign", "list"],
         ["settings", "show"], ["history", "list"], ["operator", "list"], ["audit", "list"]]


def test_each_role_is_refused_outside_its_permission_and_audit_has_exactly_the_changes(
        cli: Cli) -> None:
    add_fire(cli)
    cli.ok("operator", "add", "carol", "--role", "campaigns")
    cli.ok("operator", "add", "sam", "--role", "settings")
    cli.ok("operator", "add", "vic", "--role", "viewer")
    cli.ok("operator", "add", "ada", "--role", "campaigns", "--role", "settings", "--role",
           "admin")
    users = {"campaigns": "carol", "settings": "sam", "admin": "ada"}
    audit_before = cli.json("audit list", "audit", "list")
    cid = None
    for role, commands in COMMANDS_BY_ROLE.items():
        for template in commands:
            args = [a.replace("{cid}", str(cid)) for a in template]
            for who in ("carol", "sam", "vic", "nobody"):
                if who == users[role]:
                    continue
                line = one_error(cli(*args, user=who), "permission denied",
                                 f"needs the {role} role")
                assert who in line
            r = cli(*args, user=users[role])
            assert r.exit_code == 0, (args, r.stderr)
            if args[:2] == ["campaign", "start"]:
                found = re.match(r"campaign (\d+) ", r.stdout)
                assert found, r.stdout
                cid = int(found.group(1))
    for args in READS:
        for who in ("carol", "sam", "vic", "ada"):
            cli.ok(*args, user=who)
        one_error(cli(*args, user="nobody"), "permission denied", "not an operator")
    one_error(cli("init", user="vic"), "needs the admin role")
    after = cli.json("audit list", "audit", "list")[len(audit_before):]
    assert [(a["actor"], a["action"]) for a in after] == [
        ("carol", "template.add"), ("carol", "template.edit"), ("carol", "template.clone"),
        ("carol", "template.edit"), ("carol", "template.edit"), ("carol", "recipients.add"),
        ("carol", "recipients.move"), ("carol", "recipients.remove"), ("carol", "campaign.start"),
        ("carol", "campaign.suspend"), ("carol", "campaign.resume"),
        ("carol", "campaign.stop-recipient"), ("carol", "campaign.stop"),
        ("carol", "campaign.delete"), ("carol", "template.delete"), ("sam", "settings.set"),
        ("ada", "operator.add"), ("ada", "operator.remove")]
    edit = after[1]
    assert (edit["target"], edit["old"], edit["new"]) == ("template Fire", {"priority": 0},
                                                          {"priority": 3})
    assert (after[15]["old"], after[15]["new"]) == ({"max_calls": None}, {"max_calls": 9})
    since = cli.json("audit list", "audit", "list", "--since", after[-1]["at"])
    assert [a["id"] for a in since] == [after[-1]["id"]]


def test_init_makes_the_first_admin_and_the_last_admin_stays(cli: Cli) -> None:
    ops = cli.json("operator list", "operator", "list")
    assert [(o["name"], o["roles"]) for o in ops] == [(ADMIN, ["admin"])]
    cli.ok("init")  # an admin may upgrade again; nobody new becomes admin
    one_error(cli("operator", "remove", ADMIN), "last admin")
    one_error(cli("operator", "add", ADMIN, "--role", "viewer"), "last admin")
    one_error(cli("operator", "add", "x", "--role", "boss"), "'boss' is not one of 'admin'",
              code=2)
    one_error(cli("operator", "remove", "ghost"), "no operator named 'ghost'")


# ----- the CLI itself: help, examples, README -----


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name)


def all_commands() -> list[tuple[str, ...]]:
    return list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", all_commands(), ids=" ".join)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.stderr
    assert "Example:" in r.stdout, path


def test_readme_cli_at_a_glance_matches_the_app() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## CLI at a glance", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    listed: set[tuple[str, ...]] = set()
    groups = {p[0] for p in all_commands() if len(p) > 1}
    for line in block.splitlines():
        words = line.split()
        if not words or words[0] != "dialer":
            continue
        words = [w for w in words[1:] if not w.startswith(("-", "[", "<"))]
        if words and words[0] in groups:
            rest = words[1] if len(words) > 1 else ""
            if words[0] == "template" and rest == "recipients":
                listed |= {("template", "recipients", v) for v in words[2].split("|")}
            else:
                listed |= {(words[0], v) for v in rest.split("|")}
        elif words:
            listed.add((words[0],))
    assert listed == set(all_commands())


def test_completion_is_offered() -> None:
    r = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--install-completion" in r.stdout


# ----- properties -----


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(
    st.one_of(st.sampled_from(["101", "102", "+390669820000", "06 6982 0001", "12", "",
                               "abc", "+1", "999999999999999999"]),
              st.text(alphabet="0123456789+ -()x,\"", max_size=16)),
    st.text(alphabet="abc ,\"\n\r", max_size=6),
    st.sampled_from(["", "a@example.com", "nope", "x@y"])), max_size=6))
def test_import_never_crashes_nor_stores_a_partial_list(cli: Cli, rows: list[tuple[str, str, str]]
                                                        ) -> None:
    import csv as csv_mod
    import io

    buf = io.StringIO()
    w = csv_mod.writer(buf)
    w.writerow(["number", "name", "email"])
    w.writerows(rows)
    path = cli.csv(buf.getvalue(), "prop.csv")
    if cli("template", "show", "P").exit_code != 0:
        cli.ok("template", "add", "P", "--audio", str(WAV), "--recipients",
               cli.csv("number\n555\n", "seed.csv"))
    before = cli.json("template recipients list", "template", "recipients", "list", "P")
    r = cli("template", "recipients", "import", "P", path)
    after = cli.json("template recipients list", "template", "recipients", "list", "P")
    assert r.exit_code in (0, 1), (r.stdout, r.stderr, r.exception)
    assert "Traceback" not in r.stdout + r.stderr
    if r.exit_code == 1:
        assert after == before
        one_error(r)
    else:
        assert after[:len(before)] == before
        assert len(after) > len(before)
        cli.ok("template", "recipients", "import", "P", cli.csv("number\n555\n", "seed.csv"),
               "--replace")


@settings(max_examples=300, deadline=None)
@given(raw=st.text(max_size=25), region=st.sampled_from(["IT", "US", "GB", "DE"]))
def test_normalise_number_only_raises_validation_errors_and_is_idempotent(raw: str,
                                                                          region: str) -> None:
    rules = NumberRules(region=region)
    try:
        number, kind = normalise_number(raw, rules)
    except ValidationError:
        return
    assert normalise_number(number, rules) == (number, kind)
    if kind is Kind.EXTERNAL:
        assert re.fullmatch(r"\+[1-9][0-9]{1,14}", number)
    else:
        assert re.fullmatch(rules.extension_pattern, number)


def test_stop_at_threshold_is_offered_on_add_and_edit(cli: Cli) -> None:
    add_fire(cli, "Quick", "--threshold", "1", "--stop-at-threshold")
    shown = cli.json("template show", "template", "show", "Quick")
    assert shown["settings"]["keep_calling_after_threshold"] is False
    cli.ok("template", "edit", "Quick", "--keep-calling")
    shown = cli.json("template show", "template", "show", "Quick")
    assert shown["settings"]["keep_calling_after_threshold"] is True
    add_fire(cli, "Default")
    shown = cli.json("template show", "template", "show", "Default")
    assert shown["settings"]["keep_calling_after_threshold"] is True


def test_the_cli_choices_are_the_domains_values() -> None:
    """cli/choices.py spells each choice as an operator types it; each set is the domain's."""
    from cli import choices
    from dialer.core.domain import CampaignState, EmailPolicy, Kind
    from dialer.core.permissions import Role
    from media.prompts import LANGUAGES

    assert {c.value.replace("-", "_") for c in choices.Email} == {p.value for p in EmailPolicy}
    assert {c.value for c in choices.Language} == set(LANGUAGES)
    assert {c.value for c in choices.Kind} == {k.value for k in Kind}
    assert {c.value for c in choices.RoleName} == {r.value for r in Role}
    assert {c.value for c in choices.State} == {s.value for s in CampaignState}


def test_every_command_a_script_would_read_has_json(cli: Cli) -> None:
    """Issue 14: the state-changing commands print their result as JSON with --json."""
    add_fire(cli)

    def js(*args: str) -> Any:
        r = cli(*args, "--json")
        assert r.exit_code == 0, (args, r.stdout, r.stderr)
        data = json.loads(r.stdout)
        name = " ".join(a for a in args[:3] if not a[0].isupper() and not a[0].isdigit())
        for command in (name, " ".join(name.split()[:2])):
            if command in SCHEMAS:
                jsonschema.validate(data, SCHEMAS[command])
                checked.add(command)
                break
        return data

    checked: set[str] = set()
    assert js("template", "disable", "Fire") == {"name": "Fire", "enabled": False,
                                                  "changed": True}
    assert js("template", "enable", "Fire")["enabled"] is True
    added = js("template", "recipients", "add", "Fire", "109", "--name", "Ugo")
    assert added == {"number": "109", "kind": "internal", "position": 4}
    assert js("template", "recipients", "move", "Fire", "109", "1")["position"] == 1
    assert js("template", "recipients", "remove", "Fire", "109")["removed"] is True
    assert js("operator", "add", "ada", "--role", "viewer") == {"operator": "ada",
                                                                "roles": ["viewer"]}
    assert js("operator", "remove", "ada")["removed"] is True
    cid = js("campaign", "start", "Fire")["id"]
    text = cli.ok("campaign", "start", "Fire", "--name", "Second")
    assert re.search(r"campaign \d+ 'Second': starts .*, 3 recipients", text), text
    assert js("campaign", "suspend", str(cid)) == {"id": cid, "state": "suspended"}
    assert js("campaign", "resume", str(cid))["state"] in ("scheduled", "active", "blocked")
    assert js("campaign", "stop", str(cid), "--yes") == {"id": cid, "state": "terminated"}
    assert js("campaign", "delete", str(cid), "--yes") == {"id": cid, "deleted": True}
    assert checked >= {"campaign suspend", "campaign resume", "campaign stop",
                       "template recipients add", "operator add"}
