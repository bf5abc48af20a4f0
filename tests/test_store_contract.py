"""The contract of ``DispatchPort`` (dialer.core.ports), one set of tests over every implementation:
the in-memory fake (``dialer.testing.memory.MemoryStore``), ``SqlStore`` on a SQLite file, and
``SqlStore`` on PostgreSQL (a throwaway database, skipped when the server is unreachable).

Each backend is set up through its own API with ``SqlStore``'s signatures (``SetupPort``:
``set_settings``, ``add_media``, ``add_template``, ``start_campaign``) and read back through
``campaign_detail`` / ``attempts_of`` / ``events_of``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dialer.core.domain import EXTRA_CALLS, CampaignSettings, Kind, Limits, Outcome
from dialer.core.recipients import Recipient
from dialer.core.scheduler import Counts
from dialer.storage.store import ClaimedCall, EndReport, SqlStore, Tick
from dialer.testing.memory import MemoryStore
from dialer.testing.setup import ContractStore, launch, recipient
from tests.fixtures_core import _reset_pg, db_url, migrated, pg_database  # noqa: F401 - fixtures

NOW = 1_800_000_000.0
NODE = "node-a"
OTHER = "node-b"
I, E = Kind.INTERNAL, Kind.EXTERNAL


@pytest.fixture(params=["memory", "sqlite",
                        pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContractStore]:
    """Every implementation of the port, initialised and empty."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dialer.db'}"
    else:
        url = request.getfixturevalue("pg_database")
        _reset_pg(url)
    with migrated(url) as s:
        yield s


# ----- helpers -----


def camp(store: ContractStore, numbers: list[str], name: str = "T", **settings: Any) -> int:
    settings = {"retry_delay": 60.0, "attempts": 3, **settings}
    return launch(store, name, numbers, now=NOW, **settings)


def tick(store: ContractStore, at: float = NOW, node: str = NODE, **kw: Any) -> Tick:
    return store.tick(now=at, node=node, **kw)


def end(store: ContractStore, call: ClaimedCall | str, outcome: Outcome, at: float,
        **kw: Any) -> Outcome | None:
    aid = call if isinstance(call, str) else call.attempt_id
    return store.finish_attempt(EndReport(attempt_id=aid, outcome=outcome, at=at, **kw))


def recs(store: ContractStore, cid: int) -> dict[str, dict[str, Any]]:
    return {r["number"]: r for r in store.campaign_detail(cid)["recipients"]}


def state(store: ContractStore, cid: int) -> str:
    return str(store.campaign_detail(cid)["state"])


def numbers(calls: list[ClaimedCall]) -> list[str]:
    return [c.number for c in calls]


def confirm(store: ContractStore, call: ClaimedCall, at: float, *whats: str) -> None:
    store.record_progress_many([(call.attempt_id, "answered", at, {})]
                               + [(call.attempt_id, "confirmed", at + 1 + i, {"what": w})
                                  for i, w in enumerate(whats)])


def within(limits: Limits, c: Counts) -> bool:
    return all(lim is None or n <= lim for lim, n in ((limits.total, c.total),
                                                      (limits.internal, c.internal),
                                                      (limits.external, c.external)))


# ----- claim: the attempt exists before the dial -----


def test_claimed_calls_are_open_attempts_before_any_dial(store: ContractStore) -> None:
    cid = camp(store, ["101", "102", "+390669820003"])
    t = tick(store)
    assert t.transitions == [(cid, "scheduled", "active")]
    assert numbers(t.calls) == ["101", "102", "+390669820003"]
    ids = {c.attempt_id for c in t.calls}
    assert set(store.open_attempts(NODE)) == ids and store.open_attempts(OTHER) == []
    meta = store.attempt_meta(ids | {"no-such-attempt"})
    assert set(meta) == ids
    assert {(m.campaign_id, m.kind) for m in meta.values()} == {(cid, "internal"),
                                                                (cid, "external")}
    assert store.running_counts() == Counts(internal=2, external=1)
    assert all(r["state"] == "active" and r["calls"] == 1 for r in recs(store, cid).values())
    assert [a["outcome"] for a in store.attempts_of(cid)] == [None, None, None]
    assert all(c.settings.attempts == 3 and c.kind is (E if c.number[0] == "+" else I)
               for c in t.calls)
    # nothing is claimed twice: the next pass finds every recipient busy
    assert tick(store, NOW + 1).calls == []
    assert [e["kind"] for e in store.events_of(cid)].count("attempt_started") == 3


def test_workers_and_progress_are_recorded_on_open_attempts_only(store: ContractStore) -> None:
    cid = camp(store, ["101"])
    (call,) = tick(store).calls
    store.set_attempt_workers([(call.attempt_id, 2)])
    store.record_progress_many([(call.attempt_id, "ringing", NOW + 1, {}),
                                (call.attempt_id, "answered", NOW + 2, {}),
                                (call.attempt_id, "key", NOW + 3, {"key": "1"})])
    # replayed by a worker to a restarted daemon: recorded once
    store.record_progress_many([(call.attempt_id, "key", NOW + 3, {"key": "1"})], once=True)
    (a,) = store.attempts_of(cid)
    assert a["worker"] == 2 and a["keys"] == "1" and a["answered_at"] is not None
    assert end(store, call, Outcome.HUNG_UP, NOW + 4) is Outcome.HUNG_UP
    store.record_progress_many([(call.attempt_id, "key", NOW + 5, {"key": "9"})])
    assert store.attempts_of(cid)[0]["keys"] == "1"
    kinds = [e["kind"] for e in store.events_of(cid)]
    assert kinds.count("key") == 1 and kinds.count("answered") == 1


# ----- finish -----


def test_finish_is_idempotent_and_returns_the_stored_outcome(store: ContractStore) -> None:
    cid = camp(store, ["101"])
    (call,) = tick(store).calls
    assert end(store, call, Outcome.BUSY, NOW + 5, status=486) is Outcome.BUSY
    assert end(store, call, Outcome.CONTACTED, NOW + 6) is None  # closed already: no change
    assert end(store, "no-such-attempt", Outcome.BUSY, NOW + 6) is None
    r = recs(store, cid)["101"]
    assert (r["state"], r["attempts"], r["calls"], r["last_outcome"]) == ("idle", 1, 1, "busy")
    (a,) = store.attempts_of(cid)
    assert a["outcome"] == "busy" and a["status"] == 486 and a["ended_at"] is not None
    assert store.open_attempts(NODE) == [] and store.running_counts() == Counts()
    assert store.attempt_meta([call.attempt_id]) == {}


def test_a_call_whose_confirmations_were_recorded_is_contacted(store: ContractStore) -> None:
    cid = camp(store, ["101", "102", "103"])
    a, b, c = tick(store).calls
    confirm(store, a, NOW + 1, "answer", "listen")
    confirm(store, b, NOW + 1, "answer")  # the listen confirmation never came
    assert end(store, a, Outcome.HUNG_UP, NOW + 9) is Outcome.CONTACTED
    assert end(store, b, Outcome.HUNG_UP, NOW + 9) is Outcome.HUNG_UP
    # the confirmations in the end report count too
    assert end(store, c, Outcome.INTERRUPTED, NOW + 9, answer_confirmed_at=NOW + 2,
               listen_confirmed_at=NOW + 3) is Outcome.CONTACTED
    r = recs(store, cid)
    assert r["101"]["state"] == "contacted" and r["103"]["state"] == "contacted"
    assert (r["102"]["state"], r["102"]["attempts"]) == ("idle", 1)
    assert [x["outcome"] for x in store.attempts_of(cid)] == ["contacted", "hung_up",
                                                              "contacted"]


def test_no_listen_confirmation_needs_the_end_report(store: ContractStore) -> None:
    cid = camp(store, ["101"], listen_confirm=False, answer_confirm=True)
    (call,) = tick(store).calls
    confirm(store, call, NOW + 1, "answer")
    assert end(store, call, Outcome.INTERRUPTED, NOW + 5) is Outcome.INTERRUPTED
    assert recs(store, cid)["101"]["state"] == "idle"


@pytest.mark.parametrize("outcome", [Outcome.INTERRUPTED, Outcome.TRUNK_DOWN])
def test_uncounted_outcomes_keep_the_attempts_up_to_the_hard_cap(store: ContractStore,
                                                                 outcome: Outcome) -> None:
    cid = camp(store, ["101"], attempts=1, retry_delay=300.0)
    at = NOW
    for n in range(1, 1 + EXTRA_CALLS + 1):
        (call,) = tick(store, at).calls  # again at once: no retry delay for an uncounted call
        assert end(store, call, outcome, at + 1) is outcome
        r = recs(store, cid)["101"]
        assert (r["attempts"], r["calls"]) == (0, n)
        at += 2
    assert r["state"] == "failed"  # attempts + EXTRA_CALLS calls: the hard cap
    assert tick(store, at).calls == [] and state(store, cid) == "incomplete"


def test_attempts_are_used_up_then_failed(store: ContractStore) -> None:
    cid = camp(store, ["101"], attempts=2, retry_delay=0.0)
    (call,) = tick(store).calls
    end(store, call, Outcome.NO_ANSWER, NOW + 30)
    (call,) = tick(store, NOW + 30).calls
    end(store, call, Outcome.REJECTED, NOW + 31)
    r = recs(store, cid)["101"]
    assert (r["state"], r["attempts"], r["calls"]) == ("failed", 2, 2)
    t = tick(store, NOW + 32)
    assert t.calls == [] and t.transitions == [(cid, "active", "incomplete")]


# ----- recover -----


def test_recover_closes_only_this_nodes_open_attempts_but_keep(store: ContractStore) -> None:
    cid = camp(store, ["101", "102", "103", "104"])
    a1, a2, a3 = tick(store, capacity=3).calls
    (b1,) = tick(store, node=OTHER).calls
    confirm(store, a3, NOW + 1, "answer", "listen")
    assert store.recover(node=NODE, now=NOW + 10, keep={a1.attempt_id}) == 2
    assert store.open_attempts(NODE) == [a1.attempt_id]
    assert store.open_attempts(OTHER) == [b1.attempt_id]
    out = {a["number"]: a["outcome"] for a in store.attempts_of(cid)}
    assert out == {"101": None, "102": "interrupted", "103": "contacted", "104": None}
    r = recs(store, cid)
    assert (r["102"]["state"], r["102"]["attempts"]) == ("idle", 0)
    assert r["103"]["state"] == "contacted"
    assert store.recover(node=NODE, now=NOW + 11, keep={a1.attempt_id}) == 0
    # the kept call goes on and ends on its own
    assert end(store, a1, Outcome.BUSY, NOW + 12) is Outcome.BUSY
    assert end(store, a2, Outcome.BUSY, NOW + 12) is None
    assert store.running_counts() == Counts(internal=1)


# ----- limits -----


def test_the_reference_example_10_8_6(store: ContractStore) -> None:
    """SPEC 3: limits 10/8/6 with 7 internal calls running admit at most 3 external calls."""
    store.set_settings(actor="t", now=NOW, max_calls=10, max_internal=8, max_external=6)
    camp(store, [str(100 + n) for n in range(7)], name="Inside", priority=5)
    assert len(tick(store).calls) == 7
    camp(store, [f"+39066982{n:04d}" for n in range(10)], name="Outside")
    assert len(tick(store, NOW + 1).calls) == 3
    assert store.running_counts() == Counts(internal=7, external=3)


def test_capacity_and_available_kinds_bound_a_pass(store: ContractStore) -> None:
    cid = camp(store, ["101", "+390669820002", "103", "+390669820004"])
    assert numbers(tick(store, capacity=1).calls) == ["101"]
    assert tick(store, NOW + 1, capacity=0).calls == []
    assert numbers(tick(store, NOW + 2, kinds_available=frozenset({E})).calls) == [
        "+390669820002", "+390669820004"]
    assert numbers(tick(store, NOW + 3).calls) == ["103"]
    assert recs(store, cid)["103"]["state"] == "active"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_limits_are_never_exceeded_by_tick(store: ContractStore, seed: int) -> None:
    rng = random.Random(seed)
    store.set_settings(actor="t", now=NOW, max_calls=5, max_internal=3, max_external=3)
    limits = {}
    for k in range(3):
        nums = [str(1000 * (k + 1) + n) if rng.random() < 0.5 else f"+3906698{k}{n:03d}"
                for n in range(12)]
        lim = Limits(total=rng.choice([None, 2, 3]), internal=rng.choice([None, 1, 2]),
                     external=rng.choice([None, 1, 2]))
        cid = camp(store, nums, name=f"T{k}", limits=lim, priority=rng.randint(0, 2),
                   retry_delay=rng.choice([0.0, 5.0]), attempts=2)
        limits[cid] = lim
    gs = store.get_settings()
    at = NOW
    live: list[ClaimedCall] = []
    for _ in range(1000):
        live += tick(store, at, capacity=rng.choice([None, 1, 4])).calls
        running = store.running_counts()
        assert within(gs.limits, running), running
        for cid, lim in limits.items():
            mine = [c.kind for c in live if c.campaign_id == cid]
            assert within(lim, Counts(mine.count(I), mine.count(E))), (cid, lim, mine)
        assert len(live) == running.total
        at += 1
        rng.shuffle(live)
        for _ in range(rng.randint(0, len(live))):
            call = live.pop()
            end(store, call, rng.choice([Outcome.CONTACTED, Outcome.BUSY, Outcome.INTERRUPTED]),
                at)
        if not live and all(state(store, cid) in ("completed", "incomplete") for cid in limits):
            break
    assert all(state(store, cid) in ("completed", "incomplete") for cid in limits)


# ----- order -----


def test_fresh_recipients_before_retries_then_the_longest_ago_first(store: ContractStore) -> None:
    store.set_settings(actor="t", now=NOW, max_calls=2)
    cid = camp(store, ["101", "102", "103", "104"], retry_delay=0.0)
    assert numbers(tick(store, NOW).calls) == ["101", "102"]
    end(store, open_call(store, cid, "102"), Outcome.BUSY, NOW + 1)
    assert numbers(tick(store, NOW + 1).calls) == ["103"]  # 102 is due, but 103 is fresh
    end(store, open_call(store, cid, "101"), Outcome.BUSY, NOW + 2)
    assert numbers(tick(store, NOW + 2).calls) == ["104"]
    end(store, open_call(store, cid, "104"), Outcome.BUSY, NOW + 3)
    # retries due: 101 and 102 (called at NOW), 104 (NOW + 2): position breaks the tie
    assert numbers(tick(store, NOW + 3).calls) == ["101"]
    end(store, open_call(store, cid, "103"), Outcome.BUSY, NOW + 4)
    assert numbers(tick(store, NOW + 4).calls) == ["102"]
    end(store, open_call(store, cid, "101"), Outcome.BUSY, NOW + 5)
    # due: 103 (called at NOW + 1), 104 (NOW + 2), 101 (NOW + 3): 103 first, not 101
    assert numbers(tick(store, NOW + 5).calls) == ["103"]


def open_call(store: ContractStore, cid: int, number: str) -> str:
    """The attempt id of the call in progress to ``number``."""
    (aid,) = [a["id"] for a in store.attempts_of(cid)
              if a["number"] == number and a["ended_at"] is None]
    return str(aid)


def test_retries_wait_for_their_delay(store: ContractStore) -> None:
    cid = camp(store, ["101"], retry_delay=30.0)
    (call,) = tick(store).calls
    end(store, call, Outcome.BUSY, NOW + 2)
    t = tick(store, NOW + 3)
    assert t.calls == [] and t.next_due == pytest.approx(NOW + 32)
    assert tick(store, NOW + 31.9).calls == []
    (again,) = tick(store, NOW + 32).calls
    assert again.recipient_id == call.recipient_id
    assert recs(store, cid)["101"]["calls"] == 2


def test_priority_then_start_time_across_campaigns(store: ContractStore) -> None:
    store.set_settings(actor="t", now=NOW, max_calls=2)
    low = camp(store, ["101", "102"], name="Low", priority=0)
    high = camp(store, ["201", "202"], name="High", priority=5)
    t = tick(store)
    assert [c.campaign_id for c in t.calls] == [high, high]
    for c in t.calls:
        end(store, c, Outcome.CONTACTED, NOW + 1)
    t = tick(store, NOW + 1)
    assert [c.campaign_id for c in t.calls] == [low, low]
    assert (high, "active", "completed") in t.transitions


# ----- campaign lifecycle -----


def test_scheduled_blocked_active_completed(store: ContractStore) -> None:
    store.set_settings(actor="t", now=NOW, max_campaigns=1)
    first = launch(store, "A", ["101"], now=NOW, start_at=NOW + 10, priority=1)
    second = launch(store, "B", ["102"], now=NOW, start_at=NOW + 5)
    t = tick(store)
    assert t.calls == [] and t.transitions == [] and t.next_due == pytest.approx(NOW + 5)
    t = tick(store, NOW + 5)
    assert t.transitions == [(second, "scheduled", "active")] and numbers(t.calls) == ["102"]
    assert t.next_due == pytest.approx(NOW + 10)
    t = tick(store, NOW + 10)
    assert t.transitions == [(first, "scheduled", "blocked")] and t.calls == []
    end(store, open_call(store, second, "102"), Outcome.CONTACTED, NOW + 11)
    t = tick(store, NOW + 11)
    # the place the completed campaign frees goes to the blocked one in the same pass
    assert t.transitions == [(second, "active", "completed"), (first, "blocked", "active")]
    assert numbers(t.calls) == ["101"]
    causes = [e["detail"]["cause"] for e in store.events_of(first)
              if e["kind"] == "campaign_state"]
    assert causes == ["the maximum of active campaigns is reached", "a place freed"]
    end(store, t.calls[0], Outcome.CONTACTED, NOW + 12)
    assert tick(store, NOW + 12).transitions == [(first, "active", "completed")]
    assert state(store, first) == state(store, second) == "completed"
    assert store.campaign_detail(first)["ended_at"] is not None


@pytest.mark.parametrize("threshold,final", [(None, "incomplete"), (1, "completed")])
def test_completed_or_incomplete_by_the_threshold(store: ContractStore, threshold: int | None,
                                                  final: str) -> None:
    cid = camp(store, ["101", "102"], attempts=1, threshold=threshold)
    a, b = tick(store).calls
    end(store, a, Outcome.CONTACTED, NOW + 1)
    assert tick(store, NOW + 1).transitions == []  # 102 is still in a call
    end(store, b, Outcome.BUSY, NOW + 2)
    assert tick(store, NOW + 2).transitions == [(cid, "active", final)]
    assert state(store, cid) == final
    assert tick(store, NOW + 3).transitions == []


def test_threshold_reached_early_stops_calling(store: ContractStore) -> None:
    cid = camp(store, ["101", "102", "103"], threshold=1, keep_calling_after_threshold=False,
               limits=Limits(total=1))
    (a,) = tick(store).calls
    end(store, a, Outcome.CONTACTED, NOW + 1)
    t = tick(store, NOW + 1)
    assert t.calls == [] and t.transitions == [(cid, "active", "completed")]
    assert [r["state"] for r in recs(store, cid).values()] == ["contacted", "idle", "idle"]


# ----- escalation (issue 15): a run's follow-up, once -----


def followup_template(store: ContractStore, name: str, numbers_: list[str]) -> None:
    sha = hashlib.sha256(b"follow-up").hexdigest()
    store.add_media(data=b"follow-up", sha256=sha, rate=8000, seconds=3.0, source=None, now=NOW)
    store.add_template(name=name, settings=CampaignSettings(attempts=1), audio_sha=sha,
                       audio_seconds=3.0, recipients=[recipient(n) for n in numbers_], now=NOW,
                       actor="tester")


def followups(store: ContractStore, cid: int) -> list[int]:
    return [e["detail"]["escalated_to"] for e in store.events_of(cid)
            if e["kind"] == "campaign_escalated"]


@pytest.mark.parametrize("pass_unreached", [False, True])
def test_a_run_that_ends_incomplete_launches_its_followup_once(store: ContractStore,
                                                               pass_unreached: bool) -> None:
    followup_template(store, "Managers", ["201", "102"])
    tokyo = Recipient(number="103", kind=I, timezone="Asia/Tokyo")
    cid = launch(store, "T", ["101", "102", tokyo], now=NOW, retry_delay=60.0, attempts=1,
                 escalate_to="Managers", escalate_unreached=pass_unreached)
    assert store.escalate(now=NOW).outcomes == ()  # still to be called
    a, b, c = tick(store).calls
    end(store, a, Outcome.CONTACTED, NOW + 1)
    end(store, b, Outcome.BUSY, NOW + 1)
    end(store, c, Outcome.NO_ANSWER, NOW + 1)
    assert tick(store, NOW + 2).transitions == [(cid, "active", "incomplete")]
    (done,) = store.escalate(now=NOW + 2).outcomes
    assert (done.campaign_id, done.cause, done.error) == (cid, "ended incomplete", None)
    fid = done.followup_id
    assert fid is not None and followups(store, cid) == [fid]
    got = [r["number"] for r in store.campaign_detail(fid)["recipients"]]
    assert got == (["201", "102", "103"] if pass_unreached else ["201", "102"])
    if pass_unreached:  # passed on with its own calling-window zone
        assert recs(store, fid)["103"]["timezone"] == "Asia/Tokyo"
    created = next(e for e in store.events_of(fid) if e["kind"] == "campaign_created")
    assert created["detail"]["escalated_from"] == cid and created["actor"] == "escalation"
    for later in (NOW + 3, NOW + 10_000):  # once: every later check finds it decided
        assert store.escalate(now=later).outcomes == ()
    assert followups(store, cid) == [fid]
    assert tick(store, NOW + 3).transitions == [(fid, "scheduled", "active")]


def test_fewer_than_n_reached_after_m_minutes_launches_then(store: ContractStore) -> None:
    followup_template(store, "Managers", ["201"])
    cid = camp(store, ["101", "102", "103"], attempts=3, escalate_to="Managers",
               escalate_when="below", escalate_below=2, escalate_after=600.0)
    a, b, c = tick(store).calls
    end(store, a, Outcome.CONTACTED, NOW + 1)
    end(store, b, Outcome.BUSY, NOW + 1)
    waiting = store.escalate(now=NOW + 1)
    assert waiting.outcomes == () and waiting.check_at == NOW + 600
    (done,) = store.escalate(now=NOW + 600).outcomes
    assert done.followup_id is not None and done.cause == "1 of 2 reached 10 min after the start"
    assert state(store, cid) == "active"  # the first run goes on calling
    assert store.escalate(now=NOW + 601).outcomes == ()


def test_enough_reached_in_time_never_escalates(store: ContractStore) -> None:
    followup_template(store, "Managers", ["201"])
    cid = camp(store, ["101", "102", "103"], escalate_to="Managers", escalate_when="below",
               escalate_below=2, escalate_after=600.0)
    a, b, _ = tick(store).calls
    end(store, a, Outcome.CONTACTED, NOW + 1)
    end(store, b, Outcome.CONTACTED, NOW + 2)
    (done,) = store.escalate(now=NOW + 3).outcomes
    assert (done.verdict.value, done.followup_id, done.cause) == ("never", None, "2 reached")
    assert store.escalate(now=NOW + 700).outcomes == () and followups(store, cid) == []


def test_a_followup_that_cannot_be_launched_fails_once_and_says_why(store: ContractStore) -> None:
    cid = camp(store, ["101"], attempts=1, escalate_to="Nobody")
    (a,) = tick(store).calls
    end(store, a, Outcome.BUSY, NOW + 1)
    tick(store, NOW + 2)
    (done,) = store.escalate(now=NOW + 2).outcomes
    assert done.followup_id is None and "no template named 'Nobody'" in (done.error or "")
    assert store.escalate(now=NOW + 3).outcomes == ()
    failed = [e for e in store.events_of(cid) if e["kind"] == "escalation_failed"]
    assert len(failed) == 1 and failed[0]["detail"]["template"] == "Nobody"
# ----- AlertPort (SqlStore only: the daemon's fake has no receiver) -----


@pytest.fixture
def sql_store(db_url: str) -> Iterator[SqlStore]:  # noqa: F811 - db_url: a fixture
    """A migrated SqlStore on SQLite and PostgreSQL (``tests.fixtures_core``)."""
    with migrated(db_url) as s:
        yield s


def _alert(status: str = "firing", starts: str = "2027-01-15T08:00:00.000000Z") -> Any:
    from dialer.core.alerts import Alert, AlertStatus

    return Alert(status=AlertStatus(status), fingerprint="f00d", starts_at=starts,
                 ends_at=None if status == "firing" else "2027-01-15T09:00:00.000000Z",
                 labels={"alertname": "Fire alarm"})


def _route(stop: bool) -> Any:
    from dialer.core.alerts import AlertRoute

    return AlertRoute(index=1, matchers=(), template="T", stop_on_resolve=stop)


def test_an_alert_period_launches_once_and_its_resolution_stops_once(
        sql_store: SqlStore) -> None:
    first = camp(sql_store, ["101"], name="T")  # the template T, and a campaign of an operator
    fired = [sql_store.alert_fired(_alert(), _route(True), actor="am", now=NOW + i)
             for i in range(3)]
    cid = fired[0][1]
    assert [(a.value, c) for a, c in fired] == [("launched", cid), ("duplicate", cid),
                                                ("duplicate", cid)]
    assert cid not in (None, first)
    assert sql_store.campaign_detail(cid)["name"] == "Fire alarm"
    resolved = [sql_store.alert_resolved(_alert("resolved"), _route(True), actor="am",
                                         now=NOW + 10 + i) for i in range(2)]
    assert [(a.value, c) for a, c in resolved] == [("stopped", cid), ("duplicate", cid)]
    assert state(sql_store, cid) == "terminated"
    assert state(sql_store, first) == "scheduled"  # an operator's campaign is left alone
    [row] = sql_store.alert_launches()
    assert (row["campaign_id"], row["stopped_on_resolve"]) == (cid, True)
    # a new period of the same alert: launched again, and left running by a route without stop
    again = sql_store.alert_fired(_alert(starts="2027-01-16T08:00:00.000000Z"), _route(False),
                                  actor="am", now=NOW + 20)
    assert again[0].value == "launched"
    gone = sql_store.alert_resolved(_alert("resolved", "2027-01-16T08:00:00.000000Z"),
                                    _route(False), actor="am", now=NOW + 30)
    assert (gone[0].value, gone[1]) == ("resolved", again[1])
    assert again[1] is not None and state(sql_store, again[1]) == "scheduled"
    assert len(sql_store.alert_launches()) == 2


def test_a_refused_alert_launch_stores_nothing(sql_store: SqlStore) -> None:
    from dialer.core.errors import NotFound

    with pytest.raises(NotFound):
        sql_store.alert_fired(_alert(), _route(True), actor="am", now=NOW)
    assert sql_store.alert_launches() == [] and sql_store.list_campaigns() == []
# ----- calling windows (issue 15): zones open now only, no attempt while closed -----


def _utc(y: int, mo: int, d: int, h: int, mi: int) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=dt.UTC).timestamp()


def test_a_closed_window_claims_nobody_and_wakes_at_the_opening(store: ContractStore) -> None:
    """Friday 15 January 2027, 06:00 in Rome (05:00 UTC): a window 08:00-20:00 mon-fri in Rome
    claims nothing, spends nothing, says the campaign waits, and is next due at 07:00 UTC."""
    at = _utc(2027, 1, 15, 5, 0)
    cid = launch(store, "W", ["101", "102", "+390669820001"], now=at, window="08:00-20:00",
                 window_days="mon-fri", timezone="Europe/Rome")
    t = tick(store, at)
    assert t.calls == [] and t.waiting_window == [cid]
    assert t.next_due == _utc(2027, 1, 15, 7, 0)
    assert store.attempts_of(cid) == []
    assert all(r["calls"] == 0 and r["attempts"] == 0 for r in recs(store, cid).values())
    t = tick(store, _utc(2027, 1, 15, 7, 0))
    assert numbers(t.calls) == ["101", "102", "+390669820001"] and t.waiting_window == []
    # Friday 20:00 in Rome it shuts: a retry due at 19:05 UTC waits for Monday 08:00
    for c in t.calls:
        end(store, c, Outcome.BUSY, _utc(2027, 1, 15, 19, 4))
    t = tick(store, _utc(2027, 1, 15, 19, 5))
    assert t.calls == [] and t.waiting_window == [cid]
    assert t.next_due == _utc(2027, 1, 18, 7, 0)
    assert len(store.attempts_of(cid)) == 3


def test_recipients_are_called_in_the_window_of_their_own_zone(store: ContractStore) -> None:
    """Friday 15 January 2027, 01:30 UTC: 10:30 in Tokyo (open), 02:30 in Rome and 20:30 on
    Thursday in New York (closed); only the Tokyo recipients are claimed, in list order, up to
    the capacity; the next due time is when Rome opens (07:00 UTC)."""
    at = _utc(2027, 1, 15, 1, 30)
    tokyo = "Asia/Tokyo"
    cid = launch(store, "Z", [Recipient(number="101", kind=I),
                              Recipient(number="102", kind=I, timezone=tokyo),
                              Recipient(number="103", kind=I, timezone="America/New_York"),
                              Recipient(number="+390669820001", kind=E, timezone=tokyo),
                              Recipient(number="104", kind=I, timezone=tokyo)],
                 now=at, window="08:00-20:00", window_days="mon-fri", timezone="Europe/Rome")
    assert recs(store, cid)["102"]["timezone"] == tokyo
    assert recs(store, cid)["101"]["timezone"] is None
    t = tick(store, at, capacity=2)
    assert numbers(t.calls) == ["102", "+390669820001"] and t.waiting_window == []
    t = tick(store, at)
    assert numbers(t.calls) == ["104"]
    assert t.next_due == _utc(2027, 1, 15, 7, 0)
    # 13:00 UTC: Rome (14:00) and New York (08:00) open, Tokyo (22:00) shut
    t = tick(store, _utc(2027, 1, 15, 13, 0), capacity=1)
    assert numbers(t.calls) == ["101"]  # the lowest position of the open zones
    t = tick(store, _utc(2027, 1, 15, 13, 0))
    assert numbers(t.calls) == ["103"]
    assert {r["number"]: r["calls"] for r in recs(store, cid).values()} == {
        "101": 1, "102": 1, "103": 1, "+390669820001": 1, "104": 1}


def test_retries_across_zones_keep_the_longest_ago_first(store: ContractStore) -> None:
    """Rome and New York open, Tokyo shut: the retries come longest ago first whatever their
    zone, and the Tokyo recipient, never called, is left alone though fresh ones go first."""
    cid = launch(store, "R", [Recipient(number="102", kind=I, timezone="America/New_York"),
                              Recipient(number="101", kind=I),
                              Recipient(number="103", kind=I, timezone="Asia/Tokyo")],
                 now=_utc(2027, 1, 15, 13, 0), window="08:00-20:00", timezone="Europe/Rome",
                 retry_delay=60.0)
    # 13:00 UTC: Rome 14:00, New York 08:00 (open), Tokyo 22:00 (shut)
    assert numbers(tick(store, _utc(2027, 1, 15, 13, 0), capacity=1).calls) == ["102"]
    assert numbers(tick(store, _utc(2027, 1, 15, 13, 1), capacity=1).calls) == ["101"]
    calls = {c["number"]: c["id"] for c in store.attempts_of(cid)}
    end(store, calls["101"], Outcome.BUSY, _utc(2027, 1, 15, 13, 2))
    end(store, calls["102"], Outcome.BUSY, _utc(2027, 1, 15, 13, 3))
    at = _utc(2027, 1, 15, 14, 0)
    assert numbers(tick(store, at, capacity=1).calls) == ["102"]  # called at 13:00
    t = tick(store, at)
    assert numbers(t.calls) == ["101"] and t.waiting_window == []
    assert recs(store, cid)["103"]["calls"] == 0
    assert t.next_due == _utc(2027, 1, 15, 23, 0)  # 08:00 in Tokyo


def test_a_zone_unknown_here_is_not_called_at_a_guessed_hour(store: ContractStore) -> None:
    """A zone this machine's time zone database lacks (the CSV was checked on another): its
    recipients wait; the others are called in their windows."""
    at = _utc(2027, 1, 15, 13, 0)
    cid = launch(store, "U", [Recipient(number="101", kind=I),
                              Recipient(number="102", kind=I, timezone="Mars/Olympus")],
                 now=at, window="08:00-20:00", timezone="Europe/Rome")
    t = tick(store, at)
    assert numbers(t.calls) == ["101"]
    assert recs(store, cid)["102"]["calls"] == 0
