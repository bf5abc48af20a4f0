"""The scheduling rule (SPEC section 3) as pure functions: which recipients get the free call slots.

1. campaigns allowed to call, by priority (highest first), then start time (earliest first);
2. from the first campaign, fill free slots up to its own limits and the global ones;
3. within a campaign, never-called recipients first in list order; when one kind's limit is full,
   only recipients of the other kind are taken;
4. then recipients to retry, the one called longest ago first, once their retry delay has passed;
5. then the next campaign.

The storage adapter loads the candidates (already ordered as in 3 and 4, at most as many of each
kind as could possibly be taken) and the counts of calls in progress; ``plan`` decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from dialer.core.domain import Kind, Limits
from dialer.core.routing import Router


@dataclass(frozen=True)
class Counts:
    """Calls in progress, in total and by kind."""

    internal: int = 0
    external: int = 0

    @property
    def total(self) -> int:
        return self.internal + self.external

    def add(self, kind: Kind) -> Counts:
        if kind is Kind.INTERNAL:
            return Counts(self.internal + 1, self.external)
        return Counts(self.internal, self.external + 1)

    def of(self, kind: Kind) -> int:
        return self.internal if kind is Kind.INTERNAL else self.external


@dataclass(frozen=True, kw_only=True)
class CampaignLoad:
    """A campaign allowed to place calls, as the scheduler sees it."""

    id: int
    priority: int
    start_at: float
    limits: Limits
    running: Counts
    route: str | None = None  # the template's external route (``dialer.core.routing``)


@dataclass(frozen=True)
class Candidate:
    """A recipient that may be called now. ``fresh``: never called before."""

    recipient_id: int
    kind: Kind
    fresh: bool


@dataclass(frozen=True)
class Waiting:
    """A recipient of a campaign that may be called now (idle; any retry delay over)."""

    recipient_id: int
    kind: Kind
    position: int  # its place in the campaign's list
    last_call_at: float | None  # None: never called


def call_order(w: Waiting) -> tuple[int, float, int]:
    """SPEC 3 rules 3-4 as a sort key: recipients never called come first, in list order; then
    retries, the one called longest ago first (ties in list order). ``dialer.storage.fastpath``
    orders its queries by the same columns (``position``; ``last_call_at, position``)."""
    if w.last_call_at is None:
        return (0, 0.0, w.position)
    return (1, w.last_call_at, w.position)


def candidates(waiting: Iterable[Waiting], n_internal: int, n_external: int) -> list[Candidate]:
    """The recipients one decision may call, in ``call_order``: at most ``n_internal`` internal
    and ``n_external`` external ones (``wanted``), the first of each kind in that order."""
    pool = list(waiting)
    chosen: list[Waiting] = []
    for kind, n in ((Kind.INTERNAL, n_internal), (Kind.EXTERNAL, n_external)):
        if n > 0:
            chosen += sorted((w for w in pool if w.kind is kind), key=call_order)[:n]
    chosen.sort(key=call_order)
    return [Candidate(w.recipient_id, w.kind, w.last_call_at is None) for w in chosen]


@dataclass(frozen=True)
class Dial:
    """The decision to call one recipient of one campaign."""

    campaign_id: int
    recipient_id: int
    kind: Kind
    trunk: str | None = None  # the trunk the router chose (None: no router, the kind's trunk)


def rank(campaigns: Sequence[CampaignLoad]) -> list[CampaignLoad]:
    """Priority first (highest first), then start time (earliest first); id breaks ties."""
    return sorted(campaigns, key=lambda c: (-c.priority, c.start_at, c.id))


def _room(limit: int | None, used: int) -> float:
    return float("inf") if limit is None else max(0, limit - used)


def room(limits: Limits, running: Counts) -> tuple[float, float, float]:
    """Free slots (total, internal, external) under ``limits``; ``inf`` when unlimited."""
    return (
        _room(limits.total, running.total),
        _room(limits.internal, running.internal),
        _room(limits.external, running.external),
    )


CandidateSource = Callable[[CampaignLoad, Counts, "int | None"], Sequence[Candidate]]
"""Loads a campaign's candidates on demand: ``(campaign, global running now, capacity left)``.

``plan`` calls it only for a campaign that could take a call at that point of the decision, in
rank order, so the storage adapter reads candidates of the few campaigns that get slots, never of
all of them; ``wanted(campaign, global_limits, running, capacity)`` bounds how many to read.
"""


def plan(
    campaigns: Sequence[CampaignLoad],
    global_limits: Limits,
    global_running: Counts,
    candidates: Mapping[int, Sequence[Candidate]] | CandidateSource,
    *,
    kinds_available: frozenset[Kind] = frozenset(Kind),
    capacity: int | None = None,
    router: Router | None = None,
) -> list[Dial]:
    """Decide the calls to place now.

    ``candidates[campaign_id]`` lists the campaign's callable recipients in the campaign's own
    order (fresh in list order, then retries longest-ago first); or ``candidates`` is a
    ``CandidateSource`` that loads that list when the campaign's turn comes and it has room.
    ``kinds_available`` leaves out a kind whose trunk cannot place calls now (unregistered): its
    recipients are not touched, so no attempt is burned. ``capacity`` bounds the total further
    (free worker slots of this node). ``router`` (``dialer.core.routing``) picks each call's
    trunk from its campaign's route; a recipient whose route has no trunk with room now is left
    alone like one of an unavailable kind.
    """
    dials: list[Dial] = []
    g_running = global_running
    cap = float("inf") if capacity is None else capacity
    for camp in rank(campaigns):
        c_running = camp.running
        if isinstance(candidates, Mapping):
            listed: Sequence[Candidate] = candidates.get(camp.id, ())
        else:
            kinds = (kinds_available if router is None
                     else kinds_available & router.kinds(camp.route))
            if cap <= 0 or not _has_room(camp, global_limits, g_running, kinds):
                if cap <= 0 or room(global_limits, g_running)[0] <= 0:
                    return dials
                continue
            listed = candidates(camp, g_running, None if capacity is None else int(cap))
        for cand in listed:
            if cap <= 0:
                return dials
            g_total, g_int, g_ext = room(global_limits, g_running)
            if g_total <= 0:
                return dials
            c_total, c_int, c_ext = room(camp.limits, c_running)
            if c_total <= 0:
                break
            if cand.kind not in kinds_available:
                continue
            kind_room = min(g_int, c_int) if cand.kind is Kind.INTERNAL else min(g_ext, c_ext)
            if kind_room <= 0:
                continue  # this kind is full: keep looking for the other kind
            trunk = None
            if router is not None:
                trunk = router.pick(cand.kind, camp.route)
                if trunk is None:
                    continue  # no trunk of its route can take it now: it waits, unspent
                router.take(trunk)
            dials.append(Dial(camp.id, cand.recipient_id, cand.kind, trunk))
            g_running = g_running.add(cand.kind)
            c_running = c_running.add(cand.kind)
            cap -= 1
    return dials


def any_room(global_limits: Limits, global_running: Counts,
             kinds_available: frozenset[Kind] = frozenset(Kind),
             capacity: int | None = None) -> bool:
    """Whether ``plan`` could place any call at all under the global limits and ``capacity``.

    False means ``plan`` returns no dial whatever the campaigns: the storage adapter then skips
    loading them (the common pass once every slot is taken)."""
    if capacity is not None and capacity <= 0:
        return False
    g_total, g_int, g_ext = room(global_limits, global_running)
    if g_total <= 0:
        return False
    return ((Kind.INTERNAL in kinds_available and g_int > 0)
            or (Kind.EXTERNAL in kinds_available and g_ext > 0))


def _has_room(camp: CampaignLoad, global_limits: Limits, g_running: Counts,
              kinds: frozenset[Kind]) -> bool:
    """Whether ``camp`` could take one more call of some available kind right now."""
    g_total, g_int, g_ext = room(global_limits, g_running)
    c_total, c_int, c_ext = room(camp.limits, camp.running)
    if min(g_total, c_total) <= 0:
        return False
    return ((Kind.INTERNAL in kinds and min(g_int, c_int) > 0)
            or (Kind.EXTERNAL in kinds and min(g_ext, c_ext) > 0))


def wanted(camp: CampaignLoad, global_limits: Limits, global_running: Counts,
           capacity: int | None = None) -> tuple[int, int]:
    """How many candidates of each kind (internal, external) are worth loading for ``camp``.

    An upper bound on what ``plan`` could take from this campaign, so the storage adapter never
    reads more rows than one decision can use.
    """
    g_total, g_int, g_ext = room(global_limits, global_running)
    c_total, c_int, c_ext = room(camp.limits, camp.running)
    total = min(g_total, c_total, float("inf") if capacity is None else capacity)
    n_int = min(total, g_int, c_int)
    n_ext = min(total, g_ext, c_ext)
    big = 1_000_000
    return int(min(n_int, big)), int(min(n_ext, big))
