"""Database URLs as the store reads them."""

from __future__ import annotations

from sqlalchemy.engine import URL


def postgresql_driver(url: URL) -> URL:
    """``postgresql://`` means psycopg 3 (the ``postgresql`` extra), not SQLAlchemy's default
    psycopg2; a URL naming its driver keeps it."""
    return url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url
