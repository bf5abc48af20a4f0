"""The ``alert_launches`` rows as the CLI, the history and the report show them (shared by
``campaigns``, ``history`` and ``alerts``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dialer.storage.models import AlertLaunchRow
from dialer.storage.records import _iso


def alert_view(row: AlertLaunchRow) -> dict[str, Any]:
    """An alert's firing period as ``campaign show``, the history and the report show it."""
    return {"source": "alertmanager", "alertname": row.alertname,
            "fingerprint": row.fingerprint, "starts_at": row.starts_at, "route": row.route,
            "template": row.template, "labels": row.labels, "annotations": row.annotations,
            "generator_url": row.generator_url, "received_at": _iso(row.received_at),
            "resolved_at": _iso(row.resolved_at), "ends_at": row.ends_at,
            "stopped_on_resolve": row.stopped, "campaign_id": row.campaign_id}


def alert_of(s: Session, campaign_id: int) -> dict[str, Any] | None:
    """The alert that launched campaign (run) ``campaign_id``, or None."""
    row = s.scalars(select(AlertLaunchRow).where(AlertLaunchRow.campaign_id == campaign_id)
                    .order_by(AlertLaunchRow.id)).first()
    return None if row is None else alert_view(row)
