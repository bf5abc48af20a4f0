"""The trunks in the database (issue 13): the router of a scheduling pass, with the calls in
progress and the recent claims of each trunk counted over every node, and each trunk's health
guard (``trunk_health``), judged when an attempt on it ends badly and shared by every node.

The rules are pure (``dialer.core.routing``, ``dialer.core.health``); this module reads what
they need and stores what they decide. The health policies come from the configuration
(``set_trunk_policies``, by the composition root); a trunk without one gets the defaults.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from dialer.core import health
from dialer.core.domain import Outcome
from dialer.core.records import TrunkHealthView
from dialer.core.routing import Router, TrunkLoad, cps_window
from dialer.storage.chain import Chain
from dialer.storage.fastpath import FastPath
from dialer.storage.models import AttemptRow, TrunkHealthRow
from dialer.storage.records import UTC, _as_utc, at_dt, to_dt

logger = logging.getLogger("dialer.storage.store")

# the outcomes of a trunk's last attempts placed since ``since`` that have ended (ix_attempts_trunk)
_Q_WINDOW = (select(AttemptRow.outcome)
             .where(AttemptRow.trunk == bindparam("trunk"),
                    AttemptRow.created_at > bindparam("since"),
                    AttemptRow.ended_at.is_not(None))
             .order_by(AttemptRow.created_at.desc()).limit(bindparam("n")))
# the claims of a trunk within its rate window (ix_attempts_trunk)
_Q_RECENT = (select(AttemptRow.created_at)
             .where(AttemptRow.trunk == bindparam("trunk"),
                    AttemptRow.created_at > bindparam("since"))
             .order_by(AttemptRow.created_at))
_Q_HEALTH = select(TrunkHealthRow.name, TrunkHealthRow.until, TrunkHealthRow.level,
                   TrunkHealthRow.since, TrunkHealthRow.reason, TrunkHealthRow.reg_failures)


class Trunks(Chain, FastPath):
    """The trunks' side of the store."""

    _trunk_policies: dict[str, health.HealthPolicy]
    _tripped: set[str]  # trunks whose back-off level is above 0, as the last pass read them

    def set_trunk_policies(self, policies: Mapping[str, health.HealthPolicy]) -> None:
        """The health guard of each configured trunk (``[trunks.<name>]`` health keys)."""
        self._trunk_policies = dict(policies)

    def _policy(self, trunk: str) -> health.HealthPolicy:
        return getattr(self, "_trunk_policies", {}).get(trunk) or health.HealthPolicy()

    # ----- health -----

    def _health_rows(self, s: Session) -> dict[str, health.Health]:
        return {name: health.Health(until=_ts(until), level=level, since=_ts(since) or 0.0,
                                    reason=reason, reg_failures=regs)
                for name, until, level, since, reason, regs in self._rows(s, _Q_HEALTH)}

    def _store_health(self, s: Session, name: str, state: health.Health, now: float) -> None:
        row = s.get(TrunkHealthRow, name, with_for_update=not self.sqlite)
        if row is None:
            row = TrunkHealthRow(name=name)
            s.add(row)
        row.until = to_dt(state.until)
        row.level = state.level
        row.since = at_dt(state.since)
        row.reason = state.reason[:200]
        row.reg_failures = state.reg_failures
        row.changed_at = at_dt(now)

    def _health_change(self, s: Session, name: str, change: health.Change, now: float,
                       campaign_ids: Sequence[int]) -> None:
        kind = "trunk_healthy" if change.healthy else "trunk_unhealthy"
        until = (dt.datetime.fromtimestamp(change.until, UTC).isoformat(timespec="seconds")
                 if change.until is not None else None)
        targets: list[int | None] = [*campaign_ids] or [None]
        for cid in targets:
            self._event(s, kind, at=now, campaign_id=cid, trunk=name, reason=change.reason,
                        until=until)
        (logger.info if change.healthy else logger.warning)(
            "trunk %s %s: %s%s", name, "healthy" if change.healthy else "unhealthy",
            change.reason, f" (until {until})" if until else "")

    def _judge_trunk(self, s: Session, trunk: str, outcome: Outcome, now: float,
                     campaign_id: int) -> None:
        """An attempt on ``trunk`` ended ``outcome``: assess the trunk's health. Only a bad
        outcome, or a good one while the trunk carries trips (as the last scheduling pass
        read them), costs a read."""
        if outcome not in health.BAD and trunk not in getattr(self, "_tripped", set()):
            return
        states = self._health_rows(s)
        state = states.get(trunk, health.Health())
        if outcome not in health.BAD and state.level == 0:
            return
        policy = self._policy(trunk)
        since = at_dt(state.since)
        recent = [Outcome(o) for (o,) in self._rows(s, _Q_WINDOW, {
            "trunk": trunk, "since": since, "n": policy.window}) if o]
        new, change = health.assess(policy, state, recent, now)
        if new != state:
            self._store_health(s, trunk, new, now)
        if change is not None:
            self._health_change(s, trunk, change, now, [campaign_id])

    def trunk_registration(self, trunk: str, ok: bool, why: str, now: float) -> None:
        """The trunk's registration succeeded or failed (as this node's worker reported it)."""
        with self.session() as s:
            state = self._health_rows(s).get(trunk, health.Health())
            if ok:
                new, change = health.registered(state), None
            else:
                new, change = health.registration_failed(self._policy(trunk), state, now, why)
            if new != state:
                self._store_health(s, trunk, new, now)
            if change is not None:
                self._health_change(s, trunk, change, now, [])

    def trunk_health(self, now: float) -> dict[str, TrunkHealthView]:
        """Every trunk ever judged: healthy or not, until when, why."""
        with self.session() as s:
            return {name: TrunkHealthView(name=name, healthy=st.healthy(now),
                                          until=st.until if not st.healthy(now) else None,
                                          reason=st.reason, level=st.level)
                    for name, st in self._health_rows(s).items()}

    # ----- the router of a scheduling pass -----

    def _router(self, s: Session, loads: Sequence[TrunkLoad],
                routes: Mapping[str, tuple[str, ...]], running: Mapping[str, int],
                now: float, campaigns: Callable[[str], list[int]]) -> Router:
        """A router over this node's trunks: ``loads`` (usable as registered here, limits),
        with the calls in progress per trunk over every node (``running``), the recent claims of
        the rate-limited ones, and their health; puts back in service the trunks whose back-off
        is over (an event in the history of ``campaigns(trunk)``, the live ones it carries)."""
        states = self._health_rows(s)
        self._tripped = {name for name, st in states.items() if st.level > 0}
        out: dict[str, TrunkLoad] = {}
        for load in loads:
            state = states.get(load.name)
            usable = load.usable
            if state is not None and state.until is not None:
                if state.healthy(now):
                    new, change = health.back_in_service(state, now)
                    self._store_health(s, load.name, new, now)
                    if change is not None:
                        self._health_change(s, load.name, change, now, campaigns(load.name))
                else:
                    usable = False
            recent: list[float] = []
            if load.max_cps is not None and usable:
                window, _ = cps_window(load.max_cps)
                recent = [_as_utc(t).timestamp() for (t,) in self._rows(
                    s, _Q_RECENT, {"trunk": load.name, "since": to_dt(now - window)})]
            out[load.name] = dataclasses.replace(load, usable=usable,
                                                 running=running.get(load.name, 0),
                                                 recent=recent)
        return Router(out, routes, now)


def _ts(value: Any) -> float | None:
    return None if value is None else _as_utc(value).timestamp()
