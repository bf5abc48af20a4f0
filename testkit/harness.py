"""Drives the real dialer end to end: the CLI in subprocesses, ``dialer serve`` as a process.

Used by the end-to-end tests against SIPp and Kamailio. Everything waits on conditions with
deadlines; the daemon's log is attached to every failure message.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import wave
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dialer.storage.store import SqlStore
from testkit.net import free_port
from testkit.wait import until

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def tone_wav(path: Path, seconds: float, rate: int = 8000, freq: float = 440.0) -> Path:
    """A 16-bit mono sine tone: a short message for tests."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


class Dialer:
    """One dialer installation in a temporary directory: database, config, daemon."""

    def __init__(self, tmp: Path, *, internal: dict[str, Any], external: dict[str, Any],
                 workers: int = 4, env: dict[str, str] | None = None,
                 metrics_port: int | None = None, sip: dict[str, Any] | None = None,
                 db_url: str | None = None, node: str | None = None, bind: str = "127.0.0.1",
                 cluster: dict[str, Any] | None = None, check_url: str | None = None,
                 trunks: dict[str, dict[str, Any]] | None = None,
                 routes: dict[str, list[str]] | None = None, tables: str = "") -> None:
        """``db_url``: a database several installations share (one node each: ``node``,
        ``bind``, ``cluster``); ``check_url``: where the test reads it (default ``db_url``;
        another when the node reaches it through a proxy the test can cut); ``trunks``: more
        ``[trunks.<name>]`` tables, ``routes``: ``[routes.<name>]`` trunk lists; ``tables``:
        more TOML as it is (``[alertmanager]``). The workers' SIP ports are a free range unless
        ``sip`` names ``port``."""
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url or f"sqlite:///{tmp}/dialer.db"
        self.env = {**os.environ, **(env or {}), "DIALER_DB": check_url or self.db_url}
        self.config = tmp / "dialer.toml"
        self.log = tmp / "daemon.log"
        lines = [f'[database]\nurl = "{self.db_url}"', f'[data]\ndir = "{tmp}/data"',
                 f'[sip]\nbind = "{bind}"\nworkers = {workers}\n'
                 + ("" if "log_level" in (sip or {}) else "log_level = 1\n")
                 # the machine's load is not what a test is about (the bench turns it on)
                 + ("" if "overload_pressure" in (sip or {}) else "overload_pressure = 0\n")
                 + f'rtp_port = {20000 + (os.getpid() % 100) * 100}'
                 + ("" if "port" in (sip or {}) else f"\nport = {free_port(2 * workers)}")
                 + "".join(f"\n{k} = {_toml(v)}" for k, v in (sip or {}).items())]
        if node is not None:
            lines.insert(0, f"node = {_toml(node)}")
        if cluster:
            lines.append("[cluster]\n" + "\n".join(f"{k} = {_toml(v)}"
                                                   for k, v in cluster.items()))
        for name, trunk in (("internal", internal), ("external", external),
                            *(trunks or {}).items()):
            body = "\n".join(f"{k} = {_toml(v)}" for k, v in trunk.items())
            lines.append(f"[trunks.{name}]\n{body}")
        for name, names in (routes or {}).items():
            lines.append(f"[routes.{name}]\ntrunks = {_toml(names)}")
        if metrics_port is not None:
            lines.append(f"[metrics]\nport = {metrics_port}")
        if tables:
            lines.append(tables.strip())
        self.config.write_text("\n\n".join(lines) + "\n")
        self.daemon: subprocess.Popen[bytes] | None = None
        self.store = SqlStore(check_url or self.db_url)
        self.cli("init")

    # ----- CLI -----

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "cli.app", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"dialer {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def template(self, name: str, numbers: Sequence[str], *, message: float = 1.0,
                 **options: Any) -> None:
        csv = self.tmp / f"{name}.csv"
        csv.write_text("number,name\n" + "".join(f"{n},Person {n}\n" for n in numbers))
        audio = tone_wav(self.tmp / f"{name}.wav", message)
        args = ["template", "add", name, "--audio", str(audio), "--recipients", str(csv)]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is False:
                args.append("--no-" + key.replace("_", "-"))
            else:
                args += [flag, str(value)]
        self.cli(*args)

    def start_campaign(self, template: str, *extra: str) -> int:
        import json

        out = self.cli("campaign", "start", template, "--json", *extra).stdout
        return int(json.loads(out)["id"])

    # ----- daemon -----

    def serve(self, *options: str) -> Dialer:
        """Start ``dialer serve`` (with ``options``: ``--log-format json``); return once it
        serves (past reconciliation) and a worker has been ready."""
        starts = self.log_text().count("dialer serving")
        with open(self.log, "ab") as log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "cli.app", "serve", "--config", str(self.config),
                 *options],
                cwd=ROOT, env={**self.env, "DIALER_DB": self.db_url}, stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        self.wait(lambda: self.log_text().count("dialer serving") > starts or None, 30,
                  "the daemon did not start serving")
        self.wait(lambda: "ready" in self.log_text() or None, 30, "no worker became ready")
        return self

    def stop(self, timeout: float = 20.0) -> int | None:
        try:
            return self._stop(timeout)
        finally:
            self.kill_workers()  # those a killed daemon left: they would outlive the test
            self.store.dispose()

    def worker_processes(self) -> list[int]:
        """Pids of every SIP worker of this installation, attached or not (from /proc)."""
        mark = f"{self.tmp}/data/run/".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"sip.worker" in cmd and mark in cmd:
                pids.append(int(entry.name))
        return sorted(pids)

    def kill_workers(self) -> None:
        for pid in self.worker_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _stop(self, timeout: float) -> int | None:
        if self.daemon is None or self.daemon.poll() is not None:
            return None if self.daemon is None else self.daemon.returncode
        self.daemon.send_signal(signal.SIGTERM)
        try:
            return self.daemon.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.daemon.kill()
            self.daemon.wait()
            raise AssertionError("the daemon did not stop on SIGTERM\n" + self.log_tail()) from exc

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid of the newest start of each worker, from the daemon's log."""
        pids: dict[int, int] = {}
        for m in re.finditer(r"worker (\d+) (?:started \(pid (\d+)\)|\(pid (\d+)\) adopted)",
                             self.log_text()):
            pids[int(m.group(1))] = int(m.group(2) or m.group(3))
        return pids

    def wait(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        """``testkit.wait.until``, giving up at once if the daemon exits; the log tail in the
        message."""
        def alive() -> None:
            if self.daemon is not None and self.daemon.poll() is not None:
                raise AssertionError(f"the daemon exited ({self.daemon.returncode}) while "
                                     f"waiting: {what}\n{self.log_tail()}")

        return until(probe, timeout, what, 0.1, check=alive, detail=self.log_tail)

    # ----- database -----

    def campaign(self, cid: int) -> dict[str, Any]:
        return self.store.campaign_detail(cid)

    def attempts(self, cid: int) -> list[dict[str, Any]]:
        return self.store.attempts_of(cid)

    def wait_state(self, cid: int, states: Sequence[str], timeout: float) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            d = self.campaign(cid)
            return d if d["state"] in states else None

        return self.wait(probe, timeout, f"campaign {cid} to reach {states}")


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
