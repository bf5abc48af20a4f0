"""Alembic, driven from code: ``dialer init`` upgrades to the newest revision; ``dialer db``
shows the current one and the history, and writes the SQL of an upgrade for a DBA."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, make_url

from dialer.storage.urls import postgresql_driver

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Apply every migration not yet applied to ``engine``'s database."""
    command.upgrade(alembic_config(engine), "head")


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@dataclass(frozen=True)
class Revision:
    """One migration: its id, the one before it, and what it does."""

    id: str
    down: str | None
    doc: str


def history() -> list[Revision]:
    """Every migration, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    revs = [Revision(id=r.revision, down=r.down_revision if isinstance(r.down_revision, str)
                     else None, doc=(r.doc or "").strip())
            for r in script.walk_revisions()]
    return list(reversed(revs))


def upgrade_sql(url: str, start: str | None = None) -> str:
    """The SQL that brings a database at ``start`` (None: an empty one) to the newest revision,
    for the dialect of ``url``; nothing is connected to (Alembic's offline mode)."""
    buf = io.StringIO()
    cfg = alembic_config()
    cfg.output_buffer = buf
    cfg.attributes["url"] = postgresql_driver(make_url(url))
    command.upgrade(cfg, f"{start}:head" if start else "head", sql=True)
    return buf.getvalue()
