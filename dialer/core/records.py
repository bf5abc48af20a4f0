"""The records the storage ports hand out and take in (frozen dataclasses), and the value
conversions they rest on: POSIX times to and from aware UTC datetimes (conversions, never the
clock), campaign settings to and from JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from dialer.core.domain import CampaignSettings, Kind, Limits, Outcome
from dialer.core.keys import DrawnKeys
from dialer.core.recipients import Recipient

UTC = dt.UTC


def to_dt(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, UTC)


def at_dt(ts: float) -> dt.datetime:
    """A POSIX time as an aware UTC datetime (for columns that are never empty)."""
    return dt.datetime.fromtimestamp(ts, UTC)


def to_ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def settings_to_dict(s: CampaignSettings) -> dict[str, Any]:
    return dataclasses.asdict(s)


def settings_from_dict(d: dict[str, Any]) -> CampaignSettings:
    known = {f.name for f in dataclasses.fields(CampaignSettings)}
    values = {k: v for k, v in d.items() if k in known}
    values["limits"] = Limits(**d.get("limits", {}))
    return CampaignSettings(**values)


@dataclass(frozen=True, kw_only=True)
class GlobalSettings:
    """Global limits (None = unlimited) and the version counter that grows on every change."""

    max_campaigns: int | None
    limits: Limits
    version: int
    updated_at: float | None = None
    updated_by: str | None = None
    require_db_role: bool = False  # PostgreSQL: operators connect as their own role


@dataclass(frozen=True, kw_only=True)
class ClaimedCall:
    """A call the daemon must place now; its attempt row is already committed."""

    attempt_id: str
    campaign_id: int
    recipient_id: int
    number: str
    kind: Kind
    settings: CampaignSettings
    audio_sha: str
    audio_seconds: float
    trunk: str | None = None  # the trunk its route chose (None: the trunk named after its kind)
    drawn: DrawnKeys = DrawnKeys()  # the digits of its random keys (dialer.core.keys)


@dataclass(frozen=True, kw_only=True)
class Tick:
    """What one scheduling pass decided."""

    calls: list[ClaimedCall]
    next_due: float | None  # when a scheduled start or a retry delay falls due
    transitions: list[tuple[int, str, str]]  # (campaign, from, to)
    settings: GlobalSettings  # the settings the pass decided with
    # nodes this pass declared lost, with how many of their open calls it settled (node_lost)
    settled: list[tuple[str, int]] = field(default_factory=list)
    # active campaigns whose calling window is closed in every zone of their recipients
    waiting_window: list[int] = field(default_factory=list)
    # this node's calls in progress whose campaign was stopped (``campaign stop``): hang up
    hangups: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class TrunkHealthView:
    """A trunk's health guard as the CLI and the metrics show it (``dialer.core.health``)."""

    name: str
    healthy: bool
    until: float | None  # unhealthy until then
    reason: str
    level: int  # trips since an attempt on it last succeeded


@dataclass(frozen=True, kw_only=True)
class AttemptMeta:
    """An open attempt as the daemon tracks it (``attempt_meta``)."""

    campaign_id: int
    recipient_id: int
    kind: str
    email: str
    created_at: float


@dataclass(frozen=True, kw_only=True)
class EndReport:
    """How a call ended, as the worker (or the supervisor) saw it."""

    attempt_id: str
    outcome: Outcome
    at: float
    status: int | None = None
    reason: str | None = None
    q850: int | None = None
    answered_at: float | None = None
    answer_confirmed_at: float | None = None
    listen_confirmed_at: float | None = None
    keys: str = ""


@dataclass(frozen=True, kw_only=True)
class MailTarget:
    """A recipient to mail the message to (``dialer.mailer.MailRecipient``)."""

    id: int
    number: str
    name: str | None
    email: str


@dataclass(frozen=True, kw_only=True)
class MailJob:
    """What one mailing of a campaign needs: its name, message and the recipients to mail."""

    campaign_id: int
    name: str
    audio_sha: str
    text: str | None
    recipients: list[MailTarget]


@dataclass(frozen=True, kw_only=True)
class TemplateView:
    """A template as the CLI shows it."""

    id: int
    name: str
    enabled: bool
    settings: CampaignSettings
    audio_sha: str
    audio_seconds: float
    recipients: list[Recipient]
