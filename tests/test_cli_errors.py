"""Tracebacks never (issue 14): every error a user can cause, storage, files and network
included, is exactly one line on stderr starting with ``error:`` and a non-zero exit; usage
errors keep exit 2 but are one line too. Each case runs the real ``dialer`` in a subprocess,
with the terminal width of a small window, so Rich's panels would show."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.harness import ROOT, tone_wav

CONFIG = """
[database]
url = "{db}"
[data]
dir = "{tmp}/data"
[sip]
port = 0
rtp_port = 31000
[trunks.internal]
uri = "sip:127.0.0.1:5999"
[trunks.external]
uri = "sip:127.0.0.1:5998"
[metrics]
port = {metrics}
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "COLUMNS": "80", **(env or {})}
    full.pop("DIALER_DB", None)
    return subprocess.run([sys.executable, "-m", "cli.app", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("hostile")
    db = f"sqlite:///{tmp}/d.db"
    assert run("--db", db, "init").returncode == 0
    csv = tmp / "staff.csv"
    csv.write_text("number,name\n201,Anna\n")
    wav = tone_wav(tmp / "m.wav", 1.0)
    assert run("--db", db, "template", "add", "Fire", "--audio", str(wav),
               "--recipients", str(csv)).returncode == 0
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    values = {"tmp": str(tmp), "db": db, "csv": str(csv), "wav": str(wav)}
    for name, text in {
        "good": CONFIG.format(db=db, tmp=tmp, metrics=0),
        "busy": CONFIG.format(db=db, tmp=tmp, metrics=busy.getsockname()[1]),
        "unknown": CONFIG.format(db=db, tmp=tmp, metrics=0).replace("[sip]\n",
                                                                    "[sip]\nworkrs = 4\n"),
        "enum": CONFIG.format(db=db, tmp=tmp, metrics=0).replace(
            'uri = "sip:127.0.0.1:5998"', 'uri = "sip:127.0.0.1:5998"\ntransport = "sctp"'),
        "malformed": "[sip\nworkers = 4\n",
    }.items():
        (tmp / f"{name}.toml").write_text(text)
        values[name] = str(tmp / f"{name}.toml")
    yield values
    busy.close()


HOSTILE: list[tuple[str, list[str]]] = [
    ("unwritable path", ["--db", "sqlite:////sys/d.db", "init"]),
    ("unknown database scheme", ["--db", "foo://bar", "init"]),
    ("not a URL", ["--db", "not a url", "campaign", "list"]),
    ("missing driver", ["--db", "postgresql+psycopg2://127.0.0.1/test", "campaign", "list"]),
    ("nobody listening", ["--db", "postgresql://127.0.0.1:1/test", "campaign", "list"]),
    ("no database yet", ["--db", "sqlite:///{tmp}/none/x.db", "campaign", "show", "999"]),
    ("missing config", ["serve", "-c", "{tmp}/missing.toml"]),
    ("malformed TOML", ["serve", "-c", "{malformed}"]),
    ("unknown config key", ["serve", "-c", "{unknown}"]),
    ("bad config value", ["serve", "-c", "{enum}"]),
    ("metrics port in use", ["serve", "-c", "{busy}"]),
    ("bad log format", ["serve", "-c", "{good}", "--log-format", "xml"]),
    ("bad state", ["--db", "{db}", "campaign", "list", "--state", "bogus"]),
    ("bad e-mail policy", ["--db", "{db}", "template", "edit", "Fire", "--email", "bogus"]),
    ("bad role", ["--db", "{db}", "operator", "add", "bob", "--role", "bogus"]),
    ("not a number", ["--db", "{db}", "campaign", "show", "abc"]),
    ("unknown region", ["--db", "{db}", "--region", "XX", "campaign", "list"]),
    ("start in the past", ["--db", "{db}", "campaign", "start", "Fire", "--at",
                           "2020-01-01T00:00"]),
    ("missing audio file", ["--db", "{db}", "template", "add", "Flood", "--audio",
                            "{tmp}/none.wav", "--recipients", "{csv}"]),
    ("unwritable export", ["--db", "{db}", "history", "export", "1", "-o", "/sys/x.json"]),
    ("unknown command", ["--db", "{db}", "campaign", "launch", "Fire"]),
    ("bad number", ["--db", "{db}", "template", "recipients", "add", "Fire", "12ab"]),
]


@pytest.mark.parametrize(("case", "args"), HOSTILE, ids=[c for c, _ in HOSTILE])
def test_a_hostile_invocation_is_one_error_line(site: dict[str, str], case: str,
                                                args: list[str]) -> None:
    if case == "unwritable export":  # needs a run to export
        start = run("--db", site["db"], "campaign", "start", "Fire", "--json")
        assert start.returncode == 0, start.stderr
    p = run(*(a.format(**site) for a in args))
    lines = p.stderr.splitlines()
    assert p.returncode != 0, p.stdout
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert not (Path(site["tmp"]) / "none").exists()  # nothing created on the way


def test_no_command_but_init_creates_a_database(tmp_path: Path) -> None:
    for args in (["campaign", "show", "999"], ["template", "list"], ["nodes"]):
        p = subprocess.run([sys.executable, "-m", "cli.app", *args], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"},
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and "dialer init" in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_config_check_lists_every_problem_and_needs_no_password(site: dict[str, str],
                                                                tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(site["enum"]).read_text().replace("[sip]\n", "[sip]\nworkrs = 4\n")
                   + "[trunks.carrier]\nuri = 'sip:c'\nusername = 'u'\n"
                     "password_env = 'NOT_SET_ANYWHERE'\n")
    p = run("config", "check", "-c", str(bad))
    assert p.returncode == 1
    assert p.stdout.splitlines() == [
        "  [sip].workrs: unknown key",
        "  [trunks.external].transport must be udp or tcp, not 'sctp'"]
    assert p.stderr.splitlines() == [f"error: {bad}: 2 problems (listed above)"]
    fixed = tmp_path / "fixed.toml"
    fixed.write_text(bad.read_text().replace("workrs = 4\n", "").replace('"sctp"', '"tcp"'))
    ok = run("config", "check", "-c", str(fixed), "--json")
    assert ok.returncode == 0, ok.stderr
    import json
    data = json.loads(ok.stdout)
    assert data["ok"] and data["trunks"] == ["carrier", "external", "internal"]
    assert data["data_dir"] == f"{site['tmp']}/data"
    # serve reads the passwords: the unset variable is a config error, exit 78 (EX_CONFIG), so
    # that systemd does not restart a daemon that cannot start (RestartPreventExitStatus=78)
    s = run("serve", "-c", str(fixed))
    assert s.returncode == 78
    assert s.stderr.splitlines() == [
        f"error: {fixed}: [trunks.carrier].password_env: environment variable NOT_SET_ANYWHERE "
        f"is not set (dialer config check -c {fixed} lists every problem)"]
    assert run("serve", "-c", str(bad)).returncode == 78


def test_a_bad_number_says_how_numbers_are_read(site: dict[str, str]) -> None:
    p = run("--db", site["db"], "template", "recipients", "add", "Fire", "12ab")
    (line,) = p.stderr.splitlines()
    assert "--region" in line and "--extension-pattern" in line and "region IT" in line
    assert "NumberParseException" not in line and "(0)" not in line


def test_version_and_debug() -> None:
    from importlib.metadata import version

    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"dialer {version('alert-dialer')}"
    assert "--debug" in run("--help").stdout
