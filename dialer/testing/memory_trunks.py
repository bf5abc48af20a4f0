"""The trunks of ``MemoryStore`` (``dialer.storage.trunks`` without the database): the router of
a scheduling pass and each trunk's health guard, by the same core (``dialer.core.routing``,
``dialer.core.health``)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dialer.core import health
from dialer.core.domain import Outcome
from dialer.core.records import TrunkHealthView
from dialer.core.routing import Router, TrunkLoad, cps_window

if TYPE_CHECKING:
    from dialer.testing.memory_rows import _Attempt


class MemoryTrunks:
    """``set_trunk_policies``, ``trunk_registration``, ``trunk_health``; ``_router`` and
    ``_judge_trunk`` for the scheduling pass and the end of an attempt."""

    _lock: threading.RLock
    attempts: dict[str, _Attempt]

    if TYPE_CHECKING:
        def _event(self, kind: str, /, *, at: float, campaign_id: int | None = None,
                   recipient_id: int | None = None, attempt_id: str | None = None,
                   actor: str | None = None, **detail: Any) -> None: ...

    def _health_state(self) -> dict[str, health.Health]:
        if not hasattr(self, "_healths"):
            self._healths: dict[str, health.Health] = {}
            self._policies: dict[str, health.HealthPolicy] = {}
        return self._healths

    def set_trunk_policies(self, policies: Mapping[str, health.HealthPolicy]) -> None:
        self._health_state()
        self._policies = dict(policies)

    def _policy(self, trunk: str) -> health.HealthPolicy:
        self._health_state()
        return self._policies.get(trunk) or health.HealthPolicy()

    def _change(self, name: str, change: health.Change, now: float,
                campaign_ids: Sequence[int]) -> None:
        kind = "trunk_healthy" if change.healthy else "trunk_unhealthy"
        targets: list[int | None] = [*campaign_ids] or [None]
        for cid in targets:
            self._event(kind, at=now, campaign_id=cid, trunk=name, reason=change.reason,
                        until=change.until)

    def _judge_trunk(self, trunk: str, outcome: Outcome, now: float, campaign_id: int) -> None:
        states = self._health_state()
        state = states.get(trunk, health.Health())
        if outcome not in health.BAD and state.level == 0:
            return
        policy = self._policy(trunk)
        ended = sorted((a for a in self.attempts.values()
                        if a.trunk == trunk and a.created_at > state.since
                        and a.ended_at is not None and a.outcome),
                       key=lambda a: (a.created_at, a.seq), reverse=True)
        recent = [Outcome(a.outcome) for a in ended[:policy.window] if a.outcome]
        states[trunk], change = health.assess(policy, state, recent, now)
        if change is not None:
            self._change(trunk, change, now, [campaign_id])

    def trunk_registration(self, trunk: str, ok: bool, why: str, now: float) -> None:
        with self._lock:
            states = self._health_state()
            state = states.get(trunk, health.Health())
            if ok:
                states[trunk] = health.registered(state)
                return
            states[trunk], change = health.registration_failed(self._policy(trunk), state,
                                                               now, why)
            if change is not None:
                self._change(trunk, change, now, [])

    def trunk_health(self, now: float) -> dict[str, TrunkHealthView]:
        with self._lock:
            return {n: TrunkHealthView(name=n, healthy=st.healthy(now),
                                       until=None if st.healthy(now) else st.until,
                                       reason=st.reason, level=st.level)
                    for n, st in self._health_state().items()}

    def _router(self, loads: Sequence[TrunkLoad], routes: Mapping[str, tuple[str, ...]],
                now: float, campaigns: Callable[[str], list[int]]) -> Router:
        states = self._health_state()
        out: dict[str, TrunkLoad] = {}
        for load in loads:
            usable = load.usable
            state = states.get(load.name)
            if state is not None and state.until is not None:
                if state.healthy(now):
                    states[load.name], change = health.back_in_service(state, now)
                    if change is not None:
                        self._change(load.name, change, now, campaigns(load.name))
                else:
                    usable = False
            mine = [a for a in self.attempts.values() if a.trunk == load.name]
            recent: list[float] = []
            if load.max_cps is not None:
                window, _ = cps_window(load.max_cps)
                recent = sorted(a.created_at for a in mine if a.created_at > now - window)
            out[load.name] = dataclasses.replace(
                load, usable=usable, recent=recent,
                running=sum(1 for a in mine if a.ended_at is None))
        return Router(out, routes, now)
