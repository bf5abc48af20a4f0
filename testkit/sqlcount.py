"""Count the SQL statements a database executes for the store, for the tests that pin how many a
hot path needs and for bench/scheduler.py: a count does not depend on the machine's load.

``statements`` is what the database itself executes:

- SQLite: every statement SQLite runs (its trace callback, ``set_trace_callback``, on each
  connection opened while counting). The store's scheduling pass runs on the driver's cursor,
  past SQLAlchemy, so SQLAlchemy's events would miss it.
- PostgreSQL (psycopg 3): every statement the server completes (libpq's protocol trace of each
  connection opened while counting, its ``CommandComplete`` messages).

BEGIN and COMMIT count; an executemany counts once per row (psycopg pipelines one statement per
row), a COPY once. ``calls`` is what SQLAlchemy hands to the driver (``before_cursor_execute``:
an executemany is one call; a COPY on the driver's cursor is none).

Counting starts with ``on()`` and ends with ``off()``, each of which closes the engine's pooled
connections (the traces are set on new ones): never inside a timed part.
"""

from __future__ import annotations

import tempfile
from typing import IO, Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


class StatementCounter:
    """``on()``, run something, ``off()`` returns the statements counted (see the module)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.statements = 0
        self.calls = 0
        self.sql: list[str] = []  # SQLite: the statements counted, for a failing test to show
        self._log: IO[bytes] | None = None

    def on(self) -> None:
        self.statements = self.calls = 0
        self.sql = []
        if not self.sqlite:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by off()
        event.listen(self.engine, "before_cursor_execute", self._call)
        event.listen(self.engine, "connect", self._traced)
        event.listen(self.engine, "close", self._untraced)
        self.engine.dispose()  # the connections opened from now on are traced

    def off(self) -> int:
        """Stop counting; the statements counted since ``on()``."""
        self.engine.dispose()  # closes (and so untraces) the traced connections
        event.remove(self.engine, "before_cursor_execute", self._call)
        event.remove(self.engine, "connect", self._traced)
        event.remove(self.engine, "close", self._untraced)
        if self._log is not None:
            self._log.seek(0)
            self.statements += sum(b"\tCommandComplete\t" in line for line in self._log)
            self._log.close()
            self._log = None
        return self.statements

    def _traced(self, dbapi_conn: Any, _record: Any) -> None:
        if self.sqlite:
            dbapi_conn.set_trace_callback(self._statement)
        elif self._log is not None:
            dbapi_conn.pgconn.trace(self._log.fileno())

    def _untraced(self, dbapi_conn: Any, _record: Any) -> None:
        if not self.sqlite:
            dbapi_conn.pgconn.untrace()  # flushes what libpq buffered

    def _statement(self, sql: str) -> None:
        self.statements += 1
        self.sql.append(sql)

    def _call(self, *_: Any) -> None:
        self.calls += 1
