"""The rows of the in-memory store (``dialer.testing.memory``): plain mutable dataclasses, one
per table of the SQL schema it stands in for."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from dialer.core.domain import CampaignSettings, CampaignState, Kind, RecipientState
from dialer.core.recipients import Recipient

UTC = dt.UTC


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass
class _Media:
    data: bytes
    rate: int
    seconds: float
    source: str | None


@dataclass
class _Template:
    id: int
    name: str
    enabled: bool
    settings: CampaignSettings
    audio_sha: str
    audio_seconds: float
    recipients: list[Recipient]


@dataclass
class _Campaign:
    id: int
    name: str
    template_name: str
    state: CampaignState
    priority: int
    start_at: float
    settings: CampaignSettings
    audio_sha: str
    audio_seconds: float
    created_at: float
    ended_at: float | None = None
    escalation: str | None = None  # None while a rule waits (or without one); then decided
    escalated_from: int | None = None


@dataclass
class _Recipient:
    id: int
    campaign_id: int
    position: int
    number: str
    kind: Kind
    name: str | None
    email: str | None
    max_attempts: int
    timezone: str | None = None  # its own calling-window zone (None: the campaign's)
    state: RecipientState = RecipientState.IDLE
    calls: int = 0
    attempts: int = 0
    next_at: float | None = None
    last_call_at: float | None = None
    last_outcome: str | None = None
    last_status: int | None = None
    last_reason: str | None = None
    answered_at: float | None = None
    answer_confirmed_at: float | None = None
    confirmed_at: float | None = None


@dataclass
class _Attempt:
    id: str
    seq: int  # creation order (ties of created_at)
    campaign_id: int
    recipient_id: int
    number: str
    kind: Kind
    node: str
    created_at: float
    lease: int | None = None  # the node's generation at the claim
    trunk: str | None = None  # the route's choice
    worker: int | None = None
    ringing_at: float | None = None
    answered_at: float | None = None
    answer_confirmed_at: float | None = None
    listen_confirmed_at: float | None = None
    ended_at: float | None = None
    status: int | None = None
    reason: str | None = None
    q850: int | None = None
    keys: str = ""
    outcome: str | None = None
    answer_key: str | None = None  # the digits drawn for a random key (dialer.core.keys)
    listen_key: str | None = None


@dataclass
class _Event:
    id: int
    at: float
    kind: str
    campaign_id: int | None
    recipient_id: int | None
    attempt_id: str | None
    actor: str | None
    detail: dict[str, Any]


@dataclass
class _Settings:
    max_campaigns: int | None = None
    max_calls: int | None = None
    max_internal: int | None = None
    max_external: int | None = None
    version: int = 0
    updated_at: float | None = None
    updated_by: str | None = None
