"""Alembic environment: the engine comes from the caller (dialer.storage.migrate) or DIALER_DB;
offline (``dialer db sql``), the SQL of the migrations is written for the URL's dialect and
nothing is connected to."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from dialer.storage.models import Base

config = context.config

if context.is_offline_mode():
    url = config.attributes["url"]
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"},
                      render_as_batch=url.get_backend_name() == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = config.attributes.get("engine") or create_engine(
        os.environ.get("DIALER_DB", "sqlite:///dialer.db"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
