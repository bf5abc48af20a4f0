"""A call's prompts follow one another without a frame of silence between them.

PJMEDIA's conference bridge sends a call's audio from its clock thread every 20 ms, and sends no
RTP for a call while no player transmits to it. ``Players.play`` used to stop the old prompt
before starting the new one: a tick that fell in between (the worker's main thread preempted on a
busy machine) sent nothing, a gap of one packet or more at every prompt change. At 300
concurrent calls (bench/capacity.py) 576 such gaps, worst gap p99 61 ms; made before broken, 320,
p99 53 ms (bench/RESULTS.md). The order of the player operations is what this test pins.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import sip.calls as calls


class _Player:
    log: list[str] = []
    made = 0

    def __init__(self) -> None:
        _Player.made += 1
        self.name = f"p{_Player.made}"

    def createPlayer(self, path: str, options: int) -> None:  # noqa: N802 - pjsua2's name
        self.log.append(f"create {self.name} {path}")

    def startTransmit(self, sink: Any) -> None:  # noqa: N802
        self.log.append(f"start {self.name}")

    def stopTransmit(self, sink: Any) -> None:  # noqa: N802
        self.log.append(f"stop {self.name}")


@pytest.fixture
def players(monkeypatch: pytest.MonkeyPatch) -> calls.Players:
    _Player.log = []
    _Player.made = 0
    monkeypatch.setattr("sip.calls.pj.AudioMediaPlayer", _Player)
    return calls.Players()


def _attempt() -> Any:
    sink = object()
    return SimpleNamespace(call_id="c1", player=None, sink=None,
                           media={"answer_prompt": "a.wav", "message": "m.wav"},
                           call=SimpleNamespace(getAudioMedia=lambda _i: sink))


def test_the_next_prompt_starts_before_the_last_one_stops(players: calls.Players) -> None:
    att = _attempt()
    assert players.play(att, "answer_prompt") is None
    assert players.play(att, "message") is None
    assert _Player.log == ["create p1 a.wav", "start p1",
                           "create p2 m.wav", "start p2", "stop p1"]
    assert att.player.name == "p2"
    assert [p.name for _, p in players.retired] == ["p1"]


def test_a_prompt_without_audio_stops_the_last_one(players: calls.Players) -> None:
    att = _attempt()
    players.play(att, "answer_prompt")
    assert players.play(att, "goodbye") is None  # no file for it: silence, not the old prompt
    assert _Player.log[-1] == "stop p1"
    assert att.player is None


def test_a_prompt_that_cannot_play_stops_the_last_one(players: calls.Players,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    att = _attempt()
    players.play(att, "answer_prompt")

    def broken(self: _Player, path: str, options: int) -> None:
        import pjsua2

        raise pjsua2.Error()

    monkeypatch.setattr(_Player, "createPlayer", broken)
    problem = players.play(att, "message")
    assert problem is not None and "cannot play m.wav" in problem
    assert _Player.log[-1] == "stop p1" and att.player is None
