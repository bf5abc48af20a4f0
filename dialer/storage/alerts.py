"""Launches from Alertmanager: a firing alert's campaign and its resolution, each in one
transaction with the ``alert_launches`` row of its firing period (``dialer.core.alerts``
decides; the unique key on fingerprint and ``startsAt`` makes a second receiver or a repeated
notification a no-op on SQLite and PostgreSQL alike)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dialer.core.alerts import (
    Alert,
    AlertAction,
    AlertRoute,
    KnownPeriod,
    campaign_name,
    on_firing,
    on_resolved,
)
from dialer.core.domain import CampaignState
from dialer.storage.alertrows import alert_view
from dialer.storage.campaigns import Campaigns
from dialer.storage.models import AlertLaunchRow, CampaignRow
from dialer.storage.records import to_dt


class Alerts(Campaigns):
    """What the Alertmanager receiver (``dialer.alerthook``) does to the database."""

    def alert_fired(self, alert: Alert, route: AlertRoute, *, actor: str,
                    now: float) -> tuple[AlertAction, int | None]:
        """Launch ``route.template`` for a firing alert unless its firing period was seen
        before: (``launched``, the new campaign) or (``duplicate``, the period's campaign).
        A refused launch (a disabled or missing template: DialerError) stores nothing."""
        tpl = self.get_template(route.template)
        with self.session() as s:
            known = self._period(s, alert)
            if on_firing(known) is AlertAction.DUPLICATE:
                return AlertAction.DUPLICATE, known.campaign_id if known else None
            if self._claim_period(s, alert, route, now, resolved=False) is None:
                # another receiver inserted it since (PostgreSQL waited for its commit)
                known = self._period(s, alert)
                return AlertAction.DUPLICATE, known.campaign_id if known else None
            cid = self._start_campaign(s, tpl, name=campaign_name(alert), now=now, start_at=now,
                               actor=actor)
            row = self._period_row(s, alert)
            assert row is not None
            row.campaign_id = cid
            self._event(s, "alert_firing", at=now, campaign_id=cid, actor=actor,
                        alertname=alert.name, fingerprint=alert.fingerprint,
                        starts_at=alert.starts_at, route=route.index,
                        labels=dict(alert.labels), annotations=dict(alert.annotations),
                        generator_url=alert.generator_url)
            return AlertAction.LAUNCHED, cid

    def alert_resolved(self, alert: Alert, route: AlertRoute, *, actor: str,
                       now: float) -> tuple[AlertAction, int | None]:
        """Record a resolution once: stop the period's campaign when the route says so
        (``stopped``), else leave it (``resolved``); a period never seen firing is recorded
        as resolved, so that a late firing notification of it launches nothing."""
        with self.session() as s:
            row = self._period_row(s, alert, lock=True)
            state = None
            if row is not None and row.campaign_id is not None:
                c = s.get(CampaignRow, row.campaign_id)
                state = CampaignState(c.state) if c is not None else None
            known = None if row is None else KnownPeriod(
                campaign_id=row.campaign_id, resolved=row.resolved_at is not None,
                campaign_state=state)
            action = on_resolved(route, known)
            if action is AlertAction.DUPLICATE:
                return action, known.campaign_id if known else None
            if row is None:
                claimed = self._claim_period(s, alert, route, now, resolved=True)
                return (AlertAction.RESOLVED if claimed else AlertAction.DUPLICATE), None
            cid = row.campaign_id
            if action is AlertAction.STOPPED and cid is not None:
                self._set_state(s, cid, "stop", actor=actor, now=now,
                                cause=f"alert {alert.name} resolved")
            row.resolved_at = to_dt(now)
            row.ends_at = alert.ends_at
            row.stopped = action is AlertAction.STOPPED
            if cid is not None:
                self._event(s, "alert_resolved", at=now, campaign_id=cid, actor=actor,
                            alertname=alert.name, fingerprint=alert.fingerprint,
                            starts_at=alert.starts_at, ends_at=alert.ends_at,
                            stopped=row.stopped)
                self._append_late(s, cid, now)  # the stop (or the run's end) sealed it
            return action, cid

    def alert_launches(self) -> list[dict[str, Any]]:
        """Every firing period recorded, oldest first (tests, diagnostics)."""
        with self.session() as s:
            return [alert_view(r) for r in
                    s.scalars(select(AlertLaunchRow).order_by(AlertLaunchRow.id))]

    # ----- the period's row -----

    def _period_row(self, s: Session, alert: Alert, *,
                    lock: bool = False) -> AlertLaunchRow | None:
        q = select(AlertLaunchRow).where(AlertLaunchRow.fingerprint == alert.fingerprint,
                                         AlertLaunchRow.starts_at == alert.starts_at)
        if lock and not self.sqlite:
            q = q.with_for_update()
        return s.scalars(q).first()

    def _period(self, s: Session, alert: Alert) -> KnownPeriod | None:
        row = self._period_row(s, alert)
        return None if row is None else KnownPeriod(campaign_id=row.campaign_id,
                                                     resolved=row.resolved_at is not None)

    def _claim_period(self, s: Session, alert: Alert, route: AlertRoute, now: float, *,
                      resolved: bool) -> int | None:
        """Insert the period's row unless it exists (ON CONFLICT DO NOTHING on the unique
        key: on PostgreSQL a concurrent insert of the same period is waited for); its id, or
        None when it existed."""
        values = {"fingerprint": alert.fingerprint, "starts_at": alert.starts_at,
                  "alertname": alert.name[:200], "route": route.index,
                  "template": route.template, "labels": dict(alert.labels),
                  "annotations": dict(alert.annotations),
                  "generator_url": alert.generator_url, "received_at": to_dt(now),
                  "resolved_at": to_dt(now) if resolved else None,
                  "ends_at": alert.ends_at if resolved else None, "stopped": False}
        make = sqlite_insert if self.sqlite else pg_insert
        stmt = make(AlertLaunchRow).values(**values).on_conflict_do_nothing(
            index_elements=["fingerprint", "starts_at"]).returning(AlertLaunchRow.id)
        return s.execute(stmt).scalar()
