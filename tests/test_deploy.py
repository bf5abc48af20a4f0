"""What ships in deploy/: the Prometheus rules (checked and unit-tested with promtool), the Grafana
dashboard (valid, every metric it names exists, every query parses) and the systemd unit."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dialer.metrics import Metrics
from tests.test_metrics import fill

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "dialer-rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "dialer-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dialer-dashboard.json"
UNIT = ROOT / "deploy" / "systemd" / "dialer.service"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")

METRIC = re.compile(r"\bdialer_[a-z0-9_]+")


def exposed_names() -> set[str]:
    """Every sample name the daemon's registry exposes once each metric has a value."""
    m = Metrics()
    fill(m)
    return {s.name for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dash["panels"])
    return exprs


@needs_promtool
def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    done = promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_use_only_exposed_metrics() -> None:
    names = exposed_names()
    used = set(METRIC.findall(RULES.read_text()))
    assert used, "the rules name no dialer metric"
    assert used <= names, f"unknown metrics in the rules: {sorted(used - names)}"


def test_the_dashboard_is_valid_grafana_json_with_the_expected_panels() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    titles = {p["title"] for p in dash["panels"]}
    for wanted in ("Calls in progress by kind and trunk", "Attempts by outcome",
                   "Confirmations per minute", "Recipients by state", "Trunk registration",
                   "Worker pool", "Scheduler decision latency",
                   "Call setup time (INVITE to answer)"):
        assert wanted in titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
    assert any("histogram_quantile(0.99" in e and "dialer_scheduler_decision_seconds_bucket" in e
               for e in dashboard_exprs())


def test_every_metric_the_dashboard_names_exists() -> None:
    names = exposed_names()
    used = {n for e in dashboard_exprs() for n in METRIC.findall(e)}
    assert len(used) >= 12
    assert used <= names, f"unknown metrics in the dashboard: {sorted(used - names)}"


@needs_promtool
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule, Grafana's variables filled in)."""
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        expr = (expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
                .replace("$campaign", ".*"))
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_systemd_unit_runs_serve_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    svc = unit["Service"]
    assert svc["ExecStart"].endswith("dialer serve --config /etc/dialer/dialer.toml")
    assert svc["EnvironmentFile"].lstrip("-") == "/etc/dialer/secrets.env"
    assert int(svc["LimitNOFILE"]) >= 65536
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
                "ProtectKernelTunables", "RestrictAddressFamilies", "SystemCallFilter",
                "User", "Restart", "KillSignal", "TimeoutStopSec"):
        assert key in svc, key
    assert svc["KillSignal"] == "SIGTERM"  # stop: drain
    # The SIP workers outlive the daemon: systemd signals it alone, and a restart hands the calls
    # over to the next daemon (SIGUSR1) instead of draining them.
    assert svc["KillMode"] == "process"
    assert svc["RestartKillSignal"] == "SIGUSR1"
    # the drain ([sip] drain_timeout's default) and then up to 10 s of hang-ups, with a margin
    from dialer.config import Config

    drain = Config(path=None, database_url="sqlite://").drain_timeout
    assert int(svc["TimeoutStopSec"].rstrip("s")) >= drain + 10 + 10


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian package systemd)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "dialer.service"
    # verify wants the ExecStart binary to exist: point it at one that does
    unit.write_text(UNIT.read_text().replace("/opt/dialer/venv/bin/dialer", "/bin/true"))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if str(unit) in line]
    assert not problems, done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian package systemd)")
def test_systemd_security_exposure_is_low(tmp_path: Path) -> None:
    unit = tmp_path / "dialer.service"
    unit.write_text(UNIT.read_text())
    # --threshold: fail above an exposure of 2.5 (of 10; "OK" is below 4)
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=25",
                           str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_every_alert_has_a_runbook_in_operating_md() -> None:
    """Issue 14: each rule links its runbook, a section of docs/operating.md named after it."""
    docs = (ROOT / "docs" / "operating.md").read_text()
    blocks = RULES.read_text().split("- alert: ")[1:]
    assert len(blocks) >= 15
    for block in blocks:
        name = block.split()[0]
        url = re.search(r'runbook_url: "([^"]+)"', block)
        assert url, f"{name} has no runbook_url"
        assert url.group(1) == f"file:///opt/dialer/src/docs/operating.md#{name.lower()}"
        assert f"\n### {name}\n" in docs, f"no runbook section for {name}"
    for needed in ("DialerAbsent", "DialerCampaignBlocked", "DialerPoolNotReady"):
        assert f"- alert: {needed}\n" in RULES.read_text()
