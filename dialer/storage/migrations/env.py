"""Alembic environment: the engine comes from the caller (dialer.storage.migrate) or DIALER_DB."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from dialer.storage.models import Base

config = context.config
engine = config.attributes.get("engine") or create_engine(
    os.environ.get("DIALER_DB", "sqlite:///dialer.db"))

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
