"""Random confirmation keys in the simulator (issue 15): the real daemon draws a digit per call
when it records the attempt (a seeded source here), the dialogue accepts only that digit, and
a far end that always presses the same digit confirms at chance, never otherwise."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dialer import ipc
from dialer.core import keys
from tests.sim import Behaviour, Simulation
from tests.test_sim import BACKENDS, Store, campaigns_done, dispose, internal, launch, make_store

FIXED = "4"  # what the auto-attendant presses at every prompt
CALLS = 600


@pytest.fixture(params=BACKENDS)
def each_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Run:
    attempts: list[dict[str, Any]]
    events: list[dict[str, Any]]
    dials: dict[str, ipc.Dial]  # what the daemon told the (fake) worker, by attempt
    refusals: dict[str, float]  # dialer_confirmations_refused_total by what


def _run(store: Store, tmp: Path, n: int, default: Behaviour, seed: int,
         **settings: Any) -> Run:
    cid = launch(store, "Drill", [internal(i) for i in range(n)], attempts=1, **settings)
    sim = Simulation(store, tmp, default=default, draw=random.Random(seed).randrange)
    dials: dict[str, ipc.Dial] = {}
    dial = sim.gateway.dial

    def record(message: ipc.Dial) -> int | None:
        dials[message.call_id] = message
        return dial(message)

    sim.gateway.dial = record  # type: ignore[method-assign]
    try:
        sim.run(done=lambda: campaigns_done(store))
    finally:
        sim.stop()
    refusals = {w: sim.daemon.metrics.registry.get_sample_value(
        "dialer_confirmations_refused_total", {"what": w}) or 0.0 for w in ("answer", "listen")}
    return Run(store.attempts_of(cid), store.events_of(cid), dials, refusals)


ANSWER = {"answer_key": "random", "listen_confirm": False}
LISTEN = {"listen_key": "random", "answer_confirm": False}


# 600 calls on SQLite take some 15 s: the listen key runs there on the fake only
@pytest.mark.parametrize(("backend", "which", "settings"), [
    ("sqlite", "answer", ANSWER), ("memory", "answer", ANSWER), ("memory", "listen", LISTEN)])
def test_a_fixed_digit_far_end_confirms_at_chance_and_only_on_the_recorded_digit(
        backend: str, tmp_path: Path, which: str, settings: dict[str, Any]) -> None:
    store = make_store(backend, tmp_path)
    try:
        run = _run(store, tmp_path, CALLS, Behaviour("fixed_key", key=FIXED), 15, **settings)
    finally:
        dispose(store)
    attempts, events = run.attempts, run.events
    assert len(attempts) == CALLS
    digits = keys.choices(None)  # the other confirmation is off: 2 to 8
    drawn = [a[f"{which}_key"] for a in attempts]
    assert set(drawn) == set(digits)  # every digit is drawn, nothing else
    other = "listen" if which == "answer" else "answer"
    assert all(a[f"{other}_key"] is None for a in attempts)  # a key not in use is not drawn
    confirmed = [a for a in attempts if a[f"{which}_confirmed_at"] is not None]
    # chance: 1 in the number of possible digits, within 3 standard deviations
    p = 1 / len(digits)
    mean, sd = CALLS * p, (CALLS * p * (1 - p)) ** 0.5
    assert abs(len(confirmed) - mean) <= 3 * sd, (len(confirmed), mean, sd)
    # every confirmation is on the digit recorded on its attempt, and that digit always confirms
    assert {a["id"] for a in confirmed} == {a["id"] for a in attempts
                                            if a[f"{which}_key"] == FIXED}
    assert all(a["outcome"] == "contacted" for a in confirmed)
    assert all(a["outcome"] == "not_confirmed" for a in attempts if a not in confirmed)
    by_attempt: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_attempt.setdefault(e["attempt_id"] or "", []).append(e)
    for a in attempts:
        evs = by_attempt[a["id"]]
        started = next(e for e in evs if e["kind"] == "attempt_started")
        assert started["detail"][f"{which}_key"] == a[f"{which}_key"]  # the history has it
        pressed = [e["detail"]["key"] for e in evs if e["kind"] == "key"]
        refused = [e["detail"] for e in evs if e["kind"] == "key_refused"]
        if a in confirmed:  # confirmed by the key just pressed, which is the recorded one
            kinds = [e["kind"] for e in evs]
            at = kinds.index("confirmed")
            assert kinds[at - 1] == "key" and evs[at - 1]["detail"]["key"] == a[f"{which}_key"]
            assert refused == []
        else:  # pressed twice, refused twice, then given up
            assert pressed == [FIXED, FIXED]
            assert refused == [{"what": which, "key": FIXED}] * 2
        # the worker was told the drawn digit, and plays the prompt that says it
        dial = run.dials[a["id"]]
        assert dial.dialogue[f"{which}_key"] == a[f"{which}_key"]
        assert dial.dialogue[f"{which}_random"] is True
        assert Path(dial.media[f"{which}_prompt"]).name == f"{which}_prompt_{a[f'{which}_key']}.wav"
    # each refusal is counted by the daemon's metrics
    assert run.refusals == {which: 2 * (CALLS - len(confirmed)),
                            other: 0}


def test_a_person_pressing_the_announced_digits_is_contacted_with_two_different_keys(
        each_backend: str, tmp_path: Path) -> None:
    store = make_store(each_backend, tmp_path)
    try:
        run = _run(store, tmp_path, 60, Behaviour("confirm"), 3, answer_key="random",
                   listen_key="random")
    finally:
        dispose(store)
    attempts, events = run.attempts, run.events
    assert all(a["outcome"] == "contacted" for a in attempts)
    for a in attempts:
        assert a["answer_key"] in keys.RANDOM_DIGITS and a["listen_key"] in keys.RANDOM_DIGITS
        assert a["answer_key"] != a["listen_key"]
        assert a["keys"] == a["answer_key"] + a["listen_key"]
    assert not any(e["kind"] == "key_refused" for e in events)


def test_fixed_keys_draw_nothing(each_backend: str, tmp_path: Path) -> None:
    store = make_store(each_backend, tmp_path)
    try:
        run = _run(store, tmp_path, 5, Behaviour("confirm"), 3)
    finally:
        dispose(store)
    attempts, events = run.attempts, run.events
    for d in run.dials.values():  # the fixed keys and their usual prompts
        assert (d.dialogue["answer_key"], d.dialogue["answer_random"]) == ("1", False)
        assert Path(d.media["answer_prompt"]).name == "answer_prompt.wav"
    assert all(a["answer_key"] is None and a["listen_key"] is None for a in attempts)
    assert all(a["keys"] == "19" for a in attempts)
    assert all("answer_key" not in e["detail"] for e in events)
