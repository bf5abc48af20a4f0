"""The metrics of the live daemon follow a SIPp-driven campaign: scraped over HTTP from the real
``dialer serve``, checked against what happened (attempts by outcome and status class,
confirmations, calls in progress back to 0) and by ``promtool check metrics``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.harness import Dialer

pytestmark = pytest.mark.sip

MESSAGE = 1.0
KEY1_MS = 1000
KEY9_MS = int((MESSAGE + 1.5) * 1000)
EXTERNAL = "+390669820000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body: bytes = resp.read()
        return body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return sum(v for (n, ls), v in values.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


def test_metrics_follow_a_sipp_campaign_and_pass_promtool(start_sipp, tmp_path: Path) -> None:
    answer = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    busy = start_sipp("busy")
    port = free_port()
    d = Dialer(tmp_path / "dialer", internal={"uri": answer.uri}, external={"uri": busy.uri},
               metrics_port=port)
    try:
        d.template("T", ["1001", EXTERNAL], message=MESSAGE, attempts=2, retry_delay=0.3,
                   ring_timeout=10)
        cid = d.start_campaign("T")
        d.serve()
        d.wait_state(cid, ["completed", "incomplete"], 90)

        def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            v = samples(scrape(port))
            # the per-campaign gauges refresh every few seconds: wait for the final state
            return v if total(v, "dialer_campaigns", state="incomplete") == 1 else None

        values = d.wait(settled, 20, "dialer_campaigns{state=incomplete} to be 1")
        assert total(values, "dialer_attempts_total", outcome="contacted") == 1
        assert total(values, "dialer_attempts_total", outcome="busy", status_class="4xx") == 2
        assert total(values, "dialer_attempts_total") == 3
        assert total(values, "dialer_confirmations_total", what="answer") == 1
        assert total(values, "dialer_confirmations_total", what="listen") == 1
        assert total(values, "dialer_calls_in_progress") == 0
        assert total(values, "dialer_calls_in_progress", kind="internal", trunk="internal") == 0
        assert total(values, "dialer_worker_busy_slots") == 0
        assert total(values, "dialer_trunk_registered", trunk="internal") == 1
        assert total(values, "dialer_call_setup_seconds_count", kind="internal") == 1
        assert total(values, "dialer_scheduler_decision_seconds_count") > 0
        assert total(values, "dialer_workers_ready") >= 1
        # a finished campaign keeps no per-campaign series (bounded cardinality)
        assert total(values, "dialer_recipients", campaign=str(cid)) == 0

        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool is not installed (Debian package prometheus)")
        text = scrape(port)
        check = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        d.stop()
