"""history chain: each run's attempts and events as one SHA-256 hash chain

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:00:00

A run is sealed when it is over (``dialer.core.chain``, ``dialer.storage.chain``): each of its
attempts and events gets ``chain_seq`` (its place in the chain), ``chain_prev`` (the hash of the
row before it) and ``chain_hash`` (SHA-256 over its content, ``chain_seq`` and ``chain_prev``);
the run keeps ``chain_head`` (the last hash), ``chain_rows`` and ``sealed_at``. Runs that ended
before this revision stay unsealed (all NULL): ``dialer history verify`` says so.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ROW_COLUMNS = ("chain_seq", "chain_prev", "chain_hash")


def upgrade() -> None:
    for table in ("attempts", "events"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("chain_seq", sa.Integer(), nullable=True))
            batch_op.add_column(sa.Column("chain_prev", sa.String(64), nullable=True))
            batch_op.add_column(sa.Column("chain_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain_head", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("chain_rows", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("sealed_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("sealed_at")
        batch_op.drop_column("chain_rows")
        batch_op.drop_column("chain_head")
    for table in ("events", "attempts"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name in reversed(_ROW_COLUMNS):
                batch_op.drop_column(name)
