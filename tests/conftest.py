"""Fixtures for the SIP test peers (SIPp far ends, Kamailio PBX); see the testkit package."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# ``testkit`` must import under plain ``pytest`` too, not only ``python -m pytest``.
if str(Path(__file__).resolve().parent.parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testkit import DTMF_KEYS, SIPP_DIR, Kamailio, Sipp, make_dtmf_captures  # noqa: E402
from testkit.harness import Dialer  # noqa: E402


def _missing(marker: str) -> str | None:
    """Why the peer a marker needs is unavailable, or None."""
    if marker == "sip":
        if shutil.which("sipp") is None:
            return "sipp is not installed (Debian package sip-tester)"
        if importlib.util.find_spec("pjsua2") is None:
            return "PJSUA2 is not installed (pjsua2-python)"
    if marker == "kamailio":
        for binary in ("kamailio", "kamcmd"):
            if shutil.which(binary) is None and not Path("/usr/sbin", binary).exists():
                return f"{binary} is not installed (Debian package kamailio)"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests marked ``sip`` / ``kamailio`` when the peer's binary is missing."""
    for marker in ("sip", "kamailio"):
        if item.get_closest_marker(marker) is not None:
            reason = _missing(marker)
            if reason:
                pytest.skip(reason)


@pytest.fixture(scope="session")
def dtmf_captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """RFC 2833 captures with payload type 120 for keys 0-9: ``{"1": path, ...}``."""
    return make_dtmf_captures(tmp_path_factory.mktemp("dtmf"), DTMF_KEYS)


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """Each test gets the root logger back as it found it: ``serve`` run in-process (Typer's
    runner) installs a handler on the runner's stderr, which is closed once the test ends, and
    every later test's log line then printed "--- Logging error ---" into its own output."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def start_sipp(
    tmp_path: Path, dtmf_captures: dict[str, Path]
) -> Iterator[Callable[..., Sipp]]:
    """Factory: ``start_sipp("answer_confirm", keys={"key9_ms": 4000}, ...)`` -> started Sipp.

    Takes ``Sipp``'s keyword arguments; the DTMF captures are supplied. Every SIPp started
    is stopped at teardown. Scenarios that replay captures need root (raw socket).
    """
    started: list[Sipp] = []

    def start(scenario: str, **kwargs: Any) -> Sipp:
        path = SIPP_DIR / f"{scenario}.xml" if "/" not in scenario else Path(scenario)
        if os.geteuid() != 0 and "play_pcap_audio" in path.read_text():
            pytest.skip("SIPp play_pcap_audio needs root or CAP_NET_RAW")
        kwargs.setdefault("dtmf", dtmf_captures)
        sipp = Sipp(path, tmp_path / "sipp", **kwargs)
        started.append(sipp)
        return sipp.start()

    yield start
    for sipp in reversed(started):
        sipp.stop()


@pytest.fixture
def start_kamailio(tmp_path: Path) -> Iterator[Callable[..., Kamailio]]:
    """Factory: ``start_kamailio(user=..., password=..., routes={"1001": sipp.address})``.

    Returns a started ``Kamailio``; every instance is stopped at teardown.
    """
    started: list[Kamailio] = []

    def start(**kwargs: Any) -> Kamailio:
        kamailio = Kamailio(tmp_path / "kamailio", **kwargs)
        started.append(kamailio)
        return kamailio.start()

    yield start
    for kamailio in reversed(started):
        kamailio.stop()


@pytest.fixture
def dialer(tmp_path: Path) -> Iterator[Callable[..., Dialer]]:
    """Makes dialer installations (``testkit.harness.Dialer``) in ``tmp_path``; stops them all."""
    made: list[Dialer] = []

    def make(**kw: Any) -> Dialer:
        d = Dialer(tmp_path / f"dialer{len(made)}", **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


# ----- the CLI in-process (one definition for every CLI test module) -----


@pytest.fixture
def db(tmp_path: Path) -> str:
    """The URL of a fresh SQLite database file (not initialised)."""
    return f"sqlite:///{tmp_path / 'x.db'}"


@pytest.fixture
def cli_invoke(db: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``dialer --db <db> ARGS`` in-process through Typer's runner: ``invoke(*args, env=...,
    input=...)`` returns the ``Result``. The database is not initialised (``cli_ready`` is)."""
    from typer.testing import CliRunner

    from cli.app import app

    monkeypatch.delenv("DIALER_DB", raising=False)
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None,
               input: str | None = None) -> Any:
        return runner.invoke(app, ["--db", db, *args], env=env, input=input)

    return invoke


@pytest.fixture
def cli_ready(cli_invoke: Callable[..., Any]) -> Callable[..., Any]:
    """``cli_invoke`` on a database ``dialer init`` made."""
    r = cli_invoke("init")
    assert r.exit_code == 0, r.stderr
    return cli_invoke

