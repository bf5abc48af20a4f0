"""The capacity bench (bench/capacity.py) at a small size: correctness only, no timings.

The real daemon places 80 calls, 40 at a time, to a SIPp answerer that confirms each with keys
1 and 9 by RFC 2833. Whatever the machine's speed: every key the answerer sent is recorded on
the right attempt, every confirmation is stamped, no limit is exceeded from SIPp's view or the
database's, and no call is lost (every INVITE has its attempt, every attempt is closed, none by
a dead worker). The figures themselves are for bench/RESULTS.md, not for assertions (the
audio: a stream per call, none short, is correctness).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sip

ROOT = Path(__file__).resolve().parent.parent
CALLS = 40
RECIPIENTS = 80


def test_capacity_bench_small_is_correct(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("SIPp play_pcap_audio needs root or CAP_NET_RAW")
    out = tmp_path / "capacity.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "capacity.py"), "--calls", str(CALLS),
         "--recipients", str(RECIPIENTS), "--message", "5", "--skip-sipp-caller",
         "--timeout", "90", "--workdir", str(tmp_path / "bench"), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    d = json.loads(out.read_text())["dialer"]
    context = json.dumps(d, indent=1) + "\n" + proc.stdout[-2000:]
    assert not d.get("timed_out"), context
    # No limit exceeded, from either side.
    assert 0 < d["peak_established"] <= CALLS, context
    assert d["peak_db_open"] <= CALLS, context
    # No lost calls: every INVITE is an attempt, every attempt ended, none with a dead worker.
    assert d["attempts"] == d["invites"] == RECIPIENTS, context
    assert d["invites_without_attempt"] == d["attempts_without_invite"] == 0, context
    assert d["attempts_open"] == 0 and d["open_at_answerer_after_end"] == 0, context
    assert not {"worker_lost", "daemon_lost"} & set(d["outcomes"]), context
    # Confirmations recorded == confirmations sent, key by key and call by call.
    assert d["keys_recorded"] == d["keys_sent"], context
    assert d["calls_with_lost_keys"] == 0, context
    assert d["answer_confirmations"] == d["keys1_sent"], context
    assert d["listen_confirmations"] == d["keys9_sent"], context
    # The audio the answerer received (tcpdump, testkit.rtpquality): one stream per call, each
    # with the whole message; the capture itself lost nothing.
    audio = d.get("audio")  # None without tcpdump (scripts/test.sh installs it)
    if audio is not None:
        assert audio["streams"] == RECIPIENTS and audio["short"] == 0, context
        assert audio["capture_dropped"] in (0, None), context
    # The overload gate's measures were read from the daemon's metrics while calls were up.
    gate = d["gate"]
    assert set(gate) == {"wait", "lag", "late"} and 0.0 <= gate["wait"] <= 1.0, context
