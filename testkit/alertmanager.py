"""A real Prometheus Alertmanager (Debian's ``prometheus-alertmanager``) on loopback, with its own
configuration in a temporary directory: one route to a webhook receiver (the dialer's) that
sends a bearer token (``http_config.authorization``), short group and repeat intervals, no
clustering. Alerts are posted to its API (``/api/v2/alerts``) as Prometheus would."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testkit.net import LOCALHOST, PeerError, free_port
from testkit.wait import until

BINARY_NAMES = ("prometheus-alertmanager", "alertmanager")


def binary() -> str | None:
    """The Alertmanager binary, or None when it is not installed."""
    return next((p for name in BINARY_NAMES if (p := shutil.which(name))), None)


class Alertmanager:
    """Alertmanager whose only receiver is the webhook at ``webhook_url``."""

    def __init__(self, workdir: Path, *, webhook_url: str, token: str,
                 group_wait: str = "1s", group_interval: str = "1s",
                 repeat_interval: str = "2s") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_file = workdir / "alertmanager.log"
        token_file = workdir / "webhook.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        # YAML is a superset of JSON: the configuration is written as JSON
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(json.dumps({
            "route": {"receiver": "dialer", "group_by": ["alertname"],
                      "group_wait": group_wait, "group_interval": group_interval,
                      "repeat_interval": repeat_interval},
            "receivers": [{"name": "dialer", "webhook_configs": [{
                "url": webhook_url, "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer",
                                                  "credentials_file": str(token_file)}}}]}],
        }, indent=2))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def start(self) -> Alertmanager:
        path = binary()
        if path is None:
            raise PeerError("Alertmanager is not installed (Debian package "
                            "prometheus-alertmanager)")
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [path, f"--config.file={self.config}",
                 f"--storage.path={self.workdir / 'data'}",
                 f"--web.listen-address={LOCALHOST}:{self.port}",
                 "--cluster.listen-address=",  # no gossip port: one instance
                 "--log.level=debug"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        until(self._ready, 30, "Alertmanager to be ready", 0.1, check=self._alive,
              detail=self.log_tail)
        return self

    def _alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise PeerError(f"Alertmanager exited ({self.process.returncode}):\n"
                            f"{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def post_alert(self, labels: Mapping[str, str], *, starts_at: dt.datetime,
                   ends_at: dt.datetime | None = None,
                   annotations: Mapping[str, str] | None = None) -> None:
        """Post one alert, as Prometheus does: firing until ``ends_at`` (in the past: the
        alert is resolved)."""
        alert: dict[str, Any] = {"labels": dict(labels), "annotations": dict(annotations or {}),
                                 "startsAt": starts_at.isoformat(),
                                 "generatorURL": "http://prometheus.test:9090/graph"}
        if ends_at is not None:
            alert["endsAt"] = ends_at.isoformat()
        req = urllib.request.Request(f"{self.url}/api/v2/alerts", method="POST",
                                     data=json.dumps([alert]).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 200:
                raise PeerError(f"Alertmanager refused the alert: {resp.status}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
