"""alert_launches: the campaigns launched by Alertmanager alerts, once per firing period

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:30:00

One row per firing period of an alert (its fingerprint and ``startsAt``, unique together: a
repeated notification, a second receiver or a restarted daemon inserts nothing) with the
campaign it launched (``campaign_id``, the run id, no foreign key: it outlives a deleted
campaign like the rest of the history) and whether its resolution was seen and stopped it
(``dialer.core.alerts``, ``dialer.storage.alerts``).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_launches",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("starts_at", sa.String(32), nullable=False),
        sa.Column("alertname", sa.String(200), nullable=False),
        sa.Column("route", sa.Integer(), nullable=False),
        sa.Column("template", sa.String(100), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("generator_url", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.Column("ends_at", sa.String(32), nullable=True),
        sa.Column("stopped", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("fingerprint", "starts_at", name="uq_alert_launches_period"),
    )
    op.create_index("ix_alert_launches_campaign", "alert_launches", ["campaign_id"])


def downgrade() -> None:
    op.drop_index("ix_alert_launches_campaign", table_name="alert_launches")
    op.drop_table("alert_launches")
