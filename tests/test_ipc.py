"""The typed wire (dialer.ipc): one encoder/decoder pair, the JSON of wire version 1 unchanged,
and what is unknown or malformed dropped with a logged error, never a crash."""

from __future__ import annotations

import json
import logging
import socket
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialer import ipc
from dialer.ipc import Channel
from sip.link import Link


def _dumps(raw: dict[str, Any]) -> str:
    return json.dumps(raw, separators=(",", ":"))


# What the daemon and the worker sent before the wire was typed, key for key, in order.
TODAY: list[tuple[ipc.Message, dict[str, Any]]] = [
    (ipc.Init(worker=1, bind="127.0.0.1", trunks={"internal": {"uri": "sip:pbx"}},
              allowed_sources=["10.0.0.1"], reject_code=403, orphan_timeout=60.0, log_level=1,
              rtp_port=40020, rtp_port_range=20, wire=1, digest="abc"),
     {"op": "init", "worker": 1, "bind": "127.0.0.1", "trunks": {"internal": {"uri": "sip:pbx"}},
      "allowed_sources": ["10.0.0.1"], "reject_code": 403, "orphan_timeout": 60.0,
      "log_level": 1, "rtp_port": 40020, "rtp_port_range": 20, "wire": 1, "digest": "abc"}),
    (ipc.Dial(call_id="c", trunk="internal", uri="sip:200@pbx", from_uri=None, display="D",
              ring_timeout=30, media={"message": "/m.wav"}, dialogue={"max_repeats": 3}),
     {"op": "dial", "call_id": "c", "trunk": "internal", "uri": "sip:200@pbx", "from_uri": None,
      "display": "D", "ring_timeout": 30, "media": {"message": "/m.wav"},
      "dialogue": {"max_repeats": 3}}),
    (ipc.Hangup(call_id="c"), {"op": "hangup", "call_id": "c"}),
    (ipc.Trust(allowed_sources=["a"]), {"op": "trust", "allowed_sources": ["a"]}),
    (ipc.TrunkState(trunk="t", up=False, reason="r"),
     {"op": "trunk", "trunk": "t", "up": False, "reason": "r"}),
    (ipc.Shutdown(), {"op": "shutdown"}),
    (ipc.Attach(wire=1), {"op": "attach", "wire": 1}),
    (ipc.Retire(), {"op": "retire"}),
    (ipc.Ack(seq=7), {"op": "ack", "seq": 7}),
    (ipc.Ready(worker=0, pid=12, sip_port=5070),
     {"ev": "ready", "worker": 0, "pid": 12, "sip_port": 5070}),
    (ipc.Reg(trunk="t", code=200, reason="OK", expires=300),
     {"ev": "reg", "trunk": "t", "code": 200, "reason": "OK", "expires": 300}),
    (ipc.Ringing(call_id="c", at=1.5, seq=3), {"ev": "ringing", "call_id": "c", "at": 1.5,
                                               "seq": 3}),
    (ipc.Answered(call_id="c", at=1.5), {"ev": "answered", "call_id": "c", "at": 1.5}),
    (ipc.Played(call_id="c", prompt="message", at=1.5),
     {"ev": "played", "call_id": "c", "prompt": "message", "at": 1.5}),
    (ipc.Key(call_id="c", key="1", at=1.5), {"ev": "key", "call_id": "c", "key": "1", "at": 1.5}),
    (ipc.Refusal(call_id="c", what="answer", key="3", at=1.5),
     {"ev": "refusal", "call_id": "c", "what": "answer", "key": "3", "at": 1.5}),
    (ipc.Confirmed(call_id="c", what="answer", at=1.5),
     {"ev": "confirmed", "call_id": "c", "what": "answer", "at": 1.5}),
    (ipc.Slots(held=2), {"ev": "slots", "held": 2}),
    (ipc.Dropped(counts={"foreign": 3}, last="INVITE from 1.2.3.4"),
     {"ev": "dropped", "counts": {"foreign": 3}, "last": "INVITE from 1.2.3.4"}),
    (ipc.Ended(call_id="c", status=None, reason="r", q850=None, outcome="failed",
               answered_at=None, keys="", answer_confirmed_at=None, listen_confirmed_at=None,
               at=2.0, seq=9),
     {"ev": "ended", "call_id": "c", "status": None, "reason": "r", "q850": None,
      "outcome": "failed", "answered_at": None, "keys": "", "answer_confirmed_at": None,
      "listen_confirmed_at": None, "at": 2.0, "seq": 9}),
    (ipc.Log(level="error", message="m"), {"ev": "log", "level": "error", "message": "m"}),
    (ipc.Transfer(call_id="c", result="failed", code=603, to="sip:b@x", at=2.0),
     {"ev": "transfer", "call_id": "c", "result": "failed", "code": 603, "to": "sip:b@x",
      "at": 2.0}),
    (ipc.Load(overloaded=True, lag=0.2), {"ev": "load", "overloaded": True, "lag": 0.2}),
    (ipc.Hello(wire=1, pid=5, worker=0, sip_port=5070, digest="d", ready=True),
     {"ev": "hello", "wire": 1, "pid": 5, "worker": 0, "sip_port": 5070, "digest": "d",
      "ready": True}),
    (ipc.Attached(calls=["c"], dropped=0, alone=1.5),
     {"ev": "attached", "calls": ["c"], "dropped": 0, "alone": 1.5}),
    (ipc.Refused(reason="another daemon is attached", pid=4),
     {"ev": "refused", "reason": "another daemon is attached", "pid": 4}),
    (ipc.Lease(valid_for=11.5), {"op": "lease", "valid_for": 11.5}),
    (ipc.WorkerLost(worker=0, pid=4, calls=["c"], retiring=False),
     {"ev": "worker_lost", "worker": 0, "pid": 4, "calls": ["c"], "retiring": False}),
]


def test_every_message_of_the_docstring_has_a_class() -> None:
    assert set(ipc.OPS) == {"init", "dial", "hangup", "trust", "trunk", "shutdown", "attach",
                            "retire", "ack", "lease"}
    assert set(ipc.EVENTS) == {"ready", "reg", "ringing", "answered", "played", "key",
                               "confirmed", "refusal", "transfer", "slots", "dropped", "ended",
                               "log", "load", "hello", "attached", "refused", "worker_lost"}
    assert {type(m) for m, _ in TODAY} == {*ipc.OPS.values(), *ipc.EVENTS.values()}


@pytest.mark.parametrize(("msg", "raw"), TODAY, ids=[type(m).__name__ for m, _ in TODAY])
def test_the_json_on_the_wire_is_byte_for_byte_that_of_wire_version_1(
        msg: ipc.Message, raw: dict[str, Any]) -> None:
    assert _dumps(ipc.encode(msg)) == _dumps(raw)
    assert ipc.decode(json.loads(_dumps(raw))) == msg


def test_fields_a_message_may_omit_take_their_defaults_and_unknown_keys_are_ignored() -> None:
    assert ipc.decode({"ev": "ended", "call_id": "x", "seq": 1}) == ipc.Ended(call_id="x", seq=1)
    assert ipc.decode({"op": "retire", "later": True}) == ipc.Retire()
    assert ipc.encode(ipc.Ringing(call_id="a")) == {"ev": "ringing", "call_id": "a", "at": None}
    assert "seq" not in ipc.encode(ipc.Ended(call_id="a"))
    assert "ready" not in ipc.encode(ipc.Hello(pid=1))


@pytest.mark.parametrize("raw", [
    {"ev": "gossip"}, {"op": "reboot"}, {"what": 1}, [1, 2], "ended", None, 3,
    {"op": 5}, {"ev": "ended"},  # an event without its call
    {"ev": "ended", "call_id": 7}, {"ev": "load", "overloaded": "yes"},
    {"ev": "slots", "held": True}, {"op": "ack", "seq": 1.5}, {"op": "dial", "call_id": "c",
                                                              "media": {"message": 3}},
    {"ev": "attached", "calls": ["a", None]}, {"op": "init", "trunks": []},
])
def test_unknown_or_malformed_messages_are_dropped_with_a_logged_error(
        raw: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="dialer.ipc"):
        assert ipc.decode(raw) is None
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    with pytest.raises(ipc.WireError):
        ipc.parse(raw)


def test_a_channel_drops_what_it_cannot_decode_and_keeps_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    a, b = socket.socketpair()
    mine, theirs = Channel(a), Channel(b)
    try:
        for raw in ({"ev": "ringing", "call_id": "a", "at": 1.0}, {"ev": "bogus"},
                    {"ev": "ended"}, [1], {"ev": "ended", "call_id": "a", "outcome": "busy"}):
            theirs.send(raw)  # type: ignore[arg-type]
        with caplog.at_level(logging.ERROR):
            got = mine.receive_msgs()
        assert got == [ipc.Ringing(call_id="a", at=1.0), ipc.Ended(call_id="a", outcome="busy")]
        assert sum(r.levelno == logging.ERROR for r in caplog.records) == 3
    finally:
        mine.close()
        theirs.close()


def test_a_worker_link_drops_a_bad_operation_and_goes_on(tmp_path: Path) -> None:
    a, b = socket.socketpair()
    daemon = Channel(b)
    link = Link(Channel(a), None)
    try:
        daemon.send({"op": "dial"})  # no call_id
        daemon.send({"op": "launch", "call_id": "x"})
        daemon.send({"ev": "ringing", "call_id": "x"})  # an event from the daemon
        daemon.send({"op": "hangup", "call_id": "c"})
        got: list[ipc.Op] = []
        for _ in range(50):
            got += link.receive()
            if got:
                break
        assert got == [ipc.Hangup(call_id="c")]
        assert link.attached
    finally:
        link.close()
        daemon.close()


def _values(tp: Any) -> st.SearchStrategy[Any]:
    """Hypothesis values of a field type of the wire."""
    if tp is type(None):
        return st.none()
    origin = typing.get_origin(tp)
    if origin in (typing.Union, __import__("types").UnionType):
        return st.one_of(*(_values(t) for t in typing.get_args(tp)))
    if origin is list:
        return st.lists(_values(typing.get_args(tp)[0]), max_size=3)
    if origin is dict:
        k, v = typing.get_args(tp)
        return st.dictionaries(_values(k), _values(v), max_size=3)
    if tp is Any:
        return st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
    return {bool: st.booleans(), int: st.integers(-2**40, 2**40),
            float: st.floats(allow_nan=False, allow_infinity=False),
            str: st.text(max_size=8)}[tp]


def _messages() -> st.SearchStrategy[ipc.Message]:
    strategies = []
    classes: list[type[ipc.Op] | type[ipc.Event]] = [*ipc.OPS.values(), *ipc.EVENTS.values()]
    for cls in classes:
        strategies.append(st.builds(cls, **{f.name: _values(f.type)
                                            for f in msgspec.structs.fields(cls)}))
    return st.one_of(*strategies)


@given(_messages())
def test_property_every_message_survives_the_round_trip_through_json(msg: ipc.Message) -> None:
    raw = json.loads(_dumps(ipc.encode(msg)))
    assert ipc.decode(raw) == msg
    assert list(raw)[0] in ("op", "ev")
