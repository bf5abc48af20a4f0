"""``MemoryStore``: an in-memory fake of ``DispatchPort`` (plain dataclasses, no SQL), for the pure
and simulator tests.

Its scheduling pass decides with the pure core exactly as ``SqlStore.tick`` does:
``lifecycle.settle`` then ``lifecycle.activate`` (repeated while a campaign starts, so a place an
ending campaign frees goes to a waiting one in the same pass), ``scheduler.any_room`` /
``scheduler.plan`` over ``scheduler.CampaignLoad`` of the active campaigns that
``lifecycle.may_call``, candidates loaded lazily per campaign and bounded by ``scheduler.wanted``,
and ``lifecycle.after_attempt`` / ``lifecycle.confirmed`` when an attempt ends. What the fake
adds is only what ``SqlStore``'s queries do: the candidates' order (never called first in list
order, then retries whose ``next_at`` has passed, called longest ago first, position breaking
ties), the counts of calls in progress from the open attempts, and the next due time.

Besides ``DispatchPort`` it implements ``dialer.testing.setup.SetupPort`` (settings, media,
templates, campaign launch, campaign detail, attempts, events) with ``SqlStore``'s signatures and
results, so that a test sets it up like a database. Not there: the rest of ``AdminPort``
(template editing, operator actions on campaigns, operators, audit, runs), anything of several
processes (one fake is one process's memory; ``node`` is kept on attempts, so several daemons of
one process may share a fake), durability. Every method holds one lock (the daemon's mail
thread calls it too).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import secrets
import threading
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from dialer import zones
from dialer.core import keys, lifecycle, routing, scheduler, window
from dialer.core.domain import (
    CampaignSettings,
    CampaignState,
    Kind,
    Limits,
    Outcome,
    RecipientState,
)
from dialer.core.errors import DialerError, NotFound, StateError, ValidationError
from dialer.core.keys import RandomBelow
from dialer.core.recipients import Recipient
from dialer.core.records import (
    AttemptMeta,
    ClaimedCall,
    EndReport,
    GlobalSettings,
    Tick,
)
from dialer.core.routing import TrunkLoad
from dialer.files import write_private
from dialer.testing.memory_escalation import MemoryEscalations
from dialer.testing.memory_mail import MemoryMail
from dialer.testing.memory_nodes import MemoryNodes
from dialer.testing.memory_rows import (
    _Attempt,
    _Campaign,
    _Event,
    _iso,
    _Media,
    _Recipient,
    _Settings,
    _Template,
)
from dialer.testing.memory_trunks import MemoryTrunks

UTC = dt.UTC
_LIVE = (CampaignState.SCHEDULED, CampaignState.BLOCKED, CampaignState.ACTIVE)
_SETTINGS_KEYS = {"max_campaigns", "max_calls", "max_internal", "max_external"}

P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[Concatenate[MemoryStore, P], R]
            ) -> Callable[Concatenate[MemoryStore, P], R]:
    @functools.wraps(method)
    def run(self: MemoryStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return method(self, *args, **kwargs)
    return run


class MemoryStore(MemoryEscalations, MemoryMail, MemoryNodes, MemoryTrunks):
    """``DispatchPort`` (and ``SetupPort``) in memory. The fields are plain and public for tests
    to read: ``campaigns``, ``recipients``, ``attempts``, ``events``. It keeps no history
    chain (``dialer.storage.chain``: sealing is the database's), so ``runs_sealed`` stays 0."""

    @property
    def runs_sealed(self) -> int:
        return 0

    def __init__(self) -> None:
        self.url = "memory:"
        self._lock = threading.RLock()
        self._settings = _Settings()
        self.media: dict[str, _Media] = {}
        self.templates: dict[str, _Template] = {}
        self.campaigns: dict[int, _Campaign] = {}
        self.recipients: dict[int, _Recipient] = {}
        self.attempts: dict[str, _Attempt] = {}
        self.events: list[_Event] = []
        self._ids = itertools.count(1)  # templates, campaigns, recipients, events: one sequence
        self._attempt_seq = itertools.count()
        self.node_rows, self.node_loads = {}, {}  # types: MemoryNodes

    # ----- plumbing -----

    @property
    def safe_url(self) -> str:
        return self.url

    def check_ready(self) -> None:
        pass  # always initialised

    @property
    def shared(self) -> bool:
        return True  # several daemons of one process may share it: their workers are fenced

    def lock_node(self) -> None:
        pass

    def start_checkpointer(self, interval: float = 0.05,
                           restart_frames: int | None = None) -> None:
        pass

    def stop_checkpointer(self) -> None:
        pass

    def _event(self, kind: str, /, *, at: float, campaign_id: int | None = None,
               recipient_id: int | None = None, attempt_id: str | None = None,
               actor: str | None = None, **detail: Any) -> None:
        self.events.append(_Event(id=next(self._ids), at=at, kind=kind, campaign_id=campaign_id,
                                  recipient_id=recipient_id, attempt_id=attempt_id, actor=actor,
                                  detail=detail))

    # ----- settings -----

    @_locked
    def get_settings(self) -> GlobalSettings:
        g = self._settings
        return GlobalSettings(max_campaigns=g.max_campaigns,
                              limits=Limits(total=g.max_calls, internal=g.max_internal,
                                            external=g.max_external),
                              version=g.version, updated_at=g.updated_at,
                              updated_by=g.updated_by)

    def set_settings(self, *, actor: str, now: float, require_db_role: bool | None = None,
                     **changes: int | None) -> GlobalSettings:
        with self._lock:
            return self._set_settings(actor, now, require_db_role, changes)

    def _set_settings(self, actor: str, now: float, require_db_role: bool | None,
                      changes: dict[str, int | None]) -> GlobalSettings:
        for key, value in changes.items():
            if key not in _SETTINGS_KEYS:
                raise ValidationError(f"unknown setting {key}")
            if value is not None and value < 0:
                raise ValidationError(f"{key} must be 0 or more, or none")
        if require_db_role:
            raise ValidationError("--require-db-role needs PostgreSQL (memory has no roles)")
        old = {key: getattr(self._settings, key) for key in changes}
        self._settings = dataclasses.replace(self._settings, **changes,
                                             version=self._settings.version + 1,
                                             updated_at=now, updated_by=actor)
        self._event("settings_changed", at=now, actor=actor, old=old, new=dict(changes))
        return self.get_settings()

    # ----- media and templates (SetupPort) -----

    @_locked
    def add_media(self, *, data: bytes, sha256: str, rate: int, seconds: float,
                  source: str | None, now: float) -> str:
        self.media.setdefault(sha256, _Media(data=data, rate=rate, seconds=seconds,
                                             source=source))
        return sha256

    @_locked
    def media_file(self, sha256: str, cache_dir: Path) -> Path:
        path = cache_dir / f"{sha256}.wav"
        if not path.exists():
            media = self.media.get(sha256)
            if media is None:
                raise NotFound(f"no audio {sha256} in the database")
            write_private(path, media.data)
        return path

    @_locked
    def add_template(self, *, name: str, settings: CampaignSettings, audio_sha: str,
                     audio_seconds: float, recipients: Sequence[Recipient], now: float,
                     actor: str, enabled: bool = True, audit: bool = True) -> int:
        if name in self.templates:
            raise ValidationError(f"a template named {name!r} already exists")
        tid = next(self._ids)
        self.templates[name] = _Template(id=tid, name=name, enabled=enabled, settings=settings,
                                         audio_sha=audio_sha, audio_seconds=audio_seconds,
                                         recipients=list(recipients))
        self._event("template_added", at=now, actor=actor, template=name)
        return tid

    # ----- campaigns (SetupPort) -----

    @_locked
    def start_campaign(self, *, template: str, name: str | None, now: float, start_at: float,
                       actor: str, audio_sha: str | None = None, audio_seconds: float | None = None,
                       recipients: Sequence[Recipient] | None = None,
                       tts_text: str | None = None) -> int:
        tpl = self.templates.get(template)
        if tpl is None:
            raise NotFound(f"no template named {template!r}")
        if not tpl.enabled:
            raise StateError(f"template {template!r} is disabled")
        recs = list(recipients) if recipients is not None else list(tpl.recipients)
        if not recs:
            raise ValidationError(f"template {template!r} has no recipients and none were given")
        st = tpl.settings
        if st.threshold is not None and st.threshold > len(recs):
            raise ValidationError(f"the completion threshold {st.threshold} is above the "
                                  f"{len(recs)} recipients")
        st = dataclasses.replace(st, display_name=name or tpl.name)
        if audio_sha is not None:
            st = dataclasses.replace(st, tts_text=tts_text)
        cid = next(self._ids)
        self.campaigns[cid] = _Campaign(
            id=cid, name=name or tpl.name, template_name=tpl.name, state=CampaignState.SCHEDULED,
            priority=st.priority, start_at=start_at, settings=st,
            audio_sha=audio_sha or tpl.audio_sha,
            audio_seconds=audio_seconds if audio_seconds is not None else tpl.audio_seconds,
            created_at=now)
        for pos, r in enumerate(recs, 1):
            rid = next(self._ids)
            self.recipients[rid] = _Recipient(id=rid, campaign_id=cid, position=pos,
                                              number=r.number, kind=r.kind, name=r.name,
                                              email=r.email, max_attempts=st.attempts,
                                              timezone=r.timezone)
        self._event("campaign_created", at=now, campaign_id=cid, actor=actor, template=tpl.name,
                    name=name or tpl.name, recipients=len(recs), start_at=start_at,
                    settings=dataclasses.asdict(st))
        return cid

    def _recipients_of(self, cid: int) -> list[_Recipient]:
        return sorted((r for r in self.recipients.values() if r.campaign_id == cid),
                      key=lambda r: r.position)

    def _tally(self, cid: int) -> lifecycle.Tally:
        acc = {state.value: 0 for state in RecipientState}
        for r in self.recipients.values():
            if r.campaign_id == cid:
                acc[r.state.value] += 1
        return lifecycle.Tally(**acc)

    @_locked
    def list_campaigns(self, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
        out = []
        for c in sorted(self.campaigns.values(), key=lambda c: c.id):
            if states and c.state.value not in states:
                continue
            t = self._tally(c.id)
            out.append({"id": c.id, "name": c.name, "template": c.template_name,
                        "state": c.state.value, "priority": c.priority,
                        "start_at": _iso(c.start_at), "recipients": t.total,
                        "contacted": t.contacted, "failed": t.failed, "active": t.active,
                        "idle": t.idle, "stopped": t.stopped})
        return out

    @_locked
    def campaign_detail(self, campaign_id: int) -> dict[str, Any]:
        c = self.campaigns.get(campaign_id)
        if c is None:
            raise NotFound(f"no campaign with id {campaign_id}")
        return {
            "id": c.id, "name": c.name, "template": c.template_name, "state": c.state.value,
            "priority": c.priority, "start_at": _iso(c.start_at), "ended_at": _iso(c.ended_at),
            "settings": dataclasses.asdict(c.settings), "escalation": self._links(c),
            "recipients": [{
                "position": r.position, "number": r.number, "name": r.name,
                "kind": r.kind.value, "state": r.state.value, "attempts": r.attempts,
                "calls": r.calls, "last_call_at": _iso(r.last_call_at),
                "last_outcome": r.last_outcome, "last_status": r.last_status,
                "last_reason": r.last_reason, "answered_at": _iso(r.answered_at),
                "confirmed_at": _iso(r.confirmed_at),
                "answer_confirmed_at": _iso(r.answer_confirmed_at), "email": r.email,
                "max_attempts": r.max_attempts, "next_at": _iso(r.next_at),
                "timezone": r.timezone,
            } for r in self._recipients_of(campaign_id)],
        }

    @_locked
    def attempts_of(self, campaign_id: int) -> list[dict[str, Any]]:
        rows = sorted((a for a in self.attempts.values() if a.campaign_id == campaign_id),
                      key=lambda a: (a.created_at, a.seq))
        return [{"id": a.id, "recipient_id": a.recipient_id, "number": a.number,
                 "kind": a.kind.value, "worker": a.worker, "created_at": _iso(a.created_at),
                 "answered_at": _iso(a.answered_at), "ended_at": _iso(a.ended_at),
                 "status": a.status, "reason": a.reason, "q850": a.q850, "keys": a.keys,
                 "outcome": a.outcome,
                 "answer_confirmed_at": _iso(a.answer_confirmed_at),
                 "listen_confirmed_at": _iso(a.listen_confirmed_at), "node": a.node,
                 "lease": a.lease, "trunk": a.trunk, "answer_key": a.answer_key,
                 "listen_key": a.listen_key} for a in rows]

    @_locked
    def events_of(self, campaign_id: int) -> list[dict[str, Any]]:
        return [{"id": e.id, "at": _iso(e.at), "kind": e.kind, "recipient_id": e.recipient_id,
                 "attempt_id": e.attempt_id, "actor": e.actor, "detail": dict(e.detail)}
                for e in self.events if e.campaign_id == campaign_id]

    def _transition(self, c: _Campaign, new: CampaignState, *, cause: str, now: float,
                    actor: str | None = None) -> None:
        old = c.state
        c.state = new
        if new.finished or new is CampaignState.INCOMPLETE:
            c.ended_at = now
        self._event("campaign_state", at=now, campaign_id=c.id, actor=actor, old=old.value,
                    new=new.value, cause=cause)

    # ----- the daemon's side (DispatchPort) -----

    @_locked
    def tick(self, *, now: float, node: str, kinds_available: frozenset[Kind] = frozenset(Kind),
             capacity: int | None = None, lease: int | None = None,
             trunks: Sequence[TrunkLoad] | None = None,
             routes: Mapping[str, tuple[str, ...]] | None = None,
             draw: RandomBelow | None = None) -> Tick:
        """``SqlStore.tick`` without the database: the same decisions, by the same core."""
        lost_nodes = self._fence_and_settle(node, lease, now)
        gs = self.get_settings()
        capacity = self._within_share(node, lease, now, gs.limits.total, capacity)
        transitions: list[tuple[int, str, str]] = []
        live = {c.id: c for c in self.campaigns.values() if c.state in _LIVE}

        def move(c: _Campaign, new: CampaignState, cause: str) -> None:
            transitions.append((c.id, c.state.value, new.value))
            self._transition(c, new, cause=cause, now=now)

        while True:
            # settle: active campaigns with nothing left to do free their place now
            for c in live.values():
                if c.state is not CampaignState.ACTIVE:
                    continue
                tally = self._tally(c.id)
                st = c.settings
                settled = lifecycle.settle(CampaignState.ACTIVE, tally, st.threshold,
                                           st.keep_calling_after_threshold)
                if settled is not None:
                    need = lifecycle.threshold_of(st.threshold, tally.total)
                    move(c, settled, f"{tally.contacted} of {tally.total} contacted, "
                                     f"threshold {need}")
            # activate: due scheduled and blocked campaigns, by priority then start time
            started = False
            for cid, new in lifecycle.activate(
                    [lifecycle.Startable(id=c.id, state=c.state, priority=c.priority,
                                         start_at=c.start_at)
                     for c in live.values() if c.state in _LIVE], gs.max_campaigns, now):
                c = live[cid]
                started = started or new is CampaignState.ACTIVE
                move(c, new, lifecycle.activation_cause(c.state, new))
            if not started:
                break

        running = self._running()
        g_running = running.get(None, scheduler.Counts())
        calls: list[ClaimedCall] = []
        def carried_by(trunk: str) -> list[int]:
            return [c.id for c in live.values() if c.state is CampaignState.ACTIVE
                    and trunk in routing.trunks_of(routes or {}, c.settings.external_route)]

        router = None if trunks is None else self._router(trunks, routes or {}, now, carried_by)
        if router is not None:
            kinds_available = kinds_available & router.any_kinds()
        if scheduler.any_room(gs.limits, g_running, kinds_available, capacity):
            loads = []
            for c in live.values():
                if c.state is not CampaignState.ACTIVE:
                    continue
                st = c.settings
                if not lifecycle.may_call(self._tally(c.id), st.threshold,
                                          st.keep_calling_after_threshold):
                    continue
                loads.append(scheduler.CampaignLoad(
                    id=c.id, priority=c.priority, start_at=c.start_at, limits=st.limits,
                    running=running.get(c.id, scheduler.Counts()), route=st.external_route))

            def fetch(load: scheduler.CampaignLoad, g_now: scheduler.Counts,
                      cap: int | None) -> list[scheduler.Candidate]:
                kinds = (kinds_available if router is None
                         else kinds_available & router.kinds(load.route))
                return self._candidates(load, gs.limits, g_now, cap, now, kinds)

            dials = scheduler.plan(loads, gs.limits, g_running, fetch,
                                   kinds_available=kinds_available, capacity=capacity,
                                   router=router)
            calls = [self._claim(d, node=node, now=now, lease=lease, draw=draw) for d in dials]
        next_due = self._next_due(live.values(), now)
        if router is not None and (free := router.next_free()) is not None:
            next_due = free if next_due is None else min(next_due, free)
        waiting_window, opens = self._window_survey(live.values(), now)
        if opens is not None:
            next_due = opens if next_due is None else min(next_due, opens)
        hangups = sorted(a.id for a in self.attempts.values() if a.ended_at is None and a.node
                         == node and self.campaigns[a.campaign_id].state.value == "terminated")
        return Tick(calls=calls, next_due=next_due, transitions=transitions, settings=gs,
                    settled=lost_nodes, waiting_window=waiting_window, hangups=hangups)

    def _running(self) -> dict[int | None, scheduler.Counts]:
        """Calls in progress (open attempts) per campaign, and in all under the key None."""
        out: dict[int | None, scheduler.Counts] = {None: scheduler.Counts()}
        for a in self.attempts.values():
            if a.ended_at is None:
                out[a.campaign_id] = out.get(a.campaign_id, scheduler.Counts()).add(a.kind)
                out[None] = out[None].add(a.kind)
        return out

    def _candidates(self, load: scheduler.CampaignLoad, g_limits: Limits,
                    g_running: scheduler.Counts, capacity: int | None, now: float,
                    kinds: frozenset[Kind]) -> list[scheduler.Candidate]:
        """As ``SqlStore._candidates``: the due recipients, ranked by the core's
        ``scheduler.candidates`` (SPEC 3 rules 3-4), at most ``scheduler.wanted`` of each kind."""
        n_int, n_ext = scheduler.wanted(load, g_limits, g_running, capacity)
        w = self._window(load.id)
        now_open = None if w is None else window.open_zones(now, w, self._zones(load.id, w))
        waiting = [scheduler.Waiting(r.id, r.kind, r.position,
                                     None if r.calls == 0 else (r.last_call_at or 0.0))
                   for r in self._recipients_of(load.id)
                   if r.state is RecipientState.IDLE and r.kind in kinds
                   and (now_open is None or r.timezone in now_open)
                   and (r.calls == 0 or (r.last_call_at is not None
                                         and (r.next_at is None or r.next_at <= now)))]
        return scheduler.candidates(waiting, n_int, n_ext)

    def _window(self, cid: int) -> window.Window | None:
        st = self.campaigns[cid].settings
        return window.window_of(st.window, st.window_days, st.timezone)

    def _zones(self, cid: int, w: window.Window) -> dict[str | None, dt.tzinfo]:
        """As ``SqlStore._zones``: the zones of a campaign's recipients, None for its own."""
        return zones.zone_map({r.timezone for r in self._recipients_of(cid)}, w.timezone)

    def _window_survey(self, camps: Collection[_Campaign], now: float
                       ) -> tuple[list[int], float | None]:
        """As ``SqlStore.tick``: the active campaigns whose window is closed in every zone, and
        when the first closed zone of an active campaign opens."""
        closed: list[int] = []
        due: list[float] = []
        for c in camps:
            w = self._window(c.id) if c.state is CampaignState.ACTIVE else None
            if w is None:
                continue
            now_open, opens = window.survey(now, w, self._zones(c.id, w))
            if not now_open:
                closed.append(c.id)
            if opens is not None:
                due.append(opens)
        return closed, min(due) if due else None

    def _claim(self, d: scheduler.Dial, *, node: str, now: float, lease: int | None,
               draw: RandomBelow | None) -> ClaimedCall:
        r = self.recipients[d.recipient_id]
        if r.state is not RecipientState.IDLE:
            raise DialerError(f"recipient {d.recipient_id} was claimed by someone else")
        r.state = RecipientState.ACTIVE
        r.calls += 1
        r.last_call_at = now
        c = self.campaigns[d.campaign_id]
        aid = uuid.uuid4().hex
        drawn = keys.draw(c.settings, draw or secrets.randbelow)
        self.attempts[aid] = _Attempt(id=aid, seq=next(self._attempt_seq), campaign_id=c.id,
                                      recipient_id=r.id, number=r.number, kind=r.kind, node=node,
                                      created_at=now, lease=lease, trunk=d.trunk,
                                      answer_key=drawn.answer, listen_key=drawn.listen)
        self._event("attempt_started", at=now, campaign_id=c.id, recipient_id=r.id,
                    attempt_id=aid, number=r.number, kind=r.kind.value, call=r.calls,
                    **({"trunk": d.trunk} if d.trunk else {}), **keys.detail(drawn))
        return ClaimedCall(attempt_id=aid, campaign_id=c.id, recipient_id=r.id, number=r.number,
                           kind=d.kind, settings=c.settings, audio_sha=c.audio_sha,
                           audio_seconds=c.audio_seconds, trunk=d.trunk, drawn=drawn)

    def _next_due(self, camps: Collection[_Campaign], now: float) -> float | None:
        """The next scheduled start or retry time after ``now`` (None: nothing waits on time)."""
        due = [c.start_at for c in camps if c.state is CampaignState.SCHEDULED]
        active = {c.id for c in camps if c.state is CampaignState.ACTIVE}
        due += [r.next_at for r in self.recipients.values()
                if r.campaign_id in active and r.state is RecipientState.IDLE
                and r.next_at is not None and r.next_at > now]
        return min(due) if due else None

    @_locked
    def set_attempt_workers(self, pairs: Sequence[tuple[str, int]]) -> None:
        for attempt_id, worker in pairs:
            a = self.attempts.get(attempt_id)
            if a is not None:
                a.worker = worker

    @_locked
    def record_progress_many(self, items: Sequence[tuple[str, str, float, dict[str, Any]]], *,
                             once: bool = False) -> None:
        for attempt_id, what, at, detail in items:
            a = self.attempts.get(attempt_id)
            if a is None or a.ended_at is not None:
                continue
            if once and any(e.attempt_id == attempt_id and e.kind == what and e.at == at
                            for e in self.events):
                continue
            field = lifecycle.stamped_time(what, detail)
            if field is not None and not (field == "ringing_at" and a.ringing_at is not None):
                setattr(a, field, at)
            if what == "key":
                a.keys = lifecycle.with_key(a.keys, detail)
            self._event(what, at=at, campaign_id=a.campaign_id, recipient_id=a.recipient_id,
                        attempt_id=a.id, **detail)

    @_locked
    def finish_attempt(self, report: EndReport) -> Outcome | None:
        a = self.attempts.get(report.attempt_id)
        if a is None or a.ended_at is not None:
            return None
        a.ended_at = report.at
        a.status = report.status
        a.reason = (report.reason or "")[:200] or None
        a.q850 = report.q850
        a.answered_at = a.answered_at if a.answered_at is not None else report.answered_at
        if a.answer_confirmed_at is None:
            a.answer_confirmed_at = report.answer_confirmed_at
        if a.listen_confirmed_at is None:
            a.listen_confirmed_at = report.listen_confirmed_at
        if report.keys:
            a.keys = report.keys[:100]
        rec = self.recipients[a.recipient_id]
        st = self.campaigns[a.campaign_id].settings
        outcome = report.outcome
        if not outcome.success and lifecycle.confirmed(
                answer_confirm=st.answer_confirm, listen_confirm=st.listen_confirm,
                answer_confirmed_at=a.answer_confirmed_at,
                listen_confirmed_at=a.listen_confirmed_at):
            outcome = Outcome.CONTACTED
        a.outcome = outcome.value
        upd = lifecycle.after_attempt(attempts=rec.attempts, max_attempts=rec.max_attempts,
                                      outcome=outcome, now=report.at, retry_delay=st.retry_delay,
                                      stopped=rec.state is RecipientState.STOPPED,
                                      calls=rec.calls)
        old_state = rec.state
        rec.state = upd.state
        rec.attempts = upd.attempts
        rec.next_at = upd.next_at
        rec.last_outcome = outcome.value
        rec.last_status = report.status
        rec.last_reason = a.reason
        if a.answered_at is not None:
            rec.answered_at = a.answered_at
        if a.answer_confirmed_at is not None:
            rec.answer_confirmed_at = a.answer_confirmed_at
        if a.listen_confirmed_at is not None:
            rec.confirmed_at = a.listen_confirmed_at
        self._event("attempt_ended", at=report.at, campaign_id=a.campaign_id,
                    recipient_id=rec.id, attempt_id=a.id, outcome=outcome.value,
                    status=report.status, reason=a.reason, q850=report.q850, keys=a.keys)
        if a.trunk:
            self._judge_trunk(a.trunk, outcome, report.at, a.campaign_id)
        if rec.state is not old_state:
            self._event("recipient_state", at=report.at, campaign_id=a.campaign_id,
                        recipient_id=rec.id, old=old_state.value, new=rec.state.value,
                        attempts=rec.attempts)
        return outcome

    @_locked
    def recover(self, *, node: str, now: float, keep: Collection[str] = ()) -> int:
        open_ids = [a.id for a in sorted(self.attempts.values(), key=lambda a: a.seq)
                    if a.ended_at is None and a.node == node and a.id not in keep]
        for aid in open_ids:
            self.finish_attempt(EndReport(attempt_id=aid, outcome=Outcome.INTERRUPTED, at=now,
                                          reason="the daemon stopped during the call"))
        return len(open_ids)

    @_locked
    def attempt_meta(self, ids: Collection[str]) -> dict[str, AttemptMeta]:
        out: dict[str, AttemptMeta] = {}
        for aid in ids:
            a = self.attempts.get(aid)
            if a is not None and a.ended_at is None:
                out[aid] = AttemptMeta(campaign_id=a.campaign_id, recipient_id=a.recipient_id,
                                       kind=a.kind.value,
                                       email=self.campaigns[a.campaign_id].settings.email,
                                       created_at=a.created_at)
        return out

    @_locked
    def open_attempts(self, node: str) -> list[str]:
        return [a.id for a in sorted(self.attempts.values(), key=lambda a: a.seq)
                if a.ended_at is None and a.node == node]

    @_locked
    def running_counts(self) -> scheduler.Counts:
        return self._running()[None]
