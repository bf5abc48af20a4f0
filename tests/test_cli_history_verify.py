"""``dialer history verify``: its one line and exit status on an untouched, a tampered, a live
and an unsealed run; the chain head in the exports (JSON, CSV), ``history show``,
``campaign show`` and the HTML report, and a copy of an export proving the record."""

from __future__ import annotations

import csv
import io
import json
import re

from sqlalchemy import text

from dialer.core.domain import Outcome
from tests.test_cli_surface import SCHEMAS, Cli, add_fire, cli, play  # noqa: F401 - fixture

HEX64 = re.compile(r"[0-9a-f]{64}")


def flat(output: str) -> str:
    """Terminal output without spaces, line breaks and table borders (a head may wrap)."""
    return re.sub(r"[\s\u2500-\u257f]", "", output)


def finished(cli: Cli) -> int:
    """A run played to its end and stopped: its chain is sealed."""
    add_fire(cli, "Fire", "--attempts", "1")
    cid: int = cli.json("campaign start", "campaign", "start", "Fire")["id"]
    play(cli, Outcome.BUSY, status=486, reason="Busy Here", numbers={"+390669820000"})
    cli.ok("campaign", "stop", str(cid), "--yes")
    return cid


def test_an_untouched_run_verifies_in_one_line_and_its_head_is_everywhere(cli: Cli) -> None:
    cid = finished(cli)
    r = cli("history", "verify", str(cid))
    assert r.exit_code == 0, (r.stdout, r.stderr)
    [line] = r.stdout.splitlines()
    m = re.fullmatch(rf"run {cid}: (\d+) rows verified, chain head ([0-9a-f]{{64}})", line)
    assert m, line
    rows, head = int(m.group(1)), m.group(2)

    doc = json.loads(cli.ok("history", "export", str(cid), "--format", "json"))
    assert doc["run"]["chain"]["head"] == head and doc["run"]["chain"]["rows"] == rows
    hashes = [x["chain_hash"] for x in doc["attempts"] + doc["events"]]
    assert len(hashes) == rows and all(HEX64.fullmatch(h) for h in hashes) and head in hashes
    table = list(csv.DictReader(io.StringIO(cli.ok("history", "export", str(cid),
                                                   "--format", "csv"))))
    assert [r["chain_hash"] for r in table if r["record"] == "run"] == [head]
    assert sorted(r["chain_hash"] for r in table if r["record"] in ("attempt", "event")) == \
        sorted(hashes)
    for command in ("history", "campaign"):  # the head on a line of its own, never cut
        shown = cli.ok(command, "show", str(cid))
        assert f"chain head {head}" in [line.strip() for line in shown.splitlines()], shown
    assert "sealed" in flat(cli.ok("history", "show", str(cid)))
    assert cli.json("campaign show", "campaign", "show", str(cid))["chain"]["head"] == head
    assert [x["chain_head"] for x in cli.json("history list", "history", "list")] == [head]
    page = cli.tmp / "r.html"
    cli.ok("history", "report", str(cid), "--output", str(page))
    assert f"chain head <code>{head}</code>" in page.read_text()

    verdict = cli.json("history verify", "history", "verify", str(cid), "--head", head)
    assert verdict["ok"] and verdict["status"] == "intact" and verdict["head_at"] == rows - 1
    assert verdict["findings"] == []


def test_a_tampered_run_names_the_row_and_exits_1(cli: Cli) -> None:
    cid = finished(cli)
    head = cli.json("history verify", "history", "verify", str(cid))["head"]
    store = cli.store()
    try:
        with store.engine.begin() as con:
            victim = con.execute(text("SELECT id FROM attempts WHERE outcome = 'busy'")).scalar()
            con.execute(text("UPDATE attempts SET outcome = 'contacted', status = 200 "
                             "WHERE id = :id"), {"id": victim})
    finally:
        store.dispose()
    r = cli("history", "verify", str(cid))
    assert r.exit_code == 1
    assert r.stdout.splitlines() == [
        f"run {cid}: chain broken at attempt {victim}: altered (its content does not give "
        "its hash)"]
    r = cli("history", "verify", str(cid), "--json")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["status"] == "broken" and data["head"] == head
    assert [(f["kind"], f["id"], f["problem"]) for f in data["findings"]] == [
        ("attempt", victim, "altered")]
    import jsonschema

    jsonschema.validate(data, SCHEMAS["history verify"])


def test_a_live_run_and_a_run_never_sealed_exit_3(cli: Cli) -> None:
    add_fire(cli, "Fire")
    cid = cli.json("campaign start", "campaign", "start", "Fire")["id"]
    r = cli("history", "verify", str(cid))
    assert (r.exit_code, r.stdout) == (3, f"run {cid}: not sealed yet (sealed when the run is "
                                          "over)\n")
    cli.ok("campaign", "stop", str(cid), "--yes")
    assert cli("history", "verify", str(cid)).exit_code == 0
    store = cli.store()
    try:  # as revision 0008 leaves a run that ended before it
        with store.engine.begin() as con:
            con.execute(text("UPDATE runs SET chain_head = NULL, chain_rows = NULL"))
    finally:
        store.dispose()
    r = cli("history", "verify", str(cid), "--json")
    assert r.exit_code == 3 and json.loads(r.stdout)["status"] == "not_sealed"
    assert "not sealed" in cli.ok("history", "show", str(cid))


def test_a_head_that_is_not_this_chains_is_refused(cli: Cli) -> None:
    cid = finished(cli)
    r = cli("history", "verify", str(cid), "--head", "ab" * 32)
    assert r.exit_code == 1 and "the chain head given is not in this chain" in r.stdout
    r = cli("history", "verify", str(cid), "--head", "xyz")
    assert r.exit_code == 2 and "64 hex digits" in r.stderr
    r = cli("history", "verify", "999")
    assert r.exit_code == 1 and r.stderr.startswith("error: no run with id 999")
