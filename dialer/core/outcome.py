"""How one attempt (one call) ends: the end-of-call decisions, as pure functions.

The SIP worker (``sip.worker``) and the simulator's fake gateway (``tests/sim.py``) both decide
here how a call's outcome is chosen from what they saw: the final SIP status, whether the call
was answered, what the dialogue concluded (``dialer.core.dialogue``: the confirmations, who hung
up), why we hung up on our own (the daemon's request, a shutdown) and what a call we terminated
ourselves was forced to (no answer to the INVITE, the trunk down). Also here: what the ring
timeout does to an unanswered call, and the redial rule for a dial pjsua refused with
PJ_ETOOMANY.

Pure: no pjsua2, no clock. Times are parameters (monotonic seconds, as the caller keeps them).
A status never answered is classified by ``dialer.core.domain.outcome_from_answer`` (the
README's outcome table).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dialer.core.domain import Outcome, outcome_from_answer

# The reason of the calls a stopping worker cuts: they end ``interrupted`` (not counted).
SHUTTING_DOWN = "worker shutting down"
# The reason of the calls a node's lease no longer covers (dialer.core.cluster): they end
# ``interrupted`` (not counted) unless every confirmation came.
FENCED = "node fenced: its lease on the database was not renewed"
# The reason of a call hung up on the daemon's request (a campaign or a recipient stopped).
ON_REQUEST = "hung up on request"
# pjsua frees a call slot a little after the DISCONNECTED callback that made the daemon send
# the next dial, so makeCall can still say PJ_ETOOMANY (4 calls in 2,000 at 500 concurrent
# calls): such a dial is retried on the next loop turns for this long before it fails.
TOOMANY_RETRY_S = 2.0
PJ_ETOOMANY = 70010


@dataclass(frozen=True)
class CallEnd:
    """What is known of a call when it is over."""

    status: int  # the last SIP status (0: none)
    reason: str  # the last SIP reason phrase (or what ended it)
    answered: bool = False  # answered with audio (the dialogue started)
    dialogue_outcome: Outcome | None = None  # what the dialogue concluded, if it did
    dialogue_success: bool = False  # every required confirmation came
    abort_reason: str | None = None  # why we hung up on our own, if we did
    forced: tuple[Outcome, str] | None = None  # a call we terminated: its outcome and reason
    q850: int | None = None  # the Q.850 cause of the final response, if it carried one
    responded: bool = True  # some response to the INVITE came from the far end


def remote_hangup_counts(*, answered: bool, abort_reason: str | None) -> bool:
    """Whether a call that is over was hung up by the far end, for the dialogue
    (``RemoteHangup``): an answered call we did not cut ourselves."""
    return answered and abort_reason is None


def decide(end: CallEnd) -> tuple[Outcome, str]:
    """The outcome of a finished call and the reason reported with it.

    In order: a call we terminated before it was answered ends as it was forced to; a call we
    cut on our own ends ``contacted`` if every confirmation came, else ``interrupted`` (the
    dialer's own stop: not counted) or ``failed`` (the daemon's request): the recipient did
    nothing wrong, so never ``no_answer``/``hung_up``; a finished dialogue ends as it
    concluded; anything else by its final SIP status and Q.850 cause."""
    if end.forced is not None and not end.answered:
        return end.forced
    if end.abort_reason is not None and end.dialogue_outcome is not Outcome.CONTACTED:
        return abort_outcome(end.abort_reason, end.dialogue_success), end.abort_reason
    if end.dialogue_outcome is not None:
        return end.dialogue_outcome, end.reason
    return outcome_from_answer(end.status, end.q850, responded=end.responded), end.reason


def abort_outcome(abort_reason: str, success: bool) -> Outcome:
    """A call we cut on our own: ``contacted`` if confirmed, else interrupted or failed."""
    if success:
        return Outcome.CONTACTED
    return (Outcome.INTERRUPTED if abort_reason in (SHUTTING_DOWN, FENCED)
            else Outcome.FAILED)


def abort_reason_after(current: str | None, new: str | None,
                       dialogue_outcome: Outcome | None) -> str | None:
    """The abort reason once we hang up (``new``: why, None for the dialogue's own hang-up or
    the ring timeout): the first one sticks, and none once the dialogue is over."""
    if new is not None and current is None and dialogue_outcome is None:
        return new
    return current


def hangup_status(answered: bool) -> int:
    """The status a call we end ourselves is terminated with: 487 before an answer, else 200."""
    return 200 if answered else 487


class RingTimeout(enum.Enum):
    """What the ring timeout does to a call (``ring_timeout``)."""

    WAIT = "wait"  # not due, or the call is answered or already being cut
    CANCEL = "cancel"  # CANCEL: 487, which ends no_answer
    NO_AUDIO = "no_audio"  # 200 OK and ACK, but the audio never came up: hang up, failed


def ring_timeout(*, now: float, deadline: float, answered: bool, sip_confirmed: bool,
                 aborting: bool) -> RingTimeout:
    """The ring deadline (``MEDIA_GRACE`` past the 200 OK once confirmed) at ``now``."""
    if answered or aborting or now < deadline:
        return RingTimeout.WAIT
    return RingTimeout.NO_AUDIO if sip_confirmed else RingTimeout.CANCEL


ANSWERED_WITHOUT_AUDIO = "answered without audio"


def invite_timeout_outcome(*, trunk_down: bool, seconds: float) -> tuple[Outcome, str]:
    """An INVITE with no response at all in ``seconds``: nobody rang. ``trunk_down`` when the
    trunk is known down (not counted), else ``unreachable``."""
    return (Outcome.TRUNK_DOWN if trunk_down else Outcome.UNREACHABLE,
            f"no response from the trunk in {seconds:.0f} s")


def trunk_down_outcome(why: str) -> tuple[Outcome, str]:
    """A call whose INVITE had no answer when its trunk was found down."""
    return Outcome.TRUNK_DOWN, f"trunk down: {why}"


def redial_until(*, status: int, now: float, give_up: float | None, stopping: bool,
                 invite_timeout: float) -> float | None:
    """A dial makeCall refused with ``status``: until when to retry it, None to fail it now.

    Only PJ_ETOOMANY is retried (a slot a finished call's SIP transaction still holds is freed
    within ``invite_timeout``), for ``max(TOOMANY_RETRY_S, invite_timeout + 1)`` seconds from
    the first refusal (``give_up``, once set, stays), and never while stopping."""
    if status != PJ_ETOOMANY or stopping or (give_up is not None and now >= give_up):
        return None
    return give_up if give_up is not None else now + max(TOOMANY_RETRY_S, invite_timeout + 1)
