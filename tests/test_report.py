"""The HTML report of a run: computed series, self-containment, escaping, and the page as headless
Chromium renders it (screenshot and DOM).

The fixtures were recorded from a real ``SqlStore`` driving a 24-recipient campaign (suspended and
resumed, one recipient stopped, retries, every outcome kind): ``report_history.json`` is
``run_history(1)``, ``report_campaign.json`` holds ``campaign_detail(1)``, ``attempts_of(1)`` and
``events_of(1)`` of the same run.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dialer.report import Point, chart_svg, history_from_campaign, render_report, timeline

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="chromium is not installed (Debian package chromium)")
GENERATED = 1_767_268_800.0


def history() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "report_history.json").read_text())
    return data


def campaign() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "report_campaign.json").read_text())
    return data


def ev(i: int, at: float, kind: str, rid: int | None = None, aid: str | None = None,
       **detail: Any) -> dict[str, Any]:
    return {"id": i, "at": at, "kind": kind, "recipient_id": rid, "attempt_id": aid,
            "actor": None, "detail": detail}


def test_timeline_follows_the_events() -> None:
    events = [
        ev(1, 0.0, "campaign_created"),
        ev(2, 10.0, "attempt_started", 1, "a"),
        ev(3, 10.0, "attempt_started", 2, "b"),
        ev(4, 12.0, "ringing", 1, "a"),  # not a change of the series
        ev(6, 15.0, "recipient_state", 2, "b", old="active", new="idle"),
        ev(5, 15.0, "attempt_ended", 2, "b", outcome="busy"),
        ev(7, 40.0, "attempt_ended", 1, "a", outcome="contacted"),
        ev(8, 40.0, "recipient_state", 1, "a", old="active", new="contacted"),
        ev(9, 50.0, "attempt_started", 2, "c"),
        ev(10, 55.0, "attempt_ended", 2, "c", outcome="busy"),
        ev(11, 55.0, "recipient_state", 2, "c", old="active", new="failed"),
        ev(12, 60.0, "recipient_state", 3, None, old="idle", new="stopped"),
        ev(13, 70.0, "recipient_state", 2, None, old="failed", new="idle"),  # attempts granted
    ]
    assert timeline(events, 3) == [
        Point(10.0, 0, 0, 0, 2), Point(15.0, 0, 0, 0, 1), Point(40.0, 1, 0, 0, 0),
        Point(50.0, 1, 0, 0, 1), Point(55.0, 1, 1, 0, 0), Point(60.0, 1, 1, 1, 0),
        Point(70.0, 1, 0, 1, 0)]


def test_timeline_of_the_recorded_run_ends_where_the_run_ended() -> None:
    h = history()
    points = timeline(h["events"], len(h["recipients"]))
    assert points[-1].contacted == 20 and points[-1].failed == 3 and points[-1].stopped == 1
    assert points[-1].in_progress == 0
    assert max(p.in_progress for p in points) <= 6  # the template's total limit


def test_the_report_is_self_contained_and_complete() -> None:
    h = history()
    page = render_report(h, generated_at=GENERATED)
    assert page.startswith("<!DOCTYPE html>")
    # nothing fetched from anywhere
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert not re.search(r"url\((?!#)", page), "only in-document url(#...) references"
    assert "@import" not in page
    # configuration snapshot, outcome table, chart
    assert "Configuration snapshot" in page and "Evacuation drill" in page
    assert "6 / 4 / 3" in page  # the template's limits
    for r in h["recipients"]:
        assert r["number"] in page
    assert page.count("<tr><td class=\"pos\">") == len(h["recipients"])
    assert 'id="progress-chart"' in page
    for sid in ("contacted", "failed", "stopped", "in_progress"):
        assert f'id="series-{sid}"' in page
    assert 'data-series="contacted" data-last="20"' in page
    assert 'data-state="suspended"' in page
    assert "generated 2026-01-01 12:00:00" in page
    assert render_report(h, generated_at=GENERATED) == page  # deterministic


def test_the_report_escapes_what_people_typed() -> None:
    h = history()
    h["run"]["name"] = "<script>alert(1)</script>"
    h["recipients"][0]["name"] = 'Eve "<b>" & co'
    page = render_report(h)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Eve &quot;&lt;b&gt;&quot; &amp; co" in page


def test_the_same_report_from_the_live_campaign() -> None:
    """history_from_campaign(campaign_detail, attempts_of, events_of) gives the same picture."""
    c = campaign()
    from_campaign = render_report(history_from_campaign(c["detail"], c["attempts"], c["events"]))
    from_history = render_report(history())
    chart = re.compile(r'<svg .*?</svg>', re.S)
    assert chart.findall(from_campaign) == chart.findall(from_history)
    people = re.compile(r'<table class="people".*?</table>', re.S)
    assert people.findall(from_campaign) == people.findall(from_history)


def test_a_run_without_calls() -> None:
    h = history()
    h["attempts"] = []
    h["events"] = [e for e in h["events"] if e["kind"] in ("campaign_created",)]
    h["run"]["state"] = "scheduled"
    for r in h["recipients"]:
        r.pop("state", None)
    page = render_report(h)
    assert "No call was placed in this run." in page
    assert "scheduled" in page
    assert chart_svg([], 0, dt.UTC).endswith("</svg>")


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=90)


@needs_chromium
def test_headless_chromium_renders_the_report_with_its_chart(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_report(history(), generated_at=GENERATED), encoding="utf-8")
    png = tmp_path / "report.png"
    shot = _chromium(f"--screenshot={png}", "--window-size=1200,1600", page.as_uri(),
                     profile=tmp_path / "profile")
    assert png.exists(), shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 1600)
    assert len(data) > 60_000, "a blank or near-blank page compresses to far less"
    dom = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout
    assert '<svg xmlns="http://www.w3.org/2000/svg" id="progress-chart"' in dom
    for sid in ("contacted", "failed", "in_progress"):
        match = re.search(rf'<path class="series" id="series-{sid}"[^>]* d="([^"]+)"', dom)
        assert match, sid
        assert match.group(1).count("L") > 20, f"series {sid} has no shape"
    assert "Grace Hopper" in dom
