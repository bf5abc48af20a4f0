"""The store's history and administration: events, the audit trail, operators and their roles,
the global settings, and the runs (the history that outlives campaigns and templates)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session

from dialer.core.domain import CampaignState
from dialer.core.errors import DialerError, NotFound, StateError, ValidationError
from dialer.core.permissions import Role
from dialer.storage.alertrows import alert_of
from dialer.storage.engine import StoreEngine
from dialer.storage.models import (
    AttemptRow,
    AuditRow,
    CampaignRow,
    EventRow,
    OperatorRow,
    RunRow,
    SettingsRow,
)
from dialer.storage.records import (
    GlobalSettings,
    _attempt_dict,
    _event_dict,
    _iso,
    _settings_view,
    at_dt,
    to_dt,
)


class History(StoreEngine):
    """Events and audit rows (written by every part of the store), settings, operators, runs."""

    def _event(self, s: Session, event_kind: str, /, *, at: float, campaign_id: int | None = None,
               recipient_id: int | None = None, attempt_id: str | None = None,
               actor: str | None = None, **detail: Any) -> EventRow:
        row = EventRow(at=to_dt(at), campaign_id=campaign_id, recipient_id=recipient_id,
                       attempt_id=attempt_id, kind=event_kind, actor=actor, detail=detail)
        s.add(row)
        return row

    # ----- settings -----

    def get_settings(self) -> GlobalSettings:
        with self.session() as s:
            row = s.get(SettingsRow, 1)
            if row is None:
                raise DialerError("database is not initialised: run 'dialer init'")
            return _settings_view(row)

    def set_settings(self, *, actor: str, now: float, require_db_role: bool | None = None,
                     **changes: int | None) -> GlobalSettings:
        allowed = {"max_campaigns", "max_calls", "max_internal", "max_external"}
        with self.session() as s:
            row = s.get(SettingsRow, 1)
            assert row is not None
            old: dict[str, Any] = {}
            new: dict[str, Any] = dict(changes)
            for key, value in changes.items():
                if key not in allowed:
                    raise ValidationError(f"unknown setting {key}")
                if value is not None and value < 0:
                    raise ValidationError(f"{key} must be 0 or more, or none")
                old[key] = getattr(row, key)
                setattr(row, key, value)
            if require_db_role is not None:
                if require_db_role and not self.postgresql:
                    raise ValidationError("--require-db-role needs PostgreSQL "
                                          f"({self.engine.dialect.name} has no roles)")
                role = self._current_role(s)
                if require_db_role and role != actor:
                    raise ValidationError(f"--require-db-role: this connection's PostgreSQL "
                                          f"role is {role}, not {actor}; connect as role "
                                          f"{actor} first (or you would be locked out)")
                old["require_db_role"] = bool(row.require_db_role)
                new["require_db_role"] = require_db_role
                row.require_db_role = require_db_role
            row.version += 1
            row.updated_at = at_dt(now)
            row.updated_by = actor
            self._event(s, "settings_changed", at=now, actor=actor, old=old, new=new)
            self._audit(s, actor=actor, now=now, action="settings.set", target="settings",
                        old=old, new=new)
            return _settings_view(row)

    # ----- operators and audit -----

    def _audit(self, s: Session, *, actor: str, now: float, action: str, target: str,
               old: Any = None, new: Any = None) -> None:
        """Record one successful change (same transaction as the change itself)."""
        s.add(AuditRow(at=to_dt(now), actor=actor, action=action, target=target[:200],
                       old=old, new=new))

    def _current_role(self, s: Session) -> str | None:
        """The database role of the session's connection (None: the database has no roles)."""
        if not self.postgresql:
            return None
        role = s.scalar(sql_text("SELECT current_user"))
        return None if role is None else str(role)

    def check_db_role(self, operator: str) -> None:
        """When the settings require it, refuse a connection whose PostgreSQL role is not the
        operator's name (each operator a role of their own; see README, "Identity")."""
        if not self.postgresql:
            return
        with self.session() as s:
            row = s.get(SettingsRow, 1)
            if row is None or not row.require_db_role:
                return
            role = self._current_role(s)
        if role != operator:
            raise DialerError(f"PostgreSQL role {role} is not operator {operator}: connect as "
                              f"role {operator} (the settings require each operator's own role)")

    def roles_of(self, name: str) -> frozenset[Role]:
        """The roles of an operator (empty when ``name`` is not an operator)."""
        with self.session() as s:
            row = s.get(OperatorRow, name)
            return frozenset() if row is None else _roles(row.roles)

    def ensure_first_admin(self, name: str, *, now: float) -> bool:
        """Make ``name`` an admin when there is no operator at all; True if it did."""
        with self.session() as s:
            if s.scalar(select(func.count()).select_from(OperatorRow)):
                return False
            s.add(OperatorRow(name=name, roles=Role.ADMIN.value, created_at=to_dt(now),
                              created_by=name))
            self._audit(s, actor=name, now=now, action="operator.add", target=f"operator {name}",
                        new={"roles": [Role.ADMIN.value]})
            return True

    def list_operators(self) -> list[dict[str, Any]]:
        with self.session() as s:
            return [{"name": o.name, "roles": sorted(_roles(o.roles)),
                     "created_at": _iso(o.created_at), "created_by": o.created_by}
                    for o in s.scalars(select(OperatorRow).order_by(OperatorRow.name))]

    def set_operator(self, name: str, roles: frozenset[Role], *, actor: str, now: float) -> None:
        """Add an operator, or replace the roles of an existing one."""
        if not re.fullmatch(r"[A-Za-z0-9._@$-]{1,64}", name):
            raise ValidationError(f"operator {name!r} is not a login name")
        value = ",".join(sorted(r.value for r in roles))
        with self.session() as s:
            row = s.get(OperatorRow, name)
            old = None if row is None else {"roles": sorted(_roles(row.roles))}
            if row is None:
                s.add(OperatorRow(name=name, roles=value, created_at=to_dt(now), created_by=actor))
            else:
                if Role.ADMIN not in roles:
                    self._keep_an_admin(s, name)
                row.roles = value
            self._audit(s, actor=actor, now=now, action="operator.set" if old else "operator.add",
                        target=f"operator {name}", old=old,
                        new={"roles": sorted(r.value for r in roles)})

    def remove_operator(self, name: str, *, actor: str, now: float) -> None:
        with self.session() as s:
            row = s.get(OperatorRow, name)
            if row is None:
                raise NotFound(f"no operator named {name!r}")
            self._keep_an_admin(s, name)
            old = {"roles": sorted(_roles(row.roles))}
            s.delete(row)
            self._audit(s, actor=actor, now=now, action="operator.remove",
                        target=f"operator {name}", old=old)

    def _keep_an_admin(self, s: Session, losing: str) -> None:
        admins = [o.name for o in s.scalars(select(OperatorRow))
                  if Role.ADMIN in _roles(o.roles)]
        if admins == [losing]:
            raise StateError(f"{losing} is the last admin: add another admin first")

    def audit_list(self, since: float | None = None) -> list[dict[str, Any]]:
        with self.session() as s:
            q = select(AuditRow).order_by(AuditRow.id)
            if since is not None:
                q = q.where(AuditRow.at >= to_dt(since))
            return [{"id": a.id, "at": _iso(a.at), "actor": a.actor, "db_role": a.db_role,
                     "action": a.action, "target": a.target, "old": a.old, "new": a.new}
                    for a in s.scalars(q)]

    # ----- history (runs) -----

    def list_runs(self) -> list[dict[str, Any]]:
        with self.session() as s:
            live = dict(s.execute(select(CampaignRow.id, CampaignRow.state)).all())
            last = _last_states(s)
            return [{"id": r.id, "name": r.name, "template": r.template_name,
                     "created_at": _iso(r.created_at), "created_by": r.created_by,
                     "start_at": _iso(r.start_at), "recipients": len(r.recipients),
                     "state": live.get(r.id) or last.get(r.id, CampaignState.SCHEDULED.value),
                     "campaign_deleted": r.id not in live, "chain_head": r.chain_head}
                    for r in s.scalars(select(RunRow).order_by(RunRow.id))]

    def run_history(self, run_id: int) -> dict[str, Any]:
        """The whole history of a run, from the rows that outlive the campaign and its template
        (runs, attempts, events): deterministic, so an export is the same bytes before and after
        those deletions."""
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is None:
                raise NotFound(f"no run with id {run_id}")
            attempts = s.scalars(select(AttemptRow).where(AttemptRow.campaign_id == run_id)
                                 .order_by(AttemptRow.created_at, AttemptRow.id)).all()
            events = s.scalars(select(EventRow).where(EventRow.campaign_id == run_id)
                               .order_by(EventRow.id)).all()
            states = [e.detail.get("new") for e in events if e.kind == "campaign_state"]
            return {
                "run": {"id": run.id, "name": run.name, "template": run.template_name,
                        "created_at": _iso(run.created_at), "created_by": run.created_by,
                        "start_at": _iso(run.start_at), "audio_sha256": run.audio_sha,
                        "audio_seconds": run.audio_seconds,
                        "state": states[-1] if states else CampaignState.SCHEDULED.value,
                        "escalated_from": run.escalated_from,
                        "escalated_to": s.scalar(select(RunRow.id)
                                                 .where(RunRow.escalated_from == run_id)),
                        "alert": alert_of(s, run.id),
                        "chain": chain_view(run)},
                "settings": run.settings,
                "recipients": sorted(run.recipients, key=lambda r: r["position"]),
                "attempts": [{**_attempt_dict(a), "chain_hash": a.chain_hash} for a in attempts],
                "events": [{**_event_dict(e), "chain_hash": e.chain_hash} for e in events],
            }


def chain_view(run: RunRow | None) -> dict[str, Any]:
    """A run's chain as the views show it: its head and rows, when it was sealed (all None
    until it is, and for runs that ended before the history was chained)."""
    if run is None:
        return {"head": None, "rows": None, "sealed_at": None}
    return {"head": run.chain_head, "rows": run.chain_rows, "sealed_at": _iso(run.sealed_at)}


def _roles(value: str) -> frozenset[Role]:
    return frozenset(Role(v) for v in value.split(",") if v)


def _last_states(s: Session) -> dict[int, str]:
    """The last state each run's campaign reached, from the history (for deleted campaigns)."""
    out: dict[int, str] = {}
    for cid, detail in s.execute(select(EventRow.campaign_id, EventRow.detail).where(
            EventRow.kind == "campaign_state").order_by(EventRow.id)):
        if cid is not None and isinstance(detail, dict) and "new" in detail:
            out[cid] = str(detail["new"])
    return out
