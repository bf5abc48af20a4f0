"""The daemon's book of its trunks (issue 13): registration as this node's workers report it,
what the scheduling pass needs of each trunk (``dialer.core.routing.TrunkLoad``: usable here,
its limits), registration results passed on to the shared health guard, and the trunks'
metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from dialer import ipc
from dialer.config import Config, TrunkConfig
from dialer.core.ports import DispatchPort
from dialer.core.routing import TrunkLoad
from dialer.metrics import Metrics

logger = logging.getLogger("dialer.daemon")

HEALTH_METRICS_INTERVAL = 2.0  # seconds between reads of the trunks' health for the metrics


@dataclass
class TrunkState:
    """Registration state of one trunk as the registering worker reports it."""

    config: TrunkConfig
    registered: bool
    code: int | None = None
    reason: str | None = None

    @property
    def needs_registration(self) -> bool:
        return self.config.registrar is not None


class TrunkBook:
    """This node's trunks."""

    def __init__(self, config: Config, store: DispatchPort, metrics: Metrics,
                 clock: Callable[[], float]) -> None:
        self.states = {name: TrunkState(config=t, registered=t.registrar is None)
                       for name, t in config.trunks.items()}
        self.routes = config.routes
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._health_at = float("-inf")
        store.set_trunk_policies({name: t.health for name, t in config.trunks.items()})

    def loads(self) -> list[TrunkLoad]:
        """The trunks as this node's scheduling pass sees them (health and counts are added by
        the store, from the database)."""
        return [TrunkLoad(name, usable=t.registered, max_calls=t.config.max_calls,
                          max_cps=t.config.max_cps) for name, t in self.states.items()]

    def registration_lost(self) -> None:
        """The registering worker died: every trunk that registers is unregistered."""
        for t in self.states.values():
            if t.needs_registration:
                t.registered = False

    def on_registration(self, msg: ipc.Reg) -> tuple[TrunkState, bool] | None:
        """A ``reg`` event: the trunk and whether its registration changed (None: unknown
        trunk). A failure counts towards the trunk's health guard; a success clears them."""
        t = self.states.get(msg.trunk)
        if t is None:
            return None
        was = t.registered
        t.registered = 200 <= msg.code < 300 and msg.expires > 0
        t.code, t.reason = msg.code, msg.reason
        self._metrics.set_trunk(t.config.name, t.registered, msg.code)
        if was != t.registered or not t.registered:  # every failure is worth a line
            log = logger.info if t.registered else logger.warning
            log("trunk %s %s (%s %s)", t.config.name,
                "registered" if t.registered else "not registered", msg.code, t.reason)
        if t.needs_registration and (was != t.registered or not t.registered):
            self._store.trunk_registration(t.config.name, t.registered,
                                           f"{msg.code} {t.reason or ''}".strip(), self._clock())
        return t, was != t.registered

    def update_metrics(self) -> None:
        for name, t in self.states.items():
            self._metrics.set_trunk(name, t.registered, t.code)
        now = self._clock()
        if now - self._health_at >= HEALTH_METRICS_INTERVAL:
            self._health_at = now
            health = self._store.trunk_health(now)
            for name in self.states:
                h = health.get(name)
                self._metrics.set_trunk_health(name, h is None or h.healthy)
