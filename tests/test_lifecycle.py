"""Recipient and campaign lifecycle rules (dialer.core.lifecycle)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialer.core.domain import CampaignState, Outcome, RecipientState
from dialer.core.lifecycle import (
    OPERATOR_ACTIONS,
    RecipientUpdate,
    Startable,
    Tally,
    activate,
    after_attempt,
    may_call,
    operator_action,
    rejoin,
    settle,
    threshold_of,
)

CS = CampaignState
RS = RecipientState
NOW = 1000.0
DELAY = 60.0
FAILURES = [o for o in Outcome if not o.success and o.counted]


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "outcome", "stopped", "expected"),
    [
        (0, 5, Outcome.CONTACTED, False,
         RecipientUpdate(state=RS.CONTACTED, attempts=0, next_at=None)),
        (4, 5, Outcome.CONTACTED, False,
         RecipientUpdate(state=RS.CONTACTED, attempts=4, next_at=None)),
        (0, 5, Outcome.BUSY, False,
         RecipientUpdate(state=RS.IDLE, attempts=1, next_at=NOW + DELAY)),
        (3, 5, Outcome.NO_ANSWER, False,
         RecipientUpdate(state=RS.IDLE, attempts=4, next_at=NOW + DELAY)),
        (4, 5, Outcome.HUNG_UP, False, RecipientUpdate(state=RS.FAILED, attempts=5, next_at=None)),
        (0, 1, Outcome.REJECTED, False, RecipientUpdate(state=RS.FAILED, attempts=1, next_at=None)),
        (6, 5, Outcome.UNREACHABLE, False,
         RecipientUpdate(state=RS.FAILED, attempts=7, next_at=None)),
        (0, 5, Outcome.DAEMON_LOST, False,
         RecipientUpdate(state=RS.IDLE, attempts=1, next_at=NOW + DELAY)),
        (0, 5, Outcome.WORKER_LOST, False,
         RecipientUpdate(state=RS.IDLE, attempts=1, next_at=NOW + DELAY)),
        # cut by the dialer: not counted, due again at once
        (0, 1, Outcome.INTERRUPTED, False, RecipientUpdate(state=RS.IDLE, attempts=0, next_at=NOW)),
        (1, 5, Outcome.NOT_CONFIRMED, True,
         RecipientUpdate(state=RS.STOPPED, attempts=2, next_at=None)),
        (1, 5, Outcome.CONTACTED, True,
         RecipientUpdate(state=RS.CONTACTED, attempts=1, next_at=None)),
        # nobody was called: not counted, and due again at once (the trunk gates it)
        (2, 5, Outcome.TRUNK_DOWN, False, RecipientUpdate(state=RS.IDLE, attempts=2, next_at=NOW)),
        (0, 1, Outcome.TRUNK_DOWN, False, RecipientUpdate(state=RS.IDLE, attempts=0, next_at=NOW)),
        (2, 5, Outcome.TRUNK_DOWN, True,
         RecipientUpdate(state=RS.STOPPED, attempts=2, next_at=None)),
    ],
)
def test_after_attempt(attempts: int, max_attempts: int, outcome: Outcome, stopped: bool,
                       expected: RecipientUpdate) -> None:
    assert after_attempt(attempts=attempts, max_attempts=max_attempts, outcome=outcome,
                         now=NOW, retry_delay=DELAY, stopped=stopped) == expected


@pytest.mark.parametrize("outcome", FAILURES)
def test_every_failure_counts_as_an_attempt(outcome: Outcome) -> None:
    upd = after_attempt(attempts=2, max_attempts=5, outcome=outcome, now=NOW, retry_delay=DELAY)
    assert upd.attempts == 3 and upd.state is RS.IDLE


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_a_run_of_failures_ends_failed_after_exactly_max_attempts(max_attempts: int) -> None:
    attempts, states = 0, []
    for n in range(max_attempts):
        upd = after_attempt(attempts=attempts, max_attempts=max_attempts, outcome=Outcome.BUSY,
                            now=NOW + n, retry_delay=DELAY)
        attempts = upd.attempts
        states.append(upd.state)
    assert states == [RS.IDLE] * (max_attempts - 1) + [RS.FAILED]
    assert attempts == max_attempts


@given(attempts=st.integers(0, 50), max_attempts=st.integers(1, 50),
       outcome=st.sampled_from(list(Outcome)), stopped=st.booleans(),
       now=st.floats(0, 1e9), delay=st.floats(0, 1e5))
def test_after_attempt_properties(attempts: int, max_attempts: int, outcome: Outcome,
                                  stopped: bool, now: float, delay: float) -> None:
    upd = after_attempt(attempts=attempts, max_attempts=max_attempts, outcome=outcome, now=now,
                        retry_delay=delay, stopped=stopped)
    assert upd.attempts == attempts + (0 if outcome.success or not outcome.counted else 1)
    assert (upd.next_at is not None) == (upd.state is RS.IDLE)
    assert upd.state is not RS.ACTIVE
    if upd.state is RS.IDLE:
        assert upd.attempts < max_attempts
        assert upd.next_at == (now + delay if outcome.counted else now)
    if outcome.success:
        assert upd.state is RS.CONTACTED


@pytest.mark.parametrize(
    ("tally", "threshold", "keep", "expected"),
    [
        (Tally(idle=1, contacted=2), None, True, None),
        (Tally(active=1, contacted=2), None, True, None),
        (Tally(contacted=3), None, True, CS.COMPLETED),
        (Tally(contacted=2, failed=1), None, True, CS.INCOMPLETE),
        (Tally(contacted=2, failed=1), 2, True, CS.COMPLETED),
        (Tally(contacted=1, failed=2), 2, True, CS.INCOMPLETE),
        (Tally(contacted=2, stopped=1), 2, True, CS.COMPLETED),
        (Tally(contacted=2, stopped=1), None, True, CS.INCOMPLETE),
        (Tally(contacted=1, failed=1), 5, True, CS.INCOMPLETE),  # threshold above the size
        (Tally(contacted=2), 5, True, CS.COMPLETED),  # capped at the number of recipients
        (Tally(idle=3, contacted=2), 2, True, None),  # default: keep calling the rest
        # keep_calling_after_threshold = False
        (Tally(idle=3, contacted=2), 2, False, CS.COMPLETED),
        (Tally(idle=3, active=1, contacted=2), 2, False, None),  # wait for the call in progress
        (Tally(idle=3, contacted=1), 2, False, None),
        (Tally(contacted=1, failed=2), 2, False, CS.INCOMPLETE),
        (Tally(), None, True, CS.COMPLETED),
    ],
)
def test_settle(tally: Tally, threshold: int | None, keep: bool,
                expected: CampaignState | None) -> None:
    assert settle(CS.ACTIVE, tally, threshold, keep) is expected


@pytest.mark.parametrize("state", [s for s in CS if s is not CS.ACTIVE])
def test_only_active_campaigns_settle(state: CampaignState) -> None:
    assert settle(state, Tally(contacted=3), None, True) is None


@pytest.mark.parametrize(
    ("tally", "threshold", "keep", "expected"),
    [
        (Tally(idle=3, contacted=2), 2, True, True),
        (Tally(idle=3, contacted=2), 2, False, False),
        (Tally(idle=3, contacted=1), 2, False, True),
        (Tally(idle=1, contacted=4), None, False, True),
        (Tally(contacted=5), None, False, False),
    ],
)
def test_may_call(tally: Tally, threshold: int | None, keep: bool, expected: bool) -> None:
    assert may_call(tally, threshold, keep) is expected


def test_keep_calling_false_sequence() -> None:
    """Threshold 2 of 5, stop early: calls stop at the 2nd success, completed when calls end."""
    seq = [Tally(idle=5), Tally(idle=3, active=2), Tally(idle=3, active=1, contacted=1),
           Tally(idle=3, active=1, contacted=2), Tally(idle=3, contacted=2)]
    assert [may_call(t, 2, False) for t in seq] == [True, True, True, False, False]
    assert [settle(CS.ACTIVE, t, 2, False) for t in seq] == [None, None, None, None,
                                                             CS.COMPLETED]


def test_threshold_of() -> None:
    assert [threshold_of(None, 4), threshold_of(2, 4), threshold_of(9, 4), threshold_of(0, 4)] \
        == [4, 2, 4, 0]
    assert Tally(idle=1, active=2, contacted=3, failed=4, stopped=5).total == 15


def s(id: int, state: CampaignState, priority: int = 0, start_at: float = 0.0) -> Startable:
    return Startable(id=id, state=state, priority=priority, start_at=start_at)


@pytest.mark.parametrize(
    ("camps", "max_active", "expected"),
    [
        # scheduled and due: active; not yet due: untouched
        ([s(1, CS.SCHEDULED, start_at=NOW), s(2, CS.SCHEDULED, start_at=NOW + 1)], None,
         [(1, CS.ACTIVE)]),
        # unlimited: everything waiting becomes active, by priority then start time
        ([s(1, CS.SCHEDULED, 0, 10), s(2, CS.BLOCKED, 5, 20), s(3, CS.SCHEDULED, 0, 5)], None,
         [(2, CS.ACTIVE), (3, CS.ACTIVE), (1, CS.ACTIVE)]),
        # one place: the highest priority takes it, the other scheduled one is blocked
        ([s(1, CS.SCHEDULED, 0, 10), s(2, CS.SCHEDULED, 5, 20)], 1,
         [(2, CS.ACTIVE), (1, CS.BLOCKED)]),
        # no place: scheduled -> blocked, blocked stays (no transition)
        ([s(1, CS.ACTIVE), s(2, CS.BLOCKED, 9), s(3, CS.SCHEDULED, 0, 1)], 1,
         [(3, CS.BLOCKED)]),
        # a place freed: blocked -> active, earliest start among equal priority first
        ([s(2, CS.BLOCKED, 0, 20), s(3, CS.BLOCKED, 0, 10)], 1, [(3, CS.ACTIVE)]),
        # a blocked high-priority one beats a newly due lower one
        ([s(1, CS.ACTIVE), s(2, CS.BLOCKED, 1, 50), s(3, CS.SCHEDULED, 0, 1)], 2,
         [(2, CS.ACTIVE), (3, CS.BLOCKED)]),
        # other states neither count nor move
        ([s(1, CS.SUSPENDED), s(2, CS.INCOMPLETE), s(3, CS.COMPLETED), s(4, CS.TERMINATED),
          s(5, CS.SCHEDULED)], 1, [(5, CS.ACTIVE)]),
        ([s(1, CS.SCHEDULED)], 0, [(1, CS.BLOCKED)]),
    ],
)
def test_activate(camps: list[Startable], max_active: int | None,
                  expected: list[tuple[int, CampaignState]]) -> None:
    assert activate(camps, max_active, NOW) == expected


def test_blocked_to_active_when_room_sequence() -> None:
    """Two campaigns, one place: the second waits blocked, then takes the place."""
    camps = {1: s(1, CS.SCHEDULED, 0, 1), 2: s(2, CS.SCHEDULED, 0, 2)}
    history: list[list[tuple[int, CampaignState]]] = []

    def apply(moves: list[tuple[int, CampaignState]]) -> None:
        history.append(moves)
        for cid, new in moves:
            camps[cid] = s(cid, new, 0, camps[cid].start_at)

    apply(activate(list(camps.values()), 1, NOW))
    apply(activate(list(camps.values()), 1, NOW))  # nothing changes
    camps[1] = s(1, CS.COMPLETED, 0, 1)
    apply(activate(list(camps.values()), 1, NOW))
    assert history == [[(1, CS.ACTIVE), (2, CS.BLOCKED)], [], [(2, CS.ACTIVE)]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(CS)), st.integers(0, 3), st.integers(0, 3)),
                max_size=10),
       st.one_of(st.none(), st.integers(0, 4)))
def test_activate_never_exceeds_max_active(rows: list[tuple[CampaignState, int, int]],
                                           max_active: int | None) -> None:
    camps = [s(i, state, prio, float(start)) for i, (state, prio, start) in enumerate(rows)]
    moves = activate(camps, max_active, 2.0)
    after = {c.id: c.state for c in camps} | dict(moves)
    active_before = sum(c.state is CS.ACTIVE for c in camps)
    active_after = sum(v is CS.ACTIVE for v in after.values())
    if max_active is not None:
        assert active_after <= max(max_active, active_before)
    # moves only touch scheduled-and-due and blocked ones, each at most once; a blocked one
    # whose start time is ahead goes back to scheduled, and nothing is active before its start
    assert len({cid for cid, _ in moves}) == len(moves)
    for cid, new in moves:
        old = camps[cid]
        assert old.state is CS.BLOCKED or (old.state is CS.SCHEDULED and old.start_at <= 2.0)
        if old.start_at > 2.0:
            assert new is CS.SCHEDULED
        else:
            assert new in (CS.ACTIVE, CS.BLOCKED) and new is not old.state
    assert all(after[c.id] is not CS.BLOCKED for c in camps if c.start_at > 2.0)
    # whoever got a place ranks above whoever was left waiting
    key = {c.id: (-c.priority, c.start_at, c.id) for c in camps}
    got = [cid for cid, new in moves if new is CS.ACTIVE]
    left = [cid for cid, v in after.items() if v is CS.BLOCKED]
    if got and left:
        assert max(key[g] for g in got) < min(key[w] for w in left)


# ----- operator actions (issue 10: a scheduled campaign stays scheduled) -----

FINISHED = [CS.COMPLETED, CS.TERMINATED]


@pytest.mark.parametrize(
    ("action", "state", "start_at", "launched", "max_active", "expected"),
    [
        ("suspend", CS.SCHEDULED, NOW + 1800, False, None, CS.SUSPENDED),
        ("suspend", CS.BLOCKED, NOW, True, 1, CS.SUSPENDED),
        ("suspend", CS.ACTIVE, NOW, True, None, CS.SUSPENDED),
        ("suspend", CS.SUSPENDED, NOW, True, None, None),
        ("suspend", CS.INCOMPLETE, NOW, True, None, None),
        # the case: start time ahead, no limit at all -> scheduled, never blocked
        ("resume", CS.SUSPENDED, NOW + 1800, False, None, CS.SCHEDULED),
        ("resume", CS.SUSPENDED, NOW + 1800, True, None, CS.SCHEDULED),
        ("resume", CS.SUSPENDED, NOW + 1800, True, 0, CS.SCHEDULED),
        ("resume", CS.SUSPENDED, NOW, False, None, CS.SCHEDULED),  # due: the pass starts it
        ("resume", CS.SUSPENDED, NOW, True, None, CS.ACTIVE),
        ("resume", CS.SUSPENDED, NOW, True, 2, CS.ACTIVE),  # one other active: a place is free
        ("resume", CS.SUSPENDED, NOW, True, 1, CS.BLOCKED),  # the other holds the only place
        ("resume", CS.SUSPENDED, NOW, True, 0, CS.BLOCKED),
        ("resume", CS.ACTIVE, NOW, True, None, None),
        ("resume", CS.SCHEDULED, NOW + 5, False, None, None),
        ("grant", CS.INCOMPLETE, NOW - 60, True, None, CS.ACTIVE),
        ("grant", CS.INCOMPLETE, NOW - 60, True, 1, CS.BLOCKED),
        ("grant", CS.SUSPENDED, NOW - 60, True, None, CS.SUSPENDED),  # granted, still suspended
        ("grant", CS.ACTIVE, NOW - 60, True, None, CS.ACTIVE),
        ("grant", CS.SCHEDULED, NOW + 60, False, None, CS.SCHEDULED),
        ("stop", CS.SCHEDULED, NOW + 60, False, None, CS.TERMINATED),
        ("stop", CS.INCOMPLETE, NOW, True, None, CS.TERMINATED),
        ("stop", CS.SUSPENDED, NOW, True, None, CS.TERMINATED),
        *[(a, f, NOW, True, None, None) for a in OPERATOR_ACTIONS for f in FINISHED],
    ],
)
def test_operator_action(action: str, state: CampaignState, start_at: float, launched: bool,
                         max_active: int | None, expected: CampaignState | None) -> None:
    other = s(2, CS.ACTIVE, 0, NOW - 100)
    assert operator_action(action, s(1, state, 0, start_at), [other], max_active, NOW,
                           launched=launched) == expected


def test_rejoin_ranks_against_the_blocked_campaigns_waiting() -> None:
    """One place free and a blocked campaign of higher priority waiting: it takes the place."""
    others = [s(2, CS.BLOCKED, 5, NOW - 10), s(3, CS.BLOCKED, 0, NOW - 10)]
    me = s(1, CS.SUSPENDED, 1, NOW - 100)
    assert rejoin(me, others, 1, NOW, launched=True) is CS.BLOCKED
    assert rejoin(me, others, 2, NOW, launched=True) is CS.ACTIVE  # ahead of campaign 3
    assert rejoin(me, others, None, NOW, launched=True) is CS.ACTIVE


LIVE_PLACES = (CS.SCHEDULED, CS.BLOCKED, CS.ACTIVE)
STEPS = st.one_of(
    st.tuples(st.sampled_from(OPERATOR_ACTIONS), st.integers(0, 3)),
    st.tuples(st.just("pass"), st.just(0)),  # a scheduling pass (settle aside: "end" does it)
    st.tuples(st.just("end"), st.integers(0, 3)),  # an active campaign's recipients all done
    st.tuples(st.just("wait"), st.sampled_from([1, 30, 600, 1800])),
    st.tuples(st.just("limit"), st.integers(-1, 3)),  # -1: unlimited
)


@settings(max_examples=400, deadline=None)
@given(starts=st.lists(st.tuples(st.integers(0, 3600), st.integers(0, 2)), min_size=1,
                       max_size=4),
       max_active=st.one_of(st.none(), st.integers(0, 3)),
       steps=st.lists(STEPS, max_size=40), ended=st.lists(st.booleans(), min_size=40,
                                                           max_size=40))
def test_lifecycle_invariants_over_operator_actions_in_every_state(
        starts: list[tuple[int, int]], max_active: int | None,
        steps: list[tuple[str, int]], ended: list[bool]) -> None:
    """Campaigns created scheduled, then any sequence of operator actions (in whatever state they
    find the campaign), scheduling passes, campaigns settling, time passing and limit changes.
    After every step: nothing is active or blocked before its start time, the maximum is never
    exceeded by an action, finished campaigns stay finished; after every pass also: scheduled only
    while the start is ahead, blocked only while the maximum is reached."""
    now = NOW
    camps = {i: s(i, CS.SCHEDULED, prio, NOW + start) for i, (start, prio) in enumerate(starts)}
    launched: set[int] = set()
    history: dict[int, list[CampaignState]] = {i: [CS.SCHEDULED] for i in camps}

    def count_active() -> int:
        return sum(c.state is CS.ACTIVE for c in camps.values())

    def put(cid: int, new: CampaignState) -> None:
        old = camps[cid]
        assert not old.state.finished, (cid, old.state, new)  # finished stays finished
        if new is CS.ACTIVE and old.state is not CS.ACTIVE:
            assert old.start_at <= now  # never active before its start time
            launched.add(cid)
        camps[cid] = Startable(id=cid, state=new, priority=old.priority, start_at=old.start_at)
        history[cid].append(new)

    def scheduling_pass() -> None:
        for cid, new in activate(list(camps.values()), max_active, now):
            put(cid, new)
        for c in camps.values():
            assert c.state is not CS.SCHEDULED or c.start_at > now
            if c.state is CS.BLOCKED:
                assert max_active is not None and count_active() >= max_active

    for n, (what, arg) in enumerate(steps):
        before = count_active()
        if what == "pass":
            scheduling_pass()
        elif what == "wait":
            now += arg
        elif what == "limit":
            max_active = None if arg < 0 else arg
        elif what == "end":
            cid = arg % len(camps)
            if camps[cid].state is CS.ACTIVE:
                put(cid, CS.COMPLETED if ended[n] else CS.INCOMPLETE)
        else:
            cid = arg % len(camps)
            me = camps[cid]
            others = [c for c in camps.values() if c.id != cid and c.state in LIVE_PLACES]
            new = operator_action(what, me, others, max_active, now, launched=cid in launched)
            if new is None:
                assert me.state.finished or not (
                    (what == "suspend" and me.state in LIVE_PLACES)
                    or (what == "resume" and me.state is CS.SUSPENDED)
                    or (what in ("stop", "grant")))
                continue
            if what in ("resume", "grant") and new is not me.state:
                if me.start_at > now:
                    assert new is CS.SCHEDULED
                if new is CS.BLOCKED:  # only when a pass right now would leave it waiting
                    assert (cid, CS.ACTIVE) not in activate(
                        [*others, Startable(id=cid, state=CS.BLOCKED, priority=me.priority,
                                            start_at=me.start_at)], max_active, now)
                if new is CS.ACTIVE and max_active is not None:
                    assert before < max_active
            put(cid, new)
        for c in camps.values():
            if c.state in (CS.ACTIVE, CS.BLOCKED):
                assert c.start_at <= now, (c, now)
    scheduling_pass()
    for seq in history.values():
        done = [i for i, x in enumerate(seq) if x.finished]
        assert not done or done[0] == len(seq) - 1  # nothing follows a finished state


@pytest.mark.parametrize("outcome", [Outcome.INTERRUPTED, Outcome.TRUNK_DOWN])
def test_calls_that_are_not_counted_are_still_bounded(outcome: Outcome) -> None:
    """A restart or outage loop cannot call anyone without end: attempts + EXTRA_CALLS calls."""
    from dialer.core.domain import EXTRA_CALLS

    attempts, calls, states = 0, 0, []
    for n in range(20):
        calls += 1
        upd = after_attempt(attempts=attempts, max_attempts=2, outcome=outcome, now=NOW + n,
                            retry_delay=DELAY, calls=calls)
        attempts = upd.attempts
        states.append(upd.state)
        if upd.state is not RS.IDLE:
            break
    assert attempts == 0 and calls == 2 + EXTRA_CALLS and states[-1] is RS.FAILED


@pytest.mark.parametrize(("answer", "listen", "a1", "a9", "expected"), [
    (True, True, 1.0, 2.0, True), (True, True, 1.0, None, False), (True, True, None, None, False),
    # key 1 alone proves no message was heard: the end report decides
    (True, False, 1.0, None, False), (False, True, None, 2.0, True),
    (False, False, None, None, False),
])
def test_confirmed(answer: bool, listen: bool, a1: float | None, a9: float | None,
                   expected: bool) -> None:
    from dialer.core.lifecycle import confirmed

    assert confirmed(answer_confirm=answer, listen_confirm=listen, answer_confirmed_at=a1,
                     listen_confirmed_at=a9) is expected
