"""Why calls wait on the nodes (``dialer.core.cluster.load_lines``): workers running late (the
overload gate: they take no new calls) and a node whose every call slot is in use, as
``campaign watch`` and ``campaign show`` say it; and end to end through the CLI."""

from __future__ import annotations

import time
from typing import Any

from dialer.core.cluster import LeaseTerms, NodeLoad, load_lines
from tests.test_cli_surface import WAV, Cli, cli  # noqa: F401 - cli: a fixture


def node(**kw: Any) -> dict[str, Any]:
    return {"name": "n1", "state": "live", "calls": 0, "slots": None, "late": 0, **kw}


def test_a_node_with_free_slots_and_no_late_worker_says_nothing() -> None:
    assert load_lines([node(calls=3, slots=8)], waiting=True) == []
    assert load_lines([node(calls=8, slots=None)], waiting=True) == []  # not reported yet


def test_a_full_node_is_named_only_when_recipients_wait() -> None:
    [line] = load_lines([node(calls=500, slots=500)], waiting=True)
    assert line.startswith("node n1 is full: 500 calls in progress, 500 call slots")
    assert load_lines([node(calls=500, slots=500)], waiting=False) == []
    [line] = load_lines([node(calls=0, slots=0)], waiting=True)
    assert line == "node n1 has no SIP worker taking calls: new calls wait"


def test_late_workers_are_named_whatever_waits_and_stopped_nodes_are_not() -> None:
    lines = load_lines([node(calls=480, slots=480, late=5), node(name="n2", state="stopped",
                                                                 late=9)], waiting=True)
    assert lines == ["node n1: 5 SIP workers running late (the machine is short of CPU): no "
                     "new calls there until they catch up",
                     "node n1 is full: 480 calls in progress, 480 call slots ([sip] workers x "
                     "calls_per_worker, less those running late, within the overload hold): new "
                     "calls wait for a free one"]


def test_campaign_show_and_watch_say_the_node_is_full(cli: Cli) -> None:  # noqa: F811
    cli.ok("template", "add", "Drill", "--audio", str(WAV),
           "--recipients", cli.csv("number\n101\n102\n103\n"))
    cid = cli.json("campaign start", "campaign", "start", "Drill")["id"]
    s = cli.store()
    try:
        now = time.time()
        terms = LeaseTerms()
        lease = s.join(node="n1", host="h", address="127.0.0.1", pid=1, now=now, terms=terms,
                       pid_alive=lambda _pid: True)
        assert len(s.tick(now=now, node="n1", capacity=2).calls) == 2  # 2 slots: both taken
        s.renew(node="n1", generation=lease.generation, now=now + 1, terms=terms,
                load=NodeLoad(slots=2, late=1))
    finally:
        s.dispose()
    text = " ".join(cli.ok("campaign", "show", str(cid)).split())
    assert "node n1 is full: 2 calls in progress, 2 call slots" in text
    assert "node n1: 1 SIP worker running late" in text
    frames = cli.ok("campaign", "watch", str(cid), "--json", "--once")
    assert "node n1 is full" in frames
    [n] = cli.json("nodes", "nodes")  # validated against docs/cli-json.md
    assert (n["calls"], n["slots"], n["late"]) == (2, 2, 1)
    table = cli.ok("nodes")  # 80 columns: the cell may wrap
    assert "2/2" in table and "late)" in table
