"""Prometheus metrics of the daemon (prometheus-client), on their own registry.

Every name starts with ``dialer_``; counters end in ``_total`` (prometheus-client appends it),
durations are in seconds and end in ``_seconds``. The full set:

========================================  =========  ===============================================
metric                                    type       labels / meaning
========================================  =========  ===============================================
dialer_campaigns                          gauge      ``state``: campaigns in each of 7 states
dialer_campaign_state                     gauge      ``campaign``, ``state``: 1 for the current
                                                     state of each *live* campaign, 0 for its other
                                                     live states
dialer_recipients                         gauge      ``campaign``, ``state``: recipients by state of
                                                     each *live* campaign
dialer_calls_in_progress                  gauge      ``kind`` (internal/external), ``trunk``
dialer_attempts_total                     counter    ``outcome``, ``status_class`` (1xx..6xx, none)
dialer_confirmations_total                counter    ``what``: answer (key 1), listen (key 9)
dialer_confirmations_refused_total        counter    ``what``: a wrong digit at the prompt of a
                                                     random key (``dialer.core.keys``)
dialer_transfers_total                    counter    ``result``: requested, accepted, connected,
                                                     failed (the connect key's blind transfers)
dialer_max_calls                          gauge      ``scope`` (total/internal/external); a scope
                                                     that is unlimited has **no** series
dialer_max_active_campaigns               gauge      absent when unlimited
dialer_trunk_registered                   gauge      ``trunk``: 1 when it can place calls
dialer_trunk_registration_status_code     gauge      ``trunk``: last REGISTER final status, 0 = none
dialer_trunk_healthy                      gauge      ``trunk``: 0 while its health guard keeps it
                                                     out of service (``dialer.core.health``)
dialer_worker_pool_size                   gauge      worker processes the elastic pool keeps now
dialer_worker_pool_ceiling                gauge      the most it may keep (the global call limit's)
dialer_workers_ready                      gauge      worker processes ready for calls
dialer_worker_slots                       gauge      call slots of the ready workers
dialer_workers_late                       gauge      workers running late: no new calls on them
dialer_node_call_ceiling                  gauge      the overload hold: calls this node carries at
                                                     most (0: no hold; ``dialer.core.admission``)
dialer_worker_loop_lag_seconds            gauge      the latest worker loop (the gate's measure)
dialer_worker_cpu_wait_ratio              gauge      worst CPU wait of a worker thread (of 1 s)
dialer_worker_busy_slots                  gauge      call slots in use
dialer_worker_restarts_total              counter    worker processes restarted after dying
dialer_node_lease_valid                   gauge      ``node``: 1 while this node holds its lease and
                                                     may place calls (0: fenced, or rejoining)
dialer_node_lease_remaining_seconds       gauge      ``node``: seconds until the lease ends
dialer_node_generation                    gauge      ``node``: the generation it joined with
dialer_node_fenced_total                  counter    ``node``, ``reason`` (not_renewed, lease_lost):
                                                     times it hung up its calls to stay fenced
dialer_database_up                        gauge      ``node``: 1 when its last transaction succeeded
dialer_nodes_lost_total                   counter    ``node``: other nodes it declared lost
dialer_node_lost_calls_total              counter    ``node``: calls of lost nodes it settled
dialer_scheduler_decision_seconds         histogram  one scheduling pass (claim included)
dialer_call_setup_seconds                 histogram  ``kind``: INVITE sent -> answered
dialer_call_ring_seconds                  histogram  ``kind``: first ringing -> answer, give-up
dialer_campaign_info                      gauge      ``campaign``, ``name``, ``template``: 1 per
                                                     *live* campaign
dialer_emails_total                       counter    ``result`` (sent, failed): campaign e-mails
dialer_alertmanager_requests_total        counter    ``result``: Alertmanager webhook requests
                                                     (ok, bad_request, unauthorized, forbidden,
                                                     not_found, method_not_allowed, too_large,
                                                     unavailable)
dialer_alertmanager_alerts_total          counter    ``action``: launched, duplicate, unmatched,
                                                     stopped, resolved, failed
dialer_alert_launches_total               counter    ``alertname``, ``template``: campaigns
                                                     launched by an alert
dialer_build_info                         gauge      ``version``, ``python``: 1
process_*, python_info                    (several)  the daemon process (prometheus-client's
                                                     ProcessCollector, PlatformCollector)
========================================  =========  ===============================================

No ``_created`` series: prometheus-client's are disabled (``disable_created_metrics``), they only
double the series of every counter and histogram.

*Live* campaigns are those that may still place calls: scheduled, active, blocked, suspended.
Completed, terminated and incomplete campaigns lose their ``campaign`` label sets (bounded
cardinality: the number of labelled series follows the live campaigns, not the history).

Unlimited limits are **absent** rather than a sentinel such as -1, so that PromQL such as
``sum(dialer_calls_in_progress) / on() dialer_max_calls{scope="total"}`` simply has no result for
an unlimited limit instead of a negative ratio; dashboards show "unlimited" for no data.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)

from dialer.core.alerts import AlertAction
from dialer.core.domain import CampaignState, Limits, RecipientState
from dialer.core.errors import ConfigError
from dialer.core.records import GlobalSettings

logger = logging.getLogger(__name__)

LIVE_STATES: frozenset[str] = frozenset(s.value for s in (
    CampaignState.SCHEDULED, CampaignState.ACTIVE, CampaignState.BLOCKED, CampaignState.SUSPENDED))
"""Campaign states that keep a ``campaign`` label (the campaign may still place calls)."""

STATUS_CLASSES: tuple[str, ...] = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "none")

SCHEDULER_BUCKETS = (.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1.0)
SETUP_BUCKETS = (.1, .25, .5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 45.0, 60.0, 90.0)
RING_BUCKETS = (.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0)

CAMPAIGN_METRICS_INTERVAL = 5.0  # seconds between two refreshes of the per-campaign gauges
MAX_TRACKED_CALLS = 10_000  # a call whose end never comes must not grow the timer table forever


def _version() -> str:
    try:
        return version("alert-dialer")
    except PackageNotFoundError:
        return "unknown"


ALERT_REQUEST_RESULTS = ("ok", "bad_request", "unauthorized", "forbidden", "not_found",
                         "method_not_allowed", "too_large", "unavailable")


def status_class(status: int | None) -> str:
    """``486`` -> ``"4xx"``; no status (or not a SIP status) -> ``"none"``."""
    if status is None or not 100 <= status <= 699:
        return "none"
    return f"{status // 100}xx"


class _Legacy:
    """The one-label form the daemon used before the trunk/status-class labels existed.

    ``calls.labels("internal")`` and ``attempts.labels("busy")`` keep working until the daemon
    calls ``set_calls_in_progress`` / ``record_attempt``; the missing label is filled in
    (trunk = kind, true of today's configuration; status class ``none``).
    """

    def __init__(self, metric: Gauge | Counter, fill: Callable[[str], tuple[str, str]]) -> None:
        self._metric = metric
        self._fill = fill

    def labels(self, value: str) -> Any:
        """The child for the legacy label value, with the missing label filled in."""
        return self._metric.labels(*self._fill(value))


@dataclass
class _CallTimes:
    kind: str
    started: float
    ringing: float | None = None
    answered: float | None = None


class Metrics:
    """The daemon's metrics; ``serve`` exposes them over HTTP for Prometheus to scrape.

    The daemon feeds it through the methods (``record_attempt``, ``set_calls_in_progress``,
    ``update_campaigns``, ``set_limits``, ``set_trunk``, ``set_pool``, ``call_started`` ...);
    the metric objects themselves stay public attributes for the few direct uses
    (``scheduler_seconds.observe``, ``worker_restarts.inc``, ``confirmations.labels(what).inc``).
    """

    def __init__(self, node: str = "local") -> None:
        """``node``: this node's name (the ``node`` label of the node metrics)."""
        self.node = node
        self.registry = CollectorRegistry()
        r = self.registry
        disable_created_metrics()  # type: ignore[no-untyped-call]
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Info("dialer_build", "The running dialer: its version and Python's.",
             registry=r).info({"version": _version(), "python": platform.python_version()})
        self.campaign_info = Gauge("dialer_campaign_info",
                                   "1 per live campaign, with its name and template (join on "
                                   "campaign).", ["campaign", "name", "template"], registry=r)
        self.emails = Counter("dialer_emails", "E-mails of campaign messages, by result.",
                              ["result"], registry=r)
        for result in ("sent", "failed"):
            self.emails.labels(result)
        self.escalations = Counter("dialer_escalations",
                                   "Runs whose escalation was decided, by result (launched: the "
                                   "follow-up started; never: not needed; failed: the follow-up "
                                   "could not be launched).", ["result"], registry=r)
        for result in ("launched", "never", "failed"):
            self.escalations.labels(result)
        self.alert_requests = Counter("dialer_alertmanager_requests",
                                      "Webhook requests of the Alertmanager receiver, by result.",
                                      ["result"], registry=r)
        for result in ALERT_REQUEST_RESULTS:
            self.alert_requests.labels(result)
        self.alerts = Counter("dialer_alertmanager_alerts",
                              "Alerts the Alertmanager receiver handled, by action.",
                              ["action"], registry=r)
        for action in AlertAction:
            self.alerts.labels(action.value)
        self.alert_launches = Counter("dialer_alert_launches",
                                      "Campaigns launched by an Alertmanager alert.",
                                      ["alertname", "template"], registry=r)
        self._info: dict[str, tuple[str, str]] = {}
        self._campaigns_at = float("-inf")  # time.monotonic() of the last refresh_campaigns
        self.campaigns = Gauge("dialer_campaigns", "Campaigns by state.", ["state"], registry=r)
        self.campaigns_waiting_window = Gauge(
            "dialer_campaigns_waiting_window",
            "Active campaigns placing no call because their calling window is closed in "
            "every zone of their recipients.", registry=r)
        self.campaign_state = Gauge(
            "dialer_campaign_state",
            "1 for the current state of each live campaign, 0 for the other live states "
            "(scheduled, active, blocked, suspended).", ["campaign", "state"], registry=r)
        self.recipients = Gauge("dialer_recipients",
                                "Recipients by state, per live campaign.",
                                ["campaign", "state"], registry=r)
        self.calls_in_progress = Gauge("dialer_calls_in_progress",
                                       "Calls in progress, by kind and trunk.",
                                       ["kind", "trunk"], registry=r)
        self.attempts_total = Counter("dialer_attempts",
                                      "Finished call attempts, by outcome and SIP status class.",
                                      ["outcome", "status_class"], registry=r)
        self.confirmations = Counter("dialer_confirmations",
                                     "DTMF confirmations received (answer: key 1, listen: key 9).",
                                     ["what"], registry=r)
        self.refusals = Counter("dialer_confirmations_refused",
                                "Wrong digits at the prompt of a random key (answer, listen).",
                                ["what"], registry=r)
        self.transfers = Counter("dialer_transfers",
                                 "Steps of transfers to the connect key's URI (requested, "
                                 "accepted, connected, failed).", ["result"], registry=r)
        self.max_calls = Gauge("dialer_max_calls",
                               "Global concurrent-call limit in force; absent when unlimited.",
                               ["scope"], registry=r)
        self.max_active_campaigns = Gauge(
            "dialer_max_active_campaigns",
            "Global limit of simultaneously active campaigns; absent when unlimited.",
            registry=r)
        self.trunk_registered = Gauge("dialer_trunk_registered",
                                      "1 when the trunk can place calls (registered or "
                                      "needing no registration).", ["trunk"], registry=r)
        self.trunk_healthy = Gauge("dialer_trunk_healthy",
                                   "0 while the trunk's health guard keeps it out of service "
                                   "(too many unreachable/congestion outcomes), else 1.",
                                   ["trunk"], registry=r)
        self.trunk_status = Gauge("dialer_trunk_registration_status_code",
                                  "Final SIP status of the trunk's last REGISTER (0: none yet).",
                                  ["trunk"], registry=r)
        self.pool_size = Gauge("dialer_worker_pool_size",
                               "SIP worker processes the elastic pool keeps now, running or "
                               "starting.", registry=r)
        self.pool_ceiling = Gauge("dialer_worker_pool_ceiling",
                                  "The most SIP worker processes the pool may keep (the global "
                                  "call limit's, at most [sip] workers).", registry=r)
        self.workers_ready = Gauge("dialer_workers_ready", "SIP worker processes ready.",
                                   registry=r)
        self.call_ceiling = Gauge("dialer_node_call_ceiling",
                                  "The overload hold: the most calls this node carries while "
                                  "short of CPU (0: no hold).", registry=r)
        self.workers_late = Gauge("dialer_workers_late",
                                  "SIP workers whose event loop runs late (the machine is short "
                                  "of CPU): they take no new calls until they catch up.",
                                  registry=r)
        self.worker_lag = Gauge("dialer_worker_loop_lag_seconds",
                                "How late the latest worker's event loop comes round (the "
                                "overload gate's first measure).", registry=r)
        self.worker_wait = Gauge("dialer_worker_cpu_wait_ratio",
                                 "The largest share of the last second a worker thread waited "
                                 "for a CPU (the overload gate's second measure).", registry=r)
        self.worker_slots = Gauge("dialer_worker_slots", "Call slots of the ready workers.",
                                  registry=r)
        self.workers_busy = Gauge("dialer_worker_busy_slots", "Call slots in use in the pool.",
                                  registry=r)
        self.worker_restarts = Counter("dialer_worker_restarts", "SIP workers restarted.",
                                       registry=r)
        self.sip_dropped = Counter("dialer_sip_dropped",
                                   "SIP messages the workers dropped unanswered, by reason "
                                   "(foreign_source: not from a configured trunk; "
                                   "not_dialog_peer: inside a call, not from its far end).",
                                   ["reason"], registry=r)
        for reason in ("foreign_source", "not_dialog_peer"):
            self.sip_dropped.labels(reason)
        self.lease_valid = Gauge("dialer_node_lease_valid",
                                 "1 while this node holds its lease and may place calls.",
                                 ["node"], registry=r)
        self.lease_remaining = Gauge("dialer_node_lease_remaining_seconds",
                                     "Seconds until this node's lease ends.", ["node"],
                                     registry=r)
        self.generation = Gauge("dialer_node_generation",
                                "The generation (fencing token) this node joined with.",
                                ["node"], registry=r)
        self.fenced = Counter("dialer_node_fenced",
                              "Times this node hung up its calls because its lease was not "
                              "renewed in time or was lost.", ["node", "reason"], registry=r)
        self.database_up = Gauge("dialer_database_up",
                                 "1 when this node's last database transaction succeeded.",
                                 ["node"], registry=r)
        self.nodes_lost = Counter("dialer_nodes_lost",
                                  "Other nodes this node declared lost (lease ended).",
                                  ["node"], registry=r)
        self.runs_sealed = Counter("dialer_runs_sealed",
                                   "Runs whose history this node sealed (their attempts and "
                                   "events chained by SHA-256: dialer history verify).",
                                   ["node"], registry=r)
        self.node_lost_calls = Counter("dialer_node_lost_calls",
                                       "Open calls of lost nodes this node settled as node_lost.",
                                       ["node"], registry=r)
        self.scheduler_seconds = Histogram("dialer_scheduler_decision_seconds",
                                           "Time of one scheduling pass.", registry=r,
                                           buckets=SCHEDULER_BUCKETS)
        self.setup_seconds = Histogram("dialer_call_setup_seconds",
                                       "Call setup time: INVITE sent to answer (answered calls).",
                                       ["kind"], registry=r, buckets=SETUP_BUCKETS)
        self.ring_seconds = Histogram("dialer_call_ring_seconds",
                                      "Ring time: first ringing to answer, or to the end of a "
                                      "call never answered.", ["kind"], registry=r,
                                      buckets=RING_BUCKETS)
        # the pre-trunk/status-class call forms of the daemon (see _Legacy)
        self.calls = _Legacy(self.calls_in_progress, lambda kind: (kind, kind))
        self.attempts = _Legacy(self.attempts_total, lambda outcome: (outcome, "none"))
        for state in CampaignState:
            self.campaigns.labels(state.value).set(0)
        for what in ("answer", "listen"):
            self.confirmations.labels(what)
            self.refusals.labels(what)
        for result in ("requested", "accepted", "connected", "failed"):
            self.transfers.labels(result)
        self.lease_valid.labels(node).set(0)
        self.lease_remaining.labels(node).set(0)
        self.generation.labels(node).set(0)
        for reason in ("not_renewed", "lease_lost"):
            self.fenced.labels(node, reason)
        self.database_up.labels(node).set(1)
        self.nodes_lost.labels(node)
        self.node_lost_calls.labels(node)
        self.runs_sealed.labels(node)
        self._sealed = 0
        self._live: set[str] = set()
        self._call_labels: set[tuple[str, str]] = set()
        self._max_campaigns_registered = True
        self._calls: dict[str, _CallTimes] = {}
        self._server: Any = None

    # ----- this node's lease -----

    def set_lease(self, *, valid: bool, remaining: float, generation: int | None = None) -> None:
        self.lease_valid.labels(self.node).set(1 if valid else 0)
        self.lease_remaining.labels(self.node).set(max(0.0, remaining))
        if generation is not None:
            self.generation.labels(self.node).set(generation)

    def node_fenced(self, reason: str) -> None:
        self.fenced.labels(self.node, reason).inc()

    def set_database_up(self, up: bool) -> None:
        self.database_up.labels(self.node).set(1 if up else 0)

    def nodes_settled(self, calls: int) -> None:
        """This node declared another lost and settled ``calls`` of its open calls."""
        self.nodes_lost.labels(self.node).inc()
        self.node_lost_calls.labels(self.node).inc(calls)

    def set_runs_sealed(self, total: int) -> None:
        """The store of this node has sealed ``total`` runs since it started."""
        if total > self._sealed:
            self.runs_sealed.labels(self.node).inc(total - self._sealed)
            self._sealed = total

    # ----- attempts and calls -----

    def record_attempt(self, outcome: str, status: int | None) -> None:
        """Count one finished attempt (``outcome`` value, final SIP status or None)."""
        self.attempts_total.labels(outcome, status_class(status)).inc()

    def record_email(self, sent: bool) -> None:
        """Count one e-mail of a campaign's message, sent or failed."""
        self.emails.labels("sent" if sent else "failed").inc()

    def alert_request(self, result: str) -> None:
        """Count one webhook request of the Alertmanager receiver (``ALERT_REQUEST_RESULTS``)."""
        self.alert_requests.labels(result).inc()

    def alert_handled(self, action: str, alertname: str, template: str | None) -> None:
        """Count one alert the receiver handled; a launch also under its alert and template."""
        self.alerts.labels(action).inc()
        if action == "launched" and template is not None:
            self.alert_launches.labels(alertname, template).inc()

    def progress(self, what: str, label: str) -> None:
        """Count a call's progress (``dialer.progress.Progress.counter``): a confirmation, a
        refused digit, a step of a transfer."""
        {"confirmation": self.confirmations, "refusal": self.refusals,
         "transfer": self.transfers}[what].labels(label).inc()

    def set_calls_in_progress(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Set calls in progress by ``(kind, trunk)``; pairs seen before and not given drop to 0."""
        for labels in self._call_labels - set(counts):
            self.calls_in_progress.labels(*labels).set(0)
        for (kind, trunk), n in counts.items():
            self.calls_in_progress.labels(kind, trunk).set(n)
            self._call_labels.add((kind, trunk))

    def call_started(self, call_id: str, kind: str, at: float) -> None:
        """The INVITE of ``call_id`` left (``at``: the attempt's creation time)."""
        if len(self._calls) >= MAX_TRACKED_CALLS:
            self._calls.pop(next(iter(self._calls)))
        self._calls[call_id] = _CallTimes(kind=kind, started=at)

    def call_ringing(self, call_id: str, at: float) -> None:
        """The first 180/183 of ``call_id`` (later ones are ignored)."""
        t = self._calls.get(call_id)
        if t is not None and t.ringing is None:
            t.ringing = at

    def call_answered(self, call_id: str, at: float) -> None:
        """``call_id`` was answered: observe its setup time and its ring time."""
        t = self._calls.get(call_id)
        if t is None or t.answered is not None:
            return
        t.answered = at
        self.setup_seconds.labels(t.kind).observe(max(0.0, at - t.started))
        if t.ringing is not None:
            self.ring_seconds.labels(t.kind).observe(max(0.0, at - t.ringing))

    def call_ended(self, call_id: str, at: float, answered_at: float | None = None) -> None:
        """``call_id`` ended; a call that rang and was never answered observes its ring time.

        ``answered_at`` (from the end report) covers an answer whose own event was missed.
        """
        if answered_at is not None:
            self.call_answered(call_id, answered_at)
        t = self._calls.pop(call_id, None)
        if t is not None and t.answered is None and t.ringing is not None:
            self.ring_seconds.labels(t.kind).observe(max(0.0, at - t.ringing))

    # ----- campaigns and recipients -----

    def set_campaigns(self, by_state: Mapping[str, int]) -> None:
        """Campaigns per state; a state not given is 0."""
        for state in CampaignState:
            self.campaigns.labels(state.value).set(by_state.get(state.value, 0))

    def set_campaign_recipients(self, states_by_campaign: Mapping[int, Mapping[str, int]],
                                campaign_states: Mapping[int, str] | None = None) -> None:
        """Recipients by state for each live campaign given; campaigns not given lose their series.

        Every recipient state is exported for a given campaign (0 when absent), so stacked graphs
        add up. ``campaign_states`` (campaign id -> state) also sets ``dialer_campaign_state``.
        """
        given = {str(cid) for cid in states_by_campaign}
        for gone in self._live - given:
            for state in RecipientState:
                self._remove(self.recipients, gone, state.value)
            for cstate in sorted(LIVE_STATES):
                self._remove(self.campaign_state, gone, cstate)
        for cid, states in states_by_campaign.items():
            for state in RecipientState:
                self.recipients.labels(str(cid), state.value).set(states.get(state.value, 0))
            current = (campaign_states or {}).get(cid)
            if current is not None:
                for cstate in sorted(LIVE_STATES):
                    self.campaign_state.labels(str(cid), cstate).set(1 if cstate == current else 0)
        self._live = given

    def update_campaigns(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Everything about campaigns from ``SqlStore.list_campaigns()`` rows, in one call.

        Each row has ``id``, ``state`` and the recipient counts ``idle``, ``active``,
        ``contacted``, ``failed``, ``stopped`` (and ``name``, ``template`` for
        ``dialer_campaign_info``).
        """
        rows = list(rows)
        by_state: dict[str, int] = {}
        recipients: dict[int, dict[str, int]] = {}
        states: dict[int, str] = {}
        for row in rows:
            state = str(row["state"])
            by_state[state] = by_state.get(state, 0) + 1
            if state in LIVE_STATES:
                cid = int(row["id"])
                recipients[cid] = {s.value: int(row.get(s.value, 0) or 0) for s in RecipientState}
                states[cid] = state
        self.set_campaigns(by_state)
        self.set_campaign_recipients(recipients, states)
        info = {str(row["id"]): (str(row.get("name") or ""), str(row.get("template") or ""))
                for row in rows if str(row["state"]) in LIVE_STATES}
        for key, labels in self._info.items():
            if info.get(key) != labels:
                self._remove(self.campaign_info, key, *labels)
        for key, labels in info.items():
            self.campaign_info.labels(key, *labels).set(1)
        self._info = info

    # ----- limits, trunks, pool -----

    def refresh_campaigns(self, read: Callable[[], list[dict[str, Any]]]) -> None:
        """Every campaign's recipients by state (``update_campaigns``), from ``read()`` (a read
        of every campaign), at most every ``CAMPAIGN_METRICS_INTERVAL``."""
        if time.monotonic() - self._campaigns_at >= CAMPAIGN_METRICS_INTERVAL:
            self._campaigns_at = time.monotonic()
            self.update_campaigns(read())

    def after_pass(self, settings: GlobalSettings, waiting_window: int) -> None:
        """What a scheduling pass tells: the limits in force, the campaigns waiting for their
        calling window."""
        self.set_limits(settings.limits, settings.max_campaigns)
        self.campaigns_waiting_window.set(waiting_window)

    def set_limits(self, limits: Limits, max_campaigns: int | None) -> None:
        """The global limits in force; ``None`` (unlimited) removes the series."""
        for scope, value in (("total", limits.total), ("internal", limits.internal),
                             ("external", limits.external)):
            if value is None:
                self._remove(self.max_calls, scope)
            else:
                self.max_calls.labels(scope).set(value)
        if max_campaigns is None:
            # an unlabelled gauge cannot be removed: unregister it, register it again when set
            if self._max_campaigns_registered:
                self.registry.unregister(self.max_active_campaigns)
                self._max_campaigns_registered = False
        else:
            if not self._max_campaigns_registered:
                self.registry.register(self.max_active_campaigns)
                self._max_campaigns_registered = True
            self.max_active_campaigns.set(max_campaigns)

    def set_trunk(self, trunk: str, registered: bool, code: int | None = None) -> None:
        """Registration state of ``trunk``; ``code`` is the last REGISTER status (None: keep)."""
        self.trunk_registered.labels(trunk).set(1 if registered else 0)
        child = self.trunk_status.labels(trunk)
        if code is not None:
            child.set(code)

    def set_trunk_health(self, trunk: str, healthy: bool) -> None:
        self.trunk_healthy.labels(trunk).set(1 if healthy else 0)

    def set_pool(self, *, size: int, ready: int, busy: int, slots: int, ceiling: int | None = None,
                 late: int = 0, lag: float = 0.0, wait: float = 0.0,
                 held: int | None = None) -> None:
        """The worker pool: the workers kept now and their ceiling, ready workers, busy slots,
        slots of the ready workers, workers running late (taking no new calls), the worst loop
        lag and CPU wait."""
        self.pool_ceiling.set(size if ceiling is None else ceiling)
        self.call_ceiling.set(held or 0)
        self.workers_late.set(late)
        self.worker_lag.set(lag)
        self.worker_wait.set(wait)
        self.pool_size.set(size)
        self.workers_ready.set(ready)
        self.workers_busy.set(busy)
        self.worker_slots.set(slots)

    # ----- exposition -----

    def render(self) -> bytes:
        """The registry in the Prometheus text format (what the endpoint serves)."""
        return generate_latest(self.registry)

    def serve(self, bind: str, port: int) -> None:
        """Serve ``/metrics`` over HTTP on ``bind:port`` (a daemon thread); a ConfigError when
        that address cannot be had (another ``dialer serve`` holds it)."""
        try:
            self._server = start_http_server(port, addr=bind, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"[metrics] cannot listen on {bind}:{port}: {exc.strerror or exc} "
                              "(another dialer serve? change [metrics] port)") from exc

    @property
    def port(self) -> int | None:
        """The port actually bound (useful with port 0), or None when not serving."""
        if self._server is None:
            return None
        return int(self._server[0].server_address[1])

    def stop(self) -> None:
        """Stop the HTTP endpoint, if serving."""
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            thread.join(timeout=2)
            server.server_close()
            self._server = None

    # ----- helpers -----

    @staticmethod
    def _remove(metric: Gauge, *labels: str) -> None:
        with contextlib.suppress(KeyError):
            metric.remove(*labels)
