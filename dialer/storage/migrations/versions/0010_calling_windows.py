"""calling windows: a recipient's own time zone

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 14:30:00

``template_recipients.timezone`` and ``recipients.timezone``: the IANA zone a recipient's
calling window is read in (the CSV column ``timezone``); NULL, as for every row from before this
revision, means the campaign's zone. The window itself lives in the campaign's settings
snapshot (JSON), which needs no migration: a snapshot without it is urgent (no window).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("template_recipients", "recipients"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("timezone", sa.String(64), nullable=True))


def downgrade() -> None:
    for table in ("recipients", "template_recipients"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("timezone")
