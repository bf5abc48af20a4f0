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
    NO_ANSWER = "no_answer"  # cancelled by us at the ring timeout (487), or 408/480
    REJECTED = "rejected"  # 603 and other refusals
    UNREACHABLE = "unreachable"  # 404, 484, 5xx, transport failure
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


def outcome_from_status(code: int) -> Outcome:
    """Classify a final SIP status of a call that was never answered."""
    if code in (486, 600):
        return Outcome.BUSY
    if code in (487, 408, 480):
        return Outcome.NO_ANSWER
    if code in (603, 403, 401, 407):
        return Outcome.REJECTED
    if code in (404, 484, 410, 502, 503, 504) or code >= 500:
        return Outcome.UNREACHABLE
    return Outcome.FAILED


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
    max_repeats: int = 3  # how many times a prompt or the message is repeated at most
    key_timeout: float = 5.0  # seconds to wait for a key after a prompt ends
    message_seconds: float = 0.0  # duration of the message audio
    answer_prompt_seconds: float = 0.0
    listen_prompt_seconds: float = 0.0
    goodbye_seconds: float = 0.0


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
