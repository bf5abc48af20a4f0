"""trunks: the trunk of each attempt, and each trunk's health

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 18:00:00

``attempts.trunk`` is the trunk the router chose for the call (``dialer.core.routing``); the
calls in progress are counted per trunk (``ix_attempts_running`` gains the column) and the
claims of the last second per trunk (``ix_attempts_trunk``), so that ``max_calls`` and
``max_cps`` hold across every node. ``trunk_health`` keeps each trunk's health guard
(``dialer.core.health``), one row per trunk that has ever been judged.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trunk_health",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("until", sa.DateTime(), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("reg_failures", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trunk", sa.String(64), nullable=True))
        batch_op.drop_index("ix_attempts_running")
        batch_op.create_index("ix_attempts_running", ["ended_at", "campaign_id", "kind", "trunk"])
        batch_op.create_index("ix_attempts_trunk", ["trunk", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_trunk")
        batch_op.drop_index("ix_attempts_running")
        batch_op.create_index("ix_attempts_running", ["ended_at", "campaign_id", "kind"])
        batch_op.drop_column("trunk")
    op.drop_table("trunk_health")
