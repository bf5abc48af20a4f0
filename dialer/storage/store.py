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
import json
import logging
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from sqlalchemy import (
    Engine,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text as sql_text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dialer.core import lifecycle, scheduler
from dialer.core.domain import (
    CampaignSettings,
    CampaignState,
    EmailPolicy,
    Kind,
    Limits,
    Outcome,
    RecipientState,
)
from dialer.core.errors import CsvError, DialerError, NotFound, StateError, ValidationError
from dialer.files import create_private_file, write_private
from dialer.core.permissions import Role
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
    UtcDateTime,
)

logger = logging.getLogger(__name__)

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


class SqlStore:
    """The SQLAlchemy adapter of the dialer's storage (SQLite or PostgreSQL)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``create=False``: a SQLite file must exist already (DialerError naming it
        otherwise), and is opened read-write only, so that it is never created behind the
        caller's back; only ``dialer init`` creates a database. A file it creates is 0600, its
        missing directories 0700 (``dialer.files``); SQLite gives the -wal and -shm files the
        database file's mode."""
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        self.sqlite = self.engine.dialect.name == "sqlite"
        self.postgresql = self.engine.dialect.name == "postgresql"
        if self.sqlite:
            _sqlite_single_writer(self.engine)
            path = sqlite_path(self.engine)
            if path is not None:
                if not create and not path.exists():
                    raise DialerError(f"no database at {path.absolute()}: "
                                      "run 'dialer init' first")
                _sqlite_file(self.engine, path, create=create)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._snapshot_cache: dict[int, _Snapshot] = {}  # campaign id -> frozen settings
        self._view = _View()  # the live campaigns between scheduling passes (tick)
        self._sql_cache: dict[Any, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        self._sqlite_datetime: Callable[[Any], Any] = UtcDateTime().dialect_impl(
            self.engine.dialect).bind_processor(self.engine.dialect) or (lambda v: v)
        self._checkpointer: tuple[threading.Thread, threading.Event] | None = None
        # What the checkpointer did: passes that found the whole log copied, and log restarts.
        self.checkpoint_passes = 0
        self.checkpoint_restarts = 0

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
        self.stop_checkpointer()
        self.engine.dispose()

    def start_checkpointer(self, interval: float = 0.05,
                           restart_frames: int | None = None) -> None:
        """SQLite file: copy the write-ahead log into the database from a background thread.

        Otherwise the commit that crosses SQLite's auto-checkpoint threshold (1000 pages) does
        it, and a scheduling pass that happens to be that commit waits 5 ms or more for it
        (bench/RESULTS.md). A PASSIVE checkpoint never blocks readers or the writer, and the
        sqlite3 module releases the GIL while it runs; the auto-checkpoint stays as the safety
        net. The daemon starts it; short-lived CLI commands do not need it. No-op elsewhere."""
        if not self.sqlite or self._checkpointer is not None:
            return
        path = self.engine.url.database
        if not path or path == ":memory:":
            return
        stop = threading.Event()
        restart_at = RESTART_FRAMES if restart_frames is None else restart_frames

        def run() -> None:
            try:
                con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            except sqlite3.Error:
                return
            try:
                con.execute("PRAGMA busy_timeout=50")
                while not stop.wait(interval):
                    try:
                        _busy, log, done = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        if log >= restart_at and log == done:
                            # Everything is copied already: RESTART only waits for readers to
                            # move on, so that the next commit starts the log from the top
                            # again (a writer that is never idle would otherwise grow it).
                            busy = con.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
                            if not busy:
                                self.checkpoint_restarts += 1
                        if log == done:
                            self.checkpoint_passes += 1
                    except sqlite3.Error:
                        continue  # busy, or the file went away: try again, or stop below
            finally:
                con.close()

        thread = threading.Thread(target=run, name="sqlite-checkpointer", daemon=True)
        self._checkpointer = (thread, stop)
        thread.start()
        # While the thread checkpoints, the writer never does: otherwise the commit that crosses
        # the auto-checkpoint threshold still copies the log itself (measured: p99 of a decision
        # 3.4 ms with it, 1.7 ms without; bench/RESULTS.md). Connections opened from now on get
        # the pragma; the pool is renewed so that none opened before is reused.
        event.listen(self.engine, "connect", _no_autocheckpoint)
        self.engine.dispose()

    def stop_checkpointer(self) -> None:
        if self._checkpointer is not None:
            thread, stop = self._checkpointer
            self._checkpointer = None
            stop.set()
            thread.join(5.0)
            if event.contains(self.engine, "connect", _no_autocheckpoint):
                event.remove(self.engine, "connect", _no_autocheckpoint)
                self.engine.dispose()  # back to SQLite's own auto-checkpoint

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
            write_private(path, data)  # 0600 in a 0700 directory, whatever the umask
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
                self._insert_template_recipients(s, row.id, recipients, 1)
                self._event(s, "template_added", at=now, actor=actor, template=name)
                if audit:
                    self._audit(s, actor=actor, now=now, action="template.add",
                                target=f"template {name}",
                                new={"settings": settings_to_dict(settings), "enabled": enabled,
                                     "audio_sha256": audio_sha, "recipients": len(recipients)})
                return row.id
        except IntegrityError as exc:
            raise ValidationError(f"template {name!r} could not be stored: {exc.orig}") from exc

    def get_template(self, name: str, *, with_recipients: bool = True) -> TemplateView:
        """A template; its recipient list is left empty with ``with_recipients=False``."""
        with self.session() as s:
            row = s.scalar(select(TemplateRow).where(TemplateRow.name == name))
            if row is None:
                raise NotFound(f"no template named {name!r}")
            recs = s.execute(select(TemplateRecipientRow.number, TemplateRecipientRow.kind,
                                    TemplateRecipientRow.name, TemplateRecipientRow.email)
                             .where(TemplateRecipientRow.template_id == row.id)
                             .order_by(TemplateRecipientRow.position)).all() \
                if with_recipients else []
            return TemplateView(id=row.id, name=row.name, enabled=row.enabled,
                                settings=settings_from_dict(row.settings),
                                audio_sha=row.audio_sha, audio_seconds=row.audio_seconds,
                                recipients=[Recipient(number=number, kind=Kind(kind),
                                                      name=rname, email=email)
                                            for number, kind, rname, email in recs])

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
                       recipients: Sequence[Recipient] | None = None,
                       tts_text: str | None = None) -> int:
        """Launch a campaign from a template: snapshot its settings and recipient list.

        ``audio_sha`` replaces the template's message; ``tts_text`` is the text it was spoken
        from (None for a recording), kept in the snapshot in place of the template's."""
        tpl = self.get_template(template, with_recipients=recipients is None)
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
        if audio_sha is not None:
            st = dataclasses.replace(st, tts_text=tts_text)
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
            ids = self._insert_recipients(s, camp.id, recs, st.attempts)
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

    def _insert_recipients(self, s: Session, campaign_id: int, recs: Sequence[Recipient],
                           max_attempts: int) -> list[tuple[int, int]]:
        """Insert a campaign's recipients in one executemany; their (id, position) in order.

        On SQLite the rows go to the driver as plain tuples (every value is a str or an int
        already: SQLAlchemy's per-row parameter processing cost as much as SQLite's insert)."""
        idle = RecipientState.IDLE.value
        if not self.sqlite:
            s.execute(insert(_RECIPIENTS), [
                {"campaign_id": campaign_id, "position": i + 1, "number": r.number,
                 "name": r.name, "email": r.email, "kind": r.kind.value, "state": idle,
                 "calls": 0, "attempts": 0, "max_attempts": max_attempts}
                for i, r in enumerate(recs)])
            return [(rid, pos) for rid, pos in s.execute(
                select(RecipientRow.id, RecipientRow.position)
                .where(RecipientRow.campaign_id == campaign_id)
                .order_by(RecipientRow.position))]
        conn = s.connection()
        conn.exec_driver_sql(
            "INSERT INTO recipients (campaign_id, position, number, name, email, kind, state, "
            "calls, attempts, max_attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?)",
            [(campaign_id, i, r.number, r.name, r.email, r.kind.value, idle, max_attempts)
             for i, r in enumerate(recs, 1)])
        return [(rid, pos) for rid, pos in conn.exec_driver_sql(
            "SELECT id, position FROM recipients WHERE campaign_id = ? ORDER BY position",
            (campaign_id,))]

    def _insert_template_recipients(self, s: Session, template_id: int,
                                    recs: Sequence[Recipient], first: int) -> None:
        """A template's recipients at positions ``first``, ``first + 1``... in one executemany."""
        if recs:
            s.execute(insert(cast(Table, TemplateRecipientRow.__table__)), [
                {"template_id": template_id, "position": first + i, "number": r.number,
                 "name": r.name, "email": r.email, "kind": r.kind.value}
                for i, r in enumerate(recs)])

    def list_campaigns(self, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
        with self.session() as s:
            out = []
            q = select(CampaignRow).order_by(CampaignRow.id)
            if states:
                q = q.where(CampaignRow.state.in_(list(states)))
            rows = list(s.scalars(q))
            # The per-campaign counters answer without reading recipients; campaigns not yet
            # counted (NULL counters) are counted once here.
            tallies = {c.id: t for c in rows if (t := counters.tally_of(c)) is not None}
            missing = [c.id for c in rows if c.id not in tallies]
            if missing:
                tallies.update(counters.count(s, missing))
            for c in rows:
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

    def campaign_progress(self, campaign_id: int, *, since: float,
                          events: int = 8) -> dict[str, Any]:
        """What ``dialer campaign watch`` shows, in a few indexed reads of one campaign:
        recipients by state and kind, calls in progress by kind, the first call's time, the
        attempts ended since ``since``, and the last ``events`` events (newest first)."""
        with self.session() as s:
            c = s.get(CampaignRow, campaign_id)
            if c is None:
                raise NotFound(f"no campaign with id {campaign_id}")
            by_state: dict[str, dict[str, int]] = {}
            for state, kind, n in s.execute(
                    select(RecipientRow.state, RecipientRow.kind, func.count())
                    .where(RecipientRow.campaign_id == campaign_id)
                    .group_by(RecipientRow.state, RecipientRow.kind)):
                by_state.setdefault(state, {})[kind] = n
            in_call = dict(s.execute(
                select(AttemptRow.kind, func.count())
                .where(AttemptRow.campaign_id == campaign_id, AttemptRow.ended_at.is_(None))
                .group_by(AttemptRow.kind)).all())
            first = s.scalar(select(func.min(AttemptRow.created_at))
                             .where(AttemptRow.campaign_id == campaign_id))
            recent = s.scalar(select(func.count()).select_from(AttemptRow).where(
                AttemptRow.campaign_id == campaign_id, AttemptRow.ended_at >= to_dt(since)))
            last = s.scalars(select(EventRow).where(EventRow.campaign_id == campaign_id)
                             .order_by(EventRow.id.desc()).limit(events)).all()
            numbers = dict(s.execute(select(RecipientRow.id, RecipientRow.number).where(
                RecipientRow.id.in_([e.recipient_id for e in last if e.recipient_id]))).all())
            return {"id": c.id, "name": c.name, "state": c.state, "template": c.template_name,
                    "start_at": _iso(c.start_at), "ended_at": _iso(c.ended_at),
                    "settings": c.settings, "audio_seconds": c.audio_seconds,
                    "recipients": by_state, "in_call": {k: int(v) for k, v in in_call.items()},
                    "first_call_at": _iso(first), "ended_since": int(recent or 0),
                    "events": [{**_event_dict(e), "number": numbers.get(e.recipient_id or -1)}
                               for e in last]}

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
        """Operator actions: suspend, resume, stop (the new state: ``lifecycle.operator_action``).

        Resume puts a campaign back where it would stand had it not been suspended: scheduled
        while its start time is ahead (or when it never was active), else active, or blocked
        when the maximum of active campaigns is reached."""
        if action not in ("suspend", "resume", "stop"):
            raise ValueError(f"unknown campaign action {action!r}")
        with self.session() as s:
            max_active = self._lock_settings(s)
            c = self._campaign_row(s, campaign_id)
            cur = CampaignState(c.state)
            new = self._operator_action(s, action, c, max_active, now)
            if new is None:
                raise StateError(f"cannot {action} campaign {campaign_id}: it is {cur.value}")
            self._transition(s, c, new, cause=f"operator {action}", now=now, actor=actor)
            self._audit(s, actor=actor, now=now, action=f"campaign.{action}",
                        target=f"campaign {campaign_id}", old={"state": cur.value},
                        new={"state": new.value})
            return new.value

    def _lock_settings(self, s: Session) -> int | None:
        """The maximum of active campaigns, read under the lock that serialises every
        scheduling pass on PostgreSQL (taken before any campaign row, in the order the passes
        take them); SQLite's single writer already serialises."""
        rows = self._rows(s, _Q_SETTINGS if self.sqlite else _Q_SETTINGS_PG)
        if not rows:
            raise DialerError("database is not initialised: run 'dialer init'")
        return cast("int | None", dict(zip(_SETTINGS_COLUMNS, rows[0]))["max_campaigns"])

    def _operator_action(self, s: Session, action: str, c: CampaignRow, max_active: int | None,
                         now: float) -> CampaignState | None:
        """``lifecycle.operator_action`` on a campaign row, with the other live campaigns."""
        def startable(cid: int, state: str, priority: int, start: Any) -> lifecycle.Startable:
            return lifecycle.Startable(id=cid, state=CampaignState(state), priority=priority,
                                       start_at=_as_utc(start).timestamp())

        me = startable(c.id, c.state, c.priority, c.start_at)
        others: list[lifecycle.Startable] = []
        launched = False
        if action in ("resume", "grant") and me.start_at <= now:
            others = [startable(*row) for row in s.execute(
                select(CampaignRow.id, CampaignRow.state, CampaignRow.priority,
                       CampaignRow.start_at).where(CampaignRow.state.in_(_LIVE),
                                                   CampaignRow.id != c.id))]
            launched = any(
                isinstance(d, dict) and d.get("new") == CampaignState.ACTIVE.value
                for d in s.scalars(select(EventRow.detail).where(
                    EventRow.campaign_id == c.id, EventRow.kind == "campaign_state")))
        return lifecycle.operator_action(action, me, others, max_active, now, launched=launched)

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
                row.updated_at = at_dt(now)
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
            s.execute(delete(TemplateRecipientRow).where(
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
                s.execute(delete(TemplateRecipientRow).where(
                    TemplateRecipientRow.template_id == row.id))
                s.flush()
            at = len(existing) + 1 if position is None else max(1, min(position,
                                                                       len(existing) + 1))
            for held in existing:  # make room after the insertion point
                if held.position >= at:
                    held.position += len(recs)
            s.flush()
            self._insert_template_recipients(s, row.id, recs, at)
            row.updated_at = at_dt(now)
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
            row.updated_at = at_dt(now)
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
            row.updated_at = at_dt(now)
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
            max_active = self._lock_settings(s)
            c = self._campaign_row(s, campaign_id)
            after = self._operator_action(s, "grant", c, max_active, now)
            if after is None:
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
            if after.value != c.state:
                # incomplete: active again, or blocked while the maximum of active campaigns
                # leaves it no place (lifecycle.rejoin)
                c.ended_at = None
                self._transition(s, c, after, cause="operator granted attempts",
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
            s.execute(delete(RecipientRow).where(
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

    # ----- e-mail (dialer.mailqueue) -----

    def mail_job(self, campaign_id: int, trigger: str, recipient_id: int | None = None,
                 attempt_id: str | None = None) -> MailJob | None:
        """Whom to mail for ``trigger``, or None when the campaign's ``email`` setting says no.

        ``launch``: every recipient with an address, if the setting is ``on_launch`` and the
        campaign has become active exactly once (its first activation, not a reactivation after
        granted attempts). ``unreached``: recipient ``recipient_id``, if the setting is
        ``unreached``, it is ``failed`` now, ``attempt_id`` is its latest attempt (the one that
        made it failed: an earlier attempt's job, handled late, mails nobody) and it has an
        address.
        """
        with self.session() as s:
            c = s.get(CampaignRow, campaign_id)
            if c is None:
                return None
            st = settings_from_dict(c.settings)
            q = select(RecipientRow).where(RecipientRow.campaign_id == campaign_id,
                                           RecipientRow.email.is_not(None))
            if trigger == "launch":
                if st.email != EmailPolicy.ON_LAUNCH.value:
                    return None
                activations = sum(
                    1 for d in s.scalars(select(EventRow.detail).where(
                        EventRow.campaign_id == campaign_id, EventRow.kind == "campaign_state"))
                    if isinstance(d, dict) and d.get("new") == CampaignState.ACTIVE.value)
                if activations != 1:
                    return None
            elif trigger == "unreached":
                if st.email != EmailPolicy.UNREACHED.value or recipient_id is None:
                    return None
                latest = s.scalar(select(AttemptRow.id)
                                  .where(AttemptRow.recipient_id == recipient_id)
                                  .order_by(AttemptRow.created_at.desc(), AttemptRow.id.desc())
                                  .limit(1))
                if attempt_id is not None and latest != attempt_id:
                    return None
                q = q.where(RecipientRow.id == recipient_id,
                            RecipientRow.state == RecipientState.FAILED.value)
            else:
                raise ValueError(f"unknown mail trigger {trigger!r}")
            recs = s.scalars(q.order_by(RecipientRow.position)).all()
            return MailJob(campaign_id=c.id, name=c.name, audio_sha=c.audio_sha,
                           text=st.tts_text,
                           recipients=[MailTarget(id=r.id, number=r.number, name=r.name,
                                                  email=r.email) for r in recs if r.email])

    def record_emails(self, campaign_id: int, results: Sequence[tuple[int, str, bool, str]], *,
                      at: float) -> None:
        """One ``email_sent`` / ``email_failed`` event per ``(recipient id, address, sent,
        detail)``: the Message-ID when sent, the reason when not."""
        if not results:
            return
        with self.session() as s:
            for recipient_id, address, sent, detail in results:
                self._event(s, "email_sent" if sent else "email_failed", at=at,
                            campaign_id=campaign_id, recipient_id=recipient_id, email=address,
                            detail=detail)

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

    def recover(self, *, node: str, now: float, keep: Collection[str] = ()) -> int:
        """Account for calls a previous run of this node left open (it died): ``interrupted``
        (not counted), or ``contacted`` when every confirmation had been recorded. ``keep``:
        calls a live worker still carries (they go on and end on their own)."""
        with self.session() as s:
            open_ids = [aid for aid in s.scalars(select(AttemptRow.id).where(
                AttemptRow.ended_at.is_(None), AttemptRow.node == node)).all()
                if aid not in keep]
        for aid in open_ids:
            self.finish_attempt(EndReport(attempt_id=aid, outcome=Outcome.INTERRUPTED, at=now,
                                          reason="the daemon stopped during the call"))
        return len(open_ids)

    def tick(self, *, now: float, node: str, kinds_available: frozenset[Kind] = frozenset(Kind),
             capacity: int | None = None) -> Tick:
        """One scheduling pass: campaign transitions, then claim the calls to place now.

        Cost: a handful of indexed statements whatever the number of recipients or campaigns.
        The live campaigns (state, rank, counters, frozen settings) are kept in memory between
        passes as a cache of the database, never as the truth: every pass reads the ``version``
        of each live campaign (one covering index) and re-reads only the rows whose version
        moved (``campaigns.version`` grows with every UPDATE of the row, and the recipient
        counters update it with every recipient change, ``dialer.storage.counters``). Calls in
        progress are counted from the open attempts (a covering index) in every pass;
        candidates are read lazily in rank order only for campaigns that can take a call, each
        with a LIMIT, and only when a retry is due are retries read. The time the next retry
        falls due is kept per campaign and re-read only when its version moved or that time
        has come. A pass that fails forgets the cache.

        Lifecycle within one pass: active campaigns whose recipients are done settle first, so
        the place they free is given to a blocked or due campaign in the same pass (and that
        one settles at once too if it has nothing left to do).
        """
        try:
            return self._tick(now=now, node=node, kinds_available=kinds_available,
                              capacity=capacity)
        except BaseException:
            self._view = _View()  # the pass rolled back: what it cached may not have happened
            raise

    def _tick(self, *, now: float, node: str, kinds_available: frozenset[Kind],
              capacity: int | None) -> Tick:
        transitions: list[tuple[int, str, str]] = []
        view = self._view
        with self.session() as s:
            rows = self._rows(s, _Q_SETTINGS if self.sqlite else _Q_SETTINGS_PG)
            if not rows:
                raise DialerError("database is not initialised: run 'dialer init'")
            if rows[0] != view.settings_row:
                view.settings_row = rows[0]
                values = dict(zip(_SETTINGS_COLUMNS, rows[0]))
                if values["updated_at"] is not None:
                    values["updated_at"] = _as_utc(values["updated_at"])
                view.settings = _settings_view(_SettingsValues(**values))
            gs = view.settings
            assert gs is not None
            camps = self._refresh(s, view)

            def move(c: _Live, new: CampaignState, cause: str) -> None:
                row = s.get(CampaignRow, c.id)
                assert row is not None
                transitions.append((c.id, c.state.value, new.value))
                self._transition(s, row, new, cause=cause, now=now)
                c.state = new
                view.quiet.discard(c.id)
                view.loads.pop(c.id, None)

            while True:
                # settle: active campaigns with nothing left to do free their place now (a
                # campaign that did not settle at its current version cannot settle now)
                for c in list(camps.values()):
                    if c.state is not CampaignState.ACTIVE or c.id in view.quiet:
                        continue
                    if c.tally is None:
                        c.tally = counters.recount(s, [c.id])[c.id]
                    st = self._snapshot(s, c.id).settings
                    settled = lifecycle.settle(CampaignState.ACTIVE, c.tally, st.threshold,
                                               st.keep_calling_after_threshold)
                    if settled is not None:
                        move(c, settled, _settle_cause(settled, c.tally, st))
                    else:
                        view.quiet.add(c.id)
                # activate: due scheduled and blocked campaigns, by priority then start time
                if not any(c.state is CampaignState.BLOCKED
                           or (c.state is CampaignState.SCHEDULED and c.start_at <= now)
                           for c in camps.values()):
                    break  # nothing waits for a place: activation would change nothing
                started = False
                for cid, new in lifecycle.activate(
                        [lifecycle.Startable(id=c.id, state=c.state, priority=c.priority,
                                             start_at=c.start_at) for c in camps.values()],
                        gs.max_campaigns, now):
                    c = camps[cid]
                    if new is CampaignState.SCHEDULED:
                        cause = "start time not reached"
                    elif new is CampaignState.BLOCKED:
                        cause = "the maximum of active campaigns is reached"
                    else:
                        cause = ("start time reached" if c.state is CampaignState.SCHEDULED
                                 else "a place freed")
                        started = True
                    move(c, new, cause)
                if not started:
                    break

            raw_running = self._rows(s, _Q_RUNNING)
            if raw_running != view.running_rows:  # the same calls as last pass: same counts
                view.running_rows, view.running = raw_running, _running_of(raw_running)
            running = view.running
            g_running = running.get(None, _NONE_RUNNING)
            calls: list[ClaimedCall] = []
            if scheduler.any_room(gs.limits, g_running, kinds_available, capacity):
                loads = [load for c in camps.values()
                         if (load := self._load(s, view, c, running.get(c.id, _NONE_RUNNING)))
                         is not None]

                def fetch(load: scheduler.CampaignLoad, g_now: scheduler.Counts,
                          cap: int | None) -> list[scheduler.Candidate]:
                    return self._candidates(s, load, gs.limits, g_now, cap, now, kinds_available)

                dials = scheduler.plan(loads, gs.limits, g_running, fetch,
                                       kinds_available=kinds_available, capacity=capacity)
                calls = self._claim(s, dials, node=node, now=now)
            next_due = self._next_due(s, view, now)
            for cid in [c.id for c in camps.values() if c.state.value not in _LIVE]:
                self._forget(view, cid)  # settled in this pass: no longer live
        return Tick(calls=calls, next_due=next_due, transitions=transitions, settings=gs)

    def _refresh(self, s: Session, view: _View) -> dict[int, _Live]:
        """The live campaigns, re-reading only the rows whose version moved since the last pass."""
        versions = dict(self._rows(s, _Q_LIVE_VERSIONS))
        for cid in [cid for cid in view.versions if cid not in versions]:
            self._forget(view, cid)  # finished, deleted, or suspended meanwhile
        changed = [cid for cid, v in versions.items() if view.versions.get(cid) != v]
        if changed:
            for cid, state, prio, start, n_i, n_a, n_c, n_f, n_s in (
                    [r for cid in changed for r in self._rows(s, _Q_LIVE_ONE, {"cid": cid})]
                    if self.sqlite else self._rows(s, _Q_LIVE, {"ids": changed})):
                if state not in _LIVE:
                    continue  # left the live states between the two reads
                tally = (None if n_i is None or n_a is None or n_c is None or n_f is None
                         or n_s is None else lifecycle.Tally(idle=n_i, active=n_a, contacted=n_c,
                                                             failed=n_f, stopped=n_s))
                self._forget(view, cid)
                view.camps[cid] = _Live(id=cid, state=CampaignState(state), priority=prio,
                                        start_at=_as_utc(start).timestamp(), tally=tally)
                # the version read first: a row changed in between is simply re-read next pass
                view.versions[cid] = versions[cid]
            for cid in changed:
                if cid not in view.camps:  # left the live states between the two reads
                    view.versions.pop(cid, None)
        return view.camps

    @staticmethod
    def _forget(view: _View, cid: int) -> None:
        view.versions.pop(cid, None)
        view.camps.pop(cid, None)
        view.quiet.discard(cid)
        view.loads.pop(cid, None)
        view.retry_due.pop(cid, None)

    def _load(self, s: Session, view: _View, c: _Live,
              running: scheduler.Counts) -> scheduler.CampaignLoad | None:
        """The campaign as ``scheduler.plan`` sees it, or None when it may not place calls now;
        kept while its row and its calls in progress stay the same."""
        if c.state is not CampaignState.ACTIVE or c.tally is None:
            return None
        load = view.loads.get(c.id)
        if load is None:
            st = self._snapshot(s, c.id).settings
            if not lifecycle.may_call(c.tally, st.threshold, st.keep_calling_after_threshold):
                return None
            load = scheduler.CampaignLoad(id=c.id, priority=c.priority, start_at=c.start_at,
                                          limits=st.limits, running=running)
            view.loads[c.id] = load
        elif load.running != running:
            load = dataclasses.replace(load, running=running)
            view.loads[c.id] = load
        return load

    def _snapshot(self, s: Session, cid: int) -> _Snapshot:
        snap = self._snapshot_cache.get(cid)
        return snap if snap is not None else self._snapshots(s, [cid])[cid]

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
        for kind, n in ((Kind.INTERNAL, n_int), (Kind.EXTERNAL, n_ext)):
            if n <= 0 or kind not in kinds:
                continue
            params = {"cid": load.id, "kind": kind.value, "n": n, "at": at}
            got = [(pos, rid, kind.value) for pos, rid in self._rows(s, q_fresh, params)]
            fresh += got
            left = n - len(got)
            if left <= 0:
                continue  # the fresh ones of this kind fill what this decision can take
            # Is any retry of this kind due? (one index seek; NULL next_at: due at once)
            first = self._rows(s, _Q_FIRST_RETRY, params)
            if not first or (first[0][0] is not None and _as_utc(first[0][0]) > at):
                continue
            params["n"] = left
            retry += [(_as_utc(last).timestamp() if last is not None else 0.0, pos, rid,
                       kind.value)
                      for last, pos, rid in self._rows(s, q_retry, params)]
        fresh.sort()
        retry.sort()
        return ([scheduler.Candidate(rid, Kind(k), True) for _, rid, k in fresh]
                + [scheduler.Candidate(rid, Kind(k), False) for _, _, rid, k in retry])

    def _rows(self, s: Session, stmt: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """Run one statement of the scheduling pass; its rows as plain tuples.

        On SQLite straight on the driver's cursor, the statement compiled once per store: the
        pass runs about a dozen small statements, and SQLAlchemy's execution machinery costs
        2 to 10 times what SQLite needs to run each (bench/RESULTS.md). Date-times then come
        back as SQLite's text: read them with ``_as_utc``. Elsewhere, through SQLAlchemy."""
        conn = s.connection()
        if not self.sqlite:
            return [tuple(r) for r in conn.execute(stmt, params or {})]
        sql, names, fixed = self._compiled(stmt)
        given = params or {}
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            rows: list[Any] = cur.execute(sql, [self._bind(given[n]) if n in given else fixed[n]
                                                for n in names]).fetchall()
            return rows
        finally:
            cur.close()

    def _insert(self, s: Session, table_insert: Any, rows: list[dict[str, Any]]) -> None:
        """An executemany of ``rows`` (every one with the same keys), as ``_rows`` runs them."""
        if not rows:
            return
        conn = s.connection()
        if not self.sqlite:
            conn.execute(table_insert, rows)
            return
        keys = tuple(rows[0])
        sql, names, _ = self._compiled(table_insert, keys)
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.executemany(sql, [[self._bind(r[n]) for n in names] for r in rows])
        finally:
            cur.close()

    def _compiled(self, stmt: Any, keys: tuple[str, ...] | None = None
                  ) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        key = (id(stmt), keys)
        got = self._sql_cache.get(key)
        if got is None:
            # literal IN lists are rendered into the SQL (only in statements without parameters)
            c = stmt.compile(dialect=self.engine.dialect,
                             column_keys=list(keys) if keys is not None else None,
                             compile_kwargs={"render_postcompile": stmt is _Q_LIVE_VERSIONS})
            got = (c.string, tuple(c.positiontup or ()), dict(c.params))
            self._sql_cache[key] = got
        return got

    def _bind(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return self._sqlite_datetime(value)
        if isinstance(value, dict):
            return json.dumps(value)  # the JSON columns (event detail), as SQLAlchemy writes
        return value

    def _lock(self, q: Any) -> Any:
        return q if self.sqlite else q.with_for_update(skip_locked=True)

    def _claim(self, s: Session, dials: list[scheduler.Dial], *, node: str,
               now: float) -> list[ClaimedCall]:
        """Claim the recipients decided on: recipient, attempt and history rows written with
        Core statements (one guarded UPDATE ... RETURNING per recipient, one INSERT of all
        attempts, one of all events); the counters are booked through ``counters.shift``."""
        if not dials:
            return []
        s.flush()  # transitions of this pass first: the history keeps the order things happened
        at = to_dt(now)
        calls: list[ClaimedCall] = []
        attempts: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for d in dials:
            got = self._rows(s, _Q_CLAIM, {"rid": d.recipient_id, "at": at})
            if not got:  # single writer (SQLite) or a row lock we hold (PostgreSQL)
                raise DialerError(f"recipient {d.recipient_id} was claimed by someone else")
            number, kind, call_no = got[0]
            counters.shift(s, d.campaign_id, RecipientState.IDLE, RecipientState.ACTIVE)
            snap = self._snapshot(s, d.campaign_id)
            aid = uuid.uuid4().hex
            attempts.append({"id": aid, "campaign_id": d.campaign_id,
                             "recipient_id": d.recipient_id, "number": number, "kind": kind,
                             "node": node, "created_at": at, "keys": ""})
            events.append({"at": at, "campaign_id": d.campaign_id, "recipient_id": d.recipient_id,
                           "attempt_id": aid, "kind": "attempt_started", "actor": None,
                           "detail": {"number": number, "kind": kind, "call": call_no}})
            calls.append(ClaimedCall(attempt_id=aid, campaign_id=d.campaign_id,
                                     recipient_id=d.recipient_id, number=number, kind=d.kind,
                                     settings=snap.settings, audio_sha=snap.audio_sha,
                                     audio_seconds=snap.audio_seconds))
        self._insert(s, _Q_ADD_ATTEMPTS, attempts)
        self._insert(s, _Q_ADD_EVENTS, events)
        counters.apply(s)
        return calls

    def _next_due(self, s: Session, view: _View, now: float) -> float | None:
        """When the next scheduled start or retry delay falls due (None: nothing waits on time).

        Scheduled starts come from the live campaigns in memory; per active campaign, the first
        ``next_at`` after now is one seek into ``ix_recipients_due`` per kind, made again only
        when the campaign's version moved or that time has come.
        """
        due = [c.start_at for c in view.camps.values() if c.state is CampaignState.SCHEDULED]
        at: dt.datetime | None = None
        for c in view.camps.values():
            if c.state is not CampaignState.ACTIVE:
                continue
            version = view.versions.get(c.id)
            known = view.retry_due.get(c.id)
            if known is None or known[0] != version or (known[1] is not None
                                                         and known[1] <= now):
                at = at or to_dt(now)
                times = [_as_utc(t).timestamp()
                         for t in self._rows(s, _Q_NEXT_RETRY, {"cid": c.id, "at": at})[0]
                         if t is not None]
                known = (version, min(times) if times else None)
                view.retry_due[c.id] = known
            if known[1] is not None:
                due.append(known[1])
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

    def record_progress_many(self, items: Sequence[tuple[str, str, float, dict[str, Any]]], *,
                             once: bool = False) -> None:
        """``record_progress`` for several ``(attempt_id, what, at, detail)`` in one transaction,
        in order: the daemon batches what one loop round brought (at 50 calls a second, one
        small transaction per event is what limits the daemon, bench/RESULTS.md).

        ``once``: the items may have been recorded already (a worker handing its events over
        again to a restarted daemon): one already stored (same attempt, kind and time) is
        skipped."""
        if not items:
            return
        with self.session() as s:
            for attempt_id, what, at, detail in items:
                a = s.get(AttemptRow, attempt_id)
                if a is None or a.ended_at is not None:
                    continue
                when = to_dt(at)
                if once and s.scalar(select(EventRow.id).where(  # ix_events_campaign
                        EventRow.campaign_id == a.campaign_id,
                        EventRow.attempt_id == attempt_id, EventRow.kind == what,
                        EventRow.at == when).limit(1)) is not None:
                    continue
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

    def finish_attempt(self, report: EndReport) -> Outcome | None:
        """Close an attempt and apply it to its recipient; idempotent (None if already closed).

        Returns the outcome stored: the report's, or ``contacted`` when the attempt's recorded
        confirmations prove the message was heard (``lifecycle.confirmed``)."""
        with self.session() as s:
            a = s.get(AttemptRow, report.attempt_id, with_for_update=not self.sqlite)
            if a is None or a.ended_at is not None:
                return None
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
            outcome = report.outcome
            if not outcome.success and lifecycle.confirmed(
                    answer_confirm=st.answer_confirm, listen_confirm=st.listen_confirm,
                    answer_confirmed_at=to_ts(a.answer_confirmed_at),
                    listen_confirmed_at=to_ts(a.listen_confirmed_at)):
                # Every confirmation was recorded: whatever happened to the call afterwards (the
                # goodbye cut by a crash, a stop), the recipient was reached and confirmed.
                outcome = Outcome.CONTACTED
                a.outcome = outcome.value
            upd = lifecycle.after_attempt(attempts=rec.attempts, max_attempts=rec.max_attempts,
                                          outcome=outcome, now=report.at,
                                          retry_delay=st.retry_delay,
                                          stopped=rec.state == RecipientState.STOPPED.value,
                                          calls=rec.calls or 0)
            old_state = rec.state
            rec.state = upd.state.value
            rec.attempts = upd.attempts
            rec.next_at = to_dt(upd.next_at)
            rec.last_outcome = outcome.value
            rec.last_status = report.status
            rec.last_reason = a.reason
            if a.answered_at is not None:
                rec.answered_at = a.answered_at
            if a.answer_confirmed_at is not None:
                rec.answer_confirmed_at = a.answer_confirmed_at
            if a.listen_confirmed_at is not None:
                rec.confirmed_at = a.listen_confirmed_at
            self._event(s, "attempt_ended", at=report.at, campaign_id=a.campaign_id,
                        recipient_id=rec.id, attempt_id=a.id, outcome=outcome.value,
                        status=report.status, reason=a.reason, q850=report.q850, keys=a.keys)
            if rec.state != old_state:
                self._event(s, "recipient_state", at=report.at, campaign_id=a.campaign_id,
                            recipient_id=rec.id, old=old_state, new=rec.state,
                            attempts=rec.attempts)
            return outcome

    def attempt_meta(self, ids: Collection[str]) -> dict[str, AttemptMeta]:
        """What the daemon keeps in memory of each *open* attempt among ``ids`` (a call a
        re-attached worker carries); closed or unknown ids are left out."""
        out: dict[str, AttemptMeta] = {}
        if not ids:
            return out
        with self.session() as s:
            rows = s.execute(select(AttemptRow, CampaignRow.settings)
                             .join(CampaignRow, CampaignRow.id == AttemptRow.campaign_id)
                             .where(AttemptRow.id.in_(list(ids)),
                                    AttemptRow.ended_at.is_(None))).all()
            for a, settings in rows:
                out[a.id] = AttemptMeta(campaign_id=a.campaign_id, recipient_id=a.recipient_id,
                                        kind=a.kind, email=settings_from_dict(settings).email,
                                        created_at=to_ts(a.created_at) or 0.0)
        return out

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
# every pass: which campaigns are live, at which version (index-only, ix_campaigns_state_version)
_Q_LIVE_VERSIONS = select(CampaignRow.id, CampaignRow.version).where(CampaignRow.state.in_(_LIVE))
# only the rows whose version moved since the previous pass
_Q_LIVE = select(CampaignRow.id, CampaignRow.state, CampaignRow.priority, CampaignRow.start_at,
                 CampaignRow.n_idle, CampaignRow.n_active, CampaignRow.n_contacted,
                 CampaignRow.n_failed, CampaignRow.n_stopped).where(
    CampaignRow.state.in_(_LIVE), CampaignRow.id.in_(bindparam("ids", expanding=True)))
_SETTINGS = SettingsRow.__table__
_SETTINGS_COLUMNS = ("id", "max_campaigns", "max_calls", "max_internal", "max_external",
                     "version", "updated_at", "updated_by")
_Q_SETTINGS = select(*[_SETTINGS.c[name] for name in _SETTINGS_COLUMNS]).where(_SETTINGS.c.id == 1)
# SQLite: one changed campaign by id (the caller keeps the live ones)
_Q_LIVE_ONE = select(CampaignRow.id, CampaignRow.state, CampaignRow.priority,
                     CampaignRow.start_at, CampaignRow.n_idle, CampaignRow.n_active,
                     CampaignRow.n_contacted, CampaignRow.n_failed, CampaignRow.n_stopped).where(
    CampaignRow.id == bindparam("cid"))
# PostgreSQL: the settings row serialises the decisions of every node
_Q_SETTINGS_PG = _Q_SETTINGS.with_for_update()
_RECIPIENTS = cast(Table, RecipientRow.__table__)
# the claim of one recipient; the guard on its state makes a double claim impossible
_Q_CLAIM = (update(_RECIPIENTS)
            .where(_RECIPIENTS.c.id == bindparam("rid"),
                   _RECIPIENTS.c.state == RecipientState.IDLE.value)
            .values(state=RecipientState.ACTIVE.value, calls=_RECIPIENTS.c.calls + 1,
                    last_call_at=bindparam("at", type_=UtcDateTime()))
            .returning(_RECIPIENTS.c.number, _RECIPIENTS.c.kind, _RECIPIENTS.c.calls))
_Q_ADD_ATTEMPTS = insert(cast(Table, AttemptRow.__table__))
_Q_ADD_EVENTS = insert(cast(Table, EventRow.__table__))
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
# the first retry time after now of one campaign, per kind: one seek into ix_recipients_due each
_Q_NEXT_RETRY = select(*[
    select(RecipientRow.next_at)
    .where(RecipientRow.campaign_id == bindparam("cid"),
           RecipientRow.state == RecipientState.IDLE.value, RecipientRow.kind == kind.value,
           RecipientRow.next_at > bindparam("at"))
    .order_by(RecipientRow.next_at).limit(1).scalar_subquery() for kind in Kind])
_NONE_RUNNING = scheduler.Counts()


@dataclass(kw_only=True)
class _Live:
    """A campaign as one scheduling pass sees and moves it."""

    id: int
    state: CampaignState
    priority: int
    start_at: float
    tally: lifecycle.Tally | None


@dataclass
class _View:
    """What the scheduling passes of this store keep between passes: a cache of the database,
    checked against ``campaigns.version`` at the start of every pass."""

    versions: dict[int, int] = dataclasses.field(default_factory=dict)  # as last read
    camps: dict[int, _Live] = dataclasses.field(default_factory=dict)  # live campaigns
    quiet: set[int] = dataclasses.field(default_factory=set)  # active, did not settle
    loads: dict[int, scheduler.CampaignLoad] = dataclasses.field(default_factory=dict)
    # active campaign -> (version, first retry time after the pass that read it, or None)
    retry_due: dict[int, tuple[int | None, float | None]] = dataclasses.field(
        default_factory=dict)
    settings_row: Any = None
    settings: GlobalSettings | None = None
    running_rows: list[Any] | None = None  # the calls in progress as last read, and counted:
    running: dict[int | None, scheduler.Counts] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class _SettingsValues:
    """The settings row as ``_settings_view`` reads it, from a plain tuple."""

    id: int
    max_campaigns: int | None
    max_calls: int | None
    max_internal: int | None
    max_external: int | None
    version: int
    updated_at: Any
    updated_by: str | None


def _running_of(rows: list[Any]) -> dict[int | None, scheduler.Counts]:
    """Calls in progress per campaign, and in all under the key None."""
    acc: dict[int, list[int]] = {}
    n_int = n_ext = 0
    for cid, kind, n in rows:
        pair = acc.setdefault(cid, [0, 0])
        if kind == Kind.INTERNAL.value:
            pair[0] += n
            n_int += n
        else:
            pair[1] += n
            n_ext += n
    out: dict[int | None, scheduler.Counts] = {
        cid: scheduler.Counts(i, e) for cid, (i, e) in acc.items()}
    out[None] = scheduler.Counts(n_int, n_ext)
    return out


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


def _settings_view(row: Any) -> GlobalSettings:
    return GlobalSettings(max_campaigns=row.max_campaigns,
                          limits=Limits(total=row.max_calls, internal=row.max_internal,
                                        external=row.max_external),
                          version=row.version, updated_at=to_ts(row.updated_at),
                          updated_by=row.updated_by,
                          # the scheduling pass reads the limits only (_SettingsValues)
                          require_db_role=bool(getattr(row, "require_db_role", False)))


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


RESTART_FRAMES = 4000  # pages (~16 MB of log at most between two restarts)


def _no_autocheckpoint(dbapi_conn: Any, _rec: Any) -> None:
    """Connection hook while a background checkpointer runs: the writer leaves the WAL alone."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


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


def sqlite_path(engine: Engine) -> Path | None:
    """The file of a SQLite engine (None: in memory, or a ``file:`` URI left to SQLite)."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:" or db.startswith("file:") or engine.url.query.get("uri"):
        return None
    return Path(db).expanduser()


def _sqlite_file(engine: Engine, path: Path, *, create: bool) -> None:
    """Open the SQLite file ``path``: created private first (``create``), or read-write only,
    never created (SQLite's ``mode=rw``), so a file removed meanwhile is an error, not a new
    empty database."""

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _rec: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        if create:
            create_private_file(path)
        else:
            cargs[0] = f"file:{quote(str(path.absolute()))}?mode=rw"
            cparams["uri"] = True
