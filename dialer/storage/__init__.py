"""Storage: SQLAlchemy models, the SqlStore repository and Alembic migrations."""
