"""SqlStore on SQLite and PostgreSQL (the same tests through the parametrized ``store`` fixture)."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from sqlalchemy import inspect, select

from dialer.core.domain import CampaignSettings, Kind, Limits, Outcome
from dialer.core.errors import DialerError, NotFound, StateError, ValidationError
from dialer.core.recipients import Recipient
from dialer.storage.models import AttemptRow, CampaignRow, RecipientRow, SettingsRow, TemplateRow
from dialer.storage.store import ClaimedCall, EndReport, SqlStore, Tick
from tests.fixtures_core import db_url, pg_database, store  # noqa: F401 - pytest fixtures

NOW = 1_800_000_000.0
NODE = "node-a"
I, E = Kind.INTERNAL, Kind.EXTERNAL


def rec(number: str, name: str | None = None) -> Recipient:
    kind = E if number.startswith("+") else I
    return Recipient(number=number, kind=kind, name=name)


def media(store: SqlStore, content: bytes = b"RIFF-fake-audio") -> str:
    sha = hashlib.sha256(content).hexdigest()
    assert store.add_media(data=content, sha256=sha, rate=8000, seconds=4.0, source="m.wav",
                           now=NOW) == sha
    return sha


def template(store: SqlStore, name: str = "Fire", recipients: list[Recipient] | None = None,
             **settings: Any) -> str:
    sha = media(store)
    st = CampaignSettings(**{"retry_delay": 60.0, "attempts": 3, **settings})
    recs = recipients if recipients is not None else [rec("101"), rec("102"), rec("103")]
    store.add_template(name=name, settings=st, audio_sha=sha, audio_seconds=4.0,
                       recipients=recs, now=NOW, actor="tester")
    return name


def campaign(store: SqlStore, tpl: str = "Fire", start_at: float = NOW, **kw: Any) -> int:
    return store.start_campaign(template=tpl, name=kw.pop("name", None), now=NOW,
                                start_at=start_at, actor="tester", **kw)


def tick(store: SqlStore, at: float = NOW, **kw: Any) -> Tick:
    return store.tick(now=at, node=kw.pop("node", NODE), **kw)


def end(store: SqlStore, call: ClaimedCall, outcome: Outcome, at: float,
        **kw: Any) -> Outcome | None:
    return store.finish_attempt(EndReport(attempt_id=call.attempt_id, outcome=outcome, at=at,
                                          **kw))


def recipients(store: SqlStore, cid: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = store.campaign_detail(cid)["recipients"]
    return rows


def states(store: SqlStore, cid: int) -> list[str]:
    return [r["state"] for r in recipients(store, cid)]


def numbers(calls: list[ClaimedCall]) -> list[str]:
    return [c.number for c in calls]


# ----- schema -----


def test_migrate_is_idempotent(store: SqlStore) -> None:
    store.check_ready()
    store.migrate()
    store.migrate()
    store.check_ready()
    gs = store.get_settings()
    assert gs.version == 0 and gs.max_campaigns is None and gs.limits == Limits()
    tables = set(inspect(store.engine).get_table_names())
    assert {"media", "settings", "templates", "template_recipients", "campaigns", "recipients",
            "attempts", "events", "alembic_version"} <= tables
    with store.session() as s:
        assert len(s.scalars(select(SettingsRow)).all()) == 1


def test_check_ready_before_init_raises(db_url: str) -> None:  # noqa: F811
    s = SqlStore(db_url)
    try:
        with pytest.raises(DialerError, match="not initialised: run 'dialer init'"):
            s.check_ready()
        s.migrate()
        s.check_ready()
    finally:
        s.dispose()


def test_settings_changes_are_versioned(store: SqlStore) -> None:
    gs = store.set_settings(actor="admin", now=NOW, max_campaigns=2, max_calls=10,
                            max_internal=8, max_external=6)
    assert gs.limits == Limits(total=10, internal=8, external=6) and gs.max_campaigns == 2
    assert (gs.version, gs.updated_by, gs.updated_at) == (1, "admin", NOW)
    assert store.set_settings(actor="admin", now=NOW, max_calls=None).version == 2
    assert store.get_settings().limits == Limits(internal=8, external=6)
    with pytest.raises(ValidationError):
        store.set_settings(actor="admin", now=NOW, max_calls=-1)
    with pytest.raises(ValidationError):
        store.set_settings(actor="admin", now=NOW, nonsense=1)


# ----- templates and the campaign snapshot -----


def test_media_stored_once_and_written_to_a_cache(store: SqlStore, tmp_path: Any) -> None:
    sha = media(store, b"abc")
    assert media(store, b"abc") == sha
    path = store.media_file(sha, tmp_path / "cache")
    assert path.read_bytes() == b"abc" and path.name == f"{sha}.wav"
    with pytest.raises(NotFound):
        store.media_file("0" * 64, tmp_path / "cache")


def test_template_round_trip_and_duplicate_name(store: SqlStore) -> None:
    template(store, priority=4, limits=Limits(total=2, external=1), threshold=2)
    tpl = store.get_template("Fire")
    assert tpl.settings.priority == 4 and tpl.settings.limits == Limits(total=2, external=1)
    assert [r.number for r in tpl.recipients] == ["101", "102", "103"]
    assert store.list_templates()[0]["recipients"] == 3
    with pytest.raises(ValidationError, match="already exists"):
        template(store)
    with pytest.raises(NotFound):
        store.get_template("Nope")


def test_campaign_keeps_its_snapshot(store: SqlStore) -> None:
    template(store, priority=3, attempts=2, retry_delay=30.0,
             recipients=[rec("101", "Ann"), rec("+390669820000", "Bob")])
    cid = campaign(store, name="Drill 1")
    before = store.campaign_detail(cid)
    # edit the template, then delete it
    with store.session() as s:
        row = s.scalar(select(TemplateRow).where(TemplateRow.name == "Fire"))
        assert row is not None
        row.settings = {**row.settings, "attempts": 9, "priority": 0, "retry_delay": 1.0}
    assert store.get_template("Fire").settings.attempts == 9
    with store.session() as s:
        row = s.scalar(select(TemplateRow).where(TemplateRow.name == "Fire"))
        s.delete(row)
    with pytest.raises(NotFound):
        store.get_template("Fire")
    after = store.campaign_detail(cid)
    assert after == before
    assert after["name"] == "Drill 1" and after["template"] == "Fire"
    assert after["settings"]["attempts"] == 2 and after["settings"]["priority"] == 3
    assert after["settings"]["display_name"] == "Drill 1"
    assert [(r["number"], r["name"], r["kind"]) for r in after["recipients"]] == [
        ("101", "Ann", "internal"), ("+390669820000", "Bob", "external")]
    # the daemon gets the snapshot too
    calls = tick(store).calls
    assert len(calls) == 2
    assert all(c.settings.attempts == 2 and c.settings.retry_delay == 30.0 for c in calls)
    assert calls[0].settings.display_name == "Drill 1"


def test_start_campaign_overrides_and_refusals(store: SqlStore) -> None:
    template(store, threshold=3)
    other = media(store, b"other audio")
    with pytest.raises(ValidationError, match="threshold"):
        campaign(store, recipients=[rec("201")])
    cid = campaign(store, recipients=[rec("201"), rec("202"), rec("203"), rec("204")],
                   audio_sha=other, audio_seconds=2.5)
    assert [r["number"] for r in recipients(store, cid)] == ["201", "202", "203", "204"]
    calls = tick(store).calls
    assert {c.audio_sha for c in calls} == {other} and calls[0].audio_seconds == 2.5
    template(store, name="Empty", recipients=[])
    with pytest.raises(ValidationError, match="no recipients"):
        campaign(store, tpl="Empty")
    sha = media(store)
    store.add_template(name="Off", settings=CampaignSettings(), audio_sha=sha, audio_seconds=1.0,
                       recipients=[rec("101")], now=NOW, actor="t", enabled=False)
    with pytest.raises(StateError, match="disabled"):
        campaign(store, tpl="Off")
    with pytest.raises(NotFound):
        campaign(store, tpl="Nope")


# ----- tick: activation and claims -----


def test_tick_activates_and_claims_within_the_campaign_limit(store: SqlStore) -> None:
    template(store, limits=Limits(total=2),
             recipients=[rec("101"), rec("102"), rec("103"), rec("104")])
    cid = campaign(store)
    assert store.campaign_detail(cid)["state"] == "scheduled"
    t1 = tick(store)
    assert t1.transitions == [(cid, "scheduled", "active")]
    assert numbers(t1.calls) == ["101", "102"]
    assert states(store, cid) == ["active", "active", "idle", "idle"]
    assert numbers(tick(store).calls) == []  # the campaign's 2 slots are busy
    end(store, t1.calls[0], Outcome.CONTACTED, NOW + 5)
    t3 = tick(store, NOW + 5)
    assert numbers(t3.calls) == ["103"] and t3.transitions == []
    assert states(store, cid) == ["contacted", "active", "active", "idle"]


def test_tick_respects_the_global_limits(store: SqlStore) -> None:
    store.set_settings(actor="admin", now=NOW, max_calls=3, max_internal=2, max_external=None)
    template(store, recipients=[rec("101"), rec("102"), rec("103"), rec("+390669820000"),
                                rec("+390669820001")])
    cid = campaign(store)
    calls = tick(store).calls
    # internal room 2, then only externals fit; total 3
    assert numbers(calls) == ["101", "102", "+390669820000"]
    assert [c.kind for c in calls] == [I, I, E]
    assert store.running_counts().total == 3
    assert tick(store).calls == []
    end(store, calls[2], Outcome.CONTACTED, NOW + 1)
    assert numbers(tick(store, NOW + 1).calls) == ["+390669820001"]
    assert states(store, cid) == ["active", "active", "idle", "contacted", "active"]


def test_capacity_bounds_a_tick(store: SqlStore) -> None:
    template(store)
    campaign(store)
    assert numbers(tick(store, capacity=1).calls) == ["101"]
    assert numbers(tick(store, capacity=0).calls) == []
    assert numbers(tick(store).calls) == ["102", "103"]


def test_higher_priority_campaign_is_served_first(store: SqlStore) -> None:
    store.set_settings(actor="admin", now=NOW, max_calls=2)
    template(store, name="Low", priority=1, recipients=[rec("101"), rec("102")])
    template(store, name="High", priority=5, recipients=[rec("201"), rec("202"), rec("203")])
    low = campaign(store, tpl="Low")
    high = campaign(store, tpl="High", start_at=NOW + 1)
    t0 = tick(store)
    assert t0.transitions == [(low, "scheduled", "active")] and numbers(t0.calls) == ["101", "102"]
    for c in t0.calls:
        end(store, c, Outcome.CONTACTED, NOW + 1)
    t1 = tick(store, NOW + 1)
    # low settles (completed) in the same tick; high takes both slots
    assert (high, "scheduled", "active") in t1.transitions
    assert numbers(t1.calls) == ["201", "202"]


def test_claimed_call_has_its_attempt_row_committed(store: SqlStore) -> None:
    template(store, recipients=[rec("101")])
    cid = campaign(store)
    (call,) = tick(store).calls
    assert (call.campaign_id, call.number, call.kind) == (cid, "101", I)
    # seen from another connection: the row is committed before the call is placed
    other = SqlStore(store.url)
    try:
        with other.session() as s:
            a = s.get(AttemptRow, call.attempt_id)
            assert a is not None and a.ended_at is None and a.outcome is None
            assert (a.node, a.number, a.kind, a.recipient_id) == (NODE, "101", "internal",
                                                                  call.recipient_id)
            r = s.get(RecipientRow, call.recipient_id)
            assert r is not None and (r.state, r.calls, r.attempts) == ("active", 1, 0)
        assert other.open_attempts(NODE) == [call.attempt_id]
        assert other.open_attempts("node-b") == []
    finally:
        other.dispose()
    kinds = [e["kind"] for e in store.events_of(cid)]
    assert kinds == ["campaign_created", "campaign_state", "attempt_started"]


def test_scheduled_in_the_future_waits(store: SqlStore) -> None:
    template(store)
    cid = campaign(store, start_at=NOW + 300)
    t = tick(store)
    assert t.calls == [] and t.transitions == [] and t.next_due == pytest.approx(NOW + 300)
    t = tick(store, NOW + 300)
    assert t.transitions == [(cid, "scheduled", "active")] and len(t.calls) == 3


# ----- finishing attempts -----


def test_busy_then_retry_after_the_delay(store: SqlStore) -> None:
    template(store, recipients=[rec("101")], retry_delay=60.0, attempts=3)
    cid = campaign(store)
    (c1,) = tick(store).calls
    assert end(store, c1, Outcome.BUSY, NOW + 2, status=486, reason="Busy Here", q850=17)
    (r,) = recipients(store, cid)
    assert (r["state"], r["attempts"], r["calls"], r["last_outcome"], r["last_status"]) == (
        "idle", 1, 1, "busy", 486)
    with store.session() as s:
        row = s.get(RecipientRow, c1.recipient_id)
        assert row is not None and row.next_at is not None
        assert row.next_at.timestamp() == pytest.approx(NOW + 62)
    t = tick(store, NOW + 61.9)
    assert t.calls == [] and t.next_due == pytest.approx(NOW + 62)
    (c2,) = tick(store, NOW + 62).calls
    assert c2.recipient_id == c1.recipient_id and c2.attempt_id != c1.attempt_id
    attempts = store.attempts_of(cid)
    assert [(a["outcome"], a["status"], a["q850"]) for a in attempts] == [
        ("busy", 486, 17), (None, None, None)]


def test_attempts_used_up_fail_the_recipient_and_the_campaign_is_incomplete(
        store: SqlStore) -> None:
    template(store, recipients=[rec("101"), rec("102")], attempts=2, retry_delay=10.0)
    cid = campaign(store)
    t, history = NOW, []
    a, b = tick(store, t).calls
    end(store, a, Outcome.CONTACTED, t + 1)
    end(store, b, Outcome.NO_ANSWER, t + 1, status=487)
    history.append(states(store, cid))
    (b2,) = tick(store, t + 11).calls
    end(store, b2, Outcome.REJECTED, t + 12, status=603)
    history.append(states(store, cid))
    t3 = tick(store, t + 100)
    assert history == [["contacted", "idle"], ["contacted", "failed"]]
    assert t3.calls == [] and t3.transitions == [(cid, "active", "incomplete")]
    detail = store.campaign_detail(cid)
    assert detail["state"] == "incomplete" and detail["ended_at"] is not None
    assert [r["attempts"] for r in detail["recipients"]] == [0, 2]
    assert tick(store, t + 200).transitions == []  # settled once


@pytest.mark.parametrize(("threshold", "expected"), [(None, "incomplete"), (1, "completed")])
def test_campaign_settles_by_its_threshold(store: SqlStore, threshold: int | None,
                                           expected: str) -> None:
    template(store, recipients=[rec("101"), rec("102")], attempts=1, threshold=threshold)
    cid = campaign(store)
    a, b = tick(store).calls
    end(store, a, Outcome.CONTACTED, NOW + 1, answered_at=NOW + 0.5,
        answer_confirmed_at=NOW + 0.7, listen_confirmed_at=NOW + 0.9, keys="19")
    end(store, b, Outcome.HUNG_UP, NOW + 1)
    assert tick(store, NOW + 2).transitions == [(cid, "active", expected)]
    r = recipients(store, cid)[0]
    assert r["state"] == "contacted" and r["last_outcome"] == "contacted"
    assert r["answered_at"] is not None and r["confirmed_at"] is not None
    assert store.attempts_of(cid)[0]["keys"] == "19"


def test_all_contacted_completes(store: SqlStore) -> None:
    template(store)
    cid = campaign(store)
    for c in tick(store).calls:
        end(store, c, Outcome.CONTACTED, NOW + 1)
    assert tick(store, NOW + 2).transitions == [(cid, "active", "completed")]
    assert [c["state"] for c in store.list_campaigns()] == ["completed"]


def test_finish_attempt_is_idempotent(store: SqlStore) -> None:
    template(store, recipients=[rec("101")])
    cid = campaign(store)
    (c,) = tick(store).calls
    assert end(store, c, Outcome.BUSY, NOW + 1) is Outcome.BUSY
    snapshot = (recipients(store, cid), store.attempts_of(cid))
    assert end(store, c, Outcome.BUSY, NOW + 2) is None
    assert end(store, c, Outcome.CONTACTED, NOW + 3) is None
    assert (recipients(store, cid), store.attempts_of(cid)) == snapshot
    assert store.finish_attempt(EndReport(attempt_id="no-such", outcome=Outcome.BUSY,
                                          at=NOW)) is None


def test_a_cut_call_whose_message_was_confirmed_is_reported_contacted(store: SqlStore) -> None:
    template(store, recipients=[rec("101")])
    campaign(store)
    (c,) = tick(store).calls
    store.record_progress_many([(c.attempt_id, "confirmed", NOW + 1, {"what": "answer"}),
                                (c.attempt_id, "confirmed", NOW + 2, {"what": "listen"})])
    assert end(store, c, Outcome.INTERRUPTED, NOW + 3) is Outcome.CONTACTED


def test_progress_is_recorded_on_the_open_attempt(store: SqlStore) -> None:
    template(store, recipients=[rec("101")])
    cid = campaign(store)
    (c,) = tick(store).calls
    store.set_attempt_worker(c.attempt_id, 3)
    for what, detail in (("ringing", {}), ("answered", {}), ("key", {"key": "1"}),
                         ("confirmed", {"what": "answer"}), ("key", {"key": "9"}),
                         ("confirmed", {"what": "listen"})):
        store.record_progress(c.attempt_id, what, NOW + 1, **detail)
    end(store, c, Outcome.CONTACTED, NOW + 2)
    store.record_progress(c.attempt_id, "key", NOW + 3, key="5")  # after the end: ignored
    (a,) = store.attempts_of(cid)
    assert (a["worker"], a["keys"], a["outcome"]) == (3, "19", "contacted")
    assert a["answered_at"] and a["answer_confirmed_at"] and a["listen_confirmed_at"]
    kinds = [e["kind"] for e in store.events_of(cid)]
    assert kinds[2:] == ["attempt_started", "ringing", "answered", "key", "confirmed", "key",
                         "confirmed", "attempt_ended", "recipient_state"]


def test_recover_closes_open_attempts_as_interrupted(store: SqlStore) -> None:
    template(store, recipients=[rec("101"), rec("102")], attempts=1)
    cid = campaign(store)
    (mine,) = tick(store, capacity=1).calls
    (theirs,) = tick(store, node="node-b").calls
    assert store.recover(node=NODE, now=NOW + 10) == 1
    assert store.open_attempts(NODE) == [] and store.open_attempts("node-b") == [theirs.attempt_id]
    by_id = {a["id"]: a for a in store.attempts_of(cid)}
    assert by_id[mine.attempt_id]["outcome"] == "interrupted"
    assert by_id[theirs.attempt_id]["outcome"] is None
    r = recipients(store, cid)
    # not counted: with --attempts 1 the recipient is called again
    assert (r[0]["state"], r[0]["attempts"], r[0]["last_outcome"]) == ("idle", 0, "interrupted")
    assert r[1]["state"] == "active"
    assert store.recover(node=NODE, now=NOW + 11) == 0


def test_recover_does_not_count_and_retries_at_once(store: SqlStore) -> None:
    template(store, recipients=[rec("101")], attempts=3, retry_delay=5.0)
    cid = campaign(store)
    tick(store)
    assert store.recover(node=NODE, now=NOW + 1) == 1
    (r,) = recipients(store, cid)
    assert (r["state"], r["attempts"]) == ("idle", 0)
    assert len(tick(store, NOW + 1).calls) == 1


def test_recover_of_a_confirmed_call_is_contacted_and_never_redialled(store: SqlStore) -> None:
    """kill -9 after key 9 (both confirmations stored, goodbye playing): contacted, one call."""
    template(store, recipients=[rec("101")], attempts=3)
    cid = campaign(store)
    (call,) = tick(store).calls
    store.record_progress_many([(call.attempt_id, "answered", NOW + 1, {}),
                                (call.attempt_id, "confirmed", NOW + 2, {"what": "answer"}),
                                (call.attempt_id, "confirmed", NOW + 3, {"what": "listen"})])
    assert store.recover(node=NODE, now=NOW + 4) == 1
    (a,) = store.attempts_of(cid)
    assert a["outcome"] == "contacted"
    (r,) = recipients(store, cid)
    assert (r["state"], r["attempts"]) == ("contacted", 0)
    assert tick(store, NOW + 100).calls == []


def test_an_interrupted_recipient_is_called_at_most_attempts_plus_extra_times(
        store: SqlStore) -> None:
    from dialer.core.domain import EXTRA_CALLS

    template(store, recipients=[rec("101")], attempts=1)
    cid = campaign(store)
    calls = 0
    for n in range(10):
        placed = tick(store, NOW + 10 * n).calls
        if not placed:
            break
        calls += len(placed)
        assert store.recover(node=NODE, now=NOW + 10 * n + 1) == 1
    (r,) = recipients(store, cid)
    assert calls == 1 + EXTRA_CALLS and r["state"] == "failed" and r["attempts"] == 0


def test_max_campaigns_blocks_then_activates(store: SqlStore) -> None:
    store.set_settings(actor="admin", now=NOW, max_campaigns=1)
    template(store, recipients=[rec("101")])
    first = campaign(store)
    second = campaign(store, start_at=NOW + 1)
    log: list[list[tuple[int, str, str]]] = []
    t = tick(store, NOW + 1)
    log.append(t.transitions)
    (call,) = t.calls
    assert call.campaign_id == first
    log.append(tick(store, NOW + 2).transitions)
    end(store, call, Outcome.CONTACTED, NOW + 3)
    for n in range(2):  # the place frees when the first settles; at most one tick later
        t = tick(store, NOW + 4 + n)
        log.append(t.transitions)
        if t.calls:
            break
    assert [c.campaign_id for c in t.calls] == [second]
    flat = [x for step in log for x in step]
    assert flat == [(first, "scheduled", "active"), (second, "scheduled", "blocked"),
                    (first, "active", "completed"), (second, "blocked", "active")]
    assert log[1] == []


def test_kinds_available_never_burns_an_internal_attempt(store: SqlStore) -> None:
    template(store, recipients=[rec("101"), rec("+390669820000"), rec("102")])
    cid = campaign(store)
    ext = frozenset({E})
    calls = tick(store, kinds_available=ext).calls
    assert numbers(calls) == ["+390669820000"]
    assert tick(store, NOW + 1, kinds_available=ext).calls == []
    r = recipients(store, cid)
    assert [(x["state"], x["calls"], x["attempts"]) for x in r] == [
        ("idle", 0, 0), ("active", 1, 0), ("idle", 0, 0)]
    assert numbers(tick(store, NOW + 2).calls) == ["101", "102"]


def test_operator_actions(store: SqlStore) -> None:
    template(store)
    cid = campaign(store)
    assert store.set_campaign_state(cid, "suspend", actor="op", now=NOW) == "suspended"
    assert tick(store).calls == []
    # never active yet: back to scheduled, due, and the next pass starts it
    assert store.set_campaign_state(cid, "resume", actor="op", now=NOW) == "scheduled"
    t = tick(store)
    assert t.transitions == [(cid, "scheduled", "active")] and len(t.calls) == 3
    assert store.set_campaign_state(cid, "stop", actor="op", now=NOW) == "terminated"
    with pytest.raises(StateError):
        store.set_campaign_state(cid, "resume", actor="op", now=NOW)
    with pytest.raises(NotFound):
        store.set_campaign_state(999, "stop", actor="op", now=NOW)
    actors = [e["actor"] for e in store.events_of(cid) if e["kind"] == "campaign_state"]
    assert actors == ["op", "op", None, "op"]


def test_snapshot_settings_dataclass_round_trip(store: SqlStore) -> None:
    st = CampaignSettings(caller_number="100", priority=2, attempts=4, ring_timeout=20.0,
                          retry_delay=5.0, answer_confirm=False, listen_confirm=True,
                          max_repeats=1, key_timeout=3.0, threshold=1,
                          limits=Limits(total=3, internal=1, external=None), language="it",
                          keep_calling_after_threshold=False)
    sha = media(store)
    store.add_template(name="RT", settings=st, audio_sha=sha, audio_seconds=1.0,
                       recipients=[rec("101")], now=NOW, actor="t")
    assert store.get_template("RT").settings == st
    cid = campaign(store, tpl="RT", name="Run")
    (c,) = tick(store).calls
    assert c.settings == dataclasses.replace(st, display_name="Run")
    assert cid == c.campaign_id


# ----- issue 10: a scheduled campaign stays scheduled through suspend and resume -----


def test_resume_before_the_start_time_is_scheduled_and_waits_for_it(store: SqlStore) -> None:
    template(store)
    cid = campaign(store, start_at=NOW + 1800)
    assert store.set_campaign_state(cid, "suspend", actor="op", now=NOW + 1) == "suspended"
    assert store.set_campaign_state(cid, "resume", actor="op", now=NOW + 2) == "scheduled"
    for at in (NOW + 3, NOW + 600, NOW + 1799):
        t = tick(store, at)
        assert (t.calls, t.transitions) == ([], [])
        assert t.next_due == pytest.approx(NOW + 1800)
    t = tick(store, NOW + 1800)
    assert t.transitions == [(cid, "scheduled", "active")] and len(t.calls) == 3
    seq = [(e["detail"]["old"], e["detail"]["new"]) for e in store.events_of(cid)
           if e["kind"] == "campaign_state"]
    assert seq == [("scheduled", "suspended"), ("suspended", "scheduled"),
                   ("scheduled", "active")]


def test_resume_of_a_started_campaign_with_a_free_place_is_active(store: SqlStore) -> None:
    template(store, recipients=[rec("101"), rec("102")], limits=Limits(total=1))
    cid = campaign(store)
    (call,) = tick(store).calls
    assert store.set_campaign_state(cid, "suspend", actor="op", now=NOW + 1) == "suspended"
    end(store, call, Outcome.CONTACTED, NOW + 2)
    assert tick(store, NOW + 3).calls == []
    assert store.set_campaign_state(cid, "resume", actor="op", now=NOW + 4) == "active"
    t = tick(store, NOW + 5)
    assert t.transitions == [] and numbers(t.calls) == ["102"]


def test_resume_is_blocked_only_while_the_maximum_of_active_campaigns_is_reached(
        store: SqlStore) -> None:
    store.set_settings(actor="admin", now=NOW, max_campaigns=1)
    template(store, recipients=[rec("101")])
    first, second = campaign(store), campaign(store, start_at=NOW + 1)
    tick(store, NOW + 1)  # first active, second blocked
    assert store.set_campaign_state(second, "suspend", actor="op", now=NOW + 2) == "suspended"
    # never active yet: back to scheduled, and the next pass blocks it again
    assert store.set_campaign_state(second, "resume", actor="op", now=NOW + 3) == "scheduled"
    assert tick(store, NOW + 3).transitions == [(second, "scheduled", "blocked")]
    assert store.set_campaign_state(first, "suspend", actor="op", now=NOW + 4) == "suspended"
    assert tick(store, NOW + 5).transitions == [(second, "blocked", "active")]
    assert store.set_campaign_state(first, "resume", actor="op", now=NOW + 6) == "blocked"
    store.set_settings(actor="admin", now=NOW + 7, max_campaigns=None)
    assert store.set_campaign_state(first, "suspend", actor="op", now=NOW + 8) == "suspended"
    assert store.set_campaign_state(first, "resume", actor="op", now=NOW + 9) == "active"


def test_resume_of_a_campaign_never_started_leaves_its_start_to_the_scheduler(
        store: SqlStore) -> None:
    """Due but never active: back to scheduled, so the next pass starts it like any campaign
    whose start time came (blocked if the maximum is reached; its first activation is the one
    the daemon mails on_launch recipients for)."""
    template(store)
    cid = campaign(store, start_at=NOW)
    store.set_campaign_state(cid, "suspend", actor="op", now=NOW)
    assert store.set_campaign_state(cid, "resume", actor="op", now=NOW + 5) == "scheduled"
    t = tick(store, NOW + 5)
    assert t.transitions == [(cid, "scheduled", "active")] and len(t.calls) == 3


def test_a_blocked_campaign_never_starts_before_its_start_time(store: SqlStore) -> None:
    """A database written before the fix may hold a blocked campaign whose start is ahead (a
    scheduled campaign suspended and resumed): the next pass puts it back to scheduled."""
    template(store)
    cid = campaign(store, start_at=NOW + 600)
    with store.session() as s:
        row = s.get(CampaignRow, cid)
        assert row is not None
        row.state = "blocked"
    t = tick(store, NOW)
    assert t.calls == [] and t.transitions == [(cid, "blocked", "scheduled")]
    assert tick(store, NOW + 599).calls == []
    t = tick(store, NOW + 600)
    assert t.transitions == [(cid, "scheduled", "active")] and len(t.calls) == 3


def test_granted_attempts_reactivate_an_incomplete_campaign_when_there_is_room(
        store: SqlStore) -> None:
    template(store, recipients=[rec("101")], attempts=1)
    cid = campaign(store)
    (call,) = tick(store).calls
    end(store, call, Outcome.BUSY, NOW + 1)
    assert tick(store, NOW + 2).transitions == [(cid, "active", "incomplete")]
    store.grant_attempts(cid, [], 1, actor="op", now=NOW + 3)
    assert store.campaign_detail(cid)["state"] == "active"
    assert numbers(tick(store, NOW + 4).calls) == ["101"]
