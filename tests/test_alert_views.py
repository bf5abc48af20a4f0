"""Which alert launched a run, wherever a run is shown: ``campaign show`` (and ``--json``), the
history (``history show``, both exports, ``history list``'s actor), the HTML report; and that it
stays after the campaign and its template are deleted, like the rest of the history."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

from dialer.core.alerts import Alert, AlertAction, AlertRoute, AlertStatus, parse_matcher
from dialer.core.permissions import Role
from dialer.report import render_report
from dialer.storage.store import SqlStore
from tests.test_cli_surface import SCHEMAS

FIRING = Alert(status=AlertStatus.FIRING, fingerprint="a1b2c3d4e5f60718",
               starts_at="2027-01-15T08:00:00.000000Z", ends_at=None,
               labels={"alertname": "PlantFire", "severity": "critical"},
               annotations={"summary": "Fire in hall 2"},
               generator_url="http://prometheus.example:9090/graph")
ROUTE = AlertRoute(index=1, matchers=(parse_matcher('alertname="PlantFire"'),),
                   template="Fire", stop_on_resolve=True)


def launched(db: str, cli: Callable[..., Any], tmp_path: Path) -> tuple[SqlStore, int]:
    csv_file = tmp_path / "r.csv"
    csv_file.write_text("number,name\n101,Anna\n102,Bruno\n")
    r = cli("template", "add", "Fire", "--tts", "Fire in hall 2", "--recipients", str(csv_file))
    if r.exit_code != 0:  # no espeak-ng: a recorded message instead
        from testkit.harness import tone_wav

        wav = tone_wav(tmp_path / "m.wav", 1.0)
        r = cli("template", "add", "Fire", "--audio", str(wav), "--recipients", str(csv_file))
    assert r.exit_code == 0, r.output
    store = SqlStore(db)
    store.set_operator("alertmanager", frozenset({Role.CAMPAIGNS}), actor="admin", now=1.0)
    action, cid = store.alert_fired(FIRING, ROUTE, actor="alertmanager", now=1_800_000_000.0)
    assert action is AlertAction.LAUNCHED and cid is not None
    return store, cid


def test_campaign_show_says_which_alert_launched_it(db: str, cli_ready: Callable[..., Any],
                                                    tmp_path: Path) -> None:
    store, cid = launched(db, cli_ready, tmp_path)
    r = cli_ready("campaign", "show", str(cid))
    assert r.exit_code == 0, r.output
    assert ("launched by Alertmanager alert PlantFire (fingerprint a1b2c3d4e5f60718, firing "
            "since 2027-01-15T08:00:00.000000Z, route 1)") in " ".join(r.stdout.split())
    data = json.loads(cli_ready("campaign", "show", str(cid), "--json").stdout)
    jsonschema.validate(data, SCHEMAS["campaign show"])
    assert data["alert"]["alertname"] == "PlantFire"
    assert data["alert"]["labels"] == {"alertname": "PlantFire", "severity": "critical"}
    store.alert_resolved(FIRING, ROUTE, actor="alertmanager", now=1_800_000_100.0)
    r = cli_ready("campaign", "show", str(cid))
    assert "campaign stopped" in " ".join(r.stdout.split())
    # a campaign an operator launched says nothing of alerts
    other = json.loads(cli_ready("campaign", "start", "Fire", "--json").stdout)["id"]
    assert json.loads(cli_ready("campaign", "show", str(other), "--json").stdout)["alert"] is None
    assert "launched by" not in cli_ready("campaign", "show", str(other)).stdout
    store.dispose()


def test_the_history_its_exports_and_the_report_keep_the_alert(
        db: str, cli_ready: Callable[..., Any], tmp_path: Path) -> None:
    store, cid = launched(db, cli_ready, tmp_path)
    store.alert_resolved(FIRING, ROUTE, actor="alertmanager", now=1_800_000_100.0)
    listed = json.loads(cli_ready("history", "list", "--json").stdout)
    assert [(r["id"], r["created_by"]) for r in listed] == [(cid, "alertmanager")]
    shown = cli_ready("history", "show", str(cid))
    assert shown.exit_code == 0, shown.output
    assert "Alertmanager alert PlantFire" in " ".join(shown.stdout.split())
    before = cli_ready("history", "export", str(cid), "--format", "json").stdout
    history = json.loads(before)
    jsonschema.validate(history, SCHEMAS["history show"])
    assert history["run"]["alert"]["fingerprint"] == "a1b2c3d4e5f60718"
    assert history["run"]["alert"]["stopped_on_resolve"] is True
    assert [e["kind"] for e in history["events"] if e["kind"].startswith("alert_")] == [
        "alert_firing", "alert_resolved"]
    rows = list(csv.DictReader(io.StringIO(
        cli_ready("history", "export", str(cid), "--format", "csv").stdout)))
    run = json.loads(rows[0]["data"])
    assert rows[0]["record"] == "run" and rows[0]["actor"] == "alertmanager"
    assert run["alert"]["alertname"] == "PlantFire"
    assert {r["kind"] for r in rows if r["record"] == "event"} >= {"alert_firing",
                                                                    "alert_resolved"}
    html = render_report(history)
    assert "Launched by" in html and "Alertmanager alert PlantFire" in html
    out = tmp_path / "run.html"
    assert cli_ready("history", "report", str(cid), "--output", str(out)).exit_code == 0
    assert "Alertmanager alert PlantFire" in out.read_text()
    # the campaign and its template deleted: the history, alert included, stays the same
    assert cli_ready("campaign", "delete", str(cid), "--yes").exit_code == 0
    assert cli_ready("template", "delete", "Fire", "--yes").exit_code == 0
    assert cli_ready("history", "export", str(cid), "--format", "json").stdout == before
    store.dispose()
