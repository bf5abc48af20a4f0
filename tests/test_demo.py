"""`dialer demo` runs a whole campaign against simulated phones and ends with the outcome table."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.sip


def test_demo_completes_with_the_expected_outcomes() -> None:
    proc = subprocess.run([sys.executable, "-m", "cli.app", "demo", "--keep"], cwd=ROOT,
                          capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "80", "HOME": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    kept = re.search(r"kept (\S+)", proc.stdout)
    assert kept, proc.stdout[-2000:]
    tmp = Path(kept.group(1))
    try:
        db = sqlite3.connect(tmp / "demo.db")
        rows = db.execute("select name, state, attempts from recipients order by position").fetchall()
        db.close()
        assert len(rows) == 20
        by_label: dict[str, set[str]] = {}
        for name, state, _ in rows:
            by_label.setdefault(name, set()).add(state)
        # Phones that confirm (at once or on the second call) are contacted; the others fail.
        for label in ("confirms", "busy, then ok", "no answer, then ok", "wrong key",
                      "hangs up, then ok"):
            assert by_label[label] == {"contacted"}, (label, rows)
        for label in ("busy", "never answers", "silent"):
            assert by_label[label] == {"failed"}, (label, rows)
        assert "campaign incomplete: 14 contacted, 6 failed" in proc.stdout
        assert all(len(line) <= 80 for line in proc.stdout.splitlines()), "table wider than 80"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
