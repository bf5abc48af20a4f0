"""scheduler: per-campaign recipient counters and candidate indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:00:00

A scheduling pass must not count the recipients of every active campaign (a GROUP BY over up to
millions of rows). ``campaigns`` gets one counter per recipient state, kept by the store in the
same transaction as every recipient change; they start NULL ("not counted yet") and the first
pass that needs a campaign's counters counts its recipients once and stores them.

The candidate indexes now lead with ``kind`` so that "only external recipients" is a range of
the index, not a filter over the internal ones, and cover what the candidate queries read.
``ix_attempts_running`` counts calls in progress from the index alone.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COUNTERS = ("n_idle", "n_active", "n_contacted", "n_failed", "n_stopped")


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        for name in COUNTERS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_fresh")
        batch_op.drop_index("ix_recipients_retry")
        batch_op.create_index("ix_recipients_fresh_kind",
                              ["campaign_id", "state", "kind", "calls", "position"], unique=False)
        batch_op.create_index("ix_recipients_retry_kind",
                              ["campaign_id", "state", "kind", "last_call_at", "next_at"],
                              unique=False)
        batch_op.create_index("ix_recipients_due", ["campaign_id", "state", "kind", "next_at"],
                              unique=False)
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index("ix_attempts_running", ["ended_at", "campaign_id", "kind"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_running")
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_due")
        batch_op.drop_index("ix_recipients_retry_kind")
        batch_op.drop_index("ix_recipients_fresh_kind")
        batch_op.create_index("ix_recipients_retry", ["campaign_id", "state", "next_at"],
                              unique=False)
        batch_op.create_index("ix_recipients_fresh", ["campaign_id", "state", "calls", "position"],
                              unique=False)
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        for name in COUNTERS:
            batch_op.drop_column(name)
