"""Deleting a campaign whose calls are still in progress (on SQLite and PostgreSQL): a stopped
campaign is final at once, but its calls end only when the workers have hung them up. Deleting
it in between removed its recipients, and the call's end then failed an assertion in the store
(``_finish_in``): the attempt could never be accounted for."""

from __future__ import annotations

import pytest

from dialer.core.domain import Outcome
from dialer.core.errors import StateError
from dialer.storage.store import SqlStore
from tests.fixtures_core import db_url, pg_database, store  # noqa: F401 - pytest fixtures
from tests.test_store import NOW, campaign, end, rec, template, tick


def test_a_stopped_campaign_with_calls_in_progress_is_not_deleted_until_they_end(
        store: SqlStore) -> None:  # noqa: F811
    template(store, recipients=[rec("101"), rec("102")])
    cid = campaign(store)
    a, b = tick(store).calls
    end(store, a, Outcome.BUSY, NOW + 1, status=486)
    store.set_campaign_state(cid, "stop", actor="op", now=NOW + 2)
    with pytest.raises(StateError, match="1 call still in progress"):
        store.delete_campaign(cid, actor="op", now=NOW + 3)
    end(store, b, Outcome.FAILED, NOW + 4, reason="hung up by the dialer")  # accounted for
    [ended] = [x for x in store.attempts_of(cid) if x["id"] == b.attempt_id]
    assert ended["ended_at"] is not None and ended["outcome"] == "failed"
    store.delete_campaign(cid, actor="op", now=NOW + 5)
    assert cid not in [c["id"] for c in store.list_campaigns()]
    assert len(store.run_history(cid)["attempts"]) == 2  # the history keeps both calls
