"""The scheduling pass (``tick``): campaign transitions, then the claim of the calls to place now,
in one transaction. The part of the store that every ``dialer serve`` node runs, against the
same database: see ``dialer.storage.store`` for how the nodes serialise their decisions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from dialer.core import cluster, keys, lifecycle, routing, scheduler, window
from dialer.core.domain import (
    CampaignSettings,
    CampaignState,
    Kind,
    Limits,
    RecipientState,
)
from dialer.core.errors import DialerError, LeaseLost
from dialer.core.keys import RandomBelow
from dialer.core.routing import TrunkLoad
from dialer.core.window import Window
from dialer.storage import counters
from dialer.storage.fastpath import (
    _LIVE,
    _Q_ADD_ATTEMPTS,
    _Q_ADD_EVENTS,
    _Q_CLAIM,
    _Q_FIRST_RETRY,
    _Q_FRESH,
    _Q_FRESH_PG,
    _Q_LIVE,
    _Q_LIVE_ONE,
    _Q_LIVE_VERSIONS,
    _Q_NEXT_RETRY,
    _Q_RETRY,
    _Q_RETRY_PG,
    _Q_RUNNING,
    _Q_SETTINGS,
    _Q_SETTINGS_PG,
    _SETTINGS_COLUMNS,
)
from dialer.storage.models import AttemptRow, CampaignRow
from dialer.storage.nodes import Nodes
from dialer.storage.records import (
    UTC,
    ClaimedCall,
    GlobalSettings,
    Tick,
    _as_utc,
    _settings_view,
    settings_from_dict,
    to_dt,
)
from dialer.storage.windowing import Windowing

# the name it had when the store was one module (log filters and readers know it)
logger = logging.getLogger("dialer.storage.store")


class Dispatch(Nodes, Windowing):
    """``tick`` and what it keeps between passes; ``_transition`` for every campaign move."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``StoreEngine.__init__``, and what the scheduling passes keep between them."""
        super().__init__(url, create=create)
        self._snapshot_cache: dict[int, _Snapshot] = {}  # campaign id -> frozen settings
        self._view = _View()  # the live campaigns between scheduling passes (tick)

    def _transition(self, s: Session, c: CampaignRow, new: CampaignState, *, cause: str,
                    now: float, actor: str | None = None) -> None:
        old = c.state
        c.state = new.value
        if new.finished or new is CampaignState.INCOMPLETE:
            c.ended_at = to_dt(now)
        self._event(s, "campaign_state", at=now, campaign_id=c.id, actor=actor,
                    old=old, new=new.value, cause=cause)
        if new.finished:  # sealed now, or when its last call ends (dialer.storage.chain)
            self._seal(s, c.id, now)
        logger.info("campaign %s: %s -> %s (%s)", c.id, old, new.value, cause,
                    extra={"campaign": c.id})

    def _settings_row(self, s: Session) -> Any:
        """The settings row as a plain tuple (``_SETTINGS_COLUMNS``), read under the lock that
        serialises every scheduling pass on PostgreSQL; SQLite's single writer already
        serialises."""
        rows = self._rows(s, _Q_SETTINGS if self.sqlite else _Q_SETTINGS_PG)
        if not rows:
            raise DialerError("database is not initialised: run 'dialer init'")
        return rows[0]

    # ----- the daemon's side -----

    def tick(self, *, now: float, node: str, kinds_available: frozenset[Kind] = frozenset(Kind),
             capacity: int | None = None, lease: int | None = None,
             trunks: Sequence[TrunkLoad] | None = None,
             routes: Mapping[str, tuple[str, ...]] | None = None,
             draw: RandomBelow | None = None) -> Tick:
        """One scheduling pass: campaign transitions, then claim the calls to place now.

        ``lease``: the generation this node joined with (``join``), its fencing token. The pass
        first checks, under the lock that serialises the passes, that the node still holds that
        lease (``LeaseLost`` otherwise: nothing is decided), then settles the open calls of
        nodes whose lease ran out (``node_lost``), and stamps its claims with the generation.
        Without ``lease`` (a test, the simulator) the check is left out.

        ``draw``: the random source of the keys a call of a campaign with a random key draws
        when its attempt is recorded (``dialer.core.keys``; None: ``secrets.randbelow``).

        ``trunks`` (this node's trunks: usable here, their limits) and ``routes``: each call
        goes to a trunk of its campaign's route (``dialer.core.routing``) under that trunk's
        ``max_calls`` and ``max_cps``, counted over every node, and healthy
        (``dialer.storage.trunks``); without them, every call goes by its kind's trunk.

        Cost: a handful of indexed statements whatever the number of recipients or campaigns.
        The live campaigns (state, rank, counters, frozen settings) are kept in memory between
        passes as a cache of the database, never as the truth: every pass reads the ``version``
        of each live campaign (one covering index) and re-reads only the rows whose version
        moved (``campaigns.version`` grows with every UPDATE of the row, and the recipient
        counters update it with every recipient change, ``dialer.storage.counters``). Calls in
        progress are counted from the open attempts (a covering index) in every pass;
        candidates are read lazily in rank order only for campaigns that can take a call, each
        with a LIMIT, and only when a retry is due are retries read. The time the next retry
        falls due is kept per campaign and re-read only when its version moved or that time
        has come. A pass that fails forgets the cache.

        Lifecycle within one pass: active campaigns whose recipients are done settle first, so
        the place they free is given to a blocked or due campaign in the same pass (and that
        one settles at once too if it has nothing left to do).
        """
        try:
            return self._tick(now=now, node=node, kinds_available=kinds_available,
                              capacity=capacity, lease=lease, trunks=trunks, routes=routes,
                              draw=draw or secrets.randbelow)
        except BaseException:
            self._view = _View()  # the pass rolled back: what it cached may not have happened
            raise

    def _tick(self, *, now: float, node: str, kinds_available: frozenset[Kind],
              capacity: int | None, lease: int | None, trunks: Sequence[TrunkLoad] | None,
              routes: Mapping[str, tuple[str, ...]] | None, draw: RandomBelow) -> Tick:
        transitions: list[tuple[int, str, str]] = []
        view = self._view
        with self.session() as s:
            row = self._settings_row(s)
            nodes = self._node_rows(s)
            if lease is not None:
                mine = next((n for n in nodes if n.name == node), None)
                if not cluster.holds(mine, lease, now):
                    raise LeaseLost(f"node {node} no longer holds lease {lease}"
                                    + (f" (state {mine.state.value}, generation "
                                       f"{mine.generation})" if mine is not None else ""))
            lost_nodes = self._settle_lost(s, nodes, now) if nodes else []
            if row != view.settings_row:
                view.settings_row = row
                values = dict(zip(_SETTINGS_COLUMNS, row, strict=True))
                if values["updated_at"] is not None:
                    values["updated_at"] = _as_utc(values["updated_at"])
                view.settings = _settings_view(_SettingsValues(**values))
            gs = view.settings
            assert gs is not None
            live = sum(1 for n in nodes if n.valid(now))
            if lease is not None and live > 1 and gs.limits.total is not None:
                mine = self._rows(s, _Q_MINE, {"node": node})[0][0]
                capacity = cluster.capacity_within_share(capacity, limit=gs.limits.total,
                                                         live_nodes=live, mine=mine)
            camps = self._refresh(s, view)

            def move(c: _Live, new: CampaignState, cause: str) -> None:
                row = s.get(CampaignRow, c.id)
                assert row is not None
                transitions.append((c.id, c.state.value, new.value))
                self._transition(s, row, new, cause=cause, now=now)
                c.state = new
                view.quiet.discard(c.id)
                view.loads.pop(c.id, None)

            while True:
                # settle: active campaigns with nothing left to do free their place now (a
                # campaign that did not settle at its current version cannot settle now)
                for c in list(camps.values()):
                    if c.state is not CampaignState.ACTIVE or c.id in view.quiet:
                        continue
                    if c.tally is None:
                        c.tally = counters.recount(s, [c.id])[c.id]
                    st = self._snapshot(s, c.id).settings
                    settled = lifecycle.settle(CampaignState.ACTIVE, c.tally, st.threshold,
                                               st.keep_calling_after_threshold)
                    if settled is not None:
                        move(c, settled, _settle_cause(settled, c.tally, st))
                    else:
                        view.quiet.add(c.id)
                # activate: due scheduled and blocked campaigns, by priority then start time
                if not any(c.state is CampaignState.BLOCKED
                           or (c.state is CampaignState.SCHEDULED and c.start_at <= now)
                           for c in camps.values()):
                    break  # nothing waits for a place: activation would change nothing
                started = False
                for cid, new in lifecycle.activate(
                        [lifecycle.Startable(id=c.id, state=c.state, priority=c.priority,
                                             start_at=c.start_at) for c in camps.values()],
                        gs.max_campaigns, now):
                    c = camps[cid]
                    started = started or new is CampaignState.ACTIVE
                    move(c, new, lifecycle.activation_cause(c.state, new))
                if not started:
                    break

            raw_running = self._rows(s, _Q_RUNNING)
            if raw_running != view.running_rows:  # the same calls as last pass: same counts
                view.running_rows, view.running = raw_running, _running_of(raw_running)
            running = view.running
            g_running = running.get(None, _NONE_RUNNING)
            calls: list[ClaimedCall] = []
            router = None
            if trunks is not None:
                def carried_by(trunk: str) -> list[int]:
                    return [c.id for c in camps.values() if c.state is CampaignState.ACTIVE
                            and trunk in routing.trunks_of(
                                routes or {}, self._snapshot(s, c.id).settings.external_route)]

                router = self._router(s, trunks, routes or {}, _trunks_running(raw_running),
                                      now, carried_by)
            if router is not None:
                kinds_available = kinds_available & router.any_kinds()
            if scheduler.any_room(gs.limits, g_running, kinds_available, capacity):
                loads = [load for c in camps.values()
                         if (load := self._load(s, view, c, running.get(c.id, _NONE_RUNNING)))
                         is not None]
                for load in loads:
                    if (router is not None and load.route and load.id not in view.unrouted
                            and not routing.external_trunks(router.routes, load.route)):
                        view.unrouted.add(load.id)
                        logger.warning("campaign %s: route %r is not configured on node %s "
                                       "([routes.%s]): its external recipients wait",
                                       load.id, load.route, node, load.route,
                                       extra={"campaign": load.id})

                def fetch(load: scheduler.CampaignLoad, g_now: scheduler.Counts,
                          cap: int | None) -> list[scheduler.Candidate]:
                    kinds = (kinds_available if router is None
                             else kinds_available & router.kinds(load.route))
                    return self._candidates(s, load, gs.limits, g_now, cap, now, kinds)

                dials = scheduler.plan(loads, gs.limits, g_running, fetch,
                                       kinds_available=kinds_available, capacity=capacity,
                                       router=router)
                calls = self._claim(s, dials, node=node, now=now, lease=lease, draw=draw)
            next_due = self._next_due(s, view, now)
            if router is not None and (free := router.next_free()) is not None:
                next_due = free if next_due is None else min(next_due, free)
            waiting_window: list[int] = []
            for c in camps.values():
                if c.state is not CampaignState.ACTIVE:
                    continue
                w = self._snapshot(s, c.id).window
                if w is None:
                    continue
                zs = self._zones(s, c.id, w)
                now_open = window.open_zones(now, w, zs)
                known = view.window_due.get(c.id)  # the next opening, while the zones open stay
                if known is None or known[0] != now_open or (known[1] is not None
                                                             and known[1] <= now):
                    known = view.window_due[c.id] = (now_open, window.survey(now, w, zs)[1])
                opens = known[1]
                if not now_open:
                    waiting_window.append(c.id)
                if opens is not None:  # the pass that opens a closed zone
                    next_due = opens if next_due is None else min(next_due, opens)
            for cid in [c.id for c in camps.values() if c.state.value not in _LIVE]:
                self._forget(view, cid)  # settled in this pass: no longer live
            return Tick(calls=calls, next_due=next_due, transitions=transitions, settings=gs,
                        settled=lost_nodes, waiting_window=waiting_window,
                        hangups=self._stopped_calls(s, node)
                        if set(running) - {None} - set(camps) else [])  # calls of a stopped one

    def _refresh(self, s: Session, view: _View) -> dict[int, _Live]:
        """The live campaigns, re-reading only the rows whose version moved since the last pass."""
        versions = dict(self._rows(s, _Q_LIVE_VERSIONS))
        for cid in [cid for cid in view.versions if cid not in versions]:
            self._forget(view, cid)  # finished, deleted, or suspended meanwhile
        changed = [cid for cid, v in versions.items() if view.versions.get(cid) != v]
        if changed:
            for cid, state, prio, start, n_i, n_a, n_c, n_f, n_s in (
                    [r for one in changed for r in self._rows(s, _Q_LIVE_ONE, {"cid": one})]
                    if self.sqlite else self._rows(s, _Q_LIVE, {"ids": changed})):
                if state not in _LIVE:
                    continue  # left the live states between the two reads
                tally = (None if n_i is None or n_a is None or n_c is None or n_f is None
                         or n_s is None else lifecycle.Tally(idle=n_i, active=n_a, contacted=n_c,
                                                             failed=n_f, stopped=n_s))
                self._forget(view, cid)
                view.camps[cid] = _Live(id=cid, state=CampaignState(state), priority=prio,
                                        start_at=_as_utc(start).timestamp(), tally=tally)
                # the version read first: a row changed in between is simply re-read next pass
                view.versions[cid] = versions[cid]
            for cid in changed:
                if cid not in view.camps:  # left the live states between the two reads
                    view.versions.pop(cid, None)
        return view.camps

    @staticmethod
    def _forget(view: _View, cid: int) -> None:
        view.versions.pop(cid, None)
        view.camps.pop(cid, None)
        view.quiet.discard(cid)
        view.loads.pop(cid, None)
        view.retry_due.pop(cid, None)
        view.window_due.pop(cid, None)

    def _load(self, s: Session, view: _View, c: _Live,
              running: scheduler.Counts) -> scheduler.CampaignLoad | None:
        """The campaign as ``scheduler.plan`` sees it, or None when it may not place calls now;
        kept while its row and its calls in progress stay the same."""
        if c.state is not CampaignState.ACTIVE or c.tally is None:
            return None
        load = view.loads.get(c.id)
        if load is None:
            st = self._snapshot(s, c.id).settings
            if not lifecycle.may_call(c.tally, st.threshold, st.keep_calling_after_threshold):
                return None
            load = scheduler.CampaignLoad(id=c.id, priority=c.priority, start_at=c.start_at,
                                          limits=st.limits, running=running,
                                          route=st.external_route)
            view.loads[c.id] = load
        elif load.running != running:
            load = dataclasses.replace(load, running=running)
            view.loads[c.id] = load
        return load

    def _snapshot(self, s: Session, cid: int) -> _Snapshot:
        snap = self._snapshot_cache.get(cid)
        return snap if snap is not None else self._snapshots(s, [cid])[cid]

    def _snapshots(self, s: Session, ids: Sequence[int]) -> dict[int, _Snapshot]:
        """The frozen settings of these campaigns, parsed once per process (they never change)."""
        missing = [cid for cid in ids if cid not in self._snapshot_cache]
        if missing:
            for cid, raw, sha, secs in s.execute(
                    select(CampaignRow.id, CampaignRow.settings, CampaignRow.audio_sha,
                           CampaignRow.audio_seconds).where(CampaignRow.id.in_(missing))):
                st = settings_from_dict(raw)
                self._snapshot_cache[cid] = _Snapshot(
                    st, sha, secs, window.window_of(st.window, st.window_days, st.timezone))
        return {cid: self._snapshot_cache[cid] for cid in ids if cid in self._snapshot_cache}

    def _candidates(self, s: Session, load: scheduler.CampaignLoad, g_limits: Limits,
                    g_running: scheduler.Counts, capacity: int | None, now: float,
                    kinds: frozenset[Kind]) -> list[scheduler.Candidate]:
        """The campaign's callable recipients in its order: never called first (list order),
        then retries whose delay has passed (called longest ago first). At most as many of each
        kind as this decision could take; every query is a LIMITed range of one index."""
        n_int, n_ext = scheduler.wanted(load, g_limits, g_running, capacity)
        at = dt.datetime.fromtimestamp(now, UTC)
        w = self._snapshot(s, load.id).window
        if w is not None:  # a calling window: only the recipients of the zones open now
            zs = self._zones(s, load.id, w)
            now_open = window.open_zones(now, w, zs)
            # a zone unknown here: its recipients wait, so the reads name the zones open now
            if len(now_open) < len(zs) or not self._zone_cache[load.id][1]:
                return self._zoned(s, load.id, n_int, n_ext, kinds, at, now_open)
        fresh: list[tuple[int, int, str]] = []
        retry: list[tuple[float, int, int, str]] = []
        q_fresh, q_retry = (_Q_FRESH, _Q_RETRY) if self.sqlite else (_Q_FRESH_PG, _Q_RETRY_PG)
        for kind, n in ((Kind.INTERNAL, n_int), (Kind.EXTERNAL, n_ext)):
            if n <= 0 or kind not in kinds:
                continue
            params = {"cid": load.id, "kind": kind.value, "n": n, "at": at}
            got = [(pos, rid, kind.value) for pos, rid in self._rows(s, q_fresh, params)]
            fresh += got
            left = n - len(got)
            if left <= 0:
                continue  # the fresh ones of this kind fill what this decision can take
            # Is any retry of this kind due? (one index seek; NULL next_at: due at once)
            first = self._rows(s, _Q_FIRST_RETRY, params)
            if not first or (first[0][0] is not None and _as_utc(first[0][0]) > at):
                continue
            params["n"] = left
            retry += [(_as_utc(last).timestamp() if last is not None else 0.0, pos, rid,
                       kind.value)
                      for last, pos, rid in self._rows(s, q_retry, params)]
        fresh.sort()
        retry.sort()
        return ([scheduler.Candidate(rid, Kind(k), True) for _, rid, k in fresh]
                + [scheduler.Candidate(rid, Kind(k), False) for _, _, rid, k in retry])

    def _claim(self, s: Session, dials: list[scheduler.Dial], *, node: str,
               now: float, lease: int | None, draw: RandomBelow) -> list[ClaimedCall]:
        """Claim the recipients decided on: recipient, attempt and history rows written with
        Core statements (one guarded UPDATE ... RETURNING per recipient, one INSERT of all
        attempts, one of all events); the counters are booked through ``counters.shift``."""
        if not dials:
            return []
        s.flush()  # transitions of this pass first: the history keeps the order things happened
        at = to_dt(now)
        calls: list[ClaimedCall] = []
        attempts: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for d in dials:
            got = self._rows(s, _Q_CLAIM, {"rid": d.recipient_id, "at": at})
            if not got:  # single writer (SQLite) or a row lock we hold (PostgreSQL)
                raise DialerError(f"recipient {d.recipient_id} was claimed by someone else")
            number, kind, call_no = got[0]
            counters.shift(s, d.campaign_id, RecipientState.IDLE, RecipientState.ACTIVE)
            snap = self._snapshot(s, d.campaign_id)
            aid = uuid.uuid4().hex
            drawn = keys.draw(snap.settings, draw)
            attempts.append({"id": aid, "campaign_id": d.campaign_id,
                             "recipient_id": d.recipient_id, "number": number, "kind": kind,
                             "node": node, "lease": lease, "trunk": d.trunk, "created_at": at,
                             "keys": "", "answer_key": drawn.answer, "listen_key": drawn.listen})
            events.append({"at": at, "campaign_id": d.campaign_id, "recipient_id": d.recipient_id,
                           "attempt_id": aid, "kind": "attempt_started", "actor": None,
                           "detail": {"number": number, "kind": kind, "call": call_no,
                                      **({"trunk": d.trunk} if d.trunk else {}),
                                      **keys.detail(drawn)}})
            calls.append(ClaimedCall(attempt_id=aid, campaign_id=d.campaign_id,
                                     recipient_id=d.recipient_id, number=number, kind=d.kind,
                                     settings=snap.settings, audio_sha=snap.audio_sha,
                                     audio_seconds=snap.audio_seconds, trunk=d.trunk,
                                     drawn=drawn))
        self._insert(s, _Q_ADD_ATTEMPTS, attempts)
        self._insert(s, _Q_ADD_EVENTS, events)
        counters.apply(s)
        return calls

    def _next_due(self, s: Session, view: _View, now: float) -> float | None:
        """When the next scheduled start or retry delay falls due (None: nothing waits on time).

        Scheduled starts come from the live campaigns in memory; per active campaign, the first
        ``next_at`` after now is one seek into ``ix_recipients_due`` per kind, made again only
        when the campaign's version moved or that time has come.
        """
        due = [c.start_at for c in view.camps.values() if c.state is CampaignState.SCHEDULED]
        at: dt.datetime | None = None
        for c in view.camps.values():
            if c.state is not CampaignState.ACTIVE:
                continue
            version = view.versions.get(c.id)
            known = view.retry_due.get(c.id)
            if known is None or known[0] != version or (known[1] is not None
                                                         and known[1] <= now):
                at = at or to_dt(now)
                times = [_as_utc(t).timestamp()
                         for t in self._rows(s, _Q_NEXT_RETRY, {"cid": c.id, "at": at})[0]
                         if t is not None]
                known = (version, min(times) if times else None)
                view.retry_due[c.id] = known
            if known[1] is not None:
                due.append(known[1])
        return min(due) if due else None


_NONE_RUNNING = scheduler.Counts()
# this node's calls in progress (index-only, ix_attempts_open)
_Q_MINE = (select(func.count()).select_from(AttemptRow)
           .where(AttemptRow.ended_at.is_(None), AttemptRow.node == bindparam("node")))


@dataclass(kw_only=True)
class _Live:
    """A campaign as one scheduling pass sees and moves it."""

    id: int
    state: CampaignState
    priority: int
    start_at: float
    tally: lifecycle.Tally | None


@dataclass
class _View:
    """What the scheduling passes of this store keep between passes: a cache of the database,
    checked against ``campaigns.version`` at the start of every pass."""

    versions: dict[int, int] = dataclasses.field(default_factory=dict)  # as last read
    camps: dict[int, _Live] = dataclasses.field(default_factory=dict)  # live campaigns
    quiet: set[int] = dataclasses.field(default_factory=set)  # active, did not settle
    unrouted: set[int] = dataclasses.field(default_factory=set)  # warned: route not configured
    loads: dict[int, scheduler.CampaignLoad] = dataclasses.field(default_factory=dict)
    # active campaign -> (version, first retry time after the pass that read it, or None)
    retry_due: dict[int, tuple[int | None, float | None]] = dataclasses.field(
        default_factory=dict)
    # active campaign with a window -> (its zones open at the last pass, when the next opens)
    window_due: dict[int, tuple[frozenset[str | None], float | None]] = dataclasses.field(
        default_factory=dict)
    settings_row: Any = None
    settings: GlobalSettings | None = None
    running_rows: list[Any] | None = None  # the calls in progress as last read, and counted:
    running: dict[int | None, scheduler.Counts] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class _SettingsValues:
    """The settings row as ``_settings_view`` reads it, from a plain tuple."""

    id: int
    max_campaigns: int | None
    max_calls: int | None
    max_internal: int | None
    max_external: int | None
    version: int
    updated_at: Any
    updated_by: str | None


def _trunks_running(rows: list[Any]) -> dict[str, int]:
    """Calls in progress per trunk (attempts claimed before migration 0007 have none)."""
    out: dict[str, int] = {}
    for _cid, _kind, trunk, n in rows:
        if trunk is not None:
            out[trunk] = out.get(trunk, 0) + n
    return out


def _running_of(rows: list[Any]) -> dict[int | None, scheduler.Counts]:
    """Calls in progress per campaign, and in all under the key None."""
    acc: dict[int, list[int]] = {}
    n_int = n_ext = 0
    for cid, kind, _trunk, n in rows:
        pair = acc.setdefault(cid, [0, 0])
        if kind == Kind.INTERNAL.value:
            pair[0] += n
            n_int += n
        else:
            pair[1] += n
            n_ext += n
    out: dict[int | None, scheduler.Counts] = {
        cid: scheduler.Counts(i, e) for cid, (i, e) in acc.items()}
    out[None] = scheduler.Counts(n_int, n_ext)
    return out


@dataclass(frozen=True)
class _Snapshot:
    """What a pass needs of a campaign's frozen snapshot."""

    settings: CampaignSettings
    audio_sha: str
    audio_seconds: float
    window: Window | None = None  # parsed from the settings (None: urgent)


def _settle_cause(state: CampaignState, tally: lifecycle.Tally, st: CampaignSettings) -> str:
    need = lifecycle.threshold_of(st.threshold, tally.total)
    return f"{tally.contacted} of {tally.total} contacted, threshold {need}"
