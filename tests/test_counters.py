"""The per-campaign recipient counters (dialer.storage.counters) always equal a GROUP BY count,
whatever sequence of store operations ran: claims, call ends of every outcome, operator stops of
recipients and campaigns, grants, suspend/resume, recovery after a crash."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from dialer.core.domain import CampaignSettings, Kind, Limits, Outcome
from dialer.core.errors import DialerError
from dialer.core.recipients import Recipient
from dialer.storage import counters
from dialer.storage.models import CampaignRow
from dialer.storage.store import EndReport, SqlStore
from tests.fixtures_core import db_url, pg_database, store  # noqa: F401 - pytest fixtures

NOW = 1_900_000_000.0
OPS = ("tick", "end", "end", "end", "grant", "stop_recipient", "suspend", "resume", "stop",
       "recover", "new_campaign")


def setup(store: SqlStore, retry_delay: float = 0.0, size: int = 4) -> None:
    sha = hashlib.sha256(b"a").hexdigest()
    store.add_media(data=b"a", sha256=sha, rate=8000, seconds=1.0, source=None, now=NOW)
    recs = [Recipient(number=str(100 + i), kind=Kind.INTERNAL) for i in range(size)] + [
        Recipient(number=f"+3906698200{i:02d}", kind=Kind.EXTERNAL) for i in range(size - 1)]
    store.add_template(name="T", settings=CampaignSettings(attempts=2, retry_delay=retry_delay,
                                                           limits=Limits(total=3)),
                       audio_sha=sha, audio_seconds=1.0, recipients=recs, now=NOW, actor="t")


def assert_counters_match(store: SqlStore) -> None:
    with store.session() as s:
        rows = s.execute(select(CampaignRow)).scalars().all()
        truth = counters.count(s, [r.id for r in rows])
        for r in rows:
            assert counters.tally_of(r) == truth[r.id], (r.id, r.state)


def run_ops(store: SqlStore, ops: list[str], seed: int) -> None:
    rng = random.Random(seed)
    setup(store)
    camps = [store.start_campaign(template="T", name=None, now=NOW, start_at=NOW, actor="t")]
    now = NOW
    open_calls: list[str] = []
    for op in ops:
        now += 1.0
        cid = rng.choice(camps)
        try:
            if op == "tick":
                open_calls += [c.attempt_id for c in store.tick(now=now, node="n").calls]
            elif op == "end" and open_calls:
                aid = open_calls.pop(rng.randrange(len(open_calls)))
                store.finish_attempt(EndReport(attempt_id=aid, at=now,
                                               outcome=rng.choice(list(Outcome))))
            elif op == "grant" and hasattr(store, "grant_attempts"):
                store.grant_attempts(cid, [], 1, actor="t", now=now)
            elif op == "stop_recipient" and hasattr(store, "stop_recipient"):
                store.stop_recipient(cid, str(100 + rng.randrange(4)), actor="t", now=now)
            elif op in ("suspend", "resume", "stop"):
                store.set_campaign_state(cid, op, actor="t", now=now)
            elif op == "recover":
                store.recover(node="n", now=now)
                open_calls.clear()
            elif op == "new_campaign":
                camps.append(store.start_campaign(template="T", name=None, now=now,
                                                  start_at=now, actor="t"))
        except DialerError:
            pass  # an operation refused in this state changes nothing
        assert_counters_match(store)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.sampled_from(OPS), min_size=5, max_size=40), seed=st.integers(0, 999))
def test_counters_equal_a_count_after_random_operations(tmp_path_factory: Any, ops: list[str],
                                                        seed: int) -> None:
    s = SqlStore(f"sqlite:///{tmp_path_factory.mktemp('c') / 'c.db'}")
    s.migrate()
    try:
        run_ops(s, ops, seed)
    finally:
        s.dispose()


def test_counters_on_both_backends(store: SqlStore) -> None:  # noqa: F811
    ops = ["tick", "end", "end", "tick", "stop_recipient", "end", "tick", "grant", "suspend",
           "new_campaign", "tick", "end", "resume", "tick", "recover", "tick", "stop"] * 2
    run_ops(store, ops, 7)


def test_null_counters_are_counted_on_the_next_pass(store: SqlStore) -> None:  # noqa: F811
    setup(store)
    cid = store.start_campaign(template="T", name=None, now=NOW, start_at=NOW, actor="t")
    calls = store.tick(now=NOW, node="n").calls
    with store.session() as s:
        counters.invalidate(s, [cid])  # as after revision 0003 on an existing database
    store.finish_attempt(EndReport(attempt_id=calls[0].attempt_id, at=NOW + 1,
                                   outcome=Outcome.CONTACTED))
    with store.session() as s:
        row = s.get(CampaignRow, cid)
        assert row is not None and counters.tally_of(row) is None  # NULL + 1 stays NULL
    store.tick(now=NOW + 2, node="n")
    assert_counters_match(store)


@pytest.mark.parametrize("state", ["contacted", "failed"])
def test_a_state_set_through_the_orm_is_counted(store: SqlStore, state: str) -> None:  # noqa: F811
    from dialer.storage.models import RecipientRow

    setup(store)
    cid = store.start_campaign(template="T", name=None, now=NOW, start_at=NOW, actor="t")
    with store.session() as s:
        rec = s.scalars(select(RecipientRow).where(RecipientRow.campaign_id == cid)).first()
        assert rec is not None
        rec.state = state
        rec.state = state  # twice: counted once
    assert_counters_match(store)


# ----- the scheduling pass keeps campaigns in memory: a cache, never the truth -----

CACHE_OPS = ("tick",) * 4 + ("end",) * 5 + ("grant", "stop_recipient", "suspend", "resume",
                                            "stop", "new_campaign", "settings", "later")


def cold_tick(store: SqlStore, tmp: Any, now: float, capacity: int | None) -> Any:
    """The pass a store that never ran one would make on a copy of the database right now."""
    import sqlite3

    src = sqlite3.connect(str(store.engine.url.database))
    path = tmp / f"cold-{now}.db"
    dst = sqlite3.connect(str(path))
    src.backup(dst)
    src.close()
    dst.close()
    cold = SqlStore(f"sqlite:///{path}")
    try:
        return cold.tick(now=now, node="n", capacity=capacity)
    finally:
        cold.dispose()


def decided(tick: Any) -> Any:
    return ([(c.campaign_id, c.recipient_id, c.number) for c in tick.calls], tick.transitions,
            tick.next_due, tick.settings)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.sampled_from(CACHE_OPS), min_size=5, max_size=60),
       seed=st.integers(0, 999))
def test_a_warm_pass_decides_as_a_cold_one(tmp_path_factory: Any, ops: list[str],
                                           seed: int) -> None:
    """Node A keeps its view between passes while another store (node B, the CLI) changes
    campaigns, recipients and settings; every pass of A decides exactly what a store with no
    memory decides on a copy of the same database: the same calls, transitions, next due time."""
    tmp = tmp_path_factory.mktemp("w")
    a = SqlStore(f"sqlite:///{tmp / 'w.db'}")
    a.migrate()
    b = SqlStore(a.url)
    rng = random.Random(seed)
    try:
        setup(b, retry_delay=rng.choice([0.0, 5.0, 20.0]), size=rng.choice([2, 2, 4]))
        camps = [b.start_campaign(template="T", name=None, now=NOW, start_at=NOW, actor="t"),
                 b.start_campaign(template="T", name=None, now=NOW, start_at=NOW + 30,
                                  actor="t")]
        b.set_settings(actor="t", now=NOW, max_campaigns=rng.choice([None, 1, 2]))
        now = NOW
        open_calls: list[str] = []
        for op in ops:
            now += rng.choice([0.5, 1.0, 7.0])
            cid = rng.choice(camps)
            try:
                if op == "tick":
                    capacity = rng.choice([None, 0, 1, 2])
                    expected = decided(cold_tick(a, tmp, now, capacity))
                    got = a.tick(now=now, node="n", capacity=capacity)
                    assert decided(got) == expected
                    open_calls += [c.attempt_id for c in got.calls]
                elif op == "end" and open_calls:
                    aid = open_calls.pop(rng.randrange(len(open_calls)))
                    b.finish_attempt(EndReport(attempt_id=aid, at=now, outcome=rng.choice(
                        [*Outcome, Outcome.CONTACTED, Outcome.CONTACTED])))
                elif op == "grant":
                    b.grant_attempts(cid, [], 1, actor="t", now=now)
                elif op == "stop_recipient":
                    b.stop_recipient(cid, str(100 + rng.randrange(4)), actor="t", now=now)
                elif op in ("suspend", "resume", "stop"):
                    b.set_campaign_state(cid, op, actor="t", now=now)
                elif op == "new_campaign":
                    camps.append(b.start_campaign(template="T", name=None, now=now,
                                                  start_at=now + rng.choice([0, 5, 60]),
                                                  actor="t"))
                elif op == "settings":
                    b.set_settings(actor="t", now=now, max_calls=rng.choice([None, 1, 2, 5]),
                                   max_campaigns=rng.choice([None, 1, 2]))
                elif op == "later":
                    now += rng.choice([4.0, 15.0, 60.0])  # starts and retry delays fall due
            except DialerError:
                pass
        assert_counters_match(a)
    finally:
        a.dispose()
        b.dispose()


def test_another_node_s_changes_reach_the_next_pass(store: SqlStore) -> None:  # noqa: F811
    """On both backends: a campaign suspended and a retry set by another store are seen by the
    next pass of a store that keeps its view (and so is a limit changed there)."""
    setup(store)
    other = SqlStore(store.url)
    try:
        cid = other.start_campaign(template="T", name=None, now=NOW, start_at=NOW, actor="t")
        first = store.tick(now=NOW, node="n")
        assert len(first.calls) == 3 and first.next_due is None
        other.finish_attempt(EndReport(attempt_id=first.calls[0].attempt_id, at=NOW + 1,
                                       outcome=Outcome.BUSY))  # retry_delay 0: due at once
        again = store.tick(now=NOW + 2, node="n")
        assert [c.campaign_id for c in again.calls] == [cid]
        other.set_settings(actor="t", now=NOW + 3, max_calls=3)
        other.set_campaign_state(cid, "suspend", actor="t", now=NOW + 3)
        other.finish_attempt(EndReport(attempt_id=again.calls[0].attempt_id, at=NOW + 4,
                                       outcome=Outcome.CONTACTED))
        paused = store.tick(now=NOW + 5, node="n")
        assert paused.calls == [] and paused.settings.limits.total == 3
        assert other.set_campaign_state(cid, "resume", actor="t", now=NOW + 6) == "active"
        resumed = store.tick(now=NOW + 7, node="n")
        assert resumed.transitions == [] and len(resumed.calls) == 1
        assert_counters_match(store)
    finally:
        other.dispose()


def test_every_change_of_a_campaign_row_moves_its_version(store: SqlStore) -> None:  # noqa: F811
    setup(store)
    cid = store.start_campaign(template="T", name=None, now=NOW, start_at=NOW, actor="t")

    def version() -> int:
        with store.session() as s:
            row = s.get(CampaignRow, cid)
            assert row is not None
            return row.version

    seen = [version()]
    calls = store.tick(now=NOW, node="n").calls  # scheduled -> active, claims (counters)
    seen.append(version())
    store.finish_attempt(EndReport(attempt_id=calls[0].attempt_id, at=NOW + 1,
                                   outcome=Outcome.BUSY))  # a recipient state and retry time
    seen.append(version())
    store.set_campaign_state(cid, "suspend", actor="t", now=NOW + 2)
    seen.append(version())
    assert seen == sorted(set(seen)), seen  # strictly growing
