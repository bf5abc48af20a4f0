"""What the store hands out and takes in (frozen dataclasses), and the small conversions its
modules share: POSIX times to and from aware UTC datetimes, settings to and from JSON, rows to
the dicts the CLI prints."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from dialer.core.domain import CampaignSettings, Kind, Limits, Outcome
from dialer.recipients import Recipient
from dialer.storage.models import AttemptRow, EventRow

UTC = dt.timezone.utc


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


@dataclass(frozen=True, kw_only=True)
class Tick:
    """What one scheduling pass decided."""

    calls: list[ClaimedCall]
    next_due: float | None  # when a scheduled start or a retry delay falls due
    transitions: list[tuple[int, str, str]]  # (campaign, from, to)
    settings: GlobalSettings  # the settings the pass decided with


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


def _as_utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _settings_view(row: Any) -> GlobalSettings:
    return GlobalSettings(max_campaigns=row.max_campaigns,
                          limits=Limits(total=row.max_calls, internal=row.max_internal,
                                        external=row.max_external),
                          version=row.version, updated_at=to_ts(row.updated_at),
                          updated_by=row.updated_by,
                          # the scheduling pass reads the limits only (_SettingsValues)
                          require_db_role=bool(getattr(row, "require_db_role", False)))


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _attempt_dict(a: AttemptRow) -> dict[str, Any]:
    return {"id": a.id, "recipient_id": a.recipient_id, "number": a.number, "kind": a.kind,
            "created_at": _iso(a.created_at), "ringing_at": _iso(a.ringing_at),
            "answered_at": _iso(a.answered_at),
            "answer_confirmed_at": _iso(a.answer_confirmed_at),
            "listen_confirmed_at": _iso(a.listen_confirmed_at), "ended_at": _iso(a.ended_at),
            "status": a.status, "reason": a.reason, "q850": a.q850, "keys": a.keys,
            "outcome": a.outcome}


def _event_dict(e: EventRow) -> dict[str, Any]:
    return {"id": e.id, "at": _iso(e.at), "kind": e.kind, "recipient_id": e.recipient_id,
            "attempt_id": e.attempt_id, "actor": e.actor, "detail": e.detail}
