"""The daemon's TOML configuration (dialer.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialer import config
from dialer.config import MAX_CALLS_PER_WORKER, Secret
from dialer.core.errors import ConfigError
from dialer.core.recipients import NumberRules

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-Pa55word-xyzzy"

T = "[trunks.internal]\nuri = 'sip:a'\n[trunks.external]\nuri = 'sip:b'\n"

VALID = """
node = "node-a"
language = "it"

[database]
url = "sqlite:///alerts.db"

[data]
dir = "cache"

[sip]
bind = "127.0.0.2"
workers = 2
calls_per_worker = 3
rtp_port = 41000
log_level = 0

[numbers]
region = "GB"
extension_pattern = '\\d{3}'

[trunks.internal]
uri = "sip:pbx.example.com:5070"
registrar = "sip:pbx.example.com:5070"
username = "dialer"
password_env = "TEST_DIALER_PW"
transport = "TCP"
caller_id = "100"

[trunks.external]
uri = "sip:gateway.example.com"

[metrics]
port = 9999
bind = "0.0.0.0"
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIALER_DB", raising=False)
    monkeypatch.setenv("TEST_DIALER_PW", SECRET)


def write(tmp_path: Path, text: str, name: str = "dialer.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_valid_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path / "..")
    cfg = config.load(write(tmp_path, VALID))
    assert cfg.path == tmp_path / "dialer.toml"
    assert cfg.database_url == "sqlite:///alerts.db"
    assert (cfg.node, cfg.language, cfg.bind) == ("node-a", "it", "127.0.0.2")
    assert (cfg.workers, cfg.calls_per_worker, cfg.rtp_port, cfg.sip_log_level) == (2, 3, 41000, 0)
    assert (cfg.metrics_port, cfg.metrics_bind) == (9999, "0.0.0.0")
    assert cfg.numbers == NumberRules(region="GB", extension_pattern=r"\d{3}")
    assert cfg.data_dir == tmp_path.parent / "cache"  # the working directory's, not the file's
    internal, external = cfg.trunks["internal"], cfg.trunks["external"]
    assert set(cfg.trunks) == {"internal", "external"}
    assert internal.username == "dialer" and internal.password is not None
    assert internal.password.reveal() == SECRET
    assert internal.transport == "tcp" and internal.caller_id == "100"
    assert internal.host == "pbx.example.com:5070"
    assert internal.target("101") == "sip:101@pbx.example.com:5070;transport=tcp"
    assert external.password is None and external.registrar is None
    assert external.target("+390669820000") == "sip:+390669820000@gateway.example.com"


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    cfg = config.load(write(tmp_path, '[trunks.internal]\nuri = "sip:a"\n'
                                      '[trunks.external]\nuri = "sip:b"\n'))
    assert cfg.database_url == "sqlite:///dialer.db"
    assert (cfg.workers, cfg.calls_per_worker, cfg.rtp_port) == (4, MAX_CALLS_PER_WORKER, 10000)
    assert cfg.sip_port == 5070 and cfg.routes == {"external": ("external",)}
    assert cfg.metrics_port is None and cfg.numbers == NumberRules()
    assert cfg.data_dir == tmp_path / "dialer-data"


def test_data_dir_follows_the_units_state_directory(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: under the shipped unit the config is in read-only /etc/dialer; the data go to
    systemd's StateDirectory ($STATE_DIRECTORY), as the docs say, not beside the config."""
    etc, state = tmp_path / "etc", tmp_path / "var-lib-dialer"
    etc.mkdir()
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    assert config.load(write(etc, T)).data_dir == state
    assert config.load(write(etc, T + "[data]\ndir = 'cache'\n")).data_dir == state / "cache"
    assert config.load(write(etc, T + "[data]\ndir = '/srv/d'\n")).data_dir == Path("/srv/d")


def test_unknown_keys_are_refused_and_every_problem_is_reported_at_once(
        tmp_path: Path) -> None:
    text = ("bogus = 1\n[sip]\nworkrs = 4\nworkers = 0\n[trunks.internal]\nuri = 'sip:a'\n"
            "transprt = 'udp'\n[trunks.external]\nuri = 'http://b'\n[smtpp]\nhost = 'x'\n")
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))
    assert info.value.problems == [
        "[sip].workers must be an integer 1..1000, not 0",
        "[sip].workrs: unknown key",
        "[trunks.internal].transprt: unknown key",
        "[trunks.external].uri must be a SIP URI such as \"sip:pbx.example.com\", not 'http://b'",
        "bogus: unknown key",
        "smtpp: unknown key",
    ]
    assert "\n" not in str(info.value) and str(info.value).count(";") == 5


def test_a_check_needs_no_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_DIALER_PW")
    with pytest.raises(ConfigError, match="TEST_DIALER_PW is not set"):
        config.load(write(tmp_path, VALID))
    cfg = config.load(write(tmp_path, VALID), secrets=False)
    assert cfg.trunks["internal"].password is not None  # where it comes from, checked
    assert cfg.trunks["internal"].password.reveal() == ""  # its value, not read


def test_the_shipped_sample_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALER_INTERNAL_PASSWORD", SECRET)
    cfg = config.load(REPO / "dialer.toml")
    assert set(cfg.trunks) == {"internal", "external"}
    assert cfg.trunks["internal"].password is not None
    assert SECRET not in repr(cfg)


def test_dialer_db_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALER_DB", "postgresql://x@y/z")
    assert config.load(write(tmp_path, VALID)).database_url == "postgresql://x@y/z"


@pytest.mark.parametrize("missing", ["internal", "external"])
def test_missing_trunk(tmp_path: Path, missing: str) -> None:
    other = "external" if missing == "internal" else "internal"
    p = write(tmp_path, f'[trunks.{other}]\nuri = "sip:pbx"\n')
    with pytest.raises(ConfigError, match=rf"missing trunk \[trunks\.{missing}\]") as info:
        config.load(p)
    assert "\n" not in str(info.value)


def test_missing_external_trunk_in_the_sample(tmp_path: Path) -> None:
    text = VALID.split("[trunks.external]")[0] + "[metrics]\nport = 1\n"
    with pytest.raises(ConfigError, match="missing trunk"):
        config.load(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[trunks.internal]\nuri = 'sip:a'\n[trunks.external]\nuri = 'sip:b'\n"
         "[routes.r]\ntrunks = ['backup']\n", r"\[routes.r\]: unknown trunk\(s\) backup"),
        ("[trunks.internal]\nuri = 'sip:a'\n[trunks.external]\nuri = 'sip:b'\n"
         "[routes.r]\ntrunks = []\n", r"\[routes.r\].trunks must be a non-empty list"),
        ("[trunks.internal]\nuri = 'sip:a'\n[trunks.external]\nuri = 'sip:b'\n"
         "[routes.r]\ntrunks = ['external', 'external']\n", "names a trunk twice"),
        ("[trunks.internal]\nuri = 'sip:a'\n[trunks.external]\nuri = 'sip:b'\n"
         "[trunks.'a b']\nuri = 'sip:c'\n", "trunk name 'a b'"),
        ("[trunks.internal]\nuri = 'sip:a'\nmax_calls = 0\n[trunks.external]\nuri = 'sip:b'\n",
         r"\[trunks.internal\].max_calls must be an integer 1..100000"),
        ("[trunks.internal]\nuri = 'sip:a'\nmax_cps = 'x'\n[trunks.external]\nuri = 'sip:b'\n",
         r"max_cps must be a number of calls per second"),
        ("[trunks.internal]\nuri = 'sip:a'\npai = 1\n[trunks.external]\nuri = 'sip:b'\n",
         r"pai must be true or false"),
        ("[trunks.internal]\nuri = 'sip:a'\nhealth_window = 3\nhealth_failures = 4\n"
         "[trunks.external]\nuri = 'sip:b'\n", r"health_failures must be an integer 1..3"),
        ("[sip]\nport = 80\n" + T, r"\[sip\].port must be 0 \(any\) or 1024..65000"),
        ("".join(f"[trunks.t{i}]\nuri = 'sip:x'\n" for i in range(8)) + T, "at most 8"),
        ("[trunks.internal]\nuri = 'http://a'\n[trunks.external]\nuri = 'sip:b'\n",
         r"\[trunks.internal\].uri must be a SIP URI"),
        ("[trunks.internal]\nuri = 'sip:a'\ntransport = 'tls'\n[trunks.external]\nuri = 'sip:b'\n",
         "transport must be udp or tcp"),
        ("trunks = 3\n", "must be a table"),
        ("[trunks]\ninternal = 'sip:a'\nexternal = 'sip:b'\n", "must be a table"),
        ("[trunks.internal]\nuri = 'sip:a'\npassword_env = 'TEST_DIALER_PW'\n"
         "[trunks.external]\nuri = 'sip:b'\n", "needs a username"),
        ("[sip]\nworkers = 0\n[trunks.internal]\nuri = 'sip:a'\n[trunks.external]\nuri = 'sip:b'\n",
         r"\[sip\].workers must be an integer 1..1000"),
        ("[sip]\ncalls_per_worker = 5\n[trunks.internal]\nuri = 'sip:a'\n"
         "[trunks.external]\nuri = 'sip:b'\n", "calls_per_worker"),
        ("[sip]\nworkers = true\n[trunks.internal]\nuri = 'sip:a'\n"
         "[trunks.external]\nuri = 'sip:b'\n", "workers"),
        ("[metrics]\nport = 70000\n[trunks.internal]\nuri = 'sip:a'\n"
         "[trunks.external]\nuri = 'sip:b'\n", "port"),
        ("this is = not toml [", "not valid TOML"),
        ("[trunks.internal]\nuri = 'sip:a'\nallowed_sources = ['10.0.0.0/33']\n"
         "[trunks.external]\nuri = 'sip:b'\n", r"\[trunks.internal\].allowed_sources: "),
        ("[trunks.internal]\nuri = 'sip:a'\nallowed_sources = '10.0.0.1'\n"
         "[trunks.external]\nuri = 'sip:b'\n", "must be a list of addresses or CIDRs"),
        ("[trunks.internal]\nuri = 'sip:a'\nkeepalive_interval = -1\n"
         "[trunks.external]\nuri = 'sip:b'\n", r"keepalive_interval must be a number of seconds"),
        ("[trunks.internal]\nuri = 'sip:a'\ninvite_timeout = 40\n"
         "[trunks.external]\nuri = 'sip:b'\n",
         r"invite_timeout must be a number of seconds 0.5..32"),
        ("[trunks.internal]\nuri = 'sip:a'\nproxy = 'http://x'\n"
         "[trunks.external]\nuri = 'sip:b'\n", r"proxy must be a SIP URI"),
        ("[sip]\nreject_code = 486\n[trunks.internal]\nuri = 'sip:a'\n"
         "[trunks.external]\nuri = 'sip:b'\n", "reject_code must be one of 403, 488, 603"),
        ("[sip]\nbind = '0.0.0.0'\n[trunks.internal]\nuri = 'sip:a'\n"
         "[trunks.external]\nuri = 'sip:b'\n", r"bind must be the IPv4 address the PBX reaches"),
        ("[sip]\nbind = 'pbx-side'\n[trunks.internal]\nuri = 'sip:a'\n"
         "[trunks.external]\nuri = 'sip:b'\n", r"bind must be an IPv4 address"),
    ],
)
def test_invalid_configs(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        config.load(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_password_from_a_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(SECRET + "\n")
    text = VALID.replace('password_env = "TEST_DIALER_PW"', f'password_file = "{pw}"')
    cfg = config.load(write(tmp_path, text))
    assert cfg.trunks["internal"].password is not None
    assert cfg.trunks["internal"].password.reveal() == SECRET


def test_password_file_unreadable(tmp_path: Path) -> None:
    text = VALID.replace('password_env = "TEST_DIALER_PW"',
                         f'password_file = "{tmp_path / "missing"}"')
    with pytest.raises(ConfigError, match="password_file: cannot read"):
        config.load(write(tmp_path, text))


def test_password_env_not_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_DIALER_PW")
    with pytest.raises(ConfigError, match="TEST_DIALER_PW is not set"):
        config.load(write(tmp_path, VALID))


def test_password_in_the_config_is_refused(tmp_path: Path) -> None:
    text = VALID.replace('password_env = "TEST_DIALER_PW"', f'password = "{SECRET}"')
    with pytest.raises(ConfigError, match="never written in the config") as info:
        config.load(write(tmp_path, text))
    assert SECRET not in str(info.value)


def test_the_password_never_shows(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, VALID))
    trunk = cfg.trunks["internal"]
    for text in (repr(cfg), str(cfg), repr(trunk), str(trunk), repr(cfg.trunks),
                 repr(trunk.password), str(trunk.password), f"{trunk.password}"):
        assert SECRET not in text
    assert repr(Secret(SECRET)) == "Secret('***')"


def test_sip_trust_keys(tmp_path: Path) -> None:
    c = config.load(write(tmp_path, (
        "[sip]\nreject_code = 603\n"
        "[trunks.internal]\nuri = 'sip:127.0.0.1:5060'\nregistrar = 'sip:127.0.0.2'\n"
        "proxy = 'sip:127.0.0.4'\nallowed_sources = ['10.1.2.3/29', '192.0.2.7']\n"
        "keepalive_interval = 0\nregister_timeout = 2.5\n"
        "[trunks.external]\nuri = 'sip:127.0.0.3'\n")))
    t = c.trunks["internal"]
    assert c.sip_reject_code == 603
    assert t.allowed_sources == ("10.1.2.0/29", "192.0.2.7/32")
    assert (t.keepalive_interval, t.register_timeout, t.keepalive_timeout, t.invite_timeout) \
        == (0.0, 2.5, 2.0, 5.0)
    # every trunk host (uri, registrar, proxy) and the extra networks, resolved now
    assert c.allowed_sources() == ["127.0.0.1", "127.0.0.2", "127.0.0.4", "10.1.2.0/29",
                                   "192.0.2.7/32", "127.0.0.3"]


def test_any_number_of_trunks_routes_and_their_limits(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, """
[sip]
port = 15060
[trunks.internal]
uri = "sip:pbx"
[trunks.external]
uri = "sip:pbx"
[trunks.carrier-a]
uri = "sip:a.example:5080"
max_calls = 3
max_cps = 5
pai = true
health_window = 6
health_failures = 3
backoff = 10
[trunks.carrier-b]
uri = "sip:b.example"
[routes.carriers]
trunks = ["carrier-a", "carrier-b"]
"""))
    a = cfg.trunks["carrier-a"]
    assert (a.max_calls, a.max_cps, a.pai) == (3, 5.0, True)
    assert (a.health.window, a.health.failures, a.health.backoff) == (6, 3, 10.0)
    assert cfg.trunks["carrier-b"].max_calls is None and not cfg.trunks["carrier-b"].pai
    assert cfg.routes == {"carriers": ("carrier-a", "carrier-b"), "external": ("external",)}
    assert cfg.sip_port == 15060


def test_the_config_knows_the_shipped_languages() -> None:
    from dialer.configfile import LANGUAGES
    from media.prompts import LANGUAGES as SHIPPED

    assert LANGUAGES == SHIPPED
