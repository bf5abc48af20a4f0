"""runs (history snapshots), operators and audit

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00

``runs`` holds, per launched campaign (same id), the immutable snapshot written at launch: the
settings, the audio and the recipient list with the recipient ids that attempts and events refer
to. Deleting the campaign (which cascades to its ``recipients`` rows) or its template leaves the run,
the ``attempts`` and the ``events`` untouched, so the history of a run stays whole.

``operators`` (OS logins and their roles) and ``audit`` (who changed what, old and new values).
Existing campaigns get their run rows from their current rows (a best-effort backfill).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("template_name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("start_at", sa.DateTime(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("audio_sha", sa.String(length=64), nullable=False),
        sa.Column("audio_seconds", sa.Float(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "operators",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("roles", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("old", sa.JSON(), nullable=True),
        sa.Column("new", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.create_index("ix_audit_at", ["at"], unique=False)
    _backfill_runs()


def _backfill_runs() -> None:
    """One run per existing campaign, from the campaign and recipient rows as they are now.

    Not in the SQL written for a DBA (``dialer db sql``, Alembic's offline mode): it reads
    rows, which only an upgrade connected to the database can do."""
    if context.is_offline_mode():
        return
    bind = op.get_bind()
    campaigns = sa.table(
        "campaigns", sa.column("id", sa.Integer()), sa.column("name", sa.String()),
        sa.column("template_name", sa.String()), sa.column("created_at", sa.DateTime()),
        sa.column("created_by", sa.String()), sa.column("start_at", sa.DateTime()),
        sa.column("settings", sa.JSON()), sa.column("audio_sha", sa.String()),
        sa.column("audio_seconds", sa.Float()))
    recipients = sa.table(
        "recipients", sa.column("id", sa.Integer()), sa.column("campaign_id", sa.Integer()),
        sa.column("position", sa.Integer()), sa.column("number", sa.String()),
        sa.column("name", sa.String()), sa.column("email", sa.String()),
        sa.column("kind", sa.String()))
    runs = sa.table(
        "runs", sa.column("id", sa.Integer()), sa.column("name", sa.String()),
        sa.column("template_name", sa.String()), sa.column("created_at", sa.DateTime()),
        sa.column("created_by", sa.String()), sa.column("start_at", sa.DateTime()),
        sa.column("settings", sa.JSON()), sa.column("audio_sha", sa.String()),
        sa.column("audio_seconds", sa.Float()), sa.column("recipients", sa.JSON()))
    by_campaign: dict[int, list[dict[str, object]]] = {}
    for r in bind.execute(sa.select(recipients).order_by(recipients.c.campaign_id,
                                                          recipients.c.position)):
        by_campaign.setdefault(r.campaign_id, []).append(
            {"id": r.id, "position": r.position, "number": r.number, "name": r.name,
             "email": r.email, "kind": r.kind})
    rows = [{"id": c.id, "name": c.name, "template_name": c.template_name,
             "created_at": c.created_at, "created_by": c.created_by, "start_at": c.start_at,
             "settings": c.settings, "audio_sha": c.audio_sha, "audio_seconds": c.audio_seconds,
             "recipients": by_campaign.get(c.id, [])}
            for c in bind.execute(sa.select(campaigns))]
    if rows:
        bind.execute(runs.insert(), rows)


def downgrade() -> None:
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_at")
    op.drop_table("audit")
    op.drop_table("operators")
    op.drop_table("runs")
