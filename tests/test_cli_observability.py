"""The operator's observability commands through the real Typer app (CliRunner) on a real
database file: ``campaign watch --once``, ``history report``, ``campaign check`` (every planted
defect), ``--tts`` (and its error without espeak-ng), ``--email``, the import progress bar, and
the log formats of ``dialer serve``."""

from __future__ import annotations

import html.parser
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import Result

from cli.app import JsonFormatter, TextFormatter, setup_logging
from dialer.core.cluster import LeaseTerms
from dialer.core.domain import Outcome
from dialer.storage.models import MediaRow, TemplateRecipientRow
from dialer.storage.store import EndReport, SqlStore

REPO = Path(__file__).resolve().parents[1]
WAV = REPO / "media" / "prompts" / "en" / "demo_message.wav"
CSV = ("number,name,email\n"
       "101,Alice,alice@example.com\n"
       "+39 06 6982 0000,Bob,\n"
       "102,,\n")

Invoke = Callable[..., Result]


@pytest.fixture
def cli(cli_ready: Invoke) -> Invoke:
    """The CLI on an initialised database, on a 160-column terminal (tables unwrapped)."""
    return lambda *args: cli_ready(*args, env={"COLUMNS": "160"})


def ok(r: Result) -> Result:
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return r


def one_error_line(r: Result, *needles: str, code: int = 1) -> None:
    assert r.exit_code == code, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def template(cli: Invoke, tmp_path: Path, name: str = "Fire", csv: str = CSV,
             *extra: str) -> None:
    path = tmp_path / f"{name}.csv"
    path.write_text(csv)
    ok(cli("template", "add", name, "--audio", str(WAV), "--recipients", str(path), *extra))


# ----- campaign watch -----


def test_watch_once_shows_counts_calls_rate_eta_and_events(cli: Invoke, db: str,
                                                           tmp_path: Path) -> None:
    template(cli, tmp_path)
    cid = int(json.loads(ok(cli("campaign", "start", "Fire", "--json")).stdout)["id"])
    store = SqlStore(db)
    now = time.time()
    tick = store.tick(now=now, node="n1", capacity=2)
    assert len(tick.calls) == 2
    first = tick.calls[0]
    store.finish_attempt(EndReport(attempt_id=first.attempt_id, outcome=Outcome.CONTACTED,
                                   at=now + 1, status=200))
    idle = ok(cli("campaign", "watch", str(cid), "--once")).stdout  # no daemon: no ETA
    assert "no daemon is serving this database" in " ".join(idle.split())
    store.join(node="n1", host="h1", address="127.0.0.1", pid=1, now=time.time(),
               terms=LeaseTerms(lease=60.0, heartbeat=3.0), pid_alive=lambda _: True)
    store.dispose()
    text = ok(cli("campaign", "watch", str(cid), "--once")).stdout
    assert f"campaign {cid}" in text and "Fire" in text and "active" in text
    assert "1/3 done" in text
    assert "calls in progress" in text and "1 (internal 0, external 1)" in text
    assert "attempts/min" in text
    assert "time to completion" in text and "about" in text
    assert "attempt_ended" in text and "campaign_state" in text


def test_watch_of_a_finished_campaign_prints_once_and_exits(cli: Invoke, tmp_path: Path) -> None:
    template(cli, tmp_path)
    ok(cli("campaign", "start", "Fire"))
    ok(cli("campaign", "stop", "1", "--yes"))
    text = ok(cli("campaign", "watch", "1")).stdout  # no --once: returns since it is over
    assert "terminated" in text and "done" in text


def test_watch_unknown_campaign_is_one_error_line(cli: Invoke) -> None:
    one_error_line(cli("campaign", "watch", "42", "--once"), "42")


# ----- history report -----


class _Html(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def test_history_report_writes_a_self_contained_page(cli: Invoke, db: str,
                                                     tmp_path: Path) -> None:
    template(cli, tmp_path)
    ok(cli("campaign", "start", "Fire"))
    store = SqlStore(db)
    now = time.time()
    for call in store.tick(now=now, node="n1").calls:
        store.finish_attempt(EndReport(attempt_id=call.attempt_id, outcome=Outcome.BUSY,
                                       at=now + 2, status=486))
    store.dispose()
    page = tmp_path / "run1.html"
    r = ok(cli("history", "report", "1", "--output", str(page)))
    assert str(page) in r.stdout.replace("\n", "")
    text = page.read_text()
    parser = _Html()
    parser.feed(text)
    assert {"html", "svg", "table"} <= set(parser.tags)
    assert "Fire" in text and "busy" in text
    assert "http://" not in text.replace("http://www.w3.org", "")  # nothing fetched
    one_error_line(cli("history", "report", "9", "--output", str(page)), "9")


# ----- campaign check -----


class _Metrics(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def daemon_metrics() -> Iterator[int]:
    """A stand-in for the daemon's /metrics: the internal trunk is not registered."""
    _Metrics.body = (b'# TYPE dialer_trunk_registered gauge\n'
                     b'dialer_trunk_registered{trunk="internal"} 0.0\n'
                     b'dialer_trunk_registered{trunk="external"} 1.0\n')
    server = HTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def config_file(tmp_path: Path, metrics_port: int) -> Path:
    path = tmp_path / "dialer.toml"
    path.write_text(f"""
[sip]
workers = 2
[trunks.internal]
uri = "sip:pbx.example.com"
registrar = "sip:pbx.example.com"
[trunks.external]
uri = "sip:gw.example.com"
[metrics]
port = {metrics_port}
""")
    return path


def plant(db: str, template_id: int, rows: list[tuple[int, str, str]]) -> None:
    """Recipients the CLI would refuse (bad, duplicate), written straight into the database."""
    store = SqlStore(db)
    with store.session() as s:
        for position, number, kind in rows:
            s.add(TemplateRecipientRow(template_id=template_id, position=position,
                                       number=number, kind=kind))
    store.dispose()


def findings(r: Result) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in json.loads(r.stdout):
        out.setdefault(f["code"], []).append(f)
    return out


def test_check_finds_every_planted_defect(cli: Invoke, db: str, tmp_path: Path,
                                          daemon_metrics: int) -> None:
    template(cli, tmp_path)
    # a number the rules cannot read, and +39 06 6982 0000 (recipient 2) written another way
    plant(db, 1, [(4, "not-a-number", "external"), (5, "06 6982 0000", "external")])
    store = SqlStore(db)
    with store.session() as s:  # the stored message is no longer a playable WAV
        s.execute(update(MediaRow).values(data=b"RIFF broken"))
    store.dispose()
    config = config_file(tmp_path, daemon_metrics)
    r = cli("campaign", "check", "Fire", "--config", str(config), "--json")
    assert r.exit_code == 1, r.stdout
    found = findings(r)
    assert [(f["severity"], f["number"]) for f in found["bad_number"]] == [
        ("error", "not-a-number"), ("warning", "06 6982 0000")]  # the latter: not E.164
    assert [(f["position"], f["number"]) for f in found["duplicate_number"]] == [
        (5, "06 6982 0000")]
    assert "audio_invalid" in found
    assert [f["severity"] for f in found["trunk_unregistered"]] == ["error"]
    assert "internal" in found["trunk_unregistered"][0]["message"]
    assert "trunk_unknown" not in found  # the external trunk needs no registration
    assert found["estimate"][0]["severity"] == "info"
    assert "about" in found["estimate"][0]["message"]
    # the text form: one line per finding and a summary
    text = cli("campaign", "check", "Fire", "--config", str(config)).stdout
    assert "duplicate_number" in text and "trunk_unregistered" in text
    assert "error(s)" in text


def test_check_missing_audio_and_clean_template(cli: Invoke, db: str, tmp_path: Path) -> None:
    template(cli, tmp_path, "Clean", "number\n101\n102\n")
    r = ok(cli("campaign", "check", "Clean", "--json"))  # no daemon: trunks unknown, warnings
    found = findings(r)
    assert set(found) == {"trunk_unknown", "estimate"}
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:  # foreign keys off here
        conn.execute("DELETE FROM media")
    r = cli("campaign", "check", "Clean", "--json")
    assert r.exit_code == 1 and "audio_missing" in findings(r)
    one_error_line(cli("campaign", "check", "Nope"), "Nope")


# ----- text to speech, e-mail setting, progress bar -----


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_tts_makes_the_message_and_keeps_its_text(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(CSV)
    ok(cli("template", "add", "Flood", "--tts", "Flood in the basement. Go upstairs.",
           "--voice", "en", "--recipients", str(path), "--email", "unreached"))
    shown = json.loads(ok(cli("template", "show", "Flood", "--json")).stdout)
    assert shown["settings"]["tts_text"] == "Flood in the basement. Go upstairs."
    assert shown["settings"]["email"] == "unreached"
    assert 1.0 < shown["audio_seconds"] < 10.0
    ok(cli("template", "edit", "Flood", "--tts", "Alluvione", "--voice", "it"))
    shown = json.loads(ok(cli("template", "show", "Flood", "--json")).stdout)
    assert shown["settings"]["tts_text"] == "Alluvione"
    cid = json.loads(ok(cli("campaign", "start", "Flood", "--tts", "Drill only", "--json"))
                     .stdout)["id"]
    detail = json.loads(ok(cli("campaign", "show", str(cid), "--json")).stdout)
    assert detail["settings"]["tts_text"] == "Drill only"
    # a recorded message replaces the text
    ok(cli("template", "edit", "Flood", "--audio", str(WAV)))
    shown = json.loads(ok(cli("template", "show", "Flood", "--json")).stdout)
    assert shown["settings"]["tts_text"] is None


def test_tts_without_espeak_is_one_clear_line(cli: Invoke, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("media.tts.shutil.which", lambda name: None)
    one_error_line(cli("template", "add", "Flood", "--tts", "Flood"), "espeak-ng",
                   "not installed")
    assert json.loads(ok(cli("template", "list", "--json")).stdout) == []


def test_message_options_are_checked(cli: Invoke, tmp_path: Path) -> None:
    one_error_line(cli("template", "add", "X"), "--audio", "--tts")
    one_error_line(cli("template", "add", "X", "--audio", str(WAV), "--tts", "hi"), "not both")
    one_error_line(cli("template", "add", "X", "--audio", str(WAV), "--email", "sometimes"),
                   "'on-launch'", code=2)
    ok(cli("template", "add", "X", "--audio", str(WAV), "--email", "on-launch"))
    ok(cli("template", "edit", "X", "--email", "off"))
    shown = json.loads(ok(cli("template", "show", "X", "--json")).stdout)
    assert shown["settings"]["email"] == "off"


def test_long_import_shows_progress_and_stores_everything(cli: Invoke, tmp_path: Path) -> None:
    template(cli, tmp_path, "Big", "number\n101\n")
    big = tmp_path / "big.csv"
    big.write_text("number\n" + "".join(f"+3906698{i:05d}\n" for i in range(6000)))
    r = ok(cli("template", "recipients", "import", "Big", str(big), "--replace"))
    assert "6000 recipients read" in r.stderr
    assert "6000 recipients replaced" in r.stdout
    rows = json.loads(ok(cli("template", "recipients", "list", "Big", "--json")).stdout)
    assert len(rows) == 6000


# ----- logs -----


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("dialer.daemon", logging.INFO, __file__, 1, "call %s ended: %s",
                               ("abc", "busy"), None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_text_log_lines_carry_campaign_recipient_and_call_id() -> None:
    line = TextFormatter().format(_record(campaign=3, recipient=12, attempt="abc",
                                          call_id="abc"))
    assert line.endswith("call abc ended: busy campaign=3 recipient=12 call_id=abc")
    assert TextFormatter().format(_record()).endswith("call abc ended: busy")


def test_json_log_lines_are_objects_with_the_fields() -> None:
    data = json.loads(JsonFormatter().format(_record(campaign=3, recipient=12, attempt="abc",
                                                     call_id="abc")))
    assert data["message"] == "call abc ended: busy" and data["level"] == "INFO"
    assert (data["campaign"], data["recipient"], data["attempt"], data["call_id"]) == (
        3, 12, "abc", "abc")


def test_setup_logging_installs_the_formatter(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(False, "json")
        logging.getLogger("dialer.daemon").info("dialing %s", "101",
                                                extra={"campaign": 1, "call_id": "x"})
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert json.loads(line)["call_id"] == "x"
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_serve_refuses_an_unknown_log_format(cli: Invoke, tmp_path: Path) -> None:
    one_error_line(cli("serve", "--config", str(tmp_path / "none.toml"), "--log-format", "xml"),
                   "'xml' is not one of 'text', 'json'", code=2)


def test_a_daemon_bug_logs_its_traceback_then_one_error_line(
        cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's error is one line; a bug of the daemon keeps its traceback, in the log."""
    from dialer import bootstrap

    class Broken:
        def run(self) -> None:
            raise RuntimeError("a bug")

    monkeypatch.setattr(bootstrap, "daemon", lambda cfg: Broken())
    cfg = tmp_path / "d.toml"
    cfg.write_text("[trunks.internal]\nuri = 'sip:a'\n[trunks.external]\nuri = 'sip:b'\n")
    r = cli("serve", "--config", str(cfg))
    assert r.exit_code == 1
    assert "the daemon failed" in r.stderr and "Traceback" in r.stderr and "a bug" in r.stderr
    assert r.stderr.splitlines()[-1].startswith("error: unexpected RuntimeError: a bug")
