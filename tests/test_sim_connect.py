"""Connect to a person in the simulator (issue 15): the real daemon, store, scheduler and
dialogue, with recipients who press the connect key. A transfer counts as contacted only after
the confirmations unless the template says otherwise; a refused transfer leaves the call in the
dialogue; the steps are on record. On both stores (SQLite, the in-memory fake)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.sim import T0, Behaviour, Simulation
from tests.test_sim import Invariants, campaigns_done, internal, launch, sim_store  # noqa: F401

BRIDGE = "sip:bridge@pbx.example.com"


def _steps(store: Any, cid: int) -> dict[str, list[tuple[str, Any]]]:
    """number -> the transfer events of its calls, in order."""
    number = {a["id"]: a["number"] for a in store.attempts_of(cid)}
    out: dict[str, list[tuple[str, Any]]] = {}
    for e in store.events_of(cid):
        if e["kind"].startswith("transfer") and e.get("attempt_id") in number:
            out.setdefault(number[e["attempt_id"]], []).append((e["kind"],
                                                                e["detail"]["code"]))
    return out


def test_transfers_count_as_the_template_says_and_a_refusal_goes_on(
        sim_store: Any, tmp_path: Path) -> None:  # noqa: F811
    a, b, c, d = (internal(i) for i in range(1, 5))
    script = {a: [Behaviour("confirm_connect")], b: [Behaviour("connect_first")],
              c: [Behaviour("connect_first", transfer=603)], d: [Behaviour("connect_first")]}
    strict = launch(sim_store, "Strict", [a, b, c], attempts=2, connect_key="0",
                    connect_to=BRIDGE)
    lenient = launch(sim_store, "Lenient", [d], attempts=2, connect_key="0", connect_to=BRIDGE,
                     connect_confirms=True)
    sim = Simulation(sim_store, tmp_path / "data", script)
    try:
        sim.run(until=T0 + 3600, done=lambda: campaigns_done(sim_store),
                check=Invariants(sim_store))
    finally:
        sim.stop()
    outcomes: dict[str, list[str]] = {}
    for cid in (strict, lenient):
        for att in sim_store.attempts_of(cid):
            outcomes.setdefault(att["number"], []).append(att["outcome"])
    assert outcomes == {
        a: ["contacted"],  # confirmed, then transferred
        b: ["not_confirmed", "not_confirmed"],  # transferred before confirming: called again
        c: ["contacted"],  # refused: back to "press 1", confirmed
        d: ["contacted"],  # --connect-confirms: the transfer counts on its own
    }
    steps = {**_steps(sim_store, strict), **_steps(sim_store, lenient)}
    done = [("transfer_requested", 0), ("transfer_accepted", 202), ("transferred", 200)]
    assert steps == {a: done, b: done * 2, c: [("transfer_requested", 0),
                                              ("transfer_failed", 603)], d: done}
    states = {r["number"]: r["state"] for r in sim_store.campaign_detail(strict)["recipients"]}
    assert states == {a: "contacted", b: "failed", c: "contacted"}
