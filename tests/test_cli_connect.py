"""Connect to a person through the CLI (issue 15): --connect-key and --connect-to set per
template, checked (one error line, nothing stored), edited and cleared, and shown by template
show, campaign show, the history and the HTML report, with the transfer's steps on record."""

from __future__ import annotations

import time

import pytest

from dialer.core.domain import Outcome
from dialer.storage.store import EndReport
from tests.test_cli_surface import WAV, Cli, cli, one_error  # noqa: F401 - cli: a fixture

BRIDGE = "sip:bridge@pbx.example.com"


def add(c: Cli, *extra: str) -> None:
    c.ok("template", "add", "Drill", "--audio", str(WAV),
         "--recipients", c.csv("number\n101\n"), *extra)


@pytest.mark.parametrize(("options", "needle"), [
    (["--connect-key", "0"], "go together"),
    (["--connect-to", BRIDGE], "go together"),
    (["--connect-key", "x", "--connect-to", BRIDGE], "connect-key 'x'"),
    (["--connect-key", "00", "--connect-to", BRIDGE], "connect-key '00'"),
    (["--connect-key", "9", "--connect-to", BRIDGE], "is the listen key"),
    (["--connect-key", "1", "--connect-to", BRIDGE], "is the answer key"),
    (["--connect-key", "5", "--connect-to", BRIDGE, "--answer-key", "random"],
     "random answer key may draw it"),
    (["--connect-key", "0", "--connect-to", "http://bridge"], "must be a SIP URI"),
    (["--connect-key", "0", "--connect-to", "sip:a b@x"], "must be a SIP URI"),
    (["--connect-key", "0", "--connect-to", "sip:x>\r\nX-Evil: 1"], "must be a SIP URI"),
    (["--connect-confirms"], "needs --connect-key"),
])
def test_a_bad_connect_setting_is_one_line_and_stores_nothing(
        cli: Cli, options: list[str], needle: str) -> None:  # noqa: F811
    r = cli("template", "add", "Drill", "--audio", str(WAV), "--recipients",
            cli.csv("number\n101\n"), *options)
    one_error(r, needle)
    assert cli.json("template list", "template", "list") == []


def test_the_connect_key_is_set_edited_cleared_and_shown(cli: Cli) -> None:  # noqa: F811
    add(cli, "--connect-key", "#", "--connect-to", BRIDGE)
    st = cli.json("template show", "template", "show", "Drill")["settings"]
    assert (st["connect_key"], st["connect_to"], st["connect_confirms"]) == ("#", BRIDGE, False)
    assert BRIDGE in cli.ok("template", "show", "Drill")
    # a key 1 connect key clashes with the answer key; 0 does not
    one_error(cli("template", "edit", "Drill", "--connect-key", "1"), "is the answer key")
    edited = cli.json("template edit", "template", "edit", "Drill", "--connect-key", "0",
                      "--connect-confirms")
    assert edited["changes"]["connect_key"] == ["#", "0"]
    assert edited["changes"]["connect_confirms"] == [False, True]
    one_error(cli("template", "edit", "Drill", "--connect-to", "none"), "go together")
    cleared = cli.json("template edit", "template", "edit", "Drill", "--connect-key", "none")
    assert cleared["changes"]["connect_to"] == [BRIDGE, None]
    st = cli.json("template show", "template", "show", "Drill")["settings"]
    assert (st["connect_key"], st["connect_to"], st["connect_confirms"]) == (None, None, False)


def test_a_transfer_is_on_record_in_show_history_and_report(cli: Cli) -> None:  # noqa: F811
    add(cli, "--connect-key", "0", "--connect-to", BRIDGE)
    cid = cli.json("campaign start", "campaign", "start", "Drill")["id"]
    s = cli.store()
    try:
        now = time.time() + 1
        [call] = s.tick(now=now, node="test").calls
        for i, (kind, code) in enumerate((("transfer_requested", 0), ("transfer_accepted", 202),
                                          ("transferred", 200))):
            s.record_progress(call.attempt_id, kind, now + 1 + i, to=BRIDGE, code=code)
        s.finish_attempt(EndReport(attempt_id=call.attempt_id, outcome=Outcome.CONTACTED,
                                   at=now + 5, status=200, answered_at=now + 0.1,
                                   answer_confirmed_at=now + 0.2, listen_confirmed_at=now + 0.4))
    finally:
        s.dispose()
    text = " ".join(cli.ok("campaign", "show", str(cid)).split())
    assert (f"connect to a person: key 0 transfers to {BRIDGE} (counts as contacted after the "
            "confirmations)") in text
    history = cli.json("history show", "history", "show", str(cid))
    steps = [(e["kind"], e["detail"]) for e in history["events"]
             if e["kind"].startswith("transfer")]
    assert steps == [("transfer_requested", {"to": BRIDGE, "code": 0}),
                     ("transfer_accepted", {"to": BRIDGE, "code": 202}),
                     ("transferred", {"to": BRIDGE, "code": 200})]
    assert history["settings"]["connect_to"] == BRIDGE
    page = cli.tmp / "report.html"
    cli.ok("history", "report", str(cid), "--output", str(page))
    html = " ".join(page.read_text().split())
    assert f"key 0 transfers to {BRIDGE}" in html
    assert "Transferred" in html and "1 asked, 0 failed" in html
