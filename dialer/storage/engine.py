"""The store's engine: the SQLAlchemy engine and its sessions (the only place that opens them),
SQLite's pragmas and single writer, the schema's readiness, and the background WAL checkpointer."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dialer.core.errors import DialerError, NodeConflict, StoreUnavailable
from dialer.files import create_private_file
from dialer.storage.models import SettingsRow
from dialer.storage.urls import postgresql_driver


class StoreEngine:
    """The connection side of ``SqlStore``: every other part of the store opens its
    transactions with ``session``."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``create=False``: a SQLite file must exist already (DialerError naming it
        otherwise), and is opened read-write only, so that it is never created behind the
        caller's back; only ``dialer init`` creates a database. A file it creates is 0600, its
        missing directories 0700 (``dialer.files``); SQLite gives the -wal and -shm files the
        database file's mode."""
        self.url = url
        parsed = postgresql_driver(make_url(url))
        # PostgreSQL: a connection that cannot be made, or whose data goes unacknowledged, for
        # a few seconds is an outage (the node fences itself on it, dialer.membership), not a
        # stall of the scheduling loop until TCP gives up minutes later; a pooled connection
        # is checked before use, so one broken by an outage is replaced.
        options: dict[str, Any] = (
            {"connect_args": {"connect_timeout": CONNECT_TIMEOUT,
                              "tcp_user_timeout": CONNECT_TIMEOUT * 1000, "keepalives": 1,
                              "keepalives_idle": CONNECT_TIMEOUT, "keepalives_interval": 2,
                              "keepalives_count": 2},
             "pool_pre_ping": True}
            if parsed.get_backend_name() == "postgresql" else {})
        self.engine: Engine = create_engine(parsed, future=True, **options)
        self.sqlite = self.engine.dialect.name == "sqlite"
        self.postgresql = self.engine.dialect.name == "postgresql"
        if self.sqlite:
            _sqlite_single_writer(self.engine)
            path = sqlite_path(self.engine)
            if path is not None:
                if not create and not path.exists():
                    raise DialerError(f"no database at {path.absolute()}: "
                                      "run 'dialer init' first")
                _sqlite_file(self.engine, path, create=create)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._checkpointer: tuple[threading.Thread, threading.Event] | None = None
        self._node_lock: int | None = None  # the SQLite serve lock (lock_node)
        # What the checkpointer did: passes that found the whole log copied, and log restarts.
        self.checkpoint_passes = 0
        self.checkpoint_restarts = 0

    # ----- plumbing -----

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction; committed on success, rolled back on any error."""
        with self._sessions() as s:
            try:
                with s.begin():
                    yield s
            except (OperationalError, InterfaceError) as exc:
                raise StoreUnavailable(f"database error: {_first_line(exc.orig)}") from exc
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    raise StoreUnavailable(f"database error: {_first_line(exc.orig)}") from exc
                raise

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision and create the settings row."""
        from dialer.storage.migrate import upgrade

        upgrade(self.engine)
        with self.session() as s:
            if s.get(SettingsRow, 1) is None:
                s.add(SettingsRow(id=1, version=0))

    def check_ready(self) -> None:
        """Raise a clear error when the database was never initialised."""
        from dialer.storage.migrate import current_revision, head_revision

        cur = current_revision(self.engine)
        if cur is None:
            raise DialerError(f"database {self.safe_url} is not initialised: run 'dialer init'")
        if cur != head_revision():
            raise DialerError(f"database {self.safe_url} is at schema {cur}, "
                              f"not {head_revision()}: run 'dialer init' to upgrade it")

    @property
    def shared(self) -> bool:
        """Whether several nodes may share this database (PostgreSQL; SQLite serves one)."""
        return not self.sqlite

    def lock_node(self) -> None:
        """SQLite: take the database's serve lock, held until this process exits, so that a
        second ``dialer serve`` on the same file refuses to start (``NodeConflict``) rather than
        race the first. Elsewhere nothing (nodes share the database by their leases)."""
        path = sqlite_path(self.engine) if self.sqlite else None
        if path is None or self._node_lock is not None:
            return
        lock = path.with_name(path.name + ".serve.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise NodeConflict(f"another dialer serve (pid {holder}) uses the SQLite database "
                               f"{path}: SQLite serves one node; use PostgreSQL for several") \
                from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._node_lock = fd

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.stop_checkpointer()
        self.engine.dispose()
        if self._node_lock is not None:
            os.close(self._node_lock)  # releases the serve lock
            self._node_lock = None

    def start_checkpointer(self, interval: float = 0.05,
                           restart_frames: int | None = None) -> None:
        """SQLite file: copy the write-ahead log into the database from a background thread.

        Otherwise the commit that crosses SQLite's auto-checkpoint threshold (1000 pages) does
        it, and a scheduling pass that happens to be that commit waits 5 ms or more for it
        (bench/RESULTS.md). A PASSIVE checkpoint never blocks readers or the writer, and the
        sqlite3 module releases the GIL while it runs; the auto-checkpoint stays as the safety
        net. The daemon starts it; short-lived CLI commands do not need it. No-op elsewhere."""
        if not self.sqlite or self._checkpointer is not None:
            return
        path = self.engine.url.database
        if not path or path == ":memory:":
            return
        stop = threading.Event()
        restart_at = RESTART_FRAMES if restart_frames is None else restart_frames

        def run() -> None:
            with contextlib.suppress(OSError):  # Linux: the calling thread's own nice value
                os.setpriority(os.PRIO_PROCESS, 0,
                               min(19, os.getpriority(os.PRIO_PROCESS, 0) + CHECKPOINTER_NICE))
            try:
                con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            except sqlite3.Error:
                return
            try:
                con.execute("PRAGMA busy_timeout=50")
                while not stop.wait(interval):
                    try:
                        _busy, log, done = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        if log >= restart_at and log == done:
                            # Everything is copied already: RESTART only waits for readers to
                            # move on, so that the next commit starts the log from the top
                            # again (a writer that is never idle would otherwise grow it).
                            busy = con.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
                            if not busy:
                                self.checkpoint_restarts += 1
                        if log == done:
                            self.checkpoint_passes += 1
                    except sqlite3.Error:
                        continue  # busy, or the file went away: try again, or stop below
            finally:
                con.close()

        thread = threading.Thread(target=run, name="sqlite-checkpointer", daemon=True)
        self._checkpointer = (thread, stop)
        thread.start()
        # While the thread checkpoints, the writer never does: otherwise the commit that crosses
        # the auto-checkpoint threshold still copies the log itself (measured: p99 of a decision
        # 3.4 ms with it, 1.7 ms without; bench/RESULTS.md). Connections opened from now on get
        # the pragma; the pool is renewed so that none opened before is reused.
        event.listen(self.engine, "connect", _no_autocheckpoint)
        self.engine.dispose()

    def stop_checkpointer(self) -> None:
        if self._checkpointer is not None:
            thread, stop = self._checkpointer
            self._checkpointer = None
            stop.set()
            thread.join(5.0)
            if event.contains(self.engine, "connect", _no_autocheckpoint):
                event.remove(self.engine, "connect", _no_autocheckpoint)
                self.engine.dispose()  # back to SQLite's own auto-checkpoint


CONNECT_TIMEOUT = 5  # seconds (PostgreSQL)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip()
    return text.splitlines()[0] if text else type(exc).__name__


CHECKPOINTER_NICE = 19
"""How much nicer than the process the checkpointer thread runs (Linux: a thread has its own
nice value): a checkpoint waking on a busy CPU waits for the scheduling pass there instead of
taking its CPU (decision p99 with the other core loaded 1.8-2.5 ms, 1.6 ms at 19;
bench/RESULTS.md). At 19 it still gets about 1.5% of a CPU that nothing else leaves idle, and
all of an idle one."""

RESTART_FRAMES = 4000  # pages (~16 MB of log at most between two restarts)


def _no_autocheckpoint(dbapi_conn: Any, _rec: Any) -> None:
    """Connection hook while a background checkpointer runs: the writer leaves the WAL alone."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


def _sqlite_single_writer(engine: Engine) -> None:
    """SQLite has no row locks: every transaction takes the write lock up front."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_path(engine: Engine) -> Path | None:
    """The file of a SQLite engine (None: in memory, or a ``file:`` URI left to SQLite)."""
    db = engine.url.database
    if (engine.dialect.name != "sqlite" or not db or db == ":memory:" or db.startswith("file:")
            or engine.url.query.get("uri")):
        return None
    return Path(db).expanduser()


def _sqlite_file(engine: Engine, path: Path, *, create: bool) -> None:
    """Open the SQLite file ``path``: created private first (``create``), or read-write only,
    never created (SQLite's ``mode=rw``), so a file removed meanwhile is an error, not a new
    empty database."""

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _rec: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        if create:
            create_private_file(path)
        else:
            cargs[0] = f"file:{quote(str(path.absolute()))}?mode=rw"
            cparams["uri"] = True
