"""identity: the database role beside the operator, an append-only audit log

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 12:00:00

``audit.db_role`` is the PostgreSQL role of the connection that made the change. A trigger sets
it from ``current_user`` on every INSERT, whatever the client sent, so a client cannot name
another role; on SQLite (no roles) it stays NULL. ``settings.require_db_role`` makes every
operator command connect as the operator's own role (``dialer settings set
--require-db-role``).

The audit table is append-only in the database itself: a trigger refuses UPDATE and DELETE
(and TRUNCATE on PostgreSQL) for every role, the table owner included, who can only get past it
by dropping the trigger (DDL, which a DBA does on purpose, not a command by mistake). On SQLite
a later migration that rebuilds ``audit`` with ``batch_alter_table`` must create the triggers
again.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

APPEND_ONLY = "the audit log is append-only"

PG_UP = f"""
CREATE FUNCTION dialer_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.db_role := current_user;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '{APPEND_ONLY}';
END $$;
CREATE TRIGGER audit_db_role BEFORE INSERT ON audit
    FOR EACH ROW EXECUTE FUNCTION dialer_audit_guard();
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION dialer_audit_guard();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION dialer_audit_guard();
"""

PG_DOWN = """
DROP TRIGGER IF EXISTS audit_no_truncate ON audit;
DROP TRIGGER IF EXISTS audit_append_only ON audit;
DROP TRIGGER IF EXISTS audit_db_role ON audit;
DROP FUNCTION IF EXISTS dialer_audit_guard();
"""


def upgrade() -> None:
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("db_role", sa.String(64), nullable=True))
    with op.batch_alter_table("settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("require_db_role", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    if op.get_context().dialect.name == "postgresql":
        op.execute(PG_UP)
    else:
        for what in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_no_{what.lower()} BEFORE {what} ON audit "
                       f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(PG_DOWN)
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    with op.batch_alter_table("settings", schema=None) as batch_op:
        batch_op.drop_column("require_db_role")
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_column("db_role")
