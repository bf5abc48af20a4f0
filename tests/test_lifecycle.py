"""Recipient and campaign lifecycle rules (dialer.lifecycle)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialer.domain import CampaignState, Outcome, RecipientState
from dialer.lifecycle import (
    RecipientUpdate,
    Startable,
    Tally,
    activate,
    after_attempt,
    may_call,
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
        (0, 5, Outcome.CONTACTED, False, RecipientUpdate(state=RS.CONTACTED, attempts=0, next_at=None)),
        (4, 5, Outcome.CONTACTED, False, RecipientUpdate(state=RS.CONTACTED, attempts=4, next_at=None)),
        (0, 5, Outcome.BUSY, False, RecipientUpdate(state=RS.IDLE, attempts=1, next_at=NOW + DELAY)),
        (3, 5, Outcome.NO_ANSWER, False, RecipientUpdate(state=RS.IDLE, attempts=4, next_at=NOW + DELAY)),
        (4, 5, Outcome.HUNG_UP, False, RecipientUpdate(state=RS.FAILED, attempts=5, next_at=None)),
        (0, 1, Outcome.REJECTED, False, RecipientUpdate(state=RS.FAILED, attempts=1, next_at=None)),
        (6, 5, Outcome.UNREACHABLE, False, RecipientUpdate(state=RS.FAILED, attempts=7, next_at=None)),
        (0, 5, Outcome.DAEMON_LOST, False, RecipientUpdate(state=RS.IDLE, attempts=1, next_at=NOW + DELAY)),
        (0, 5, Outcome.WORKER_LOST, False, RecipientUpdate(state=RS.IDLE, attempts=1, next_at=NOW + DELAY)),
        (1, 5, Outcome.NOT_CONFIRMED, True, RecipientUpdate(state=RS.STOPPED, attempts=2, next_at=None)),
        (1, 5, Outcome.CONTACTED, True, RecipientUpdate(state=RS.CONTACTED, attempts=1, next_at=None)),
        # nobody was called: not counted, and due again at once (the trunk gates it)
        (2, 5, Outcome.TRUNK_DOWN, False, RecipientUpdate(state=RS.IDLE, attempts=2, next_at=NOW)),
        (0, 1, Outcome.TRUNK_DOWN, False, RecipientUpdate(state=RS.IDLE, attempts=0, next_at=NOW)),
        (2, 5, Outcome.TRUNK_DOWN, True, RecipientUpdate(state=RS.STOPPED, attempts=2, next_at=None)),
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
    # moves only touch scheduled-and-due and blocked ones, each at most once
    assert len({cid for cid, _ in moves}) == len(moves)
    for cid, new in moves:
        old = camps[cid]
        assert old.state is CS.BLOCKED or (old.state is CS.SCHEDULED and old.start_at <= 2.0)
        assert new in (CS.ACTIVE, CS.BLOCKED) and new is not old.state
    # whoever got a place ranks above whoever was left waiting
    key = {c.id: (-c.priority, c.start_at, c.id) for c in camps}
    got = [cid for cid, new in moves if new is CS.ACTIVE]
    left = [cid for cid, v in after.items() if v is CS.BLOCKED]
    if got and left:
        assert max(key[g] for g in got) < min(key[w] for w in left)
