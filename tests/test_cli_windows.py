"""Calling windows through the CLI (the real Typer app on a SQLite file): ``template add/edit``
set them, ``template show`` / ``campaign show`` / the history / the export / the HTML report
show them, bad values are one ``error:`` line, and the CSV column ``timezone``."""

from __future__ import annotations

import datetime as dt
import json

from dialer.core.domain import CampaignSettings
from dialer.core.waiting import Situation, why_waiting, window_line
from dialer.core.window import window_of
from dialer.zones import zone_map
from tests.test_cli_surface import WAV, Cli, cli, one_error  # noqa: F401 - the fixture

NIGHT = ["--window", "08:00-20:00", "--window-days", "mon-fri", "--timezone", "Europe/Rome"]


def add(cli: Cli, name: str, csv: str, *extra: str) -> int:  # noqa: F811
    return int(cli.json("template add", "template", "add", name, "--audio", str(WAV),
                        "--recipients", cli.csv(csv), *extra)["id"])


def test_template_add_edit_show_the_window(cli: Cli) -> None:  # noqa: F811
    add(cli, "Night", "number\n101\n", *NIGHT)
    shown = cli.ok("template", "show", "Night")
    assert "calling window" in shown and "08:00-20:00 mon-fri Europe/Rome" in shown
    data = cli.json("template show", "template", "show", "Night")
    assert data["settings"]["window"] == "08:00-20:00"
    assert data["settings"]["window_days"] == "mon-fri"
    assert data["settings"]["timezone"] == "Europe/Rome"
    assert data["calling_window"] == "08:00-20:00 mon-fri Europe/Rome"
    done = cli.json("template edit", "template", "edit", "Night", "--window-days", "sat,sun",
                    "--window", "22:00-06:00")
    assert done["changes"]["window"] == ["08:00-20:00", "22:00-06:00"]
    assert done["changes"]["window_days"] == ["mon-fri", "sat,sun"]
    assert cli.json("template show", "template", "show", "Night")["calling_window"] == \
        "22:00-06:00 sat,sun Europe/Rome"
    cli.ok("template", "edit", "Night", "--urgent")
    data = cli.json("template show", "template", "show", "Night")
    assert data["calling_window"] == "none (urgent)"
    assert (data["settings"]["window"], data["settings"]["window_days"],
            data["settings"]["timezone"]) == (None, None, None)
    add(cli, "Fire", "number\n101\n")  # urgent: the default
    assert "none (urgent)" in cli.ok("template", "show", "Fire")


def test_bad_windows_are_one_error_line_and_store_nothing(cli: Cli) -> None:  # noqa: F811
    def refused(*args: str, needle: str) -> None:
        one_error(cli("template", "add", "Bad", "--audio", str(WAV), *args), needle)

    refused("--urgent", "--window", "08:00-20:00", needle="--urgent has no calling window")
    refused("--window", "25:00-08:00", needle="is not a time HH:MM")
    refused("--window", "08:00", needle="HH:MM-HH:MM")
    refused("--window", "08:00-08:00", needle="starts when it ends")
    refused("--window", "08:00-20:00", "--window-days", "weekdays", needle="is not a day")
    refused("--window", "08:00-20:00", "--timezone", "Mars/Olympus",
            needle="time zone 'Mars/Olympus' is unknown")
    refused("--window-days", "mon-fri", needle="need --window")
    refused("--timezone", "Europe/Rome", needle="need --window")
    assert cli.json("template list", "template", "list") == []
    add(cli, "Fire", "number\n101\n")
    one_error(cli("template", "edit", "Fire", "--window-days", "mon-fri"), "need --window")
    one_error(cli("template", "edit", "Fire", "--urgent", "--timezone", "UTC"),
              "--urgent has no calling window")


def test_the_csv_column_timezone(cli: Cli) -> None:  # noqa: F811
    add(cli, "Z", "number\n100\n")
    bad = cli.csv("number,name,timezone\n101,A,Europe/Rome\n102,B,Mars/Olympus\n")
    line = one_error(cli("template", "recipients", "import", "Z", bad, "--replace"),
                     "line 3", "time zone 'Mars/Olympus' is unknown")
    assert "line 2" not in line
    assert [r["number"] for r in cli.json("template recipients list", "template",
                                          "recipients", "list", "Z")] == ["100"]  # nothing
    good = cli.csv("number,name,timezone\n101,A,Europe/Rome\n102,B,\n103,C, Asia/Tokyo \n")
    cli.ok("template", "recipients", "import", "Z", good, "--replace")
    listed = cli.json("template recipients list", "template", "recipients", "list", "Z")
    assert [(r["number"], r["timezone"]) for r in listed] == [
        ("101", "Europe/Rome"), ("102", None), ("103", "Asia/Tokyo")]
    exported = cli.ok("template", "recipients", "export", "Z")
    assert exported.splitlines()[0] == "number,name,email,kind,timezone"
    path = cli.tmp / "back.csv"
    path.write_text(exported)
    cli.ok("template", "recipients", "import", "Z", str(path), "--replace")
    assert cli.json("template recipients list", "template", "recipients", "list", "Z") == listed
    assert "Asia/Tokyo" in cli.ok("template", "show", "Z")
    one_error(cli("template", "recipients", "add", "Z", "104", "--timezone", "Nowhere"),
              "time zone 'Nowhere' is unknown")
    cli.ok("template", "recipients", "add", "Z", "104", "--timezone", "America/New_York")
    cli.ok("template", "clone", "Z", "Z2")
    assert [r["timezone"] for r in cli.json("template recipients list", "template",
                                            "recipients", "list", "Z2")] == [
        "Europe/Rome", None, "Asia/Tokyo", "America/New_York"]


def test_campaign_show_history_export_and_report_carry_the_window(cli: Cli) -> None:  # noqa: F811
    # a window that opens two hours from now (UTC) and lasts one: closed now
    now = dt.datetime.now(dt.UTC)
    opens = now + dt.timedelta(hours=2)
    span = f"{opens:%H:%M}-{opens + dt.timedelta(hours=1):%H:%M}"
    add(cli, "Later", "number,timezone\n101,\n102,Asia/Tokyo\n", "--window", span)
    cid = int(cli.json("campaign start", "campaign", "start", "Later")["id"])
    shown = cli.ok("campaign", "show", str(cid))
    assert f"calling window {span} UTC: waiting for window until" in shown
    assert "(UTC)" in shown
    detail = cli.json("campaign show", "campaign", "show", str(cid))
    assert detail["calling_window"].startswith(f"calling window {span} UTC: waiting for "
                                               f"window until ")
    assert f"{opens:%H:%M}" in detail["calling_window"]
    assert [r["timezone"] for r in detail["recipients"]] == [None, "Asia/Tokyo"]
    assert detail["settings"]["window"] == span
    checked = cli("campaign", "check", "Later")
    assert "calling window" in checked.stdout and "is closed now: waiting for window until" \
        in " ".join(checked.stdout.split()), checked.stdout
    history = json.loads(cli.ok("history", "export", str(cid), "--format", "json"))
    assert history["settings"]["window"] == span
    assert [r.get("timezone") for r in history["recipients"]] == [None, "Asia/Tokyo"]
    shown = cli.ok("history", "show", str(cid))
    assert span in shown and "Asia/Tokyo" in shown
    page = cli.tmp / "r.html"
    cli.ok("history", "report", str(cid), "--output", str(page))
    assert "Calling window" in page.read_text() and f"{span} UTC" in page.read_text()


def test_why_a_recipient_waits_for_the_window_of_its_own_zone() -> None:
    """``dialer.core.waiting``: the reason is given in the recipient's zone, after the
    campaign's own state and before any retry delay."""
    w = window_of("08:00-20:00", "mon-fri", "Europe/Rome")
    assert w is not None
    s = Situation(state="active", window=w, zones=zone_map([None, "Asia/Tokyo"], w.timezone))
    now = dt.datetime(2026, 12, 3, 5, 0, tzinfo=dt.UTC).timestamp()  # Rome 06:00, Tokyo 14:00
    assert why_waiting("internal", None, s, now) == \
        "waiting for window until 08:00 (Europe/Rome)"
    assert why_waiting("internal", now + 60, s, now, "Asia/Tokyo").startswith("retry delay")
    assert why_waiting("internal", None, s, now, "Asia/Tokyo") == "next in line"
    assert window_line(s, now) == ("calling window 08:00-20:00 mon-fri Europe/Rome: waiting "
                                   "for window until 08:00 (Europe/Rome)")
    assert why_waiting("internal", None, Situation(state="suspended", window=w), now) == \
        "campaign suspended"
    assert window_line(Situation(state="active"), now) is None
    assert CampaignSettings().window is None  # urgent by default
