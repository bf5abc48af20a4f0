"""What the dialer needs of its storage, as ports (``typing.Protocol``), split by who needs it.

* ``MailPort``: what the mail thread (``dialer.mailqueue``) asks.
* ``DispatchPort``: what ``dialer serve`` (``dialer.daemon``) asks, the mail thread's part
  included: the part several daemon nodes share through one database (scheduling passes,
  attempts and their progress, recovery of what a dead run left). Implemented by
  ``dialer.storage.store.SqlStore`` (SQLite, PostgreSQL) and by the in-memory fake of the test
  suites, ``dialer.testing.memory.MemoryStore``.
* ``AdminPort``: the rest, what the CLI asks: settings, templates and their recipients,
  campaigns and the operator actions on them, operators and the audit log, the history (runs),
  and the database's own life (``migrate``, ``dispose``). Only ``SqlStore`` implements it.
* ``AlertPort``: what the Alertmanager receiver (``dialer.alerthook``) asks: the launch of a
  firing alert's campaign and its resolution, once per firing period. Only ``SqlStore``.
* ``StorePort``: both (what ``dialer.cli`` holds).

Every signature is ``SqlStore``'s, exactly (names, kinds and defaults of the parameters):
``dialer.testing.conformance`` has mypy check that ``SqlStore`` satisfies every port and the fake
``DispatchPort``, and tests/test_ports.py compares the signatures at run time.

The record types (``Tick``, ``ClaimedCall``, ``EndReport``...) are pure values of
``dialer.core.records``: the ports import no storage code.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from dialer.core import chain, escalation
from dialer.core.alerts import Alert, AlertAction, AlertRoute
from dialer.core.cluster import LeaseTerms, NodeLease, NodeLoad
from dialer.core.domain import CampaignSettings, Kind, Outcome
from dialer.core.health import HealthPolicy
from dialer.core.keys import RandomBelow
from dialer.core.permissions import Role
from dialer.core.recipients import NumberRules, Recipient
from dialer.core.records import (
    AttemptMeta,
    EndReport,
    GlobalSettings,
    MailJob,
    TemplateView,
    Tick,
    TrunkHealthView,
)
from dialer.core.routing import TrunkLoad
from dialer.core.scheduler import Counts


class MailPort(Protocol):
    """What the mail thread asks of the storage (``dialer.mailqueue.MailQueue``)."""

    def mail_job(self, campaign_id: int, trigger: str, recipient_id: int | None = None,
                 attempt_id: str | None = None) -> MailJob | None:
        """Whom to mail for ``trigger`` (``launch`` / ``unreached``), or None."""
        ...

    def record_emails(self, campaign_id: int, results: Sequence[tuple[int, str, bool, str]], *,
                      at: float) -> None:
        """One ``email_sent`` / ``email_failed`` event per (recipient, address, sent, detail)."""
        ...

    def media_file(self, sha256: str, cache_dir: Path) -> Path:
        """The audio as a local file (written once into ``cache_dir``, named by its hash)."""
        ...


class DispatchPort(MailPort, Protocol):
    """What the daemon asks of the storage; shared by every node of one database.

    The contract (tests/test_store_contract.py runs it on every implementation):

    * ``tick`` decides and claims in one step: every call it returns already has its attempt
      (``open_attempts`` lists it) and its recipient is ``active``; it never exceeds the global,
      per-campaign, internal and external limits nor ``capacity``; fresh recipients first in list
      order, then retries whose delay has passed, the one called longest ago first; it moves
      campaigns scheduled -> active / blocked and active -> completed / incomplete.
    * ``finish_attempt`` is idempotent (None once closed) and returns the outcome stored:
      ``contacted`` when the attempt's recorded confirmations prove the message was heard;
      ``interrupted`` and ``trunk_down`` do not use an attempt.
    * ``recover`` closes the open attempts of one node, but those in ``keep``.
    * Nodes (``dialer.core.cluster``): ``join`` gives a new generation (``NodeConflict`` while
      another live node holds the name); ``renew`` extends the lease of that generation only
      while it runs (None otherwise); ``tick(lease=generation)`` raises ``LeaseLost`` unless
      the node holds that lease, and settles as ``node_lost`` (counted) the open attempts of
      every node whose lease ended more than its margin ago (``Tick.settled``).
    * ``escalate`` launches a run's follow-up once: a second call, another node's, or one after
      a crash finds the run decided.
    """

    @property
    def runs_sealed(self) -> int:
        """How many runs' histories this store has sealed since it started (a metric)."""
        ...

    @property
    def safe_url(self) -> str:
        """Where the data is, for logs (no password)."""
        ...

    def check_ready(self) -> None:
        """Raise ``DialerError`` when the storage is not initialised (or at an old schema)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether several nodes may share this storage (their workers are fenced then)."""
        ...

    def lock_node(self) -> None:
        """Refuse (``NodeConflict``) a second daemon where only one node may serve."""
        ...

    def start_checkpointer(self, interval: float = 0.05,
                           restart_frames: int | None = None) -> None:
        """Background housekeeping while the daemon runs (SQLite's log); may do nothing."""
        ...

    def stop_checkpointer(self) -> None:
        ...

    def get_settings(self) -> GlobalSettings:
        ...

    def tick(self, *, now: float, node: str, kinds_available: frozenset[Kind] = frozenset(Kind),
             capacity: int | None = None, lease: int | None = None,
             trunks: Sequence[TrunkLoad] | None = None,
             routes: Mapping[str, tuple[str, ...]] | None = None,
             draw: RandomBelow | None = None) -> Tick:
        """One scheduling pass: campaign transitions, then claim the calls to place now, each
        on a trunk of its route (``trunks``, ``routes``: ``dialer.core.routing``). ``draw``: the
        random source of the keys drawn per call (``dialer.core.keys``; None:
        ``secrets.randbelow``)."""
        ...

    def escalate(self, *, now: float) -> escalation.Pass:
        """Decide the runs whose escalation waits (``dialer.core.escalation``) and launch the
        follow-ups due: each run at most once, whatever the restarts and nodes."""
        ...

    def set_trunk_policies(self, policies: Mapping[str, HealthPolicy]) -> None:
        """Each trunk's health guard (``dialer.core.health``), from the configuration."""
        ...

    def trunk_registration(self, trunk: str, ok: bool, why: str, now: float) -> None:
        """A registration of the trunk succeeded or failed: failures in a row trip it."""
        ...

    def trunk_health(self, now: float) -> dict[str, TrunkHealthView]:
        """Every trunk ever judged, healthy or not (shared by every node)."""
        ...

    def join(self, *, node: str, host: str, address: str, pid: int, now: float,
             terms: LeaseTerms, pid_alive: Callable[[int], bool]) -> NodeLease:
        """Join the cluster: a new generation (fencing token) and a lease."""
        ...

    def renew(self, *, node: str, generation: int, now: float, terms: LeaseTerms,
              load: NodeLoad | None = None) -> float | None:
        """Extend the lease (and record the pool's ``load``); its new end, or None when it is
        no longer this node's."""
        ...

    def leave(self, *, node: str, generation: int, now: float) -> None:
        """A clean stop: the lease ends now."""
        ...

    def node_lease(self, node: str) -> NodeLease | None:
        ...

    def set_attempt_workers(self, pairs: Sequence[tuple[str, int]]) -> None:
        """Which worker carries each attempt."""
        ...

    def record_progress_many(self, items: Sequence[tuple[str, str, float, dict[str, Any]]], *,
                             once: bool = False) -> None:
        """Ringing, answered, keys, confirmations of open attempts, in order; ``once``: skip an
        item already recorded (same attempt, kind and time)."""
        ...

    def finish_attempt(self, report: EndReport) -> Outcome | None:
        """Close an attempt and apply it to its recipient; None if it was closed already."""
        ...

    def recover(self, *, node: str, now: float, keep: Collection[str] = ()) -> int:
        """Close this node's open attempts but ``keep`` as ``interrupted`` (or ``contacted``
        when confirmed); how many were closed."""
        ...

    def attempt_meta(self, ids: Collection[str]) -> dict[str, AttemptMeta]:
        """The open attempts among ``ids`` (closed or unknown ones left out)."""
        ...

    def open_attempts(self, node: str) -> list[str]:
        ...

    def running_counts(self) -> Counts:
        """Calls in progress across every node."""
        ...

    def list_campaigns(self, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every campaign with its recipients by state (the daemon's per-campaign gauges)."""
        ...


class AdminPort(Protocol):
    """What the CLI asks of the storage besides ``DispatchPort``."""

    # ----- the database itself -----

    def migrate(self) -> None:
        ...

    def dispose(self) -> None:
        ...

    # ----- settings -----

    def set_settings(self, *, actor: str, now: float, require_db_role: bool | None = None,
                     **changes: int | None) -> GlobalSettings:
        ...

    # ----- media and templates -----

    def add_media(self, *, data: bytes, sha256: str, rate: int, seconds: float,
                  source: str | None, now: float) -> str:
        ...

    def add_template(self, *, name: str, settings: CampaignSettings, audio_sha: str,
                     audio_seconds: float, recipients: Sequence[Recipient], now: float,
                     actor: str, enabled: bool = True, audit: bool = True) -> int:
        ...

    def get_template(self, name: str, *, with_recipients: bool = True) -> TemplateView:
        ...

    def list_templates(self) -> list[dict[str, Any]]:
        ...

    def edit_template(self, name: str, *, actor: str, now: float, new_name: str | None = None,
                      enabled: bool | None = None, audio_sha: str | None = None,
                      audio_seconds: float | None = None,
                      settings: CampaignSettings | None = None) -> dict[str, Any]:
        ...

    def clone_template(self, name: str, new_name: str, *, actor: str, now: float) -> int:
        ...

    def delete_template(self, name: str, *, actor: str, now: float) -> int:
        ...

    def template_recipient_add(self, name: str, rec: Recipient, *, actor: str, now: float,
                               position: int | None = None) -> int:
        ...

    def template_recipients_import(self, name: str, recs: Sequence[Recipient], *, actor: str,
                                   now: float, replace: bool = False,
                                   position: int | None = None,
                                   source: str | None = "import",
                                   lines: Sequence[int] | None = None) -> list[int]:
        ...

    def template_recipient_remove(self, name: str, ref: str, *, actor: str, now: float,
                                  rules: NumberRules = ...) -> dict[str, Any]:
        ...

    def template_recipient_move(self, name: str, ref: str, to: int, *, actor: str, now: float,
                                rules: NumberRules = ...) -> int:
        ...

    # ----- campaigns -----

    def start_campaign(self, *, template: str, name: str | None, now: float, start_at: float,
                       actor: str, audio_sha: str | None = None, audio_seconds: float | None = None,
                       recipients: Sequence[Recipient] | None = None,
                       tts_text: str | None = None) -> int:
        ...

    def campaign_detail(self, campaign_id: int) -> dict[str, Any]:
        ...

    def campaign_progress(self, campaign_id: int, *, since: float,
                          events: int = 8) -> dict[str, Any]:
        ...

    def attempts_of(self, campaign_id: int) -> list[dict[str, Any]]:
        ...

    def events_of(self, campaign_id: int) -> list[dict[str, Any]]:
        ...

    def set_campaign_state(self, campaign_id: int, action: str, *, actor: str, now: float) -> str:
        ...

    def grant_attempts(self, campaign_id: int, refs: Sequence[str], attempts: int, *,
                       actor: str, now: float,
                       rules: NumberRules = ...) -> list[int]:
        ...

    def stop_recipient(self, campaign_id: int, ref: str, *, actor: str, now: float,
                       rules: NumberRules = ...) -> dict[str, Any]:
        ...

    def delete_campaign(self, campaign_id: int, *, actor: str, now: float) -> None:
        ...

    # ----- operators and audit -----

    def check_db_role(self, operator: str) -> None:
        ...

    def roles_of(self, name: str) -> frozenset[Role]:
        ...

    def ensure_first_admin(self, name: str, *, now: float) -> bool:
        ...

    def list_operators(self) -> list[dict[str, Any]]:
        ...

    def nodes(self) -> list[dict[str, Any]]:
        """Every node of the cluster with its lease and calls in progress (``dialer nodes``)."""
        ...

    def set_operator(self, name: str, roles: frozenset[Role], *, actor: str, now: float) -> None:
        ...

    def remove_operator(self, name: str, *, actor: str, now: float) -> None:
        ...

    def audit_list(self, since: float | None = None) -> list[dict[str, Any]]:
        ...

    # ----- history (runs) -----

    def list_runs(self) -> list[dict[str, Any]]:
        ...

    def run_history(self, run_id: int) -> dict[str, Any]:
        ...

    def verify_run(self, run_id: int, expect_head: str | None = None) -> chain.Report:
        """Recompute a run's history chain from its stored rows (``dialer.core.chain``)."""
        ...

    def recipient_attempts(self, campaign_id: int, ref: str,
                           rules: NumberRules = ...) -> dict[str, Any]:
        ...

    def alert_launches(self) -> list[dict[str, Any]]:
        """Every firing period of an Alertmanager alert recorded, oldest first."""
        ...


class AlertPort(Protocol):
    """What the Alertmanager receiver needs: who may launch, and the launch and resolution of
    an alert's campaign, each once per firing period (``dialer.core.alerts``)."""

    def roles_of(self, name: str) -> frozenset[Role]:
        ...

    def alert_fired(self, alert: Alert, route: AlertRoute, *, actor: str,
                    now: float) -> tuple[AlertAction, int | None]:
        ...

    def alert_resolved(self, alert: Alert, route: AlertRoute, *, actor: str,
                       now: float) -> tuple[AlertAction, int | None]:
        ...


class StorePort(DispatchPort, AdminPort, Protocol):
    """Everything: what the CLI holds (``SqlStore``)."""
