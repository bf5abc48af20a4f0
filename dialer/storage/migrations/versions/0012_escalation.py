"""escalation: a run's follow-up, launched once

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 14:40:00

``campaigns.escalation``: where a campaign with an escalation rule stands (``armed`` until it is
decided, then ``launched``, ``never`` or ``failed``; NULL without a rule), indexed so that the
daemon's check reads only the armed ones. ``runs.escalated_from``: the run a follow-up was
launched for, unique, so that a run has at most one follow-up whatever the number of nodes and
restarts (the launch and the mark are one transaction; the constraint is the second lock).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("escalation", sa.String(length=10), nullable=True))
        batch_op.create_index("ix_campaigns_escalation", ["escalation"], unique=False)
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("escalated_from", sa.Integer(), nullable=True))
        batch_op.create_index("ix_runs_escalated_from", ["escalated_from"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_escalated_from")
        batch_op.drop_column("escalated_from")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index("ix_campaigns_escalation")
        batch_op.drop_column("escalation")
