"""Random confirmation keys end to end (issue 15): the real ``dialer serve`` draws the digits
of each call, the prompts say them, and SIPp presses the digits announced, which the test reads
from the attempt (recorded before the INVITE leaves) and hands to the scenario."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testkit import Sipp
from testkit.harness import Dialer
from testkit.rtp import make_dtmf_captures
from tests.test_e2e import KEY1_MS, KEY9_MS, MESSAGE, finished, launch

pytestmark = pytest.mark.sip
DIGITS = tuple("2345678")


def _tell_digits(d: Dialer, cid: int, sipp: Sipp, count: int) -> dict[str, dict[str, Any]]:
    """As each INVITE arrives, read its attempt's drawn digits and tell SIPp to press them."""
    told: dict[str, dict[str, Any]] = {}
    while len(told) < count:
        calls = sipp.wait_for_invites(len(told) + 1, 30)
        for call_id in calls:
            if call_id in told:
                continue
            attempt = next(a for a in d.attempts(cid) if a["id"] == call_id)
            sipp.tell(call_id, {"X-Answer": attempt["answer_key"] or "0",
                                "X-Listen": attempt["listen_key"] or "0"})
            told[call_id] = attempt
    return told


def test_sipp_pressing_the_digits_announced_is_contacted(
        start_sipp: Callable[..., Sipp], dialer: Callable[..., Dialer], tmp_path: Path) -> None:
    # the listen digit may be lower than the answer digit: its captures come later in sequence
    later = make_dtmf_captures(tmp_path / "later", DIGITS, later=1000)
    sipp = start_sipp("random_key", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS,
                                          **{f"dtmfl{k}": str(p) for k, p in later.items()}})
    d, cid = launch(dialer, sipp, ["1001", "1002", "1003"], message=MESSAGE, attempts=1,
                    ring_timeout=10, answer_key="random", listen_key="random")
    told = _tell_digits(d, cid, sipp, 3)
    detail = finished(d, cid)
    assert detail["state"] == "completed"
    attempts = {a["id"]: a for a in d.attempts(cid)}
    assert set(attempts) == set(told)
    for a in attempts.values():
        assert a["answer_key"] in DIGITS and a["listen_key"] in DIGITS
        assert a["answer_key"] != a["listen_key"]
        assert a["outcome"] == "contacted"
        assert a["keys"] == a["answer_key"] + a["listen_key"]  # exactly what SIPp pressed
        assert a["answer_confirmed_at"] and a["listen_confirmed_at"]
    assert sorted(sipp.keys_sent()) == sorted(
        (cid_, k) for cid_, a in attempts.items() for k in (a["answer_key"], a["listen_key"]))
    assert sorted(sipp.told()) == sorted((c, a["answer_key"] + a["listen_key"])
                                         for c, a in attempts.items())


def test_sipp_pressing_the_usual_keys_is_not_confirmed(
        start_sipp: Callable[..., Sipp], dialer: Callable[..., Dialer]) -> None:
    """answer_confirm.xml presses 1 then 9, as a person used to the fixed keys would: with a
    random answer key, 1 is refused (the prompt repeats) and 9 ends the call unconfirmed."""
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": 1000})
    d, cid = launch(dialer, sipp, ["1001"], message=MESSAGE, attempts=1, ring_timeout=10,
                    answer_key="random")
    detail = finished(d, cid)
    assert detail["state"] == "incomplete"
    [a] = d.attempts(cid)
    assert a["answer_key"] in DIGITS and a["listen_key"] is None
    assert (a["outcome"], a["keys"], a["answer_confirmed_at"]) == ("not_confirmed", "19", None)
    refused = [e["detail"] for e in d.store.events_of(cid) if e["kind"] == "key_refused"]
    assert refused == [{"what": "answer", "key": "1"}, {"what": "answer", "key": "9"}]
