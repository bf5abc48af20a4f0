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

from dialer.domain import CampaignSettings, Kind, Limits, Outcome
from dialer.errors import DialerError
from dialer.recipients import Recipient
from dialer.storage import counters
from dialer.storage.models import CampaignRow
from dialer.storage.store import EndReport, SqlStore
from fixtures_core import db_url, pg_database, store  # noqa: F401 - pytest fixtures

NOW = 1_900_000_000.0
OPS = ("tick", "end", "end", "end", "grant", "stop_recipient", "suspend", "resume", "stop",
       "recover", "new_campaign")


def setup(store: SqlStore) -> None:
    sha = hashlib.sha256(b"a").hexdigest()
    store.add_media(data=b"a", sha256=sha, rate=8000, seconds=1.0, source=None, now=NOW)
    recs = [Recipient(number=str(100 + i), kind=Kind.INTERNAL) for i in range(4)] + [
        Recipient(number=f"+3906698200{i:02d}", kind=Kind.EXTERNAL) for i in range(3)]
    store.add_template(name="T", settings=CampaignSettings(attempts=2, retry_delay=0.0,
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
