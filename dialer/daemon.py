"""``dialer serve``: the daemon. Drives the scheduler over the store, the worker pool and the
metrics (``dialer.bootstrap`` builds them).

One thread, one loop: wait on the gateway (the SIP workers) with a timeout that ends exactly when
the next thing falls due (a scheduled start, a retry delay, a worker restart): the scheduler reruns
at that instant, not at the next poll. Every call end, every new worker and every registration
change reruns it at once. A safety pass at most ``safety_interval`` (one second) after the last one
notices what the CLI changed from another process (new campaigns, resumed ones, settings); it is a
normal scheduling pass, a few indexed reads when nothing changed (see bench/RESULTS.md).

The loop is written against two ports, a clock and a ``Gateway`` (dialer.gateway): ``dialer
serve`` wires the wall clock and ``PoolGateway`` (the PJSUA2 worker processes) through
``dialer.bootstrap``; the simulator of the test suite (tests/sim.py) wires a virtual clock and a
fake gateway and drives this same ``step``.

Nothing lost, nothing repeated: the attempt row is committed before the dial leaves (its id is
the SIP Call-ID); workers' events are acknowledged once committed, kept while the database does
not answer. No pass claims without this node's lease (dialer.membership).
"""

from __future__ import annotations

import logging
import secrets
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from dialer import ipc, messages
from dialer.config import Config
from dialer.core import elastic
from dialer.core.domain import EmailPolicy, Outcome
from dialer.core.errors import LeaseLost, StoreUnavailable
from dialer.core.keys import RandomBelow
from dialer.core.ports import DispatchPort
from dialer.core.records import ClaimedCall, EndReport
from dialer.escalator import Escalator
from dialer.gateway import Gateway
from dialer.mailqueue import MailQueue
from dialer.membership import RETRY_S, Membership
from dialer.metrics import Metrics
from dialer.progress import PROGRESS, progress_of
from dialer.sdnotify import Notifier
from dialer.trunkbook import TrunkBook

logger = logging.getLogger(__name__)

MAX_WAIT = 1.0
RESOLVE_INTERVAL = 60.0  # seconds between resolutions of the trunks' hosts (trusted sources)

class Service(Protocol):
    """Something that runs beside the loop for the daemon's life (``dialer.alerthook``)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


WorkerInit = Callable[[int], ipc.Init]
"""The first message SIP worker N gets (its trunks, RTP ports, trusted sources): the daemon's
``init_message``, which a gateway of worker processes needs to start them."""


class Daemon:
    """The long-running dialer process."""

    def __init__(self, config: Config, store: DispatchPort, *,
                 clock: Callable[[], float] = time.time,
                 prompts: Callable[[str], dict[str, Path]] | None = None,
                 key_prompts: Callable[[str, str, str], Path] | None = None,
                 draw: RandomBelow | None = None,
                 durations: Callable[[str], float] | None = None,
                 gateway: Gateway | None = None,
                 make_gateway: Callable[[WorkerInit], Gateway] | None = None,
                 metrics: Metrics | None = None,
                 mail: MailQueue | None = None,
                 safety_interval: float = MAX_WAIT,
                 handle_signals: bool = True, notifier: Notifier | None = None,
                 services: Sequence[Service] = ()) -> None:
        """The gateway is given (``gateway``: the simulator's fake) or made from the daemon's
        ``init_message`` (``make_gateway``: ``dialer.bootstrap`` wires the SIP worker pool
        so). ``metrics`` and ``mail`` default to a fresh registry and a mail queue on
        ``store``. ``draw``: the random source of the keys drawn per call (a test gives a
        seeded one); ``key_prompts``: (language, prompt, digit) -> the prompt saying that digit;
        ``services`` (the Alertmanager receiver) start with it and stop first."""
        from media.audio import wav_seconds
        from media.prompts import key_prompt_path, prompt_set

        self.config = config
        self.store: DispatchPort = store
        self.clock = clock
        self.dials = messages.Dials(prompts or prompt_set, key_prompts or key_prompt_path,
                                    durations or wav_seconds)
        self._draw: RandomBelow = draw or secrets.randbelow
        if gateway is None:
            if make_gateway is None:
                raise TypeError("Daemon needs a gateway or make_gateway "
                                "(dialer.bootstrap.daemon wires the SIP worker pool)")
            gateway = make_gateway(self.init_message)
        self.gateway: Gateway = gateway
        self.safety_interval = safety_interval
        self.resolve_interval = RESOLVE_INTERVAL
        self.handle_signals = handle_signals
        self.metrics = metrics if metrics is not None else Metrics(node=config.node)
        self.escalator = Escalator(store, self.metrics)
        self.book = TrunkBook(config, store, self.metrics, clock)
        self.trunks = self.book.states  # name -> registration state
        self._pool_wanted = 0
        # attempt id -> (campaign, recipient, e-mail setting) of the calls this node placed
        self._call_meta: dict[str, tuple[int, int, str]] = {}
        self.mail = mail if mail is not None else MailQueue(
            store, config.smtp, config.data_dir / "media", clock=clock,
            counted=self.metrics.record_email)
        self.stopping = threading.Event()
        self.services = tuple(services)
        self.notifier = notifier or Notifier({})  # systemd's (bootstrap), else none
        self.ticks = 0  # scheduling passes so far (the simulator checks after each)
        self._dirty = True
        self._next_due: float | None = None
        self._last_tick = float("-inf")
        self._settings_version = -1
        self._shutting_down = False
        # Progress events and worker assignments wait here until the end of the loop round (or
        # the next call end) and go to the database in one transaction (bench/RESULTS.md).
        self._progress: list[tuple[str, str, float, dict[str, Any]]] = []
        self._replaying = False  # handling what re-attached workers kept (_reconcile)
        self.handing_over = False  # stopping leaves the calls to the workers (hand_over)
        self._assigned: list[tuple[str, int]] = []
        self._hangups: set[str] = set()  # calls of stopped campaigns asked to hang up
        # Where SIP is accepted from (the trunks' hosts, resolved): at start, then again every
        # RESOLVE_INTERVAL s off the loop (a slow resolver must not stall dialling); a
        # re-resolution where a host fails keeps the last list.
        self._sources: list[str] = []
        self._sources_new: list[str] | None = None
        self._resolver: threading.Thread | None = None
        # This node's lease on the database (dialer.membership): no pass claims without it.
        self.membership = Membership(store, node=config.node, address=config.bind,
                                     lease=config.lease.lease, heartbeat=config.lease.heartbeat,
                                     gateway=self.gateway, metrics=self.metrics, clock=clock,
                                     fence_workers=store.shared)
        # While the database does not answer: the events not committed yet (acknowledged to
        # the workers only once they are), and when to try again.
        self._backlog: list[tuple[int, ipc.Event]] = []
        self._down_since: float | None = None
        self._retry_at = float("-inf")

    # ----- wiring -----

    def init_message(self, index: int) -> ipc.Init:
        return messages.init_message(self.config, index, self._sources)

    def _pool_size(self, total: int | None) -> int:
        """Workers needed for the global call limit (all of ``[sip] workers`` if unlimited)."""
        if total is None:
            return self.config.workers
        return min(self.config.workers, -(-total // self.config.calls_per_worker))

    # ----- the loop -----

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or ``stopping`` is set)."""
        self.start()
        self.notifier.ready(f"serving: node {self.config.node}, {self.config.workers} workers")
        try:
            while not self.stopping.is_set():
                self.step()
                self.notifier.alive()
        finally:
            self.notifier.stopping()
            self.shutdown()

    def start(self) -> None:
        """Everything before the loop: schema check, recovery, metrics, signals, workers."""
        self.store.check_ready()
        self.store.lock_node()  # SQLite: one `dialer serve` per database (NodeConflict)
        if self.config.metrics_port is not None:  # before joining: a taken port leaves no trace
            self.metrics.serve(self.config.metrics_bind, self.config.metrics_port)
        for service in self.services:  # a port taken: refused before joining, too
            service.start()
        self.membership.join()  # NodeConflict while another live node has this name
        self.store.start_checkpointer()  # SQLite: WAL checkpoints off the scheduling path
        self._install_signals()
        self._sources = self.config.allowed_sources()
        self._reconcile()
        self._resolver = threading.Thread(target=self._resolve_loop, name="resolver",
                                          daemon=True)
        self._resolver.start()
        self.gateway.start(self._pool_size(self.store.get_settings().limits.total))
        self.membership.workers_changed()
        lease = self.membership.lease
        logger.info("dialer serving: node %s (generation %s), %d worker(s) of %d call(s), "
                    "database %s", self.config.node, lease.generation if lease else "-",
                    self.config.workers, self.config.calls_per_worker, self.store.safe_url)

    def _reconcile(self) -> None:
        """Settle what a previous run of this node left, before the first scheduling pass.

        The workers it left carrying calls are adopted first: the events they kept (call ends
        and confirmations among them) are recorded, in order, and their calls stay open and go
        on. Only then is every other open attempt of this node closed ``interrupted`` (or
        ``contacted`` when its confirmations were recorded): a call is never marked lost while
        a live worker still carries it."""
        events, live = self.gateway.attach()
        meta = self.store.attempt_meta(live)
        for cid, m in meta.items():
            self._call_meta[cid] = (m.campaign_id, m.recipient_id, m.email)
            self.metrics.call_started(cid, m.kind, m.created_at)
        # Replayed: the previous daemon may have committed the last of them without having
        # acknowledged them (it died in between): the store records each such event once.
        self._replaying = True
        try:
            for index, msg in events:
                self._handle(index, msg)
            self._flush_progress()
        finally:
            self._replaying = False
        self.gateway.ack()
        for cid in sorted(live - set(meta)):  # settled already (say by an earlier run): the
            logger.warning("call %s goes on in a worker but its attempt is closed: hanging up",
                           cid)  # database is the truth
            self.gateway.hangup(cid)
        recovered = self.store.recover(node=self.config.node, now=self.clock(), keep=live)
        if live or events:
            logger.warning("re-attached to SIP workers carrying %d call(s); %d event(s) they "
                           "kept recorded", len(meta), len(events))
        if recovered:
            logger.warning("closed %d call(s) left open by a previous run as interrupted",
                           recovered)

    def _resolve_loop(self) -> None:
        while not self.stopping.wait(self.resolve_interval):
            sources, failed = self.config.resolve_sources()
            if failed:
                logger.warning("trusted SIP sources kept as they were: %s did not resolve",
                               ", ".join(failed))
            elif sources != self._sources:
                self._sources_new = sources  # picked up by the loop (one assignment: atomic)

    def _apply_sources(self) -> None:
        new, self._sources_new = self._sources_new, None
        if new is not None and new != self._sources:
            logger.warning("trusted SIP sources changed: %s -> %s", ", ".join(self._sources),
                           ", ".join(new))
            self._sources = new
            self.gateway.trust(new)

    def notify(self) -> None:
        """Something changed that the scheduler must see: rerun it at the next step."""
        self._dirty = True

    def _install_signals(self) -> None:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        signal.signal(signal.SIGUSR1, lambda *_: self.hand_over())

    def hand_over(self) -> None:
        """Stop at once and leave every call to the workers, which the next daemon adopts
        (SIGUSR1, the shipped unit's ``RestartKillSignal``: an upgrade pauses dialling for
        the time of a restart and cuts no call)."""
        self.handing_over = True
        self.stopping.set()

    def _timeout(self) -> float:
        """How long the next wait may last: until the next due time, restart or safety pass."""
        now = self.clock()
        if self._down_since is not None:  # the database does not answer: try again later
            return max(0.0, min(self._retry_at - now, self.membership.next_in(now),
                                self.safety_interval))
        if self._dirty:
            return 0.0
        wait = min(self.safety_interval - (now - self._last_tick), self.membership.next_in(now))
        if self._next_due is not None:
            wait = min(wait, self._next_due - now)
        restart = self.gateway.next_wakeup_in()
        if restart is not None:
            wait = min(wait, restart)
        return max(0.0, min(wait, self.safety_interval))

    def step(self) -> None:
        """One turn of the loop: wait for events (or the next due time), handle them, decide."""
        events = self.gateway.poll(self._timeout())
        if self._backlog:  # what the database did not take last time goes first
            events, self._backlog = self._backlog + events, []
            self._replaying = True  # part of it may have been committed: record it once
        try:
            self._handle_all(events)
            self._flush_progress()
            self.gateway.ack()  # only once everything polled so far is committed
        except StoreUnavailable as exc:
            self._store_down(exc)
        finally:
            self._replaying = False
        if self._sources_new is not None:
            self._apply_sources()
        self.membership.beat(self.clock())
        now = self.clock()
        if self._down_since is not None and now < self._retry_at:
            return
        if self.membership.generation is None:
            return  # fenced, or joining again: no pass may claim
        if (self._dirty or now - self._last_tick >= self.safety_interval
                or self._down_since is not None
                or (self._next_due is not None and now >= self._next_due)):
            try:
                self._tick()
            except StoreUnavailable as exc:
                self._store_down(exc)
                self._dirty = True
            except LeaseLost as exc:
                self.membership.lost(str(exc))
                self._dirty = True
            else:
                self._store_up()

    def _handle_all(self, events: list[tuple[int, ipc.Event]]) -> None:
        """Handle events in order; those from the first the database did not take are kept
        (``_backlog``) for the next turn."""
        for i, (index, msg) in enumerate(events):
            try:
                self._handle(index, msg)
            except StoreUnavailable:
                self._backlog = events[i:]
                raise

    def _store_down(self, exc: StoreUnavailable) -> None:
        now = self.clock()
        self._retry_at = now + RETRY_S
        self.metrics.set_database_up(False)
        if self._down_since is None:
            self._down_since = now
            logger.error("the database does not answer (%s): no call is placed; %d event(s) "
                         "of the workers kept until it does", exc,
                         len(self._backlog) + len(self._progress))

    def _store_up(self) -> None:
        self.metrics.set_database_up(True)
        if self._down_since is not None:
            logger.warning("the database answers again after %.0f s",
                           self.clock() - self._down_since)
            self._down_since = None

    def _tick(self) -> None:
        self._dirty = False
        started = time.perf_counter()
        now = self.clock()
        self._last_tick = now
        capacity = self.gateway.free_slots()
        tick = self.store.tick(now=now, node=self.config.node,
                               trunks=self.book.loads(), routes=self.book.routes,
                               capacity=capacity, lease=self.membership.generation,
                               draw=self._draw)
        self.ticks += 1
        self.metrics.scheduler_seconds.observe(time.perf_counter() - started)
        self.metrics.after_pass(tick.settings, len(tick.waiting_window))
        for campaign_id, old, new in tick.transitions:
            if new == "active" and old in ("scheduled", "blocked"):
                self.mail.launched(campaign_id)  # the mail thread checks it is the first time
        self._next_due = tick.next_due
        for lost, calls in tick.settled:
            self.metrics.nodes_settled(calls)
            logger.warning("node %s declared lost: %d of its open call(s) settled as node_lost",
                           lost, calls)
        if tick.settings.version != self._settings_version:
            # The limits changed: the ceiling of the elastic pool (demand below decides)
            self._settings_version = tick.settings.version
            self._pool_wanted = self._pool_size(tick.settings.limits.total)
            self.gateway.resize(self._pool_wanted)
        if self.escalator.due(now, moved=bool(tick.transitions)):
            check_at, launched = self.escalator.check(now)
            self._dirty = self._dirty or launched  # a follow-up to start in the next pass
            if check_at is not None:  # a rule's time wakes the loop as a retry's would
                self._next_due = min(self._next_due or check_at, check_at)
        asked, self._hangups = self._hangups, set(tick.hangups)
        for cid in sorted(self._hangups - asked):  # its campaign was stopped: once per call
            self.gateway.hangup(cid)
        for call in tick.calls:
            self._dial(call)
        self.gateway.demand(elastic.demand(  # grow ahead of it, retire idle workers late
            in_progress=self.gateway.busy_slots(), placed=len(tick.calls), capacity=capacity,
            limit=tick.settings.limits.total,
            ceiling=self._pool_wanted * self.config.calls_per_worker))
        self.store.set_attempt_workers(self._assigned)
        self._assigned.clear()
        self._update_gauges()

    def _dial(self, call: ClaimedCall) -> None:
        trunk = self.config.trunks[call.trunk or call.kind.value]
        st = call.settings
        w = self.gateway.dial(self.dials.message(call, trunk, self.store.media_file(
            call.audio_sha, self.config.data_dir / "media")))
        if w is None:  # cannot happen: the claim was bounded by free slots; never lose it
            self._finish(EndReport(attempt_id=call.attempt_id, outcome=Outcome.FAILED,
                                   at=self.clock(), reason="no free SIP worker slot"))
            return
        self._assigned.append((call.attempt_id, w))
        self._call_meta[call.attempt_id] = (call.campaign_id, call.recipient_id, st.email)
        self.metrics.call_started(call.attempt_id, call.kind.value, self.clock())
        logger.info("dialing %s (%s) for campaign %d on worker %d", call.number, call.kind.value,
                    call.campaign_id, w,
                    extra={"campaign": call.campaign_id, "recipient": call.recipient_id,
                           "attempt": call.attempt_id, "call_id": call.attempt_id})

    def _handle(self, w: int, msg: ipc.Event) -> None:
        at = float(getattr(msg, "at", None) or self.clock())
        if isinstance(msg, ipc.Ready):
            self._dirty = True
            self.membership.workers_changed()
        elif isinstance(msg, ipc.Reg):
            self._on_registration(msg)
        elif isinstance(msg, PROGRESS):
            rec = progress_of(msg)
            self._progress.append((rec.call_id, rec.kind, at, rec.detail))
            if isinstance(msg, ipc.Ringing):
                self.metrics.call_ringing(rec.call_id, at)
            elif isinstance(msg, ipc.Answered):
                self.metrics.call_answered(rec.call_id, at)
            if rec.counter is not None:
                self.metrics.progress(*rec.counter)
            if rec.log is not None:
                self._log_event(rec.call_id, rec.log)
        elif isinstance(msg, ipc.Ended):
            try:
                outcome = Outcome(msg.outcome or "")
            except ValueError:
                outcome = Outcome.FAILED
            self._finish(EndReport(
                attempt_id=msg.call_id, outcome=outcome, at=at, status=msg.status,
                reason=msg.reason, q850=msg.q850, answered_at=msg.answered_at,
                answer_confirmed_at=msg.answer_confirmed_at,
                listen_confirmed_at=msg.listen_confirmed_at, keys=msg.keys or ""))
        elif isinstance(msg, ipc.Dropped):
            self._on_dropped(w, msg)
        elif isinstance(msg, ipc.WorkerLost):
            self._worker_lost(w, msg)
        elif isinstance(msg, ipc.Log):
            level = msg.level
            if isinstance(level, str):
                level = logging.getLevelName(level.upper())
            logger.log(level if isinstance(level, int) else logging.INFO, "worker %d: %s", w,
                       msg.message)

    def _on_dropped(self, w: int, msg: ipc.Dropped) -> None:
        """SIP messages a worker dropped (its source filter): counted, one line per report
        (workers report at most every few seconds: a flood costs a few lines, not one a packet)."""
        counts = {k: v for k, v in msg.counts.items() if v > 0}
        for reason, n in counts.items():
            self.metrics.sip_dropped.labels(reason).inc(n)
        if counts:
            logger.warning("worker %d dropped SIP messages: %s (last: %s)", w,
                           ", ".join(f"{n} {r}" for r, n in sorted(counts.items())),
                           msg.last)

    def _worker_lost(self, w: int, msg: ipc.WorkerLost) -> None:
        """A worker process died: its calls are lost attempts; registrations it held are gone."""
        if msg.retiring:  # of another version: it was finishing its calls
            for call_id in msg.calls:
                self._finish(EndReport(attempt_id=call_id, outcome=Outcome.INTERRUPTED,
                                       at=self.clock(), reason="retiring SIP worker exited"))
            return
        if self._shutting_down:
            reason = "daemon stopped"
        else:
            self.metrics.worker_restarts.inc()
            reason = f"SIP worker {w} (pid {msg.pid}) died"
        for call_id in msg.calls:
            self._finish(EndReport(attempt_id=call_id, outcome=Outcome.INTERRUPTED,
                                   at=self.clock(), reason=reason))
        if w == 0:
            self.book.registration_lost()
        self._dirty = True

    def _on_registration(self, msg: ipc.Reg) -> None:
        seen = self.book.on_registration(msg)
        if seen is None:
            return
        t, changed = seen
        self._dirty = self._dirty or changed or not t.registered
        if changed:  # every worker's unanswered calls on it, and its timeouts
            self.gateway.trunk_state(t.config.name, t.registered, str(t.reason or t.code))

    def _flush_progress(self) -> None:
        """Write the batched progress events (before any call end: an ended attempt takes none)."""
        if self._progress:
            batch, self._progress = self._progress, []
            try:
                self.store.record_progress_many(batch, once=self._replaying)
            except StoreUnavailable:
                self._progress = batch + self._progress  # kept for the next try
                raise

    def _finish(self, report: EndReport) -> None:
        self._flush_progress()
        outcome = self.store.finish_attempt(report)  # first: it may not be taken (kept then)
        meta = self._call_meta.pop(report.attempt_id, None)
        self.metrics.call_ended(report.attempt_id, report.at, report.answered_at)
        if outcome is not None:  # the outcome stored (a confirmed call cut short is contacted)
            self.metrics.record_attempt(outcome.value, report.status)
            logger.info("call %s ended: %s %s %s", report.attempt_id, outcome.value,
                        report.status or "", report.reason or "",
                        extra=self._log_fields(report.attempt_id, meta))
            if (meta is not None and meta[2] == EmailPolicy.UNREACHED.value
                    and not outcome.success):
                # the mail thread checks that this attempt left the recipient failed
                self.mail.unreached(meta[0], meta[1], report.attempt_id)
        self._dirty = True

    def _update_gauges(self) -> None:
        counts = self.store.running_counts()
        # trunks are named after the kind of number they carry ([trunks.internal/external])
        self.metrics.set_calls_in_progress({("internal", "internal"): counts.internal,
                                            ("external", "external"): counts.external})
        ready, load = self.gateway.ready_count(), self.gateway.node_load()
        self.metrics.set_pool(size=self.gateway.pool_size(), ceiling=self._pool_wanted,
                              ready=ready,
                              busy=self.gateway.busy_slots(),
                              slots=ready * self.config.calls_per_worker, late=load.late,
                              lag=load.lag, wait=load.wait, held=load.held)
        self.book.update_metrics()
        self.metrics.set_runs_sealed(self.store.runs_sealed)
        self.metrics.refresh_campaigns(self.store.list_campaigns)  # every 5 s, not every pass

    def shutdown(self) -> None:
        """Drain, then hang up what is left, record how each call ended, stop the workers.

        Draining: no new call is placed (no scheduling pass runs), and the calls in progress go
        on to the end of their dialogue for up to ``[sip] drain_timeout`` seconds: a routine
        restart cuts nobody who is listening to the message."""
        self.stopping.set()  # the resolver thread too (a simulator's daemon never ran run())
        for service in self.services:  # no new campaign while the calls drain
            service.stop()
        if self.handing_over:
            self._hand_over()
            return
        busy = self.gateway.busy_slots()
        if busy and self.config.drain_timeout > 0:
            logger.info("stopping: no new calls; %d call(s) in progress may finish (up to %g s)",
                        busy, self.config.drain_timeout)
            deadline = time.monotonic() + self.config.drain_timeout
            while self.gateway.busy_slots() and time.monotonic() < deadline:
                for index, msg in self.gateway.poll(min(0.2, max(0.0, deadline
                                                                 - time.monotonic()))):
                    self._handle(index, msg)
                self._flush_progress()
                self.gateway.ack()
        logger.info("stopping: hanging up %d call(s)", self.gateway.busy_slots())
        self._shutting_down = True
        self.gateway.begin_shutdown()
        deadline = time.monotonic() + 10.0
        while self.gateway.active() and time.monotonic() < deadline:
            for index, msg in self.gateway.poll(0.1):
                self._handle(index, msg)
        self.gateway.close(10.0)  # a loaded machine takes seconds to tear 100 endpoints down
        self.store.stop_checkpointer()
        try:
            self._flush_progress()
            leftover = self.store.recover(node=self.config.node, now=self.clock())
            if leftover:
                logger.warning("%d call(s) had no end report: recorded as interrupted", leftover)
            self.membership.leave()
            self._update_gauges()  # calls in progress back to 0 for a last scrape
        except StoreUnavailable as exc:
            logger.error("stopping without the database (%s): this node's open calls are "
                         "settled by another node once its lease ends", exc)
        self.mail.close(10.0)
        self.metrics.stop()

    def _hand_over(self) -> None:
        """What is committed is acknowledged; the workers are let go with their calls (they
        keep what comes next for the daemon that adopts them); nothing is settled here."""
        self._flush_progress()
        self.gateway.ack()
        busy = self.gateway.busy_slots()
        self.gateway.detach()
        logger.warning("handed over: %d call(s) go on in the SIP workers; the next `dialer "
                       "serve` of node %s adopts them (within %.0f s, or they finish and exit)",
                       busy, self.config.node, self.config.orphan_timeout)
        self.store.stop_checkpointer()
        self.mail.close(10.0)
        self.metrics.stop()

    def _log_fields(self, call_id: str,
                    meta: tuple[int, int, str] | None = None) -> dict[str, Any]:
        """The structured fields of a log line about a call (``extra=``)."""
        meta = meta or self._call_meta.get(call_id)
        fields: dict[str, Any] = {"attempt": call_id, "call_id": call_id}
        if meta is not None:
            fields["campaign"], fields["recipient"] = meta[0], meta[1]
        return fields

    def _log_event(self, call_id: str, what: str) -> None:
        """One line per call event (ringing, answered, key, confirmed)."""
        logger.info("call %s %s", call_id, what, extra=self._log_fields(call_id))
