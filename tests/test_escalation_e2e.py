"""Escalation end to end (issue 15): the real daemon launches a run's follow-up once, by
incomplete and by "fewer than N reached M minutes after the start", also when it is killed with
SIGKILL at the moment of escalation and restarted. One SIPp far end (tests/sipp/mixed.xml)
confirms, is busy or never answers by the number's last digit (0-5, 6-7, 8-9)."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from typing import Any

import pytest

from testkit.harness import Dialer

pytestmark = pytest.mark.sip

MESSAGE = 1.0


def followups(d: Dialer, cid: int) -> list[int]:
    runs = d.store.list_runs()
    return [r["id"] for r in runs
            if (d.store.run_history(r["id"])["run"].get("escalated_from")) == cid]


def kill_at(d: Dialer, moment: Any, timeout: float, what: str) -> None:
    """SIGKILL the daemon as soon as ``moment()`` holds (polled every 20 ms), then restart it."""
    deadline = time.monotonic() + timeout
    while not moment():
        assert time.monotonic() < deadline, f"{what}\n{d.log_tail()}"
        assert d.daemon is not None and d.daemon.poll() is None, d.log_tail()
        time.sleep(0.02)
    assert d.daemon is not None
    d.daemon.kill()
    d.daemon.wait(10)
    d.serve()


def calls_by_number(d: Dialer, cid: int) -> Counter[str]:
    return Counter(a["number"] for a in d.attempts(cid))


def test_an_incomplete_run_escalates_once_across_a_kill_at_that_moment(start_sipp,
                                                                       dialer) -> None:
    sipp = start_sipp("mixed", keys={"key1_ms": 1000, "key9_ms": int((MESSAGE + 1.5) * 1000)})
    d: Dialer = dialer(internal={"uri": sipp.uri}, external={"uri": sipp.uri}, workers=2)
    d.template("Fire", ["2000", "2006"], message=MESSAGE, attempts=1, ring_timeout=3)
    d.template("Managers", ["2011"], message=MESSAGE, attempts=1, ring_timeout=3)
    d.cli("template", "escalate", "Fire", "--to", "Managers", "--pass-unreached")
    cid = d.start_campaign("Fire")
    d.serve()
    # the moment the run ends incomplete is the moment its escalation is decided
    kill_at(d, lambda: d.campaign(cid)["state"] == "incomplete", 60,
            "the run did not end incomplete")
    (fid,) = d.wait(lambda: followups(d, cid) or None, 30, "no follow-up was launched")
    follow = d.wait_state(fid, ["completed", "incomplete"], 60)
    assert [r["number"] for r in follow["recipients"]] == ["2011", "2006"]  # + the unreached
    assert calls_by_number(d, fid) == {"2011": 1, "2006": 1}
    assert follow["escalation"]["escalated_from"] == cid
    assert d.campaign(cid)["escalation"] == {
        "rule": "to 'Managers' when it ends incomplete, passing on the unreached",
        "state": "launched", "escalated_from": None, "escalated_to": fid}
    d.stop()
    d.serve()  # a daemon started later does not launch it again
    d.wait(lambda: "dialer serving" in d.log_text() or None, 10, "serving")
    assert followups(d, cid) == [fid] and d.log_text().count("escalated to campaign") <= 1
    report = d.cli("history", "show", str(fid)).stdout
    assert "escalation of run" in report and str(cid) in report


def test_too_few_reached_after_m_minutes_escalates_once_across_a_kill(start_sipp,
                                                                      dialer) -> None:
    sipp = start_sipp("mixed", keys={"key1_ms": 1000, "key9_ms": int((MESSAGE + 1.5) * 1000)})
    d: Dialer = dialer(internal={"uri": sipp.uri}, external={"uri": sipp.uri}, workers=2)
    d.template("Fire", ["2008", "2009", "2001"], message=MESSAGE, attempts=3, ring_timeout=2,
               retry_delay=1)
    d.template("Managers", ["2012"], message=MESSAGE, attempts=1, ring_timeout=3)
    # 0.1 minute: 6 s after the start; 2008 and 2009 never answer, so 1 of 2 is reached then
    d.cli("template", "escalate", "Fire", "--to", "Managers", "--when", "below", "--below", "2",
          "--after", "0.1")
    started = time.time()
    cid = d.start_campaign("Fire")
    d.serve()
    kill_at(d, lambda: time.time() >= started + 6.0, 30, "6 s did not pass")
    (fid,) = d.wait(lambda: followups(d, cid) or None, 30, "no follow-up was launched")
    launched = next(e for e in d.store.events_of(cid) if e["kind"] == "campaign_escalated")
    start_at = dt.datetime.fromisoformat(d.campaign(cid)["start_at"]).timestamp()
    assert dt.datetime.fromisoformat(launched["at"]).timestamp() >= start_at + 6.0
    # 2001 may or may not have confirmed by then; 2008 and 2009 cannot have
    assert re.fullmatch(r"[01] of 2 reached 0\.1 min after the start",
                        launched["detail"]["cause"]), launched
    d.wait_state(fid, ["completed"], 60)
    d.wait_state(cid, ["incomplete"], 90)  # the first run went on to its end meanwhile
    assert calls_by_number(d, fid) == {"2012": 1}
    assert followups(d, cid) == [fid]
