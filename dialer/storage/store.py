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
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dialer import lifecycle, scheduler
from dialer.domain import CampaignSettings, CampaignState, Kind, Limits, Outcome, RecipientState
from dialer.errors import DialerError, NotFound, StateError, ValidationError
from dialer.recipients import Recipient
from dialer.storage.models import (
    AttemptRow,
    Base,
    CampaignRow,
    EventRow,
    MediaRow,
    RecipientRow,
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
                     actor: str, enabled: bool = True) -> int:
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
            camp = CampaignRow(template_id=tpl.id, template_name=tpl.name, name=name or tpl.name,
                               state=CampaignState.SCHEDULED.value, settings=settings_to_dict(st),
                               audio_sha=audio_sha or tpl.audio_sha,
                               audio_seconds=audio_seconds if audio_seconds is not None
                               else tpl.audio_seconds,
                               priority=st.priority, start_at=to_dt(start_at),
                               created_at=to_dt(now), created_by=actor)
            s.add(camp)
            s.flush()
            s.execute(RecipientRow.__table__.insert(), [
                {"campaign_id": camp.id, "position": i + 1, "number": r.number, "name": r.name,
                 "email": r.email, "kind": r.kind.value, "state": RecipientState.IDLE.value,
                 "calls": 0, "attempts": 0, "max_attempts": st.attempts}
                for i, r in enumerate(recs)])
            self._event(s, "campaign_created", at=now, campaign_id=camp.id, actor=actor,
                        template=tpl.name, name=camp.name, recipients=len(recs),
                        start_at=start_at, settings=settings_to_dict(st))
            return camp.id

    def list_campaigns(self) -> list[dict[str, Any]]:
        with self.session() as s:
            tallies = _tallies(s, None)
            out = []
            for c in s.scalars(select(CampaignRow).order_by(CampaignRow.id)):
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
        """One scheduling pass: campaign transitions, then claim the calls to place now."""
        transitions: list[tuple[int, str, str]] = []
        with self.session() as s:
            srow = s.get(SettingsRow, 1, with_for_update=not self.sqlite)
            if srow is None:
                raise DialerError("database is not initialised: run 'dialer init'")
            gs = _settings_view(srow)
            camps = s.scalars(select(CampaignRow).where(CampaignRow.state.in_(
                [CampaignState.SCHEDULED.value, CampaignState.BLOCKED.value,
                 CampaignState.ACTIVE.value]))).all()
            by_id = {c.id: c for c in camps}
            for cid, new in lifecycle.activate(
                    [lifecycle.Startable(id=c.id, state=CampaignState(c.state), priority=c.priority,
                                         start_at=to_ts(c.start_at) or 0.0) for c in camps],
                    gs.max_campaigns, now):
                c = by_id[cid]
                transitions.append((cid, c.state, new.value))
                cause = "start time reached" if c.state == "scheduled" else "a place freed"
                if new is CampaignState.BLOCKED:
                    cause = "the maximum of active campaigns is reached"
                self._transition(s, c, new, cause=cause, now=now)
            active = [c for c in camps if c.state == CampaignState.ACTIVE.value]
            tallies = _tallies(s, [c.id for c in active]) if active else {}
            running = _running(s)
            g_running = scheduler.Counts(
                sum(v.internal for v in running.values()), sum(v.external for v in running.values()))
            loads: list[scheduler.CampaignLoad] = []
            settings_of: dict[int, CampaignSettings] = {}
            for c in active:
                st = settings_from_dict(c.settings)
                settings_of[c.id] = st
                tally = tallies.get(c.id, lifecycle.Tally())
                settled = lifecycle.settle(CampaignState.ACTIVE, tally, st.threshold,
                                           st.keep_calling_after_threshold)
                if settled is not None:
                    transitions.append((c.id, c.state, settled.value))
                    self._transition(s, c, settled, cause=_settle_cause(settled, tally, st),
                                     now=now)
                    continue
                if not lifecycle.may_call(tally, st.threshold, st.keep_calling_after_threshold):
                    continue
                loads.append(scheduler.CampaignLoad(
                    id=c.id, priority=c.priority, start_at=to_ts(c.start_at) or 0.0,
                    limits=st.limits, running=running.get(c.id, scheduler.Counts())))
            candidates = {
                load.id: self._candidates(s, load, gs.limits, g_running, capacity, now,
                                          kinds_available)
                for load in scheduler.rank(loads)}
            dials = scheduler.plan(loads, gs.limits, g_running, candidates,
                                   kinds_available=kinds_available, capacity=capacity)
            calls = self._claim(s, dials, by_id, settings_of, node=node, now=now)
            next_due = self._next_due(s, now)
        return Tick(calls=calls, next_due=next_due, transitions=transitions, settings=gs)

    def _candidates(self, s: Session, load: scheduler.CampaignLoad, g_limits: Limits,
                    g_running: scheduler.Counts, capacity: int | None, now: float,
                    kinds: frozenset[Kind]) -> list[scheduler.Candidate]:
        n_int, n_ext = scheduler.wanted(load, g_limits, g_running, capacity)
        out: list[scheduler.Candidate] = []
        base = select(RecipientRow.id, RecipientRow.kind).where(
            RecipientRow.campaign_id == load.id, RecipientRow.state == RecipientState.IDLE.value)
        fresh: list[tuple[int, int, str]] = []
        retry: list[tuple[float, int, str]] = []
        for kind, n in ((Kind.INTERNAL, n_int), (Kind.EXTERNAL, n_ext)):
            if n <= 0 or kind not in kinds:
                continue
            q = base.add_columns(RecipientRow.position).where(
                RecipientRow.kind == kind.value, RecipientRow.calls == 0
            ).order_by(RecipientRow.position).limit(n)
            fresh += [(pos, rid, k) for rid, k, pos in s.execute(self._lock(q))]
            q2 = base.add_columns(RecipientRow.last_call_at).where(
                RecipientRow.kind == kind.value, RecipientRow.calls > 0,
                RecipientRow.next_at <= to_dt(now)
            ).order_by(RecipientRow.last_call_at).limit(n)
            retry += [(to_ts(last) or 0.0, rid, k) for rid, k, last in s.execute(self._lock(q2))]
        fresh.sort()
        retry.sort()
        out += [scheduler.Candidate(rid, Kind(k), True) for _, rid, k in fresh]
        out += [scheduler.Candidate(rid, Kind(k), False) for _, rid, k in retry]
        return out

    def _lock(self, q: Any) -> Any:
        return q if self.sqlite else q.with_for_update(skip_locked=True)

    def _claim(self, s: Session, dials: list[scheduler.Dial], camps: dict[int, CampaignRow],
               settings_of: dict[int, CampaignSettings], *, node: str,
               now: float) -> list[ClaimedCall]:
        calls: list[ClaimedCall] = []
        for d in dials:
            rec = s.get(RecipientRow, d.recipient_id)
            assert rec is not None and rec.state == RecipientState.IDLE.value
            c = camps[d.campaign_id]
            aid = uuid.uuid4().hex
            rec.state = RecipientState.ACTIVE.value
            rec.calls += 1
            rec.last_call_at = to_dt(now)
            s.add(AttemptRow(id=aid, campaign_id=c.id, recipient_id=rec.id, number=rec.number,
                             kind=rec.kind, node=node, created_at=to_dt(now), keys=""))
            self._event(s, "attempt_started", at=now, campaign_id=c.id, recipient_id=rec.id,
                        attempt_id=aid, number=rec.number, kind=rec.kind, call=rec.calls)
            calls.append(ClaimedCall(attempt_id=aid, campaign_id=c.id, recipient_id=rec.id,
                                     number=rec.number, kind=d.kind, settings=settings_of[c.id],
                                     audio_sha=c.audio_sha, audio_seconds=c.audio_seconds))
        return calls

    def _next_due(self, s: Session, now: float) -> float | None:
        t1 = s.scalar(select(func.min(CampaignRow.start_at)).where(
            CampaignRow.state == CampaignState.SCHEDULED.value))
        t2 = s.scalar(select(func.min(RecipientRow.next_at)).join(
            CampaignRow, CampaignRow.id == RecipientRow.campaign_id).where(
            CampaignRow.state == CampaignState.ACTIVE.value,
            RecipientRow.state == RecipientState.IDLE.value,
            RecipientRow.next_at > to_dt(now)))
        due = [t for t in (to_ts(t1), to_ts(t2)) if t is not None]
        return min(due) if due else None

    def set_attempt_worker(self, attempt_id: str, worker: int) -> None:
        with self.session() as s:
            s.execute(update(AttemptRow).where(AttemptRow.id == attempt_id).values(worker=worker))

    def record_progress(self, attempt_id: str, what: str, at: float, /, **detail: Any) -> None:
        """Ringing, answered, a key, a confirmation: stamp the attempt and append the event.

        Positional-only: a confirmation's detail is itself named ``what`` (answer or listen).
        """
        with self.session() as s:
            a = s.get(AttemptRow, attempt_id)
            if a is None or a.ended_at is not None:
                return
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
            self._event(s, what, at=at, campaign_id=a.campaign_id, recipient_id=a.recipient_id,
                        attempt_id=a.id, **detail)

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
    q = select(AttemptRow.campaign_id, AttemptRow.kind, func.count()).where(
        AttemptRow.ended_at.is_(None)).group_by(AttemptRow.campaign_id, AttemptRow.kind)
    out: dict[int, scheduler.Counts] = {}
    for cid, kind, n in s.execute(q):
        cur = out.get(cid, scheduler.Counts())
        out[cid] = (scheduler.Counts(cur.internal + n, cur.external) if kind == "internal"
                    else scheduler.Counts(cur.internal, cur.external + n))
    return out


def _settle_cause(state: CampaignState, tally: lifecycle.Tally, st: CampaignSettings) -> str:
    need = lifecycle.threshold_of(st.threshold, tally.total)
    return f"{tally.contacted} of {tally.total} contacted, threshold {need}"


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


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
