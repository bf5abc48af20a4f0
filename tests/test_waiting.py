"""Why a recipient waits (dialer.core.waiting): each reason, in the scheduler's order."""

from __future__ import annotations

import pytest

from dialer.core.domain import Limits
from dialer.core.waiting import Situation, tally, why_waiting

NOW = 1_764_000_000.0


@pytest.mark.parametrize(("kind", "next_at", "where", "reason"), [
    ("internal", None, Situation(state="scheduled", start_at=NOW + 60), "campaign scheduled"),
    ("internal", None, Situation(state="suspended"), "campaign suspended"),
    ("internal", None, Situation(state="blocked"), "maximum of active campaigns"),
    ("internal", None, Situation(state="active", serving=False), "no daemon serving"),
    ("internal", NOW + 90, Situation(state="active"), "retry delay until"),
    ("internal", NOW - 1, Situation(state="active"), "next in line"),  # its delay is over
    ("external", None, Situation(state="active", limits=Limits(total=2),
                                 calls={"internal": 1, "external": 1}),
     "campaign limit full (max calls 2)"),
    ("external", None, Situation(state="active", limits=Limits(external=1),
                                 calls={"external": 1}), "campaign limit full (max external 1)"),
    ("internal", None, Situation(state="active", limits=Limits(external=1),
                                 calls={"external": 1}), "next in line"),  # not its kind's
    ("internal", None, Situation(state="active", global_limits=Limits(internal=3),
                                 global_calls={"internal": 3}),
     "global limit full (max internal 3)"),
    ("external", None, Situation(state="active", external_trunks=["a", "b"],
                                 unhealthy={"a": NOW + 30, "b": None}), "trunks out of service"),
    ("external", None, Situation(state="active", external_trunks=["a", "b"],
                                 unhealthy={"a": NOW + 30}), "next in line"),  # b still works
])
def test_each_reason(kind: str, next_at: float | None, where: Situation, reason: str) -> None:
    assert reason in why_waiting(kind, next_at, where, NOW)


def test_tally_counts_the_reasons_most_first() -> None:
    assert tally(["b", "a", "b"]) == [("b", 2), ("a", 1)]
