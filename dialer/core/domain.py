"""Domain values of the dialer: states, kinds, outcomes and the frozen settings of a campaign.

Pure values: no SQLAlchemy, no pjsua2, no wall clock. The string values of the enums are what
the database stores and what the CLI shows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class CampaignState(str, enum.Enum):
    """States of a campaign (SPEC section 2)."""

    SCHEDULED = "scheduled"
    ACTIVE = "active"
    BLOCKED = "blocked"
    SUSPENDED = "suspended"
    INCOMPLETE = "incomplete"
    COMPLETED = "completed"
    TERMINATED = "terminated"

    @property
    def finished(self) -> bool:
        return self in (CampaignState.COMPLETED, CampaignState.TERMINATED)


class RecipientState(str, enum.Enum):
    """States of one recipient of a campaign."""

    IDLE = "idle"
    ACTIVE = "active"
    CONTACTED = "contacted"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def done(self) -> bool:
        return self in (RecipientState.CONTACTED, RecipientState.FAILED, RecipientState.STOPPED)


class Kind(str, enum.Enum):
    """Where a number is dialled: the internal trunk (extensions) or the external one."""

    INTERNAL = "internal"
    EXTERNAL = "external"


# What a dial-out-only UA may answer an INVITE from its PBX with ([sip] reject_code): 403 refuses
# service (the default), 488 "not acceptable here", 603 "declined".
SIP_REJECT_CODES = (403, 488, 603)


class Outcome(str, enum.Enum):
    """How one attempt (one call) ended."""

    CONTACTED = "contacted"  # answered with every confirmation the campaign requires
    BUSY = "busy"  # 486 / 600
    NO_ANSWER = "no_answer"  # it rang and nobody took it: our CANCEL at the ring timeout (487)
    REJECTED = "rejected"  # 4xx/6xx other than busy and congestion: 603, 404, 484, ...
    # the trunk never answered the INVITE (no response within invite_timeout, a transport
    # failure, 502/504): nobody rang
    UNREACHABLE = "unreachable"
    CONGESTION = "congestion"  # the trunk or the network is full: 503, 480, 403, Q.850 34/41/...
    HUNG_UP = "hung_up"  # answered, then hung up before the required confirmations
    NOT_CONFIRMED = "not_confirmed"  # answered, but the confirmations never came: we hung up
    FAILED = "failed"  # any other failure to place the call
    # The dialer cut the call itself: its worker died, the daemon died or was stopped with the
    # call in progress. Recorded, but not counted against the recipient's attempts (the
    # recipient did nothing wrong); EXTRA_CALLS bounds how often that can happen to one.
    INTERRUPTED = "interrupted"
    # The trunk was found down (registrar gone) before the INVITE had any answer: nobody was
    # called, so it is recorded but not counted against the recipient's attempts.
    TRUNK_DOWN = "trunk_down"
    # The node that carried the call lost its lease (it died, or lost the database) and another
    # node settled the call: nobody knows how it ended, so it is counted (an attempt was made,
    # and a node that dies over and over must not call someone without bound).
    NODE_LOST = "node_lost"
    # Before issue 10 a cut call was one of these, and counted; kept for the history's rows.
    WORKER_LOST = "worker_lost"
    DAEMON_LOST = "daemon_lost"

    @property
    def success(self) -> bool:
        return self is Outcome.CONTACTED

    @property
    def counted(self) -> bool:
        """Whether it uses one of the recipient's attempts: not when the dialer cut the call or
        the trunk was down (the recipient did nothing wrong)."""
        return self not in (Outcome.TRUNK_DOWN, Outcome.INTERRUPTED)


# Calls a recipient may receive beyond its attempts, spent only by outcomes that are not counted
# (interrupted, trunk_down): the bound on a pathological restart or outage loop.
EXTRA_CALLS = 3


# How a call that was never answered ends (``outcome_from_answer``), in the order the rules apply;
# README's outcome table is checked against these rows (tests/test_outcome.py).
# A Q.850 cause (the Reason header of the final response) decides before the status: it is the
# network's own account of why the call failed, where the SIP status is often a gateway's guess.
Q850_OUTCOMES: tuple[tuple[tuple[int, ...], Outcome, str], ...] = (
    ((17,), Outcome.BUSY, "user busy"),
    ((18, 19), Outcome.NO_ANSWER, "no user responding, no answer from user (alerted)"),
    ((1, 3, 21, 22, 28), Outcome.REJECTED,
     "unallocated number, no route, call rejected, number changed, invalid number format"),
    ((27, 38), Outcome.UNREACHABLE, "destination out of order, network out of order"),
    ((34, 41, 42, 44, 47), Outcome.CONGESTION,
     "no circuit available, temporary failure, switching equipment congestion, "
     "requested channel not available, resource unavailable"),
)
STATUS_OUTCOMES: tuple[tuple[tuple[int, ...], Outcome, str], ...] = (
    ((486, 600), Outcome.BUSY, "busy here, busy everywhere"),
    ((487, 408), Outcome.NO_ANSWER,
     "our CANCEL at the ring timeout; a request timeout after the trunk answered"),
    ((503, 480, 403), Outcome.CONGESTION,
     "service unavailable, temporarily unavailable, forbidden (a carrier's channel or rate "
     "limit)"),
    ((502, 504), Outcome.UNREACHABLE, "bad gateway, server time-out: the next hop is not reached"),
)
# every other 4xx and 6xx: rejected; every other 5xx and anything else: failed


def outcome_from_answer(status: int, q850: int | None = None, *,
                        responded: bool = True) -> Outcome:
    """Classify the final SIP status of a call that was never answered.

    ``responded``: some response to the INVITE came from the far end. When none did, the
    status was made up by the stack (408 after the retransmissions, 503 for a refused TCP
    connection, 0): the trunk is ``unreachable``, whatever the number."""
    if not responded:
        return Outcome.UNREACHABLE
    if q850 is not None:
        for causes, outcome, _ in Q850_OUTCOMES:
            if q850 in causes:
                return outcome
    for codes, outcome, _ in STATUS_OUTCOMES:
        if status in codes:
            return outcome
    if 400 <= status < 500 or 600 <= status < 700:
        return Outcome.REJECTED
    return Outcome.FAILED


def outcome_from_status(code: int) -> Outcome:
    """``outcome_from_answer`` of a status that came from the far end, with no Q.850 cause."""
    return outcome_from_answer(code)


class EmailPolicy(str, enum.Enum):
    """When a campaign mails its message to the recipients that have an address."""

    OFF = "off"
    ON_LAUNCH = "on_launch"  # everyone with an address, when the campaign first becomes active
    UNREACHED = "unreached"  # only recipients that end failed (attempts used up)


DEFAULT_ANSWER_KEY = "1"
DEFAULT_LISTEN_KEY = "9"


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Concurrent-call limits: ``None`` means unlimited."""

    total: int | None = None
    internal: int | None = None
    external: int | None = None


@dataclass(frozen=True, kw_only=True)
class DialogueSettings:
    """What the per-call dialogue needs to know (a subset of the campaign snapshot)."""

    answer_confirm: bool = True
    listen_confirm: bool = True
    answer_key: str = DEFAULT_ANSWER_KEY
    listen_key: str = DEFAULT_LISTEN_KEY
    # the key was drawn for this call (dialer.core.keys): a second wrong digit ends the prompt
    answer_random: bool = False
    listen_random: bool = False
    max_repeats: int = 3  # how many times a prompt or the message is repeated at most
    key_timeout: float = 5.0  # seconds to wait for a key after a prompt ends
    message_seconds: float = 0.0  # duration of the message audio
    answer_prompt_seconds: float = 0.0
    listen_prompt_seconds: float = 0.0
    goodbye_seconds: float = 0.0
    # connect to a person (``dialer.core.dialogue``, the connect key): the key, the SIP URI a
    # blind transfer (REFER) sends the call to, whether a transfer counts as contacted without
    # the confirmations, the offer and failure prompts' durations, and how long to wait for the
    # far end to report the transfer done
    connect_key: str | None = None
    connect_to: str | None = None
    connect_confirms: bool = False
    connect_offer_seconds: float = 0.0
    transfer_failed_seconds: float = 0.0
    transfer_wait: float = 35.0


@dataclass(frozen=True, kw_only=True)
class CampaignSettings:
    """The frozen snapshot of a template's settings that a campaign runs with."""

    caller_number: str | None = None
    display_name: str = ""
    priority: int = 0
    attempts: int = 5
    ring_timeout: float = 30.0
    retry_delay: float = 60.0
    answer_confirm: bool = True
    listen_confirm: bool = True
    answer_key: str = DEFAULT_ANSWER_KEY
    listen_key: str = DEFAULT_LISTEN_KEY
    max_repeats: int = 3
    key_timeout: float = 5.0
    threshold: int | None = None  # None: every recipient
    limits: Limits = field(default_factory=Limits)
    language: str = "en"
    keep_calling_after_threshold: bool = True
    # which external route / routing class carries external calls (SPEC section 1); kept in the
    # snapshot and shown; None = the configured external trunk
    external_route: str | None = None
    # e-mail of the message (an EmailPolicy value, stored as its string)
    email: str = EmailPolicy.OFF.value
    # the text of a message spoken by text to speech (--tts), kept for the e-mail body
    tts_text: str | None = None
    # escalation (dialer.core.escalation): the follow-up template, when ("incomplete" or
    # "below": fewer than escalate_below contacted escalate_after seconds after the start), and
    # whether the unreached recipients are passed on
    escalate_to: str | None = None
    escalate_when: str = "incomplete"
    escalate_below: int | None = None
    escalate_after: float | None = None
    escalate_unreached: bool = False
    # the calling window (``dialer.core.window``): "HH:MM-HH:MM" in ``timezone`` (an IANA
    # name; None: UTC) on ``window_days`` ("mon-fri"; None: every day); None: urgent, no window
    window: str | None = None
    window_days: str | None = None
    timezone: str | None = None
    # connect to a person: the key that transfers the call (after the message or at a prompt),
    # the SIP URI it is transferred to (blind REFER), and whether the transfer counts as
    # contacted without the confirmations; None: no connect key
    connect_key: str | None = None
    connect_to: str | None = None
    connect_confirms: bool = False
