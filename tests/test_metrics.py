"""The daemon's Prometheus metrics: every metric filled, the exposition checked by promtool."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dialer.core.domain import CampaignState, Limits, Outcome, RecipientState
from dialer.metrics import Metrics, status_class

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered exposition: (name, sorted labels) -> value."""
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: Metrics, metric: str, **labels: str) -> float | None:
    return samples(m).get((metric, tuple(sorted(labels.items()))))


def fill(m: Metrics) -> None:
    """Give every metric at least one sample, the way a running daemon would."""
    m.record_email(True)
    m.alert_request("ok")
    m.alert_handled("launched", "PlantFire", "Fire")
    m.update_campaigns([
        {"id": 1, "state": "active", "idle": 3, "active": 2, "contacted": 4, "failed": 1,
         "stopped": 0, "name": "Fire drill", "template": "Fire"},
        {"id": 2, "state": "suspended", "idle": 5},
        {"id": 3, "state": "completed", "contacted": 7},
    ])
    m.set_calls_in_progress({("internal", "internal"): 2, ("external", "external"): 1})
    for outcome, status in ((Outcome.CONTACTED, 200), (Outcome.BUSY, 486),
                            (Outcome.NO_ANSWER, 487), (Outcome.UNREACHABLE, 503),
                            (Outcome.REJECTED, 603), (Outcome.WORKER_LOST, None)):
        m.record_attempt(outcome.value, status)
    m.progress("confirmation", "answer")
    m.progress("confirmation", "listen")
    m.progress("transfer", "connected")
    m.set_limits(Limits(total=10, internal=8, external=6), 3)
    m.set_trunk("internal", True, 200)
    m.set_trunk("external", False, 403)
    m.set_trunk_health("external", False)
    m.set_pool(size=3, ready=3, busy=3, slots=12, late=1)
    m.worker_restarts.inc()
    m.scheduler_seconds.observe(0.003)
    m.call_started("a1", "internal", 100.0)
    m.call_ringing("a1", 100.2)
    m.call_answered("a1", 104.0)
    m.call_ended("a1", 130.0)
    m.call_started("a2", "external", 100.0)
    m.call_ringing("a2", 101.0)
    m.call_ended("a2", 131.0)  # rang out


def test_every_metric_has_samples_and_follows_the_naming_conventions() -> None:
    m = Metrics()
    fill(m)
    families = list(text_string_to_metric_families(m.render().decode()))
    names = {f.name for f in families}
    assert names >= {
        "dialer_campaigns", "dialer_campaign_state", "dialer_recipients",
        "dialer_calls_in_progress", "dialer_attempts", "dialer_confirmations",
        "dialer_max_calls", "dialer_max_active_campaigns", "dialer_trunk_registered",
        "dialer_trunk_registration_status_code", "dialer_worker_pool_size", "dialer_workers_ready",
        "dialer_worker_pool_ceiling", "dialer_node_call_ceiling",
        "dialer_worker_slots", "dialer_worker_busy_slots", "dialer_worker_restarts",
        "dialer_scheduler_decision_seconds", "dialer_call_setup_seconds",
        "dialer_call_ring_seconds"}
    assert names >= {"dialer_alertmanager_requests", "dialer_alertmanager_alerts",
                     "dialer_alert_launches"}
    assert names >= {"dialer_campaign_info", "dialer_emails", "dialer_build_info",
                      "process_cpu_seconds", "process_resident_memory_bytes", "python_info"}
    for f in families:
        if f.name.startswith(("process_", "python_")):  # prometheus-client's own collectors
            continue
        assert f.name.startswith("dialer_")
        assert f.samples, f"{f.name} has no sample"
        if f.type == "counter":
            assert any(s.name == f.name + "_total" for s in f.samples)
        if f.type == "histogram":
            assert f.name.endswith("_seconds")


@needs_promtool
def test_promtool_check_metrics_accepts_the_exposition(tmp_path: Path) -> None:
    m = Metrics()
    fill(m)
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=m.render(), capture_output=True,
                          timeout=30)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


@needs_promtool
def test_the_http_endpoint_serves_the_same_metrics() -> None:
    m = Metrics()
    fill(m)
    m.serve("127.0.0.1", 0)
    try:
        assert m.port
        with urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=5) as resp:
            body = resp.read()
    finally:
        m.stop()
    assert b'dialer_calls_in_progress{kind="internal",trunk="internal"} 2.0' in body
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                          timeout=30)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


@pytest.mark.parametrize("status, expected", [
    (None, "none"), (0, "none"), (99, "none"), (100, "1xx"), (180, "1xx"), (200, "2xx"),
    (302, "3xx"), (404, "4xx"), (487, "4xx"), (503, "5xx"), (603, "6xx"), (699, "6xx"),
    (700, "none"),
])
def test_status_class(status: int | None, expected: str) -> None:
    assert status_class(status) == expected


def test_recipient_series_exist_only_for_live_campaigns() -> None:
    m = Metrics()
    m.update_campaigns([{"id": 1, "state": "active", "idle": 2},
                        {"id": 2, "state": "blocked", "idle": 4}])
    assert value(m, "dialer_recipients", campaign="1", state="idle") == 2
    assert value(m, "dialer_recipients", campaign="2", state="contacted") == 0
    assert value(m, "dialer_campaign_state", campaign="2", state="blocked") == 1
    assert value(m, "dialer_campaign_state", campaign="2", state="active") == 0
    # campaign 1 completes, 2 terminates, 3 appears
    m.update_campaigns([{"id": 1, "state": "completed", "contacted": 2},
                        {"id": 2, "state": "terminated", "idle": 4},
                        {"id": 3, "state": "scheduled", "idle": 9}])
    labelled = {dict(k[1]).get("campaign") for k in samples(m)
                if k[0] in ("dialer_recipients", "dialer_campaign_state")}
    assert labelled == {"3"}
    assert value(m, "dialer_campaigns", state="completed") == 1
    assert value(m, "dialer_campaigns", state="active") == 0
    assert value(m, "dialer_campaigns", state="scheduled") == 1
    # the explicit API removes campaigns no longer given
    m.set_campaign_recipients({4: {"idle": 1}})
    labelled = {dict(k[1]).get("campaign") for k in samples(m) if k[0] == "dialer_recipients"}
    assert labelled == {"4"}
    assert value(m, "dialer_recipients", campaign="4", state=RecipientState.FAILED.value) == 0


def test_every_campaign_state_is_always_exported() -> None:
    m = Metrics()
    for state in CampaignState:
        assert value(m, "dialer_campaigns", state=state.value) == 0


def test_unlimited_limits_have_no_series() -> None:
    m = Metrics()
    m.set_limits(Limits(total=10, internal=None, external=6), 2)
    assert value(m, "dialer_max_calls", scope="total") == 10
    assert value(m, "dialer_max_calls", scope="internal") is None
    assert value(m, "dialer_max_active_campaigns") == 2
    m.set_limits(Limits(), None)
    names = {k[0] for k in samples(m)}
    assert "dialer_max_calls" not in names and "dialer_max_active_campaigns" not in names
    m.set_limits(Limits(internal=4), 5)
    assert value(m, "dialer_max_calls", scope="internal") == 4
    assert value(m, "dialer_max_active_campaigns") == 5


def test_calls_in_progress_drop_to_zero_when_not_given() -> None:
    m = Metrics()
    m.set_calls_in_progress({("internal", "internal"): 3, ("external", "external"): 1})
    m.set_calls_in_progress({("external", "external"): 2})
    assert value(m, "dialer_calls_in_progress", kind="internal", trunk="internal") == 0
    assert value(m, "dialer_calls_in_progress", kind="external", trunk="external") == 2


def test_the_daemons_current_calls_keep_working() -> None:
    """daemon.py as it is today: calls.labels(kind), attempts.labels(outcome), and the rest."""
    m = Metrics()
    m.calls.labels("internal").set(2)
    m.attempts.labels("busy").inc()
    m.confirmations.labels("answer").inc()
    m.trunk_registered.labels("internal").set(1)
    m.workers_ready.set(1)
    m.workers_busy.set(2)
    m.worker_restarts.inc()
    m.scheduler_seconds.observe(0.001)
    assert value(m, "dialer_calls_in_progress", kind="internal", trunk="internal") == 2
    assert value(m, "dialer_attempts_total", outcome="busy", status_class="none") == 1
    assert value(m, "dialer_confirmations_total", what="answer") == 1
    assert value(m, "dialer_worker_restarts_total") == 1


def test_setup_and_ring_times() -> None:
    m = Metrics()
    m.call_started("a", "internal", 10.0)
    m.call_ringing("a", 10.5)
    m.call_ringing("a", 11.0)  # a second 180 does not restart the ring
    m.call_answered("a", 14.5)
    m.call_ended("a", 40.0)
    m.call_started("b", "external", 10.0)
    m.call_ringing("b", 12.0)
    m.call_ended("b", 42.0)  # never answered: rang 30 s
    m.call_started("c", "external", 10.0)
    m.call_ended("c", 10.1)  # failed at once: neither setup nor ring time
    m.call_started("d", "external", 0.0)
    m.call_ended("d", 9.0, answered_at=3.0)  # answer known only from the end report
    assert value(m, "dialer_call_setup_seconds_sum", kind="internal") == pytest.approx(4.5)
    assert value(m, "dialer_call_ring_seconds_sum", kind="internal") == pytest.approx(4.0)
    assert value(m, "dialer_call_ring_seconds_count", kind="external") == 1
    assert value(m, "dialer_call_ring_seconds_sum", kind="external") == pytest.approx(30.0)
    assert value(m, "dialer_call_setup_seconds_count", kind="external") == 1
    assert value(m, "dialer_call_setup_seconds_sum", kind="external") == pytest.approx(3.0)
    m.call_ringing("unknown", 1.0)  # events of calls not tracked are ignored
    m.call_answered("unknown", 1.0)
    m.call_ended("unknown", 1.0)


def test_ecosystem_series_build_info_campaign_names_and_no_created() -> None:
    """Issue 14: process_* and build info, a campaign's name by its id, e-mail counts, and no
    _created series doubling every counter."""
    m = Metrics()
    fill(m)
    text = m.render().decode()
    assert "_created" not in text
    assert value(m, "dialer_campaign_info", campaign="1", name="Fire drill", template="Fire") == 1
    assert value(m, "dialer_emails_total", result="sent") == 1
    assert value(m, "dialer_emails_total", result="failed") == 0
    build = [k for k in samples(m) if k[0] == "dialer_build_info"]
    assert len(build) == 1 and dict(build[0][1])["version"]
    assert (value(m, "process_resident_memory_bytes") or 0) > 0
    m.update_campaigns([{"id": 1, "state": "completed", "name": "Fire drill", "template": "Fire"},
                        {"id": 2, "state": "active", "name": "Flood", "template": "Flood"}])
    assert value(m, "dialer_campaign_info", campaign="1", name="Fire drill",
                 template="Fire") is None  # over: its series goes, as the recipients' do
    assert value(m, "dialer_campaign_info", campaign="2", name="Flood", template="Flood") == 1
