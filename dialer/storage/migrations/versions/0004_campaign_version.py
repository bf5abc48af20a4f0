"""scheduler: a change counter on campaigns

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 12:00:00

``campaigns.version`` grows by one with every UPDATE of the campaign row (the model declares it
``onupdate``), and the recipient counters (``dialer.storage.counters``) update that row in the
same transaction as every change of a recipient's state or retry time. A scheduling pass keeps
its view of the live campaigns in memory and re-reads only the rows whose version moved: the
safety pass (nothing changed) reads one small index, not a hundred rows.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.create_index("ix_campaigns_state_version", ["state", "id", "version"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index("ix_campaigns_state_version")
        batch_op.drop_column("version")
