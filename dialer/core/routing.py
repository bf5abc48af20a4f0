"""Which trunk carries a call (issue 13), as pure values: routes, per-trunk limits, health.

Extensions go by the internal trunk. An external number goes by its template's route
(``[routes.<name>] trunks = [...]``, in order; a template that names no route takes
``DEFAULT_ROUTE``, the external trunk alone): the first trunk of the route that is usable on this
node (registered, when it registers, and healthy: ``dialer.core.health``) and under its limits
(``max_calls`` calls in progress and ``max_cps`` call attempts per second, counted over every
node from the database) takes it. When none can, the recipient waits and no attempt is spent.

``scheduler.plan`` asks a ``Router`` for each recipient it would call and tells it each call it
decides on, so that one decision never takes a trunk past its limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from dialer.core.domain import Kind

DEFAULT_ROUTE = "external"  # the route of a template that names none
INTERNAL_TRUNK = "internal"  # the trunk of every extension
# A call attempt leaves a few milliseconds after its claim, the delay varies with the load: the
# rate window is this much longer than the rate's own, so that no second of INVITEs on the
# wire holds more than max_cps of them.
CPS_MARGIN = 0.1


def cps_window(max_cps: float) -> tuple[float, int]:
    """The window (s) and the number of claims it may hold for ``max_cps``: one second and
    ``max_cps`` claims, or for a rate below one, one claim per ``1 / max_cps`` s."""
    if max_cps >= 1:
        return 1.0 + CPS_MARGIN, int(math.floor(max_cps))
    return 1.0 / max_cps + CPS_MARGIN, 1


@dataclass
class TrunkLoad:
    """One trunk as a scheduling pass sees it. ``recent``: the claim times of its calls within
    its rate window (all nodes), oldest first; ``running``: its calls in progress (all nodes)."""

    name: str
    usable: bool = True
    max_calls: int | None = None
    running: int = 0
    max_cps: float | None = None
    recent: list[float] = field(default_factory=list)

    def room(self, now: float) -> bool:
        if not self.usable:
            return False
        if self.max_calls is not None and self.running >= self.max_calls:
            return False
        if self.max_cps is not None:
            window, n = cps_window(self.max_cps)
            if sum(1 for t in self.recent if t > now - window) >= n:
                return False
        return True

    def free_at(self, now: float) -> float | None:
        """When its rate lets one more call through (None: not held by its rate)."""
        if self.max_cps is None or not self.usable:
            return None
        window, n = cps_window(self.max_cps)
        inside = sorted(t for t in self.recent if t > now - window)
        if len(inside) < n:
            return None
        return inside[len(inside) - n] + window


class Router:
    """Picks the trunk of each call one scheduling pass decides on; mutable within the pass."""

    def __init__(self, trunks: Mapping[str, TrunkLoad], routes: Mapping[str, tuple[str, ...]],
                 now: float) -> None:
        self.trunks = dict(trunks)
        self.routes = dict(routes)
        self.at = now

    def route_of(self, kind: Kind, route: str | None) -> tuple[str, ...]:
        """The trunks that may carry a recipient of ``kind`` of a template routed ``route``."""
        if kind is Kind.INTERNAL:
            return (INTERNAL_TRUNK,)
        return external_trunks(self.routes, route)

    def pick(self, kind: Kind, route: str | None) -> str | None:
        """The first trunk of the route that can take a call now, or None (the recipient waits)."""
        for name in self.route_of(kind, route):
            t = self.trunks.get(name)
            if t is not None and t.room(self.at):
                return name
        return None

    def take(self, name: str) -> None:
        t = self.trunks[name]
        t.running += 1
        t.recent.append(self.at)

    def kinds(self, route: str | None) -> frozenset[Kind]:
        """The kinds of recipient a campaign routed ``route`` could place a call for now."""
        return frozenset(k for k in Kind if self.pick(k, route) is not None)

    def any_kinds(self) -> frozenset[Kind]:
        """The kinds some campaign could place a call for now, whatever its route."""
        return frozenset(k for k in Kind for r in {*self.routes, None} if self.pick(k, r))

    def next_free(self) -> float | None:
        """The earliest time a trunk held only by its rate takes a call again."""
        times = [t for load in self.trunks.values() if (t := load.free_at(self.at)) is not None]
        return min(times) if times else None


def external_trunks(routes: Mapping[str, tuple[str, ...]], route: str | None) -> tuple[str, ...]:
    """The trunks of route ``route`` (none: ``DEFAULT_ROUTE``, which is the external trunk alone
    unless a ``[routes.external]`` table says otherwise); () for a route nobody defined."""
    name = route or DEFAULT_ROUTE
    if name in routes:
        return routes[name]
    return (DEFAULT_ROUTE,) if name == DEFAULT_ROUTE else ()


def trunks_of(routes: Mapping[str, tuple[str, ...]], route: str | None) -> tuple[str, ...]:
    """Every trunk a campaign of a template routed ``route`` may use."""
    return (INTERNAL_TRUNK, *external_trunks(routes, route))


def open_router(routes: Mapping[str, tuple[str, ...]], names: list[str], now: float) -> Router:
    """A router with every trunk usable and unlimited (a test, the simulator)."""
    return Router({n: TrunkLoad(n) for n in names}, routes, now)
