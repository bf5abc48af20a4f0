"""cluster: node membership and leases; the lease generation on each attempt

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 14:00:00

``nodes`` has one row per ``dialer serve`` node name. A node joins (a new ``generation``, its
fencing token), renews its lease every few seconds (``heartbeat_at``, ``lease_until``) and
leaves (``state`` stopped). A node whose lease ran out, plus a margin, is marked ``lost`` by
whichever node passes first, and its open attempts are settled as ``node_lost`` in the same
transaction (``dialer.storage.nodes``). ``attempts.lease`` is the generation of the claim.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=False),
        sa.Column("lease_seconds", sa.Float(), nullable=False),
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("lease")
    op.drop_table("nodes")
