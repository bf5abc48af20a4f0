"""Random confirmation keys through the CLI (issue 15): set per template, shown by template show,
campaign show, campaign attempts, the history (show, export JSON and CSV) and the HTML report;
JSON validated against docs/cli-json.md."""

from __future__ import annotations

import csv
import io
import json
import random
import time

from dialer.core.domain import Outcome
from dialer.storage.store import EndReport
from tests.test_cli_surface import WAV, Cli, add_fire, cli, one_error  # noqa: F401 - cli: a fixture


def _call(c: Cli) -> dict[str, str | None]:
    """The scheduler claims one call (digits drawn from a seeded source); the far end presses
    the drawn answer digit, and the call ends contacted. Returns the drawn digits."""
    s = c.store()
    try:
        now = time.time() + 1
        [call] = s.tick(now=now, node="test", draw=random.Random(4).randrange).calls
        answer, listen = call.drawn.answer, call.drawn.listen
        assert answer is not None and listen is not None
        s.record_progress(call.attempt_id, "key", now + 0.2, key=answer)
        s.record_progress(call.attempt_id, "key_refused", now + 0.3, what="listen", key="9")
        s.record_progress(call.attempt_id, "key", now + 0.4, key=listen)
        s.finish_attempt(EndReport(attempt_id=call.attempt_id, outcome=Outcome.CONTACTED,
                                   at=now + 0.5, status=200, answered_at=now + 0.1,
                                   answer_confirmed_at=now + 0.2, listen_confirmed_at=now + 0.4))
        return {"answer": answer, "listen": listen}
    finally:
        s.dispose()


def test_random_keys_are_set_edited_and_shown_everywhere(cli: Cli) -> None:  # noqa: F811
    cli.ok("template", "add", "Drill", "--audio", str(WAV),
           "--recipients", cli.csv("number\n101\n"), "--answer-key", "random",
           "--listen-key", "random")
    shown = cli.json("template show", "template", "show", "Drill")
    assert (shown["settings"]["answer_key"], shown["settings"]["listen_key"]) == ("random",
                                                                                  "random")
    assert "random" in cli.ok("template", "show", "Drill")
    one_error(cli("template", "edit", "Drill", "--listen-key", "rand"), "or random")
    edited = cli.json("template edit", "template", "edit", "Drill", "--listen-key", "9")
    assert edited["changes"]["listen_key"] == ["random", "9"]
    cli.json("template edit", "template", "edit", "Drill", "--listen-key", "random")

    cid = cli.json("campaign start", "campaign", "start", "Drill")["id"]
    digits = _call(cli)
    assert digits["answer"] != digits["listen"]

    text = " ".join(cli.ok("campaign", "show", str(cid)).split())
    assert "confirmation keys: answer random, listen random" in text
    assert cli.json("campaign show", "campaign", "show", str(cid))["settings"]["answer_key"] \
        == "random"
    attempts = cli.json("campaign attempts", "campaign", "attempts", str(cid), "101")
    [a] = attempts["attempts"]
    assert (a["answer_key"], a["listen_key"]) == (digits["answer"], digits["listen"])
    text = " ".join(cli.ok("campaign", "attempts", str(cid), "101").split())
    assert f"answer key {digits['answer']}, listen key {digits['listen']}" in text
    assert "key_refused" in text

    history = cli.json("history show", "history", "show", str(cid))
    [h] = history["attempts"]
    assert (h["answer_key"], h["listen_key"]) == (digits["answer"], digits["listen"])
    started = next(e for e in history["events"] if e["kind"] == "attempt_started")
    assert started["detail"]["answer_key"] == digits["answer"]
    assert history["settings"]["answer_key"] == "random"
    rows = list(csv.DictReader(io.StringIO(cli.ok("history", "export", str(cid), "--format",
                                                  "csv"))))
    [row] = [r for r in rows if r["record"] == "attempt"]
    data = json.loads(row["data"])
    assert (data["answer_key"], data["listen_key"]) == (digits["answer"], digits["listen"])

    page = cli.tmp / "report.html"
    cli.ok("history", "report", str(cid), "--output", str(page))
    html = page.read_text()
    assert f"answer key {digits['answer']}, listen key {digits['listen']}" in html
    assert "random, a digit 2-8 drawn per call" in html


def test_fixed_keys_show_no_random_line(cli: Cli) -> None:  # noqa: F811
    add_fire(cli)
    cid = cli.json("campaign start", "campaign", "start", "Fire")["id"]
    assert "confirmation keys" not in cli.ok("campaign", "show", str(cid))
