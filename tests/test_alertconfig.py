"""``[alertmanager]`` of dialer.toml: off by default, the token from the environment or a file
(never the config, never shown), the routes' matchers checked where they are written, and
``dialer config check`` without the token's value."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dialer import config
from dialer.core.alerts import MatchOp
from dialer.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TOKEN = "Am-t0ken-xyzzy-31337"
BASE = "[trunks.internal]\nuri = 'sip:a'\n[trunks.external]\nuri = 'sip:b'\n"
RECEIVER = """
[alertmanager]
bind = "127.0.0.1"
port = 9465
token_env = "TEST_AM_TOKEN"

[[alertmanager.routes]]
matchers = ['alertname="PlantFire"', 'severity=~"critical|page"']
template = "Fire"
stop_on_resolve = true

[[alertmanager.routes]]
template = "Catch all"
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIALER_DB", raising=False)
    monkeypatch.setenv("TEST_AM_TOKEN", TOKEN)


def load(tmp_path: Path, text: str, **kw: Any) -> config.Config:
    p = tmp_path / "dialer.toml"
    p.write_text(BASE + text)
    return config.load(p, **kw)


def test_off_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, "").alertmanager is None


def test_the_receiver_and_its_routes(tmp_path: Path) -> None:
    a = load(tmp_path, RECEIVER).alertmanager
    assert a is not None
    assert (a.bind, a.port, a.actor, a.max_body) == ("127.0.0.1", 9465, "alertmanager", 1 << 20)
    assert a.token.reveal() == TOKEN
    assert TOKEN not in repr(a) and TOKEN not in str(a)
    first, second = a.routes
    assert (first.index, first.template, first.stop_on_resolve) == (1, "Fire", True)
    assert [(m.label, m.op) for m in first.matchers] == [("alertname", MatchOp.EQ),
                                                        ("severity", MatchOp.RE)]
    assert (second.index, second.matchers, second.stop_on_resolve) == (2, (), False)


def test_the_token_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "am.token").write_text(TOKEN + "\n")
    a = load(tmp_path, RECEIVER.replace('token_env = "TEST_AM_TOKEN"',
                                        'token_file = "am.token"')).alertmanager
    assert a is not None and a.token.reveal() == TOKEN
    assert a.token_source == "file am.token"


@pytest.mark.parametrize("change,problem", [
    (('token_env = "TEST_AM_TOKEN"', 'token = "abc"'),
     "[alertmanager].token: a token is never written in the config"),
    (('token_env = "TEST_AM_TOKEN"', ""), "exactly one of token_env or token_file"),
    (('token_env = "TEST_AM_TOKEN"', 'token_env = "X"\ntoken_file = "f"'),
     "exactly one of token_env or token_file"),
    (("port = 9465", "port = 70000"), "[alertmanager].port must be an integer 0..65535"),
    (("port = 9465", ""), "[alertmanager].port is required"),
    (("port = 9465", "port = 9465\nwebhook = 1"), "[alertmanager].webhook: unknown key"),
    (('template = "Catch all"', 'templat = "Catch all"'),
     "[alertmanager.routes #2].templat: unknown key"),
    (("'severity=~\"critical|page\"'", "'severity=~\"(critical\"'"),
     "[alertmanager.routes #1].matchers: 'severity=~\"(critical\"': not a regular expression"),
    (("'alertname=\"PlantFire\"'", "'alertname'"),
     "[alertmanager.routes #1].matchers: 'alertname': not a matcher"),
    (("stop_on_resolve = true", 'stop_on_resolve = "yes"'),
     "[alertmanager.routes #1].stop_on_resolve must be true or false"),
    (('bind = "127.0.0.1"', 'actor = "al ice"'), "[alertmanager].actor must be an operator"),
    (('bind = "127.0.0.1"', 'bind = "localhost"'), "[alertmanager].bind must be an IP address"),
])
def test_problems_are_named_where_they_are(tmp_path: Path, change: tuple[str, str],
                                           problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, RECEIVER.replace(*change))
    assert any(p.startswith(problem) or problem in p for p in info.value.problems), \
        info.value.problems


def test_routes_are_required(tmp_path: Path) -> None:
    text = RECEIVER.split("[[alertmanager.routes]]")[0]
    with pytest.raises(ConfigError, match=re.escape("at least one [[alertmanager.routes]]")):
        load(tmp_path, text)


def test_an_unset_or_empty_token_is_refused_when_serving(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("TEST_AM_TOKEN", "")
    with pytest.raises(ConfigError, match="bearer token is empty"):
        load(tmp_path, RECEIVER)
    monkeypatch.delenv("TEST_AM_TOKEN")
    with pytest.raises(ConfigError, match="token_env: environment variable TEST_AM_TOKEN is "
                                          "not set"):
        load(tmp_path, RECEIVER)
    # config check reads no secret: where it comes from is enough
    a = load(tmp_path, RECEIVER, secrets=False).alertmanager
    assert a is not None and a.token.reveal() == ""


def test_config_check_shows_the_receiver_without_the_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        cli_invoke: Callable[..., Any]) -> None:
    p = tmp_path / "dialer.toml"
    p.write_text(BASE + RECEIVER)
    monkeypatch.delenv("TEST_AM_TOKEN")  # not needed to check
    r = cli_invoke("config", "check", "-c", str(p), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["alertmanager"] == {
        "listen": "127.0.0.1:9465", "token": "env TEST_AM_TOKEN", "actor": "alertmanager",
        "routes": [{"matchers": ['alertname="PlantFire"', 'severity=~"critical|page"'],
                    "template": "Fire", "stop_on_resolve": True},
                   {"matchers": [], "template": "Catch all", "stop_on_resolve": False}]}
    monkeypatch.setenv("TEST_AM_TOKEN", TOKEN)
    r = cli_invoke("config", "check", "-c", str(p))
    assert r.exit_code == 0 and TOKEN not in r.output
    assert "alertmanager" in r.stdout


def test_the_sample_config_documents_a_receiver_that_checks(tmp_path: Path) -> None:
    """The commented [alertmanager] block of the shipped dialer.toml, uncommented, loads."""
    sample = (REPO / "dialer.toml").read_text()
    block = sample[sample.index("# [alertmanager]"):]
    lines = [re.sub(r"^# ?", "", line) for line in block.splitlines() if line.startswith("#")]
    text = "\n".join(lines).replace('token_file = "/etc/dialer/alertmanager.token"', "")
    text = text.replace('token_env = "DIALER_ALERTMANAGER_TOKEN"', 'token_env = "TEST_AM_TOKEN"')
    a = load(tmp_path, text).alertmanager
    assert a is not None and [r.template for r in a.routes] == ["Fire", "Shift call-out"]
    assert a.routes[0].stop_on_resolve and not a.routes[1].stop_on_resolve
