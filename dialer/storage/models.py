"""SQLAlchemy 2 typed models. Only dialer.storage imports these; the core sees domain values."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    FetchedValue,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone: store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of the dialer's tables."""


class MediaRow(Base):
    """A normalised audio file (16-bit mono PCM WAV), kept in the database so that every node
    sharing it can play it; nodes cache it on disk by its SHA-256."""

    __tablename__ = "media"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    rate: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    source: Mapped[str | None] = mapped_column(Text)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class SettingsRow(Base):
    """Global settings: one row, id 1. ``version`` grows on every change."""

    __tablename__ = "settings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    max_campaigns: Mapped[int | None] = mapped_column(Integer)
    max_calls: Mapped[int | None] = mapped_column(Integer)
    max_internal: Mapped[int | None] = mapped_column(Integer)
    max_external: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    updated_by: Mapped[str | None] = mapped_column(String(64))
    # PostgreSQL: every operator command must connect as the operator's own role
    require_db_role: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class TemplateRow(Base):
    """A campaign template ("campaign model")."""

    __tablename__ = "templates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    audio_sha: Mapped[str] = mapped_column(ForeignKey("media.sha256"))
    audio_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class TemplateRecipientRow(Base):
    """One recipient of a template, in dialing order."""

    __tablename__ = "template_recipients"
    __table_args__ = (UniqueConstraint("template_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"),
                                             index=True)
    position: Mapped[int] = mapped_column(Integer)
    number: Mapped[str] = mapped_column(String(40))
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(10))
    timezone: Mapped[str | None] = mapped_column(String(64))  # its own (revision 0010)


class CampaignRow(Base):
    """A launched campaign with its frozen settings snapshot."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_state", "state"),
                      Index("ix_campaigns_state_version", "state", "id", "version"),
                      Index("ix_campaigns_escalation", "escalation"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id", ondelete="SET NULL"))
    template_name: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(12))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    audio_sha: Mapped[str] = mapped_column(ForeignKey("media.sha256"))
    audio_seconds: Mapped[float] = mapped_column(Float)
    priority: Mapped[int] = mapped_column(Integer)
    start_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # How many recipients stand in each state, kept in the same transaction as every recipient
    # change (SqlStore._set_recipient_state), so that a scheduling pass never counts recipients.
    # NULL means "not counted yet" (rows from before revision 0003): the next pass counts them.
    n_idle: Mapped[int | None] = mapped_column(Integer)
    n_active: Mapped[int | None] = mapped_column(Integer)
    n_contacted: Mapped[int | None] = mapped_column(Integer)
    n_failed: Mapped[int | None] = mapped_column(Integer)
    n_stopped: Mapped[int | None] = mapped_column(Integer)
    # Grows with every UPDATE of this row (ORM or Core): state changes, counter changes (so every
    # change of a recipient's state or retry time, dialer.storage.counters). A scheduling pass
    # re-reads only the campaigns whose version moved since its previous pass (revision 0004).
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0",
                                         onupdate=text("version + 1"))
    # Escalation (revision 0012, dialer.core.escalation): "armed" while a rule waits to be
    # decided, then "launched", "never" or "failed"; NULL without a rule.
    escalation: Mapped[str | None] = mapped_column(String(10))


class RecipientRow(Base):
    """One recipient of a campaign (a copy of the list at launch) and its progress."""

    __tablename__ = "recipients"
    __table_args__ = (
        # Candidates are read straight off these indexes (covering on SQLite, with LIMIT):
        # never-called ones in list order, retries in order of their last call, and the
        # earliest retry time of a campaign and kind (is any retry due? when is the next one?).
        Index("ix_recipients_fresh_kind", "campaign_id", "state", "kind", "calls", "position"),
        Index("ix_recipients_retry_kind", "campaign_id", "state", "kind", "last_call_at",
              "next_at"),
        Index("ix_recipients_due", "campaign_id", "state", "kind", "next_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    number: Mapped[str] = mapped_column(String(40))
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(10))
    # its own calling-window zone, None: the campaign's (revision 0010, dialer.core.window)
    timezone: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(10), default="idle")
    calls: Mapped[int] = mapped_column(Integer, default=0)  # every call placed
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # unsuccessful calls
    max_attempts: Mapped[int] = mapped_column(Integer)  # the campaign's, plus grants
    next_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_call_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_outcome: Mapped[str | None] = mapped_column(String(20))
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_reason: Mapped[str | None] = mapped_column(String(200))
    answered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    answer_confirmed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class AttemptRow(Base):
    """One call. Its id is the SIP Call-ID; the row exists before the INVITE leaves."""

    __tablename__ = "attempts"
    __table_args__ = (
        Index("ix_attempts_open", "ended_at", "node"),
        Index("ix_attempts_running", "ended_at", "campaign_id", "kind", "trunk"),
        Index("ix_attempts_trunk", "trunk", "created_at"),
        Index("ix_attempts_recipient", "recipient_id"),
        Index("ix_attempts_campaign", "campaign_id"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(Integer)
    recipient_id: Mapped[int] = mapped_column(Integer)
    number: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(10))
    node: Mapped[str] = mapped_column(String(64))
    lease: Mapped[int | None] = mapped_column(Integer)  # the node's generation at the claim
    trunk: Mapped[str | None] = mapped_column(String(64))  # the route's choice (migration 0007)
    worker: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    ringing_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    answer_confirmed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    listen_confirmed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    status: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(200))
    q850: Mapped[int | None] = mapped_column(Integer)
    keys: Mapped[str] = mapped_column(String(100), default="")
    outcome: Mapped[str | None] = mapped_column(String(20))
    # the digits drawn for a random key (dialer.core.keys; migration 0011), else NULL
    answer_key: Mapped[str | None] = mapped_column(String(1))
    listen_key: Mapped[str | None] = mapped_column(String(1))
    # The history chain (revision 0008, ``dialer.core.chain``): set once, when the run is sealed.
    chain_seq: Mapped[int | None] = mapped_column(Integer)
    chain_prev: Mapped[str | None] = mapped_column(String(64))
    chain_hash: Mapped[str | None] = mapped_column(String(64))


class NodeRow(Base):
    """One ``dialer serve`` node of the cluster and its lease (``dialer.core.cluster``)."""

    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    address: Mapped[str] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer)  # the fencing token: grows at every join
    state: Mapped[str] = mapped_column(String(10))  # live, stopped, lost
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    lease_until: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    lease_seconds: Mapped[float] = mapped_column(Float)
    # the node's pool at its last renewal (dialer.core.cluster.NodeLoad): call slots of the
    # workers taking calls (None: not reported yet), workers running late
    slots: Mapped[int | None] = mapped_column(Integer, nullable=True)
    late: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class TrunkHealthRow(Base):
    """A trunk's health guard (``dialer.core.health.Health``), shared by every node."""

    __tablename__ = "trunk_health"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)  # unhealthy until then
    level: Mapped[int] = mapped_column(Integer)
    since: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str] = mapped_column(String(200))
    reg_failures: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class EventRow(Base):
    """Append-only history. No foreign keys: it outlives templates and campaigns."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_campaign", "campaign_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    recipient_id: Mapped[int | None] = mapped_column(Integer)
    attempt_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The history chain (revision 0008, ``dialer.core.chain``): set once, when the run is sealed.
    chain_seq: Mapped[int | None] = mapped_column(Integer)
    chain_prev: Mapped[str | None] = mapped_column(String(64))
    chain_hash: Mapped[str | None] = mapped_column(String(64))


class RunRow(Base):
    """The history of one launched campaign (same id), written once at launch; only its chain
    columns are set later, when the run is sealed (``dialer.storage.chain``).

    Why a table of its own rather than soft-deleting campaigns: the campaign and its ``recipients``
    rows are working state that the scheduler mutates and that an operator may delete; the run
    keeps what the history needs and nothing else changes it (settings snapshot, audio, the
    recipient list with the recipient ids that ``attempts`` and ``events`` refer to). Attempts and
    events carry the run id (= campaign id) and have no foreign keys, so deleting the campaign or
    its template leaves the whole history, byte for byte.
    """

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))
    template_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    start_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    audio_sha: Mapped[str] = mapped_column(String(64))
    audio_seconds: Mapped[float] = mapped_column(Float)
    recipients: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # The run this one was launched to escalate (revision 0012): at most one follow-up per run.
    escalated_from: Mapped[int | None] = mapped_column(Integer, index=True, unique=True)
    # Set when the run is sealed (revision 0008): the last hash of its chain, its number of rows
    # and when; a row appended later (an e-mail report of a finished run) moves head and count.
    chain_head: Mapped[str | None] = mapped_column(String(64))
    chain_rows: Mapped[int | None] = mapped_column(Integer)
    sealed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class OperatorRow(Base):
    """An operator: an OS login and its roles (comma-separated, sorted)."""

    __tablename__ = "operators"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    roles: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(64))


class AuditRow(Base):
    """One successful change by an operator: who, when, what, old and new values."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_at", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(200))
    old: Mapped[Any] = mapped_column(JSON, nullable=True)
    new: Mapped[Any] = mapped_column(JSON, nullable=True)
    # The database role of the connection (PostgreSQL's current_user), set by a trigger in the
    # database, never by the client; NULL on SQLite (no roles). Migration 0005.
    db_role: Mapped[str | None] = mapped_column(String(64), nullable=True,
                                                server_default=FetchedValue())


class AlertLaunchRow(Base):
    """One firing period of an Alertmanager alert (its fingerprint and ``startsAt``) and the
    campaign it launched: the unique key makes a repeated notification, another receiver behind
    the same load balancer or a restarted daemon a no-op (``dialer.core.alerts``). Written in
    the transaction that launches the campaign; a period first seen resolved has no campaign
    (a late firing notification of it launches nothing). ``campaign_id`` is the run id, with no
    foreign key: the row outlives a deleted campaign, as its history does. Migration 0009."""

    __tablename__ = "alert_launches"
    __table_args__ = (UniqueConstraint("fingerprint", "starts_at",
                                       name="uq_alert_launches_period"),
                      Index("ix_alert_launches_campaign", "campaign_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[str] = mapped_column(String(32))  # dialer.core.alerts.period_start
    alertname: Mapped[str] = mapped_column(String(200))
    route: Mapped[int] = mapped_column(Integer)  # 1-based [[alertmanager.routes]] entry
    template: Mapped[str] = mapped_column(String(100))
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON)
    generator_url: Mapped[str] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    ends_at: Mapped[str | None] = mapped_column(String(32))
    stopped: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
