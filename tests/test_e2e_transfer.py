"""Connect to a person end to end (issue 15): the real ``dialer serve`` transfers a call to the
connect key's URI with a blind SIP REFER, and SIPp is the far end that takes it or refuses it.

Timing from the ACK (English prompts, a 1 s message): key 1 one second into "press 1"; key 9
1.5 s into "press 9"; the connect key 1.5 s into the offer that follows ("to speak to a person
now, press 0", 3.1 s)."""

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
BRIDGE = "sip:bridge@127.0.0.1:5999"


def transfer_kinds(d: Dialer, cid: int) -> list[tuple[str, dict[str, Any]]]:
    return [(e["kind"], e["detail"]) for e in d.store.events_of(cid)
            if e["kind"].startswith("transfer")]


def refer_target(value: str) -> str:
    """The URI of a Refer-To header value (name-addr or addr-spec)."""
    return value.strip().removeprefix("<").split(">", 1)[0]


def test_the_connect_key_sends_a_refer_to_the_configured_uri_and_the_call_is_transferred(
        start_sipp: Callable[..., Sipp], dialer: Callable[..., Dialer], tmp_path: Path) -> None:
    later = make_dtmf_captures(tmp_path / "later", ["0"], later=1000)  # after 1 and 9
    sipp = start_sipp("transfer", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS,
                                        "keyc_ms": 1500, "dtmfc": str(later["0"])})
    d, cid = launch(dialer, sipp, ["1001"], message=MESSAGE, attempts=2, ring_timeout=10,
                    connect_key="0", connect_to=BRIDGE)
    detail = finished(d, cid)
    assert detail["state"] == "completed"
    [a] = d.attempts(cid)
    assert (a["outcome"], a["keys"]) == ("contacted", "190")  # confirmed first: contacted
    [(call_id, refer_to)] = sipp.refers()
    assert call_id == a["id"] and refer_target(refer_to) == BRIDGE
    events = transfer_kinds(d, cid)
    assert [k for k, _ in events] == ["transfer_requested", "transfer_accepted", "transferred"]
    assert all(e["to"] == BRIDGE for _, e in events)
    assert events[-1][1]["code"] == 200  # the NOTIFY that closed the subscription
    assert [e.detail for e in sipp.events() if e.kind == "NOTIFIED"] == ["trying", "done"]
    assert sipp.ended_call_ids() == {a["id"]: "bye-received"}  # we hung up our leg


def test_a_far_end_that_refuses_the_refer_leaves_the_call_in_the_dialogue(
        start_sipp: Callable[..., Sipp], dialer: Callable[..., Dialer], tmp_path: Path) -> None:
    """The connect key at "press 9": the REFER is refused, the dialer says so and asks for 9
    again; SIPp presses 9 and the call ends contacted, with the failure on record."""
    connect = make_dtmf_captures(tmp_path / "c", ["0"], later=1000)  # after 1
    nine = make_dtmf_captures(tmp_path / "n", ["9"], later=2000)  # after the connect key
    sipp = start_sipp("transfer_refused", keys={
        "key1_ms": KEY1_MS, "keyc_ms": KEY9_MS, "key9_ms": 4500,
        "dtmfc": str(connect["0"]), "dtmf9l": str(nine["9"])})
    d, cid = launch(dialer, sipp, ["1001"], message=MESSAGE, attempts=1, ring_timeout=10,
                    connect_key="0", connect_to=BRIDGE)
    detail = finished(d, cid)
    assert detail["state"] == "completed"
    [a] = d.attempts(cid)
    assert (a["outcome"], a["keys"]) == ("contacted", "109")
    assert a["listen_confirmed_at"]
    [(_, refer_to)] = sipp.refers()
    assert refer_target(refer_to) == BRIDGE
    assert transfer_kinds(d, cid) == [("transfer_requested", {"to": BRIDGE, "code": 0}),
                                      ("transfer_failed", {"to": BRIDGE, "code": 603})]
    played = [e["detail"]["prompt"] for e in d.store.events_of(cid) if e["kind"] == "played"]
    assert played == ["answer_prompt", "message", "listen_prompt", "connecting",
                      "transfer_failed", "listen_prompt", "goodbye"]  # no offer after a failure
    assert sipp.ended_call_ids() == {a["id"]: "bye-received"}


def test_a_refer_from_the_far_end_is_refused_and_nobody_else_is_called(
        start_sipp: Callable[..., Sipp], dialer: Callable[..., Dialer]) -> None:
    """pjsua accepts an in-dialog REFER by default and dials its Refer-To itself: a call no
    attempt records, placed wherever the far end says. The dialer refuses it (403) and the
    call goes on to its end."""
    victim = start_sipp("answer_confirm")
    sipp = start_sipp("refer_in", keys={"victim": victim.uri})
    d, cid = launch(dialer, sipp, ["1001"], message=MESSAGE, attempts=1, ring_timeout=10,
                    answer_confirm=False, listen_confirm=False)
    detail = finished(d, cid)
    assert detail["state"] == "completed"
    [a] = d.attempts(cid)
    assert a["outcome"] == "contacted"
    assert victim.received_call_ids() == []
    assert [e.detail for e in sipp.events() if e.kind == "REFERRED"] == ["refused-403"]
    assert sipp.ended_call_ids() == {a["id"]: "bye-received"}
