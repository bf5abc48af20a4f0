"""The composition root: what the ``dialer`` commands and ``dialer serve`` run on, built from a
database URL or from the daemon's configuration.

The CLI imports neither ``dialer.storage`` nor the daemon's machinery (the SIP worker pool, the
metrics, the mail queue): it asks this module for the store (``open_store``, typed ``Store``) and
for the daemon (``daemon``); ``lint-imports`` (pyproject.toml) keeps it so. The store's value
types the CLI shows (``GlobalSettings``, ``TemplateView``, the frozen campaign settings of
``settings_from_dict``) are named here for it too.

Only the store is imported at the top: every command needs it. The daemon's machinery, and the
prometheus_client, smtplib and Alembic it brings, are imported by the functions that use them,
so that a command loads none of it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from dialer.core.records import GlobalSettings, TemplateView, settings_from_dict
from dialer.storage.errors import explain, redact
from dialer.storage.store import SqlStore, sqlite_path

if TYPE_CHECKING:
    from dialer.config import Config
    from dialer.daemon import Daemon, WorkerInit
    from dialer.gateway import Gateway
    from dialer.storage.migrate import Revision

__all__ = ["GlobalSettings", "Store", "TemplateView", "daemon", "database_file", "explain",
           "open_store", "redact", "schema_history", "schema_revisions", "schema_sql",
           "settings_from_dict"]

Store: TypeAlias = SqlStore
"""The store the commands work on (``dialer.storage.store.SqlStore``: SQLite or PostgreSQL)."""


def open_store(url: str, *, create: bool = False, ready: bool = True) -> Store:
    """The store of the database at ``url``.

    ``create``: a SQLite file that does not exist yet is created (only ``dialer init`` and the
    demo do; otherwise it is a DialerError naming the file). ``ready``: checked to be
    initialised at the newest schema (a DialerError saying to run ``dialer init`` otherwise).
    """
    store = SqlStore(url, create=create)
    if ready:
        store.check_ready()
    return store


def schema_revisions(store: Store) -> tuple[str | None, str | None]:
    """(the database's schema revision, the newest this version knows)."""
    from dialer.storage.migrate import current_revision, head_revision

    return current_revision(store.engine), head_revision()


def schema_history() -> list[Revision]:
    """Every schema revision, oldest first (``dialer db history``)."""
    from dialer.storage.migrate import history

    return history()


def schema_sql(url: str, start: str | None) -> str:
    """The SQL of the upgrade from ``start`` to the newest revision for PostgreSQL at ``url``
    (``dialer db sql``; nothing is connected to)."""
    from dialer.storage.migrate import upgrade_sql

    return upgrade_sql(url, start)


def database_file(store: Store) -> Path | None:
    """The file of a SQLite database (None: another database, or SQLite in memory)."""
    return sqlite_path(store.engine)


def daemon(config: Config) -> Daemon:
    """The daemon of ``dialer serve``: the store of ``config.database_url`` (initialised
    already: only ``dialer init`` creates a database), the SIP worker processes behind a
    ``PoolGateway``, the metrics registry, the mail queue and, with ``[alertmanager]``, the
    Alertmanager receiver (``dialer.alerthook``)."""
    from dialer.daemon import Daemon
    from dialer.gateway import PoolGateway
    from dialer.mailqueue import MailQueue
    from dialer.metrics import Metrics
    from dialer.pool import WorkerPool

    store = open_store(config.database_url)

    def workers(init_message: WorkerInit) -> Gateway:
        return PoolGateway(WorkerPool(size=config.workers,
                                      calls_per_worker=config.calls_per_worker,
                                      init_message=init_message, state_dir=config.state_dir),
                           overload_pressure=config.overload_pressure)

    from dialer.sdnotify import Notifier

    metrics = Metrics(node=config.node)
    receiver = None
    if config.alertmanager is not None:  # [alertmanager]: the webhook receiver
        from dialer.alerthook import AlertReceiver

        receiver = AlertReceiver(config.alertmanager, store, clock=time.time, metrics=metrics)
    d = Daemon(config, store, clock=time.time, make_gateway=workers, metrics=metrics,
               notifier=Notifier(), services=[receiver] if receiver else [],
               mail=MailQueue(store, config.smtp, config.data_dir / "media", clock=time.time,
                              counted=metrics.record_email))
    if receiver is not None:
        receiver.on_change = d.notify  # a launch reruns the scheduler at the next step
    return d
