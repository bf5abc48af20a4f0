"""Launch from monitoring end to end: a real Prometheus Alertmanager (Debian's
``prometheus-alertmanager``, its own configuration in tmp) notifies the real ``dialer serve``
through its webhook receiver with a bearer token; an alert posted to Alertmanager's API launches
one campaign, Alertmanager's repeated notifications (every 2 s here) and a restart of the daemon
launch nothing more, and the alert's resolution stops the campaign (``stop_on_resolve``)."""

from __future__ import annotations

import datetime as dt
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.alertmanager import Alertmanager, binary
from testkit.harness import Dialer
from testkit.net import free_port

pytestmark = pytest.mark.skipif(binary() is None, reason="Alertmanager is not installed "
                                "(apt-get install prometheus-alertmanager; scripts/test.sh "
                                "installs it as root)")

TOKEN = "e2e-alertmanager-token-4711"
LABELS = {"alertname": "PlantFire", "severity": "critical", "site": "plant-2"}


def metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_a_real_alertmanager_launches_one_campaign_and_its_resolution_stops_it(
        tmp_path: Path) -> None:
    hook_port, metrics_port, nobody = free_port(), free_port(), free_port()
    d = Dialer(tmp_path / "dialer", internal={"uri": f"sip:127.0.0.1:{nobody}"},
               external={"uri": f"sip:127.0.0.1:{nobody}"}, workers=1,
               metrics_port=metrics_port, env={"DIALER_AM_TOKEN": TOKEN}, tables=f"""
[alertmanager]
bind = "127.0.0.1"
port = {hook_port}
token_env = "DIALER_AM_TOKEN"

[[alertmanager.routes]]
matchers = ['alertname="PlantFire"', 'severity=~"critical|page"']
template = "Fire"
stop_on_resolve = true
""")
    am = Alertmanager(tmp_path / "alertmanager", token=TOKEN,
                      webhook_url=f"http://127.0.0.1:{hook_port}/alertmanager")
    try:
        # nobody answers on the trunk: the first call ends unreachable, the retry is an hour
        # away, so the campaign stays active until the alert resolves
        d.template("Fire", ["101", "102"], attempts=3, retry_delay=3600)
        d.cli("operator", "add", "alertmanager", "--role", "campaigns")
        d.serve()
        am.start()
        starts = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=30)
        am.post_alert(LABELS, starts_at=starts, ends_at=starts + dt.timedelta(hours=1),
                      annotations={"summary": "Fire in hall 2"})

        [camp] = d.wait(lambda: d.store.list_campaigns() or None, 60,
                        "Alertmanager's notification to launch a campaign")
        cid = camp["id"]
        detail = d.campaign(cid)
        assert (detail["name"], detail["template"]) == ("PlantFire", "Fire")
        assert detail["alert"]["labels"] == LABELS
        assert detail["alert"]["starts_at"] == starts.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        assert len(detail["alert"]["fingerprint"]) == 16  # Alertmanager's own
        assert metric(metrics_port, "dialer_alert_launches_total", alertname="PlantFire",
                      template="Fire") == 1

        # Alertmanager repeats the firing notification every repeat_interval: no relaunch
        d.wait(lambda: metric(metrics_port, "dialer_alertmanager_alerts_total",
                              action="duplicate") >= 2 or None, 60,
               "two repeated notifications")
        assert [c["id"] for c in d.store.list_campaigns()] == [cid]
        d.wait_state(cid, ["active"], 30)

        # a restarted daemon (a new receiver over the same database) does not relaunch either
        assert d.stop() == 0
        d.serve()
        d.wait(lambda: metric(metrics_port, "dialer_alertmanager_alerts_total",
                              action="duplicate") >= 1 or None, 60,
               "a repeated notification to the restarted daemon")
        assert [c["id"] for c in d.store.list_campaigns()] == [cid]

        # the alert resolves (Prometheus sends it with endsAt now): the campaign stops
        am.post_alert(LABELS, starts_at=starts, ends_at=dt.datetime.now(dt.UTC))
        final = d.wait_state(cid, ["terminated"], 60)
        assert final["alert"]["stopped_on_resolve"] is True
        assert [c["id"] for c in d.store.list_campaigns()] == [cid]
        events = d.store.events_of(cid)
        assert [e["kind"] for e in events if e["kind"].startswith("alert_")] == [
            "alert_firing", "alert_resolved"]
        stops = [a for a in d.store.audit_list() if a["action"] in ("campaign.start",
                                                                     "campaign.stop")]
        assert [(a["action"], a["actor"]) for a in stops] == [
            ("campaign.start", "alertmanager"), ("campaign.stop", "alertmanager")]
        assert TOKEN not in d.log_text()
    finally:
        am.stop()
        d.stop()
