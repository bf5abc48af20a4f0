"""node load: what each node's SIP worker pool can carry, for campaign watch

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 01:50:00

``nodes.slots``: the call slots of the node's ready workers that take new calls (NULL: not
reported yet); ``nodes.late``: its workers whose event loop runs late (the machine is short of
CPU: they take no new calls until they catch up). Written at every lease renewal, so that
``campaign watch`` and ``campaign show`` (other processes) can say why calls wait.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slots", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("late", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("late")
        batch_op.drop_column("slots")
