"""The history chain in the database (dialer.storage.chain), on SQLite and PostgreSQL: a finished
run is sealed once, whichever node ends it; rows edited, inserted or deleted behind the store's
back (raw SQL) are named by ``verify_run``; an untouched run verifies."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import insert, text

from dialer.core.chain import Problem, Status
from dialer.core.domain import Outcome
from dialer.storage.models import EventRow
from dialer.storage.store import SqlStore
from tests.fixtures_core import db_url, pg_database, store  # noqa: F401 - pytest fixtures
from tests.test_store import NOW, campaign, end, rec, template, tick


def finished_run(store: SqlStore) -> int:
    """A run played to its end: two recipients contacted, one busy (failed), completed."""
    template(store, recipients=[rec("101"), rec("102"), rec("+390612345")], attempts=1,
             threshold=2)
    cid = campaign(store)
    a, b, c = tick(store).calls
    store.record_progress(a.attempt_id, "ringing", NOW + 0.2)
    store.record_progress(a.attempt_id, "answered", NOW + 0.5)
    store.record_progress(a.attempt_id, "key", NOW + 0.8, key="9")
    end(store, a, Outcome.CONTACTED, NOW + 1, answered_at=NOW + 0.5, listen_confirmed_at=NOW + 0.8,
        keys="9")
    end(store, b, Outcome.CONTACTED, NOW + 1.5, answered_at=NOW + 1.2)
    end(store, c, Outcome.BUSY, NOW + 2, status=486, reason="Busy Here")
    assert tick(store, NOW + 3).transitions == [(cid, "active", "completed")]
    return cid


def chained(store: SqlStore, cid: int) -> list[tuple[int, str, str]]:
    """(seq, kind, id) of every row of the run's chain, in chain order."""
    with store.engine.connect() as con:
        rows = [(seq, "attempt", str(i)) for seq, i in con.execute(text(
            "SELECT chain_seq, id FROM attempts WHERE campaign_id = :c"), {"c": cid})]
        rows += [(seq, "event", str(i)) for seq, i in con.execute(text(
            "SELECT chain_seq, id FROM events WHERE campaign_id = :c"), {"c": cid})]
    return sorted(rows)


def sql(store: SqlStore, statement: str, **params: Any) -> None:
    with store.engine.begin() as con:
        assert con.execute(text(statement), params).rowcount == 1


def test_an_untouched_finished_run_verifies(store: SqlStore) -> None:
    cid = finished_run(store)
    rows = chained(store, cid)
    assert [seq for seq, _, _ in rows] == list(range(len(rows)))  # every row, in one chain
    report = store.verify_run(cid)
    assert report.status is Status.INTACT and report.rows == len(rows) > 10
    h = store.run_history(cid)
    assert h["run"]["chain"]["head"] == report.head and h["run"]["chain"]["rows"] == len(rows)
    assert all(len(x["chain_hash"]) == 64 for x in h["attempts"] + h["events"])
    assert store.campaign_detail(cid)["chain"]["head"] == report.head
    assert store.runs_sealed == 1
    # deleting the campaign (and its template) leaves the chain as it was
    store.delete_campaign(cid, actor="tester", now=NOW + 10)
    assert store.verify_run(cid).ok and store.verify_run(cid).head == report.head


@pytest.mark.parametrize(("table", "column", "value"), [
    ("attempts", "status", 200), ("attempts", "outcome", "contacted"),
    ("attempts", "ended_at", "2027-01-15 08:00:00"), ("attempts", "listen_key", "4"),
    ("events", "actor", "mallory"),
    ("events", "detail", '{"key": "1"}')])
def test_one_edited_column_names_its_row_as_altered(store: SqlStore, table: str, column: str,
                                                    value: Any) -> None:
    cid = finished_run(store)
    kind = "attempt" if table == "attempts" else "event"
    if kind == "attempt":  # the busy one (its status, outcome, end all differ from the values)
        victim = next(a["id"] for a in store.attempts_of(cid) if a["outcome"] == "busy")
    else:
        _, _, victim = [r for r in chained(store, cid) if r[1] == kind][1]
    key: Any = victim if kind == "attempt" else int(victim)
    if column == "ended_at" and store.postgresql:
        value = dt.datetime(2027, 1, 15, 8, 0)
    sql(store, f"UPDATE {table} SET {column} = :v WHERE id = :id", v=value, id=key)
    report = store.verify_run(cid)
    assert report.status is Status.BROKEN
    assert [(f.kind, f.id, f.problem) for f in report.findings] == [(kind, victim, Problem.ALTERED)]
    assert report.line().startswith(f"run {cid}: chain broken at {kind} {victim}: altered")


def test_an_inserted_row_is_named(store: SqlStore) -> None:
    cid = finished_run(store)
    with store.engine.begin() as con:
        new_id = con.execute(insert(EventRow).values(
            at=dt.datetime.fromtimestamp(NOW + 1.2, dt.UTC), campaign_id=cid, kind="key",
            recipient_id=None, attempt_id=None, actor=None, detail={"key": "9"})
            .returning(EventRow.id)).scalar_one()
    report = store.verify_run(cid)
    assert [(f.kind, f.id, f.problem) for f in report.findings] == [
        ("event", str(new_id), Problem.INSERTED)]


def test_a_deleted_middle_row_and_a_deleted_last_row_are_named(store: SqlStore) -> None:
    cid = finished_run(store)
    rows = chained(store, cid)
    _, kind, victim = rows[4]
    _, next_kind, next_id = rows[5]
    table = "attempts" if kind == "attempt" else "events"
    sql(store, f"DELETE FROM {table} WHERE id = :id",
        id=victim if kind == "attempt" else int(victim))
    report = store.verify_run(cid)
    assert [(f.kind, f.id, f.problem, f.missing) for f in report.findings] == [
        (next_kind, next_id, Problem.DELETED_BEFORE, 1)]
    assert "1 row deleted before it" in report.line()

    last_seq, last_kind, last_id = rows[-1]
    assert last_kind == "event"  # the move to completed
    sql(store, "DELETE FROM events WHERE id = :id", id=int(last_id))
    report = store.verify_run(cid)
    assert [(f.kind, f.problem, f.seq, f.missing) for f in report.findings] == [
        (next_kind, Problem.DELETED_BEFORE, 5, 1), ("run", Problem.MISSING_AT_END, last_seq, 1)]


def test_a_stopped_run_is_sealed_when_its_last_call_ends_by_whichever_node(
        store: SqlStore) -> None:
    template(store, recipients=[rec("101"), rec("102")])
    cid = campaign(store)
    a, b = tick(store).calls
    end(store, a, Outcome.BUSY, NOW + 1, status=486)
    assert store.verify_run(cid).status is Status.NOT_SEALED_YET
    assert store.set_campaign_state(cid, "stop", actor="op", now=NOW + 2) == "terminated"
    report = store.verify_run(cid)  # a call goes on: not over yet
    assert report.status is Status.NOT_SEALED_YET and "not sealed yet" in report.line()
    other = SqlStore(store.url)  # another node of the same database ends the last call
    try:
        end(other, b, Outcome.CONTACTED, NOW + 5)
        assert other.runs_sealed == 1
    finally:
        other.dispose()
    report = store.verify_run(cid)
    assert report.ok and report.rows == len(chained(store, cid))
    end(store, b, Outcome.CONTACTED, NOW + 6)  # a repeated report changes nothing
    assert store.verify_run(cid).head == report.head and store.runs_sealed == 0


def test_an_email_report_after_the_seal_joins_the_chain(store: SqlStore) -> None:
    cid = finished_run(store)
    before = store.verify_run(cid)
    rid = store.run_history(cid)["recipients"][0]["id"]
    store.record_emails(cid, [(rid, "ada@example.org", True, "<m1@example.org>")], at=NOW + 9)
    after = store.verify_run(cid)
    assert after.ok and after.rows == before.rows + 1 and after.head != before.head
    kept = store.verify_run(cid, expect_head=before.head)  # an export made before the e-mail
    assert kept.ok and kept.head_at == before.rows - 1
    assert "1 rows appended since" in kept.line()
    assert store.verify_run(cid, expect_head="ab" * 32).findings[0].problem is \
        Problem.HEAD_UNKNOWN


def test_a_run_that_ended_before_the_chain_is_not_sealed(store: SqlStore) -> None:
    cid = finished_run(store)
    with store.engine.begin() as con:  # as revision 0008 leaves a run that ended before it
        con.execute(text("UPDATE runs SET chain_head = NULL, chain_rows = NULL, "
                         "sealed_at = NULL"))
        for table in ("attempts", "events"):
            con.execute(text(f"UPDATE {table} SET chain_seq = NULL, chain_prev = NULL, "
                             "chain_hash = NULL"))
    report = store.verify_run(cid)
    assert report.status is Status.NOT_SEALED
    assert report.line() == (f"run {cid}: not sealed (it finished before the history was "
                             "chained): nothing to verify")


@pytest.mark.postgres
def test_a_stop_and_the_last_call_ending_at_once_on_two_nodes_seal_once(store: SqlStore) -> None:
    """PostgreSQL, two nodes at the same instant: the operator's stop (node A) and the end of the
    run's last call (node B) both reach the seal; whichever waits for the other's locks sees what
    it committed, so exactly one seals. A third connection holds the run row so that both are
    in flight together (A waits for it, B for A's campaign row), then lets them go."""
    if store.sqlite:
        pytest.skip("SQLite has a single writer: no two transactions are ever in flight")
    import threading

    from testkit.wait import until

    template(store, recipients=[rec("101"), rec("102")])
    cid = campaign(store)
    a, b = tick(store).calls
    end(store, a, Outcome.BUSY, NOW + 1, status=486)
    node_a, node_b = SqlStore(store.url), SqlStore(store.url)
    errors: list[BaseException] = []

    def run(fn: Any) -> threading.Thread:
        def body() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)
        t = threading.Thread(target=body)
        t.start()
        return t

    def waiting() -> int:
        with store.engine.connect() as con:
            return int(con.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar_one())

    try:
        with store.engine.connect() as holder:
            holder.execute(text("SELECT id FROM runs WHERE id = :c FOR UPDATE"), {"c": cid})
            stopping = run(lambda: node_a.set_campaign_state(cid, "stop", actor="op",
                                                             now=NOW + 2))
            until(lambda: waiting() >= 1, 30, "the stop waiting for the run row")
            ending = run(lambda: end(node_b, b, Outcome.CONTACTED, NOW + 2))
            until(lambda: waiting() >= 2, 30, "the last call's end waiting for the stop")
            holder.rollback()
        stopping.join(30)
        ending.join(30)
        assert not errors and not stopping.is_alive() and not ending.is_alive()
        assert (node_a.runs_sealed, node_b.runs_sealed) == (0, 1)
        report = store.verify_run(cid)
        assert report.ok and report.rows == len(chained(store, cid))
    finally:
        node_a.dispose()
        node_b.dispose()


def test_events_written_after_the_seal_join_the_chain(store: SqlStore) -> None:  # noqa: F811
    """A completed run is sealed in the pass that completes it; its escalation is decided after
    (``escalation_decided``), and an alert's resolution that stops its campaign writes
    ``alert_resolved`` after the stop sealed it: both are appended to the chain, not taken for
    inserted rows (found when issue 15's parts met)."""
    from dialer.core.alerts import Alert, AlertRoute, AlertStatus
    from dialer.core.permissions import Role

    template(store, "Managers", recipients=[rec("201")])
    template(store, "Fire", recipients=[rec("101")], attempts=1, escalate_to="Managers")
    cid = campaign(store, "Fire")
    (a,) = tick(store).calls
    end(store, a, Outcome.CONTACTED, NOW + 1, answered_at=NOW + 0.5)
    tick(store, NOW + 2)
    assert store.verify_run(cid).ok
    (done,) = store.escalate(now=NOW + 3).outcomes
    assert done.cause == "completed"
    report = store.verify_run(cid)
    assert report.ok, report.line()
    assert report.rows == len(store.attempts_of(cid)) + len(store.events_of(cid))
    route = AlertRoute(index=1, matchers=(), template="Managers", stop_on_resolve=True)
    firing = Alert(status=AlertStatus.FIRING, fingerprint="f00d",
                   starts_at="2027-01-15T08:00:00.000000Z", ends_at=None,
                   labels={"alertname": "Fire alarm"})
    store.set_operator("am", frozenset({Role.CAMPAIGNS}), actor="tester", now=NOW)
    _, launched = store.alert_fired(firing, route, actor="am", now=NOW + 4)
    assert launched is not None
    resolved = Alert(status=AlertStatus.RESOLVED, fingerprint="f00d",
                     starts_at="2027-01-15T08:00:00.000000Z",
                     ends_at="2027-01-15T09:00:00.000000Z", labels={"alertname": "Fire alarm"})
    action, _ = store.alert_resolved(resolved, route, actor="am", now=NOW + 5)
    assert action.value == "stopped"
    report = store.verify_run(launched)
    assert report.ok, report.line()
    assert [e["kind"] for e in store.events_of(launched)][-1] == "alert_resolved"
