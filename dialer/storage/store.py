"""SqlStore: the one repository the daemon and the CLI use. Only this module opens sessions.

Claiming work (which recipients get the next calls) and limit accounting happen in one method,
``tick``, inside one transaction: on SQLite a single writer (``BEGIN IMMEDIATE``), on PostgreSQL
the settings row is locked ``FOR UPDATE`` so that several ``dialer serve`` nodes sharing one
database serialise their decisions and the global limits hold across them; candidate recipients
are read ``FOR UPDATE SKIP LOCKED``. Calls in progress are counted from the attempts table (the
truth), never from a node's memory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, create_engine, event, func, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dialer import lifecycle, scheduler
from dialer.domain import CampaignSettings, CampaignState, Kind, Limits, Outcome, RecipientState
from dialer.errors import CsvError, DialerError, NotFound, StateError, ValidationError
from dialer.permissions import Role
from dialer.recipients import NumberRules, Recipient, normalise_number
from dialer.storage import counters
from dialer.storage.models import (
    AttemptRow,
    AuditRow,
    Base,
    CampaignRow,
    EventRow,
    MediaRow,
    OperatorRow,
    RecipientRow,
    RunRow,
    SettingsRow,
    TemplateRecipientRow,
    TemplateRow,
)

logger = logging.getLogger(__name__)

UTC = dt.timezone.utc


def to_dt(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, UTC)


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
class TemplateView:
    """A template as the CLI shows it."""

    id: int
    name: str
    enabled: bool
    settings: CampaignSettings
    audio_sha: str
    audio_seconds: float
    recipients: list[Recipient]


class SqlStore:
    """The SQLAlchemy adapter of the dialer's storage (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        self.sqlite = self.engine.dialect.name == "sqlite"
        if self.sqlite:
            _sqlite_single_writer(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._snapshot_cache: dict[int, _Snapshot] = {}  # campaign id -> frozen settings

    # ----- plumbing -----

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction; committed on success, rolled back on any error."""
        with self._sessions() as s:
            try:
                with s.begin():
                    yield s
            except OperationalError as exc:
                raise DialerError(f"database error: {exc.orig}") from exc

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision and create the settings row."""
        from dialer.storage.migrate import upgrade

        upgrade(self.engine)
        with self.session() as s:
            if s.get(SettingsRow, 1) is None:
                s.add(SettingsRow(id=1, version=0))

    def check_ready(self) -> None:
        """Raise a clear error when the database was never initialised."""
        from dialer.storage.migrate import current_revision, head_revision

        cur = current_revision(self.engine)
        if cur is None:
            raise DialerError(f"database {self.safe_url} is not initialised: run 'dialer init'")
        if cur != head_revision():
            raise DialerError(f"database {self.safe_url} is at schema {cur}, not {head_revision()}: "
                              "run 'dialer init' to upgrade it")

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    def _event(self, s: Session, event_kind: str, /, *, at: float, campaign_id: int | None = None,
               recipient_id: int | None = None, attempt_id: str | None = None,
               actor: str | None = None, **detail: Any) -> None:
        s.add(EventRow(at=to_dt(at), campaign_id=campaign_id, recipient_id=recipient_id,
                       attempt_id=attempt_id, kind=event_kind, actor=actor, detail=detail))

    # ----- settings -----

    def get_settings(self) -> GlobalSettings:
        with self.session() as s:
            row = s.get(SettingsRow, 1)
            if row is None:
                raise DialerError("database is not initialised: run 'dialer init'")
            return _settings_view(row)

    def set_settings(self, *, actor: str, now: float, **changes: int | None) -> GlobalSettings:
        allowed = {"max_campaigns", "max_calls", "max_internal", "max_external"}
        with self.session() as s:
            row = s.get(SettingsRow, 1)
            assert row is not None
            old: dict[str, Any] = {}
            for key, value in changes.items():
                if key not in allowed:
                    raise ValidationError(f"unknown setting {key}")
                if value is not None and value < 0:
                    raise ValidationError(f"{key} must be 0 or more, or none")
                old[key] = getattr(row, key)
                setattr(row, key, value)
            row.version += 1
            row.updated_at = to_dt(now)
            row.updated_by = actor
            self._event(s, "settings_changed", at=now, actor=actor, old=old, new=changes)
            self._audit(s, actor=actor, now=now, action="settings.set", target="settings",
                        old=old, new=dict(changes))
            return _settings_view(row)

    # ----- templates -----

    def add_media(self, *, data: bytes, sha256: str, rate: int, seconds: float,
                  source: str | None, now: float) -> str:
        """Store a normalised audio file (once per content) and return its SHA-256."""
        with self.session() as s:
            if s.get(MediaRow, sha256) is None:
                s.add(MediaRow(sha256=sha256, rate=rate, seconds=seconds, source=source,
                               data=data, created_at=to_dt(now)))
        return sha256

    def media_file(self, sha256: str, cache_dir: Path) -> Path:
        """The audio as a local file (written once into ``cache_dir``, named by its hash)."""
        path = cache_dir / f"{sha256}.wav"
        if not path.exists():
            with self.session() as s:
                row = s.get(MediaRow, sha256)
                if row is None:
                    raise NotFound(f"no audio {sha256} in the database")
                data = row.data
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return path

    def add_template(self, *, name: str, settings: CampaignSettings, audio_sha: str,
                     audio_seconds: float, recipients: Sequence[Recipient], now: float,
                     actor: str, enabled: bool = True, audit: bool = True) -> int:
        try:
            with self.session() as s:
                if s.scalar(select(TemplateRow.id).where(TemplateRow.name == name)) is not None:
                    raise ValidationError(f"a template named {name!r} already exists")
                row = TemplateRow(name=name, enabled=enabled, settings=settings_to_dict(settings),
                                  audio_sha=audio_sha, audio_seconds=audio_seconds,
                                  created_at=to_dt(now), updated_at=to_dt(now))
                s.add(row)
                s.flush()
                s.add_all(TemplateRecipientRow(template_id=row.id, position=i + 1, number=r.number,
                                               name=r.name, email=r.email, kind=r.kind.value)
                          for i, r in enumerate(recipients))
                self._event(s, "template_added", at=now, actor=actor, template=name)
                if audit:
                    self._audit(s, actor=actor, now=now, action="template.add",
                                target=f"template {name}",
                                new={"settings": settings_to_dict(settings), "enabled": enabled,
                                     "audio_sha256": audio_sha, "recipients": len(recipients)})
                return row.id
        except IntegrityError as exc:
            raise ValidationError(f"template {name!r} could not be stored: {exc.orig}") from exc

    def get_template(self, name: str) -> TemplateView:
        with self.session() as s:
            row = s.scalar(select(TemplateRow).where(TemplateRow.name == name))
            if row is None:
                raise NotFound(f"no template named {name!r}")
            recs = s.scalars(select(TemplateRecipientRow)
                             .where(TemplateRecipientRow.template_id == row.id)
                             .order_by(TemplateRecipientRow.position)).all()
            return TemplateView(id=row.id, name=row.name, enabled=row.enabled,
                                settings=settings_from_dict(row.settings),
                                audio_sha=row.audio_sha, audio_seconds=row.audio_seconds,
                                recipients=[Recipient(number=r.number, kind=Kind(r.kind),
                                                      name=r.name, email=r.email) for r in recs])

    def list_templates(self) -> list[dict[str, Any]]:
        with self.session() as s:
            counts = dict(s.execute(select(TemplateRecipientRow.template_id, func.count())
                                    .group_by(TemplateRecipientRow.template_id)).all())
            out = []
            for row in s.scalars(select(TemplateRow).order_by(TemplateRow.name)):
                st = settings_from_dict(row.settings)
                out.append({"id": row.id, "name": row.name, "enabled": row.enabled,
                            "priority": st.priority, "attempts": st.attempts,
                            "recipients": counts.get(row.id, 0),
                            "audio_seconds": round(row.audio_seconds, 2)})
            return out

    # ----- campaigns -----

    def start_campaign(self, *, template: str, name: str | None, now: float, start_at: float,
                       actor: str, audio_sha: str | None = None, audio_seconds: float | None = None,
                       recipients: Sequence[Recipient] | None = None) -> int:
        """Launch a campaign from a template: snapshot its settings and recipient list."""
        tpl = self.get_template(template)
        if not tpl.enabled:
            raise StateError(f"template {template!r} is disabled")
        recs = list(recipients) if recipients is not None else tpl.recipients
        if not recs:
            raise ValidationError(f"template {template!r} has no recipients and none were given")
        st = tpl.settings
        if st.threshold is not None and st.threshold > len(recs):
            raise ValidationError(f"the completion threshold {st.threshold} is above the "
                                  f"{len(recs)} recipients")
        st = dataclasses.replace(st, display_name=name or tpl.name)
        with self.session() as s:
            # SQLite reuses the highest rowid once it is deleted; a run id must never come back
            # (attempts and events of the deleted campaign still carry it)
            fresh_id = None
            if self.sqlite:
                fresh_id = 1 + max(s.scalar(select(func.max(RunRow.id))) or 0,
                                   s.scalar(select(func.max(CampaignRow.id))) or 0)
            camp = CampaignRow(id=fresh_id, template_id=tpl.id, template_name=tpl.name, name=name or tpl.name,
                               state=CampaignState.SCHEDULED.value, settings=settings_to_dict(st),
                               audio_sha=audio_sha or tpl.audio_sha,
                               audio_seconds=audio_seconds if audio_seconds is not None
                               else tpl.audio_seconds,
                               priority=st.priority, start_at=to_dt(start_at),
                               created_at=to_dt(now), created_by=actor,
                               **counters.fresh_counts(len(recs)))
            s.add(camp)
            s.flush()
            s.execute(RecipientRow.__table__.insert(), [
                {"campaign_id": camp.id, "position": i + 1, "number": r.number, "name": r.name,
                 "email": r.email, "kind": r.kind.value, "state": RecipientState.IDLE.value,
                 "calls": 0, "attempts": 0, "max_attempts": st.attempts}
                for i, r in enumerate(recs)])
            ids = s.execute(select(RecipientRow.id, RecipientRow.position).where(
                RecipientRow.campaign_id == camp.id).order_by(RecipientRow.position)).all()
            s.add(RunRow(id=camp.id, name=camp.name, template_name=tpl.name,
                         created_at=to_dt(now), created_by=actor, start_at=to_dt(start_at),
                         settings=settings_to_dict(st), audio_sha=camp.audio_sha,
                         audio_seconds=camp.audio_seconds,
                         recipients=[{"id": rid, "position": pos, "number": r.number,
                                      "name": r.name, "email": r.email, "kind": r.kind.value}
                                     for (rid, pos), r in zip(ids, recs)]))
            self._audit(s, actor=actor, now=now, action="campaign.start",
                        target=f"campaign {camp.id}",
                        new={"name": camp.name, "template": tpl.name, "recipients": len(recs),
                             "start_at": _iso(to_dt(start_at)),
                             "audio_sha256": camp.audio_sha})
            self._event(s, "campaign_created", at=now, campaign_id=camp.id, actor=actor,
                        template=tpl.name, name=camp.name, recipients=len(recs),
                        start_at=start_at, settings=settings_to_dict(st))
            return camp.id

    def list_campaigns(self, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
        with self.session() as s:
            tallies = _tallies(s, None)
            out = []
            q = select(CampaignRow).order_by(CampaignRow.id)
            if states:
                q = q.where(CampaignRow.state.in_(list(states)))
            for c in s.scalars(q):
                t = tallies.get(c.id, lifecycle.Tally())
                out.append({"id": c.id, "name": c.name, "template": c.template_name,
                            "state": c.state, "priority": c.priority,
                            "start_at": _iso(c.start_at), "recipients": t.total,
                            "contacted": t.contacted, "failed": t.failed, "active": t.active,
                            "idle": t.idle, "stopped": t.stopped})
            return out

    def campaign_detail(self, campaign_id: int) -> dict[str, Any]:
        with self.session() as s:
            c = s.get(CampaignRow, campaign_id)
            if c is None:
                raise NotFound(f"no campaign with id {campaign_id}")
            recs = s.scalars(select(RecipientRow).where(RecipientRow.campaign_id == campaign_id)
                             .order_by(RecipientRow.position)).all()
            return {
                "id": c.id, "name": c.name, "template": c.template_name, "state": c.state,
                "priority": c.priority, "start_at": _iso(c.start_at), "ended_at": _iso(c.ended_at),
                "settings": c.settings,
                "recipients": [{
                    "position": r.position, "number": r.number, "name": r.name,
                    "kind": r.kind, "state": r.state, "attempts": r.attempts, "calls": r.calls,
                    "last_call_at": _iso(r.last_call_at), "last_outcome": r.last_outcome,
                    "last_status": r.last_status, "last_reason": r.last_reason,
                    "answered_at": _iso(r.answered_at), "confirmed_at": _iso(r.confirmed_at),
                    "answer_confirmed_at": _iso(r.answer_confirmed_at), "email": r.email,
                    "max_attempts": r.max_attempts,
                } for r in recs],
            }

    def attempts_of(self, campaign_id: int) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(select(AttemptRow).where(AttemptRow.campaign_id == campaign_id)
                             .order_by(AttemptRow.created_at)).all()
            return [{"id": a.id, "recipient_id": a.recipient_id, "number": a.number,
                     "kind": a.kind, "worker": a.worker, "created_at": _iso(a.created_at),
                     "answered_at": _iso(a.answered_at), "ended_at": _iso(a.ended_at),
                     "status": a.status, "reason": a.reason, "q850": a.q850, "keys": a.keys,
                     "outcome": a.outcome,
                     "answer_confirmed_at": _iso(a.answer_confirmed_at),
                     "listen_confirmed_at": _iso(a.listen_confirmed_at)} for a in rows]

    def events_of(self, campaign_id: int) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(select(EventRow).where(EventRow.campaign_id == campaign_id)
                             .order_by(EventRow.id)).all()
            return [{"id": e.id, "at": _iso(e.at), "kind": e.kind, "recipient_id": e.recipient_id,
                     "attempt_id": e.attempt_id, "actor": e.actor, "detail": e.detail}
                    for e in rows]

    def set_campaign_state(self, campaign_id: int, action: str, *, actor: str, now: float) -> str:
        """Operator actions: suspend, resume, stop."""
        with self.session() as s:
            c = s.get(CampaignRow, campaign_id, with_for_update=not self.sqlite)
            if c is None:
                raise NotFound(f"no campaign with id {campaign_id}")
            cur = CampaignState(c.state)
            new: CampaignState
            if action == "suspend" and cur in (CampaignState.ACTIVE, CampaignState.BLOCKED,
                                                CampaignState.SCHEDULED):
                new = CampaignState.SUSPENDED
            elif action == "resume" and cur is CampaignState.SUSPENDED:
                new = CampaignState.BLOCKED  # the next tick activates it if there is room
            elif action == "stop" and not cur.finished:
                new = CampaignState.TERMINATED
            else:
                raise StateError(f"cannot {action} campaign {campaign_id}: it is {cur.value}")
            self._transition(s, c, new, cause=f"operator {action}", now=now, actor=actor)
            self._audit(s, actor=actor, now=now, action=f"campaign.{action}",
                        target=f"campaign {campaign_id}", old={"state": cur.value},
                        new={"state": new.value})
            return new.value

    def _transition(self, s: Session, c: CampaignRow, new: CampaignState, *, cause: str,
                    now: float, actor: str | None = None) -> None:
        old = c.state
        c.state = new.value
        if new.finished or new is CampaignState.INCOMPLETE:
            c.ended_at = to_dt(now)
        self._event(s, "campaign_state", at=now, campaign_id=c.id, actor=actor,
                    old=old, new=new.value, cause=cause)
        logger.info("campaign %s: %s -> %s (%s)", c.id, old, new.value, cause,
                    extra={"campaign": c.id})

    # ----- operators and audit -----

    def _audit(self, s: Session, *, actor: str, now: float, action: str, target: str,
               old: Any = None, new: Any = None) -> None:
        """Record one successful change (same transaction as the change itself)."""
        s.add(AuditRow(at=to_dt(now), actor=actor, action=action, target=target[:200],
                       old=old, new=new))

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
            return [{"id": a.id, "at": _iso(a.at), "actor": a.actor, "action": a.action,
                     "target": a.target, "old": a.old, "new": a.new} for a in s.scalars(q)]

    # ----- template editing -----

    def _template_row(self, s: Session, name: str, lock: bool = False) -> TemplateRow:
        q = select(TemplateRow).where(TemplateRow.name == name)
        row = s.scalar(q.with_for_update() if lock and not self.sqlite else q)
        if row is None:
            raise NotFound(f"no template named {name!r}")
        return row

    def _template_recipients(self, s: Session, tid: int) -> list[TemplateRecipientRow]:
        return list(s.scalars(select(TemplateRecipientRow)
                              .where(TemplateRecipientRow.template_id == tid)
                              .order_by(TemplateRecipientRow.position)))

    def edit_template(self, name: str, *, actor: str, now: float, new_name: str | None = None,
                      enabled: bool | None = None, audio_sha: str | None = None,
                      audio_seconds: float | None = None,
                      settings: CampaignSettings | None = None) -> dict[str, Any]:
        """Change a template: name, enable state, audio and/or settings. Returns the changes
        as {field: [old, new]} (only fields whose value changed)."""
        with self.session() as s:
            row = self._template_row(s, name, lock=True)
            changes: dict[str, list[Any]] = {}
            if new_name is not None and new_name != row.name:
                if s.scalar(select(TemplateRow.id).where(TemplateRow.name == new_name)):
                    raise ValidationError(f"a template named {new_name!r} already exists")
                changes["name"] = [row.name, new_name]
                row.name = new_name
            if enabled is not None and enabled != row.enabled:
                changes["enabled"] = [row.enabled, enabled]
                row.enabled = enabled
            if audio_sha is not None and audio_sha != row.audio_sha:
                changes["audio_sha256"] = [row.audio_sha, audio_sha]
                row.audio_sha = audio_sha
                row.audio_seconds = float(audio_seconds or 0.0)
            if settings is not None:
                old = settings_from_dict(row.settings)
                new = dataclasses.replace(settings, display_name=row.name)
                for key, value in settings_to_dict(new).items():
                    was = settings_to_dict(old).get(key)
                    if value != was and key != "display_name":
                        changes[key] = [was, value]
                row.settings = settings_to_dict(new)
            elif "name" in changes:
                row.settings = {**row.settings, "display_name": row.name}
            if changes:
                row.updated_at = to_dt(now)
                self._audit(s, actor=actor, now=now, action="template.edit",
                            target=f"template {name}",
                            old={k: v[0] for k, v in changes.items()},
                            new={k: v[1] for k, v in changes.items()})
            return changes

    def clone_template(self, name: str, new_name: str, *, actor: str, now: float) -> int:
        tpl = self.get_template(name)
        st = dataclasses.replace(tpl.settings, display_name=new_name)
        tid = self.add_template(name=new_name, settings=st, audio_sha=tpl.audio_sha,
                                audio_seconds=tpl.audio_seconds, recipients=tpl.recipients,
                                now=now, actor=actor, enabled=tpl.enabled, audit=False)
        with self.session() as s:
            self._audit(s, actor=actor, now=now, action="template.clone",
                        target=f"template {new_name}", old={"from": name},
                        new={"name": new_name, "recipients": len(tpl.recipients)})
        return tid

    def delete_template(self, name: str, *, actor: str, now: float) -> int:
        """Delete a template and its recipient list; campaigns launched from it keep their
        snapshot and go on. Returns how many unfinished campaigns came from it."""
        with self.session() as s:
            row = self._template_row(s, name, lock=True)
            running = s.scalar(select(func.count()).select_from(CampaignRow).where(
                CampaignRow.template_id == row.id,
                CampaignRow.state.notin_([CampaignState.COMPLETED.value,
                                          CampaignState.TERMINATED.value]))) or 0
            s.execute(update(CampaignRow).where(CampaignRow.template_id == row.id)
                      .values(template_id=None))
            s.execute(TemplateRecipientRow.__table__.delete().where(
                TemplateRecipientRow.template_id == row.id))
            old = {"settings": row.settings, "enabled": row.enabled,
                   "audio_sha256": row.audio_sha}
            s.delete(row)
            self._audit(s, actor=actor, now=now, action="template.delete",
                        target=f"template {name}", old=old)
            return int(running)

    def _match(self, rows: Sequence[Any], ref: str, rules: NumberRules, what: str) -> Any:
        """A recipient by reference: ``#N`` is position N; a number in the list wins over a
        position; else a position; else the number written another way (normalised)."""
        text = ref.strip()
        if text.startswith("#") and text[1:].isdigit():
            hit = [r for r in rows if r.position == int(text[1:])]
        else:
            hit = [r for r in rows if r.number == text]
            if not hit and text.isdigit():
                hit = [r for r in rows if r.position == int(text)]
            if not hit:
                try:
                    number, _ = normalise_number(text, rules)
                except ValidationError:
                    number = None
                hit = [r for r in rows if number is not None and r.number == number]
        if not hit:
            raise NotFound(f"no recipient {ref!r} in {what}")
        return hit[0]

    def template_recipient_add(self, name: str, rec: Recipient, *, actor: str, now: float,
                               position: int | None = None) -> int:
        """Add one recipient (at the end, or at ``position``); returns its position."""
        return self.template_recipients_import(name, [rec], actor=actor, now=now,
                                               position=position, source=None)[0]

    def template_recipients_import(self, name: str, recs: Sequence[Recipient], *, actor: str,
                                   now: float, replace: bool = False,
                                   position: int | None = None,
                                   source: str | None = "import",
                                   lines: Sequence[int] | None = None) -> list[int]:
        """Append (or with ``replace`` substitute) recipients, all or nothing: a number already
        in the list is refused, naming the line (``lines``) and the position it repeats."""
        with self.session() as s:
            row = self._template_row(s, name, lock=True)
            existing = [] if replace else self._template_recipients(s, row.id)
            have = {r.number: r.position for r in existing}
            problems: list[tuple[int, str]] = []
            for i, r in enumerate(recs):
                if r.number in have:
                    line = lines[i] if lines else i + 1
                    problems.append((line, f"{r.number} is already recipient {have[r.number]} "
                                           f"of template {name!r}"))
            if problems:
                if source is None:
                    raise ValidationError(problems[0][1])
                raise CsvError(source, problems)
            if replace:
                s.execute(TemplateRecipientRow.__table__.delete().where(
                    TemplateRecipientRow.template_id == row.id))
                s.flush()
            at = len(existing) + 1 if position is None else max(1, min(position,
                                                                       len(existing) + 1))
            for r in existing:  # make room after the insertion point
                if r.position >= at:
                    r.position += len(recs)
            s.flush()
            s.add_all(TemplateRecipientRow(template_id=row.id, position=at + i, number=r.number,
                                           name=r.name, email=r.email, kind=r.kind.value)
                      for i, r in enumerate(recs))
            row.updated_at = to_dt(now)
            self._audit(s, actor=actor, now=now,
                        action="recipients.replace" if replace else "recipients.add",
                        target=f"template {name}",
                        new=[{"position": at + i, "number": r.number, "name": r.name,
                              "email": r.email, "kind": r.kind.value}
                             for i, r in enumerate(recs)])
            return [at + i for i in range(len(recs))]

    def template_recipient_remove(self, name: str, ref: str, *, actor: str, now: float,
                                  rules: NumberRules = NumberRules()) -> dict[str, Any]:
        with self.session() as s:
            row = self._template_row(s, name, lock=True)
            recs = self._template_recipients(s, row.id)
            hit = self._match(recs, ref, rules, f"template {name!r}")
            old = _template_rec(hit)
            s.delete(hit)
            s.flush()
            for r in recs:
                if r.position > hit.position:
                    r.position -= 1
            row.updated_at = to_dt(now)
            self._audit(s, actor=actor, now=now, action="recipients.remove",
                        target=f"template {name}", old=old)
            return old

    def template_recipient_move(self, name: str, ref: str, to: int, *, actor: str, now: float,
                                rules: NumberRules = NumberRules()) -> int:
        """Move a recipient to position ``to`` (1-based, clamped); returns the new position."""
        with self.session() as s:
            row = self._template_row(s, name, lock=True)
            recs = self._template_recipients(s, row.id)
            hit = self._match(recs, ref, rules, f"template {name!r}")
            to = max(1, min(to, len(recs)))
            order = [r for r in recs if r is not hit]
            order.insert(to - 1, hit)
            old_pos = hit.position
            for i, r in enumerate(order):
                r.position = i + 1
            row.updated_at = to_dt(now)
            if old_pos != to:
                self._audit(s, actor=actor, now=now, action="recipients.move",
                            target=f"template {name}", old={"number": hit.number,
                                                            "position": old_pos},
                            new={"number": hit.number, "position": to})
            return to

    # ----- campaign operator actions -----

    def _campaign_row(self, s: Session, campaign_id: int) -> CampaignRow:
        c = s.get(CampaignRow, campaign_id, with_for_update=not self.sqlite)
        if c is None:
            raise NotFound(f"no campaign with id {campaign_id}")
        return c

    def grant_attempts(self, campaign_id: int, refs: Sequence[str], attempts: int, *,
                       actor: str, now: float,
                       rules: NumberRules = NumberRules()) -> list[int]:
        """Give recipients ``attempts`` more attempts (every failed one when ``refs`` is empty):
        a failed recipient becomes idle again, an incomplete campaign active again. Returns the
        positions granted."""
        if not 1 <= attempts <= 99:
            raise ValidationError("--attempts must be between 1 and 99")
        with self.session() as s:
            c = self._campaign_row(s, campaign_id)
            if CampaignState(c.state).finished:
                raise StateError(f"cannot grant attempts in campaign {campaign_id}: "
                                 f"it is {c.state}")
            recs = list(s.scalars(select(RecipientRow).where(
                RecipientRow.campaign_id == campaign_id).order_by(RecipientRow.position)))
            if refs:
                chosen = []
                for ref in refs:
                    r = self._match(recs, ref, rules, f"campaign {campaign_id}")
                    if r.state in (RecipientState.CONTACTED.value, RecipientState.STOPPED.value):
                        raise StateError(f"recipient {r.position} ({r.number}) is {r.state}: "
                                         "no attempts to grant")
                    if r not in chosen:
                        chosen.append(r)
            else:
                chosen = [r for r in recs if r.state == RecipientState.FAILED.value]
                if not chosen:
                    raise StateError(f"campaign {campaign_id} has no failed recipient")
            for r in chosen:
                old = {"state": r.state, "max_attempts": r.max_attempts}
                r.max_attempts += attempts
                if r.state == RecipientState.FAILED.value:
                    r.state = RecipientState.IDLE.value
                    r.next_at = to_dt(now)
                    self._event(s, "recipient_state", at=now, campaign_id=c.id,
                                recipient_id=r.id, actor=actor, old=old["state"], new=r.state,
                                attempts=r.attempts)
                self._event(s, "attempts_granted", at=now, campaign_id=c.id, recipient_id=r.id,
                            actor=actor, granted=attempts, max_attempts=r.max_attempts)
                self._audit(s, actor=actor, now=now, action="campaign.grant",
                            target=f"campaign {c.id} recipient {r.position} {r.number}",
                            old=old, new={"state": r.state, "max_attempts": r.max_attempts})
            if c.state == CampaignState.INCOMPLETE.value:
                c.ended_at = None
                # Blocked, not active: the next scheduling pass activates it if the maximum of
                # active campaigns leaves a place, in priority order like any other campaign.
                self._transition(s, c, CampaignState.BLOCKED, cause="operator granted attempts",
                                 now=now, actor=actor)
            return [r.position for r in chosen]

    def stop_recipient(self, campaign_id: int, ref: str, *, actor: str, now: float,
                       rules: NumberRules = NumberRules()) -> dict[str, Any]:
        """Stop the attempts to one recipient (a call in progress finishes, none follows)."""
        with self.session() as s:
            c = self._campaign_row(s, campaign_id)
            if CampaignState(c.state).finished:
                raise StateError(f"campaign {campaign_id} is {c.state}")
            recs = list(s.scalars(select(RecipientRow).where(
                RecipientRow.campaign_id == campaign_id).order_by(RecipientRow.position)))
            r = self._match(recs, ref, rules, f"campaign {campaign_id}")
            if RecipientState(r.state).done:
                raise StateError(f"recipient {r.position} ({r.number}) is already {r.state}")
            old = r.state
            r.state = RecipientState.STOPPED.value
            r.next_at = None
            self._event(s, "recipient_state", at=now, campaign_id=c.id, recipient_id=r.id,
                        actor=actor, old=old, new=r.state, attempts=r.attempts,
                        cause="operator stop")
            self._audit(s, actor=actor, now=now, action="campaign.stop-recipient",
                        target=f"campaign {c.id} recipient {r.position} {r.number}",
                        old={"state": old}, new={"state": r.state})
            return {"position": r.position, "number": r.number, "state": r.state}

    def delete_campaign(self, campaign_id: int, *, actor: str, now: float) -> None:
        """Delete a completed or terminated campaign; its run (history) stays."""
        with self.session() as s:
            c = self._campaign_row(s, campaign_id)
            if not CampaignState(c.state).finished:
                raise StateError(f"cannot delete campaign {campaign_id}: it is {c.state} "
                                 "(stop it first)")
            s.execute(RecipientRow.__table__.delete().where(
                RecipientRow.campaign_id == campaign_id))
            old = {"name": c.name, "template": c.template_name, "state": c.state}
            s.delete(c)
            self._audit(s, actor=actor, now=now, action="campaign.delete",
                        target=f"campaign {campaign_id}", old=old)

    def recipient_attempts(self, campaign_id: int, ref: str,
                           rules: NumberRules = NumberRules()) -> dict[str, Any]:
        """Every attempt to one recipient of a run, each with its events (from the history)."""
        with self.session() as s:
            run = s.get(RunRow, campaign_id)
            if run is None:
                raise NotFound(f"no campaign with id {campaign_id}")
            recs = [_RunRec(**r) for r in run.recipients]
            r = self._match(recs, ref, rules, f"campaign {campaign_id}")
            rows = s.scalars(select(AttemptRow).where(
                AttemptRow.campaign_id == campaign_id, AttemptRow.recipient_id == r.id)
                .order_by(AttemptRow.created_at, AttemptRow.id)).all()
            events = s.scalars(select(EventRow).where(
                EventRow.campaign_id == campaign_id, EventRow.recipient_id == r.id)
                .order_by(EventRow.id)).all()
            by_attempt: dict[str | None, list[dict[str, Any]]] = {}
            for e in events:
                by_attempt.setdefault(e.attempt_id, []).append(_event_dict(e))
            return {"campaign": campaign_id, "position": r.position, "number": r.number,
                    "name": r.name,
                    "attempts": [{**_attempt_dict(a), "events": by_attempt.get(a.id, [])}
                                 for a in rows],
                    "events": by_attempt.get(None, [])}

    # ----- history (runs) -----

    def list_runs(self) -> list[dict[str, Any]]:
        with self.session() as s:
            live = dict(s.execute(select(CampaignRow.id, CampaignRow.state)).all())
            last = _last_states(s)
            return [{"id": r.id, "name": r.name, "template": r.template_name,
                     "created_at": _iso(r.created_at), "created_by": r.created_by,
                     "start_at": _iso(r.start_at), "recipients": len(r.recipients),
                     "state": live.get(r.id) or last.get(r.id, CampaignState.SCHEDULED.value),
                     "campaign_deleted": r.id not in live}
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
                        "state": states[-1] if states else CampaignState.SCHEDULED.value},
                "settings": run.settings,
                "recipients": sorted(run.recipients, key=lambda r: r["position"]),
                "attempts": [_attempt_dict(a) for a in attempts],
                "events": [_event_dict(e) for e in events],
            }

    # ----- the daemon's side -----

    def recover(self, *, node: str, now: float) -> int:
        """Account for calls a previous run of this node left open (it died): failed attempts."""
        with self.session() as s:
            open_ids = s.scalars(select(AttemptRow.id).where(AttemptRow.ended_at.is_(None),
                                                             AttemptRow.node == node)).all()
        for aid in open_ids:
            self.finish_attempt(EndReport(attempt_id=aid, outcome=Outcome.DAEMON_LOST, at=now,
                                          reason="the daemon stopped during the call"))
        return len(open_ids)

    def tick(self, *, now: float, node: str, kinds_available: frozenset[Kind] = frozenset(Kind),
             capacity: int | None = None) -> Tick:
        """One scheduling pass: campaign transitions, then claim the calls to place now.

        Cost: a handful of indexed statements whatever the number of recipients. Campaign
        tallies come from the counter columns (``dialer.storage.counters``), calls in progress
        from the open attempts (a covering index), candidates are read lazily in rank order
        only for campaigns that can take a call, each with a LIMIT, and only when a retry is
        due are retries read.

        Lifecycle within one pass: active campaigns whose recipients are done settle first, so
        the place they free is given to a blocked or due campaign in the same pass (and that
        one settles at once too if it has nothing left to do).
        """
        transitions: list[tuple[int, str, str]] = []
        with self.session() as s:
            srow = s.get(SettingsRow, 1, with_for_update=not self.sqlite)
            if srow is None:
                raise DialerError("database is not initialised: run 'dialer init'")
            gs = _settings_view(srow)
            camps: dict[int, _Live] = {}
            for cid, state, prio, start, n_i, n_a, n_c, n_f, n_s in s.connection().execute(_Q_LIVE):
                tally = (None if n_i is None or n_a is None or n_c is None or n_f is None
                         or n_s is None else lifecycle.Tally(idle=n_i, active=n_a, contacted=n_c,
                                                             failed=n_f, stopped=n_s))
                camps[cid] = _Live(id=cid, state=CampaignState(state), priority=prio,
                                   start_at=start.timestamp(), tally=tally)
            settings_of = self._snapshots(s, [c.id for c in camps.values()
                                              if c.state is not CampaignState.SCHEDULED])

            def move(c: _Live, new: CampaignState, cause: str) -> None:
                row = s.get(CampaignRow, c.id)
                assert row is not None
                transitions.append((c.id, c.state.value, new.value))
                self._transition(s, row, new, cause=cause, now=now)
                c.state = new

            checked: set[int] = set()
            while True:
                # settle: active campaigns with nothing left to do free their place now
                for c in camps.values():
                    if c.state is not CampaignState.ACTIVE or c.id in checked:
                        continue
                    checked.add(c.id)
                    if c.tally is None:
                        c.tally = counters.recount(s, [c.id])[c.id]
                    snap = settings_of.get(c.id) or self._snapshots(s, [c.id])[c.id]
                    settings_of[c.id] = snap
                    st = snap.settings
                    settled = lifecycle.settle(CampaignState.ACTIVE, c.tally, st.threshold,
                                               st.keep_calling_after_threshold)
                    if settled is not None:
                        move(c, settled, _settle_cause(settled, c.tally, st))
                # activate: due scheduled and blocked campaigns, by priority then start time
                started = False
                for cid, new in lifecycle.activate(
                        [lifecycle.Startable(id=c.id, state=c.state, priority=c.priority,
                                             start_at=c.start_at) for c in camps.values()],
                        gs.max_campaigns, now):
                    c = camps[cid]
                    if new is CampaignState.BLOCKED:
                        cause = "the maximum of active campaigns is reached"
                    else:
                        cause = ("start time reached" if c.state is CampaignState.SCHEDULED
                                 else "a place freed")
                        started = True
                    move(c, new, cause)
                if not started:
                    break

            running = _running(s)
            g_running = scheduler.Counts(sum(v.internal for v in running.values()),
                                         sum(v.external for v in running.values()))
            loads: list[scheduler.CampaignLoad] = []
            for c in camps.values():
                if c.state is not CampaignState.ACTIVE or c.tally is None:
                    continue
                st = settings_of[c.id].settings
                if not lifecycle.may_call(c.tally, st.threshold, st.keep_calling_after_threshold):
                    continue
                loads.append(scheduler.CampaignLoad(
                    id=c.id, priority=c.priority, start_at=c.start_at, limits=st.limits,
                    running=running.get(c.id, scheduler.Counts())))

            def fetch(load: scheduler.CampaignLoad, g_now: scheduler.Counts,
                      cap: int | None) -> list[scheduler.Candidate]:
                return self._candidates(s, load, gs.limits, g_now, cap, now, kinds_available)

            dials = scheduler.plan(loads, gs.limits, g_running, fetch,
                                   kinds_available=kinds_available, capacity=capacity)
            calls = self._claim(s, dials, settings_of, node=node, now=now)
            next_due = self._next_due(s, now)
        return Tick(calls=calls, next_due=next_due, transitions=transitions, settings=gs)

    def _snapshots(self, s: Session, ids: Sequence[int]) -> dict[int, _Snapshot]:
        """The frozen settings of these campaigns, parsed once per process (they never change)."""
        missing = [cid for cid in ids if cid not in self._snapshot_cache]
        if missing:
            for cid, raw, sha, secs in s.execute(
                    select(CampaignRow.id, CampaignRow.settings, CampaignRow.audio_sha,
                           CampaignRow.audio_seconds).where(CampaignRow.id.in_(missing))):
                self._snapshot_cache[cid] = _Snapshot(settings_from_dict(raw), sha, secs)
        return {cid: self._snapshot_cache[cid] for cid in ids if cid in self._snapshot_cache}

    def _candidates(self, s: Session, load: scheduler.CampaignLoad, g_limits: Limits,
                    g_running: scheduler.Counts, capacity: int | None, now: float,
                    kinds: frozenset[Kind]) -> list[scheduler.Candidate]:
        """The campaign's callable recipients in its order: never called first (list order),
        then retries whose delay has passed (called longest ago first). At most as many of each
        kind as this decision could take; every query is a LIMITed range of one index."""
        n_int, n_ext = scheduler.wanted(load, g_limits, g_running, capacity)
        at = dt.datetime.fromtimestamp(now, UTC)
        fresh: list[tuple[int, int, str]] = []
        retry: list[tuple[float, int, int, str]] = []
        q_fresh, q_retry = (_Q_FRESH, _Q_RETRY) if self.sqlite else (_Q_FRESH_PG, _Q_RETRY_PG)
        conn = s.connection()  # Core statements: no ORM layer in the hot path
        for kind, n in ((Kind.INTERNAL, n_int), (Kind.EXTERNAL, n_ext)):
            if n <= 0 or kind not in kinds:
                continue
            params = {"cid": load.id, "kind": kind.value, "n": n, "at": at}
            got = [(pos, rid, kind.value) for pos, rid in conn.execute(q_fresh, params)]
            fresh += got
            left = n - len(got)
            if left <= 0:
                continue  # the fresh ones of this kind fill what this decision can take
            # Is any retry of this kind due? (one index seek; NULL next_at: due at once)
            first = conn.execute(_Q_FIRST_RETRY, params).first()
            if first is None or (first[0] is not None and first[0] > at):
                continue
            params["n"] = left
            retry += [(last.timestamp() if last is not None else 0.0, pos, rid, kind.value)
                      for last, pos, rid in conn.execute(q_retry, params)]
        fresh.sort()
        retry.sort()
        return ([scheduler.Candidate(rid, Kind(k), True) for _, rid, k in fresh]
                + [scheduler.Candidate(rid, Kind(k), False) for _, _, rid, k in retry])

    def _lock(self, q: Any) -> Any:
        return q if self.sqlite else q.with_for_update(skip_locked=True)

    def _claim(self, s: Session, dials: list[scheduler.Dial], snapshots: dict[int, _Snapshot],
               *, node: str, now: float) -> list[ClaimedCall]:
        calls: list[ClaimedCall] = []
        for d in dials:
            rec = s.get(RecipientRow, d.recipient_id)
            assert rec is not None and rec.state == RecipientState.IDLE.value
            snap = snapshots[d.campaign_id]
            aid = uuid.uuid4().hex
            rec.state = RecipientState.ACTIVE.value  # counters follow (dialer.storage.counters)
            rec.calls += 1
            rec.last_call_at = to_dt(now)
            s.add(AttemptRow(id=aid, campaign_id=d.campaign_id, recipient_id=rec.id,
                             number=rec.number, kind=rec.kind, node=node, created_at=to_dt(now),
                             keys=""))
            self._event(s, "attempt_started", at=now, campaign_id=d.campaign_id,
                        recipient_id=rec.id, attempt_id=aid, number=rec.number, kind=rec.kind,
                        call=rec.calls)
            calls.append(ClaimedCall(attempt_id=aid, campaign_id=d.campaign_id,
                                     recipient_id=rec.id, number=rec.number, kind=d.kind,
                                     settings=snap.settings, audio_sha=snap.audio_sha,
                                     audio_seconds=snap.audio_seconds))
        return calls

    def _next_due(self, s: Session, now: float) -> float | None:
        """When the next scheduled start or retry delay falls due (None: nothing waits on time).

        One statement: per active campaign and kind, the first ``next_at`` after now is one
        seek into ``ix_recipients_due``.
        """
        at = to_dt(now)
        conn = s.connection()
        t1 = conn.scalar(_Q_NEXT_START)
        due = [t1.timestamp()] if t1 is not None else []
        for kind in Kind:
            t2 = conn.scalar(_Q_NEXT_RETRY, {"kind": kind.value, "at": at})
            if t2 is not None:
                due.append(_as_utc(t2).timestamp())
        return min(due) if due else None

    def set_attempt_worker(self, attempt_id: str, worker: int) -> None:
        self.set_attempt_workers([(attempt_id, worker)])

    def set_attempt_workers(self, pairs: Sequence[tuple[str, int]]) -> None:
        """Which worker carries each attempt, for a whole scheduling pass in one transaction."""
        if not pairs:
            return
        with self.session() as s:
            for attempt_id, worker in pairs:
                s.execute(update(AttemptRow).where(AttemptRow.id == attempt_id)
                          .values(worker=worker))

    def record_progress(self, attempt_id: str, what: str, at: float, /, **detail: Any) -> None:
        """Ringing, answered, a key, a confirmation: stamp the attempt and append the event.

        Positional-only: a confirmation's detail is itself named ``what`` (answer or listen).
        """
        self.record_progress_many([(attempt_id, what, at, detail)])

    def record_progress_many(self, items: Sequence[tuple[str, str, float, dict[str, Any]]]) -> None:
        """``record_progress`` for several ``(attempt_id, what, at, detail)`` in one transaction,
        in order: the daemon batches what one loop round brought (at 50 calls a second, one
        small transaction per event is what limits the daemon, bench/RESULTS.md)."""
        if not items:
            return
        with self.session() as s:
            for attempt_id, what, at, detail in items:
                a = s.get(AttemptRow, attempt_id)
                if a is None or a.ended_at is not None:
                    continue
                when = to_dt(at)
                if what == "ringing" and a.ringing_at is None:
                    a.ringing_at = when
                elif what == "answered":
                    a.answered_at = when
                elif what == "key":
                    a.keys = (a.keys + str(detail.get("key", "")))[:100]
                elif what == "confirmed":
                    if detail.get("what") == "answer":
                        a.answer_confirmed_at = when
                    else:
                        a.listen_confirmed_at = when
                self._event(s, what, at=at, campaign_id=a.campaign_id,
                            recipient_id=a.recipient_id, attempt_id=a.id, **detail)

    def finish_attempt(self, report: EndReport) -> bool:
        """Close an attempt and apply it to its recipient; idempotent (False if already closed)."""
        with self.session() as s:
            a = s.get(AttemptRow, report.attempt_id, with_for_update=not self.sqlite)
            if a is None or a.ended_at is not None:
                return False
            a.ended_at = to_dt(report.at)
            a.status = report.status
            a.reason = (report.reason or "")[:200] or None
            a.q850 = report.q850
            a.outcome = report.outcome.value
            a.answered_at = a.answered_at or to_dt(report.answered_at)
            a.answer_confirmed_at = a.answer_confirmed_at or to_dt(report.answer_confirmed_at)
            a.listen_confirmed_at = a.listen_confirmed_at or to_dt(report.listen_confirmed_at)
            if report.keys:
                a.keys = report.keys[:100]
            rec = s.get(RecipientRow, a.recipient_id, with_for_update=not self.sqlite)
            camp = s.get(CampaignRow, a.campaign_id)
            assert rec is not None and camp is not None
            st = settings_from_dict(camp.settings)
            upd = lifecycle.after_attempt(attempts=rec.attempts, max_attempts=rec.max_attempts,
                                          outcome=report.outcome, now=report.at,
                                          retry_delay=st.retry_delay,
                                          stopped=rec.state == RecipientState.STOPPED.value)
            old_state = rec.state
            rec.state = upd.state.value
            rec.attempts = upd.attempts
            rec.next_at = to_dt(upd.next_at)
            rec.last_outcome = report.outcome.value
            rec.last_status = report.status
            rec.last_reason = a.reason
            if a.answered_at is not None:
                rec.answered_at = a.answered_at
            if a.answer_confirmed_at is not None:
                rec.answer_confirmed_at = a.answer_confirmed_at
            if a.listen_confirmed_at is not None:
                rec.confirmed_at = a.listen_confirmed_at
            self._event(s, "attempt_ended", at=report.at, campaign_id=a.campaign_id,
                        recipient_id=rec.id, attempt_id=a.id, outcome=report.outcome.value,
                        status=report.status, reason=a.reason, q850=report.q850, keys=a.keys)
            if rec.state != old_state:
                self._event(s, "recipient_state", at=report.at, campaign_id=a.campaign_id,
                            recipient_id=rec.id, old=old_state, new=rec.state,
                            attempts=rec.attempts)
            return True

    def open_attempts(self, node: str) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(AttemptRow.id).where(AttemptRow.ended_at.is_(None),
                                                              AttemptRow.node == node)))

    def running_counts(self) -> scheduler.Counts:
        """Calls in progress across every node (from the attempts table)."""
        with self.session() as s:
            r = _running(s)
            return scheduler.Counts(sum(v.internal for v in r.values()),
                                    sum(v.external for v in r.values()))


# ----- helpers -----


# The statements of a scheduling pass, built once: building a statement costs more Python time
# than SQLite needs to run it.
_LIVE = [CampaignState.SCHEDULED.value, CampaignState.BLOCKED.value, CampaignState.ACTIVE.value]
_Q_LIVE = select(CampaignRow.id, CampaignRow.state, CampaignRow.priority, CampaignRow.start_at,
                 CampaignRow.n_idle, CampaignRow.n_active, CampaignRow.n_contacted,
                 CampaignRow.n_failed, CampaignRow.n_stopped).where(CampaignRow.state.in_(_LIVE))
_Q_RUNNING = (select(AttemptRow.campaign_id, AttemptRow.kind, func.count())
              .where(AttemptRow.ended_at.is_(None))
              .group_by(AttemptRow.campaign_id, AttemptRow.kind))
_IDLE_OF_KIND = (RecipientRow.campaign_id == bindparam("cid"),
                 RecipientRow.state == RecipientState.IDLE.value,
                 RecipientRow.kind == bindparam("kind"))
_Q_FRESH = (select(RecipientRow.position, RecipientRow.id)
            .where(*_IDLE_OF_KIND, RecipientRow.calls == 0)
            .order_by(RecipientRow.position).limit(bindparam("n")))
_Q_FIRST_RETRY = (select(RecipientRow.next_at).where(*_IDLE_OF_KIND, RecipientRow.calls > 0)
                  .order_by(RecipientRow.next_at).limit(1))
_Q_RETRY = (select(RecipientRow.last_call_at, RecipientRow.position, RecipientRow.id)
            .where(*_IDLE_OF_KIND, RecipientRow.calls > 0, RecipientRow.last_call_at.is_not(None),
                   or_(RecipientRow.next_at.is_(None), RecipientRow.next_at <= bindparam("at")))
            .order_by(RecipientRow.last_call_at, RecipientRow.position).limit(bindparam("n")))
# PostgreSQL: several nodes claim at once; a row another node is claiming is skipped.
_Q_FRESH_PG = _Q_FRESH.with_for_update(skip_locked=True)
_Q_RETRY_PG = _Q_RETRY.with_for_update(skip_locked=True)
_Q_NEXT_START = select(func.min(CampaignRow.start_at)).where(
    CampaignRow.state == CampaignState.SCHEDULED.value)
# per active campaign, the first retry time after now: one seek into ix_recipients_due each
_Q_NEXT_RETRY = select(func.min(
    select(RecipientRow.next_at)
    .where(RecipientRow.campaign_id == CampaignRow.id,
           RecipientRow.state == RecipientState.IDLE.value,
           RecipientRow.kind == bindparam("kind"), RecipientRow.next_at > bindparam("at"))
    .order_by(RecipientRow.next_at).limit(1).correlate(CampaignRow).scalar_subquery()
)).where(CampaignRow.state == CampaignState.ACTIVE.value)


@dataclass(kw_only=True)
class _Live:
    """A campaign as one scheduling pass sees and moves it."""

    id: int
    state: CampaignState
    priority: int
    start_at: float
    tally: lifecycle.Tally | None


@dataclass(frozen=True)
class _Snapshot:
    """What a pass needs of a campaign's frozen snapshot."""

    settings: CampaignSettings
    audio_sha: str
    audio_seconds: float


def _as_utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _settings_view(row: SettingsRow) -> GlobalSettings:
    return GlobalSettings(max_campaigns=row.max_campaigns,
                          limits=Limits(total=row.max_calls, internal=row.max_internal,
                                        external=row.max_external),
                          version=row.version, updated_at=to_ts(row.updated_at),
                          updated_by=row.updated_by)


def _tallies(s: Session, ids: list[int] | None) -> dict[int, lifecycle.Tally]:
    q = select(RecipientRow.campaign_id, RecipientRow.state, func.count()).group_by(
        RecipientRow.campaign_id, RecipientRow.state)
    if ids is not None:
        q = q.where(RecipientRow.campaign_id.in_(ids))
    acc: dict[int, dict[str, int]] = {}
    for cid, state, n in s.execute(q):
        acc.setdefault(cid, {})[state] = n
    return {cid: lifecycle.Tally(**{k: v for k, v in d.items()}) for cid, d in acc.items()}


def _running(s: Session) -> dict[int, scheduler.Counts]:
    out: dict[int, scheduler.Counts] = {}
    for cid, kind, n in s.connection().execute(_Q_RUNNING):
        cur = out.get(cid, scheduler.Counts())
        out[cid] = (scheduler.Counts(cur.internal + n, cur.external) if kind == "internal"
                    else scheduler.Counts(cur.internal, cur.external + n))
    return out


def _settle_cause(state: CampaignState, tally: lifecycle.Tally, st: CampaignSettings) -> str:
    need = lifecycle.threshold_of(st.threshold, tally.total)
    return f"{tally.contacted} of {tally.total} contacted, threshold {need}"


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _roles(value: str) -> frozenset[Role]:
    return frozenset(Role(v) for v in value.split(",") if v)


@dataclass(frozen=True, kw_only=True)
class _RunRec:
    """A recipient as a run recorded it at launch."""

    id: int
    position: int
    number: str
    name: str | None = None
    email: str | None = None
    kind: str = "internal"


def _template_rec(r: TemplateRecipientRow) -> dict[str, Any]:
    return {"position": r.position, "number": r.number, "name": r.name, "email": r.email,
            "kind": r.kind}


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


def _last_states(s: Session) -> dict[int, str]:
    """The last state each run's campaign reached, from the history (for deleted campaigns)."""
    out: dict[int, str] = {}
    for cid, detail in s.execute(select(EventRow.campaign_id, EventRow.detail).where(
            EventRow.kind == "campaign_state").order_by(EventRow.id)):
        if cid is not None and isinstance(detail, dict) and "new" in detail:
            out[cid] = str(detail["new"])
    return out


def _sqlite_single_writer(engine: Engine) -> None:
    """SQLite has no row locks: every transaction takes the write lock up front."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def ensure_parent_dir(url: str) -> None:
    """Create the directory of a SQLite file URL, so a fresh path just works."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
