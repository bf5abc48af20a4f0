"""One log format for the daemon and its SIP workers (and PJSIP's own lines, which the workers
route through ``logging``): ``dialer serve --log-format text|json``.

Text: ``2026-12-03 08:16:40,713 INFO sip.worker: worker 0 ready ... worker=0 pid=18744``: the
structured fields of a line (campaign, recipient, attempt, call_id, worker, pid) follow the
message. JSON: one object per line (python-json-logger) with ``at``, ``level``, ``logger``,
``message`` and the same fields. The daemon tells its workers the format in ``init``, so a
collector reading the service's journal gets one format throughout.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

FIELDS = ("campaign", "recipient", "attempt", "call_id", "worker", "pid")
FORMATS = ("text", "json")


class TextFormatter(logging.Formatter):
    """The human log line, with the structured fields appended: ``campaign=3 recipient=12
    call_id=...`` (the attempt id is the Call-ID; shown once unless they differ)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [(f, getattr(record, f)) for f in FIELDS if getattr(record, f, None) is not None]
        call_id = getattr(record, "call_id", None)
        shown = [f"{k}={v}" for k, v in fields if not (k == "attempt" and v == call_id)]
        return f"{line} {' '.join(shown)}" if shown else line


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: ``at``, ``level``, ``logger``, ``message`` and the fields."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "at", "levelname": "level", "name": "logger"})


class _Worker(logging.Filter):
    """Stamps every line of a worker process with its index and pid."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker, self.pid = worker, os.getpid()

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker, record.pid = self.worker, self.pid
        return True


def setup(fmt: str = "text", level: int = logging.INFO, *, stream: TextIO | None = None,
          worker: int | None = None) -> None:
    """Send every log line to ``stream`` (stderr) as ``fmt``; ``worker``: this process is SIP
    worker ``worker`` (its lines say so)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: text or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter: Any = JsonFormatter() if fmt == "json" else TextFormatter()
    handler.setFormatter(formatter)
    if worker is not None:
        handler.addFilter(_Worker(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
