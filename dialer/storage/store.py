"""SqlStore: the one repository the daemon and the CLI use. Only this package opens sessions
(``dialer.storage.engine``).

Claiming work (which recipients get the next calls) and limit accounting happen in one method,
``tick``, inside one transaction: on SQLite a single writer (``BEGIN IMMEDIATE``), on PostgreSQL
the settings row is locked ``FOR UPDATE`` so that several ``dialer serve`` nodes sharing one
database serialise their decisions and the global limits hold across them; candidate recipients
are read ``FOR UPDATE SKIP LOCKED``. Calls in progress are counted from the attempts table (the
truth), never from a node's memory.

``SqlStore`` is composed of one class per responsibility, each in its own module:

* ``engine.StoreEngine``: engine, sessions, SQLite pragmas, schema readiness, WAL checkpointer;
* ``fastpath.FastPath``: the prebuilt statements of a scheduling pass and the raw-driver path;
* ``history.History``: events, audit, operators, global settings, runs;
* ``chain.Chain``: sealing a run's history (a hash chain) when it is over, and verifying it;
* ``templates.Templates``: templates, their recipients, the audio;
* ``campaigns.Campaigns``: launch, views and operator actions of campaigns;
* ``dispatch.Dispatch``: the scheduling pass (``tick``) and its claim;
* ``attempts.Attempts``: progress and end of the attempts, recovery of a node's open calls;
* ``mail.Mail``: the campaign e-mails;
* ``alerts.Alerts``: the campaigns launched by Alertmanager alerts.

The dataclasses it hands out and the conversions are in ``records``, re-exported here.
"""

from __future__ import annotations

from dialer.storage.alerts import Alerts
from dialer.storage.attempts import Attempts
from dialer.storage.campaigns import Campaigns
from dialer.storage.dispatch import Dispatch
from dialer.storage.engine import RESTART_FRAMES, StoreEngine, sqlite_path
from dialer.storage.escalations import Escalations
from dialer.storage.fastpath import FastPath
from dialer.storage.history import History
from dialer.storage.mail import Mail
from dialer.storage.records import (
    UTC,
    AttemptMeta,
    ClaimedCall,
    EndReport,
    GlobalSettings,
    MailJob,
    MailTarget,
    TemplateView,
    Tick,
    at_dt,
    settings_from_dict,
    settings_to_dict,
    to_dt,
    to_ts,
)
from dialer.storage.templates import Templates

__all__ = [
    "RESTART_FRAMES",
    "UTC",
    "AttemptMeta",
    "ClaimedCall",
    "EndReport",
    "GlobalSettings",
    "MailJob",
    "MailTarget",
    "SqlStore",
    "TemplateView",
    "Tick",
    "at_dt",
    "settings_from_dict",
    "settings_to_dict",
    "sqlite_path",
    "to_dt",
    "to_ts",
]


class SqlStore(Alerts, Escalations, Campaigns, Templates, Dispatch, Attempts, Mail, History,
               FastPath, StoreEngine):
    """The SQLAlchemy adapter of the dialer's storage (SQLite or PostgreSQL)."""
