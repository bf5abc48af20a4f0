"""The records of ``dialer.core.records`` (re-exported: the store's modules import them from
here) and the row conversions the store's modules share: rows to the dicts the CLI prints."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dialer.core.domain import Limits
from dialer.core.records import (
    UTC,
    AttemptMeta,
    ClaimedCall,
    EndReport,
    GlobalSettings,
    MailJob,
    MailTarget,
    TemplateView,
    Tick,
    at_dt,
    settings_from_dict,
    settings_to_dict,
    to_dt,
    to_ts,
)
from dialer.storage.models import AttemptRow, EventRow

__all__ = ["UTC", "AttemptMeta", "ClaimedCall", "EndReport", "GlobalSettings", "MailJob",
           "MailTarget", "TemplateView", "Tick", "at_dt", "settings_from_dict",
           "settings_to_dict", "to_dt", "to_ts", "_as_utc", "_attempt_dict", "_event_dict",
           "_iso", "_settings_view"]


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
            "outcome": a.outcome, "node": a.node, "lease": a.lease, "trunk": a.trunk,
            "answer_key": a.answer_key, "listen_key": a.listen_key}


def _event_dict(e: EventRow) -> dict[str, Any]:
    return {"id": e.id, "at": _iso(e.at), "kind": e.kind, "recipient_id": e.recipient_id,
            "attempt_id": e.attempt_id, "actor": e.actor, "detail": e.detail}
