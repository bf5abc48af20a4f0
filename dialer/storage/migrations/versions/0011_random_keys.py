"""random keys: the confirmation digits drawn for each attempt

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 14:30:00

A template's answer or listen key may be ``random`` (``dialer.core.keys``): each call draws its
digit when its attempt is recorded, before the INVITE leaves, and ``attempts.answer_key`` /
``attempts.listen_key`` keep it (NULL where the key is fixed or its confirmation is off).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answer_key", sa.String(1), nullable=True))
        batch_op.add_column(sa.Column("listen_key", sa.String(1), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("listen_key")
        batch_op.drop_column("answer_key")
