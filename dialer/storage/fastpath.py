"""The statements of a scheduling pass, built once, and how they run: on SQLite straight on the
driver's cursor (the raw-driver fast path), elsewhere through SQLAlchemy."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from dialer.core.domain import CampaignState, Kind, RecipientState
from dialer.storage.engine import StoreEngine
from dialer.storage.models import (
    AttemptRow,
    CampaignRow,
    EventRow,
    RecipientRow,
    SettingsRow,
    UtcDateTime,
)

# The statements of a scheduling pass, built once: building a statement costs more Python time
# than SQLite needs to run it.
_LIVE = [CampaignState.SCHEDULED.value, CampaignState.BLOCKED.value, CampaignState.ACTIVE.value]
# every pass: which campaigns are live, at which version (index-only, ix_campaigns_state_version)
_Q_LIVE_VERSIONS = select(CampaignRow.id, CampaignRow.version).where(CampaignRow.state.in_(_LIVE))
# only the rows whose version moved since the previous pass
_Q_LIVE = select(CampaignRow.id, CampaignRow.state, CampaignRow.priority, CampaignRow.start_at,
                 CampaignRow.n_idle, CampaignRow.n_active, CampaignRow.n_contacted,
                 CampaignRow.n_failed, CampaignRow.n_stopped).where(
    CampaignRow.state.in_(_LIVE), CampaignRow.id.in_(bindparam("ids", expanding=True)))
_SETTINGS = SettingsRow.__table__
_SETTINGS_COLUMNS = ("id", "max_campaigns", "max_calls", "max_internal", "max_external",
                     "version", "updated_at", "updated_by")
_Q_SETTINGS = select(*[_SETTINGS.c[name] for name in _SETTINGS_COLUMNS]).where(_SETTINGS.c.id == 1)
# SQLite: one changed campaign by id (the caller keeps the live ones)
_Q_LIVE_ONE = select(CampaignRow.id, CampaignRow.state, CampaignRow.priority,
                     CampaignRow.start_at, CampaignRow.n_idle, CampaignRow.n_active,
                     CampaignRow.n_contacted, CampaignRow.n_failed, CampaignRow.n_stopped).where(
    CampaignRow.id == bindparam("cid"))
# PostgreSQL: the settings row serialises the decisions of every node
_Q_SETTINGS_PG = _Q_SETTINGS.with_for_update()
_RECIPIENTS = cast(Table, RecipientRow.__table__)
# the claim of one recipient; the guard on its state makes a double claim impossible
_Q_CLAIM = (update(_RECIPIENTS)
            .where(_RECIPIENTS.c.id == bindparam("rid"),
                   _RECIPIENTS.c.state == RecipientState.IDLE.value)
            .values(state=RecipientState.ACTIVE.value, calls=_RECIPIENTS.c.calls + 1,
                    last_call_at=bindparam("at", type_=UtcDateTime()))
            .returning(_RECIPIENTS.c.number, _RECIPIENTS.c.kind, _RECIPIENTS.c.calls))
_Q_ADD_ATTEMPTS = insert(cast(Table, AttemptRow.__table__))
_Q_ADD_EVENTS = insert(cast(Table, EventRow.__table__))
_Q_RUNNING = (select(AttemptRow.campaign_id, AttemptRow.kind, AttemptRow.trunk, func.count())
              .where(AttemptRow.ended_at.is_(None))
              .group_by(AttemptRow.campaign_id, AttemptRow.kind, AttemptRow.trunk))
_IDLE_OF_KIND = (RecipientRow.campaign_id == bindparam("cid"),
                 RecipientRow.state == RecipientState.IDLE.value,
                 RecipientRow.kind == bindparam("kind"))
_Q_FRESH = (select(RecipientRow.position, RecipientRow.id)
            .where(*_IDLE_OF_KIND, RecipientRow.calls == 0)
            .order_by(RecipientRow.position).limit(bindparam("n")))
_Q_FIRST_RETRY = (select(RecipientRow.next_at).where(*_IDLE_OF_KIND, RecipientRow.calls > 0)
                  .order_by(RecipientRow.next_at).limit(1))
_Q_RETRY = (select(RecipientRow.last_call_at, RecipientRow.position, RecipientRow.id)
            .where(*_IDLE_OF_KIND, RecipientRow.calls > 0, RecipientRow.last_call_at.is_not(None),
                   or_(RecipientRow.next_at.is_(None), RecipientRow.next_at <= bindparam("at")))
            .order_by(RecipientRow.last_call_at, RecipientRow.position).limit(bindparam("n")))
# PostgreSQL: several nodes claim at once; a row another node is claiming is skipped.
_Q_FRESH_PG = _Q_FRESH.with_for_update(skip_locked=True)
_Q_RETRY_PG = _Q_RETRY.with_for_update(skip_locked=True)
# A campaign with a calling window whose recipients' zones are not all open: the same reads, one
# zone at a time (``tz``; NULL: the recipients in the campaign's own zone), merged by the caller.
# Keyed by (PostgreSQL, the campaign's own zone): (fresh, retry).
_IN_ZONE = RecipientRow.timezone == bindparam("tz")
_OWN_ZONE = RecipientRow.timezone.is_(None)
_Q_ZONED = {(pg, own): tuple(q.where(_OWN_ZONE if own else _IN_ZONE) for q in (
    (_Q_FRESH_PG, _Q_RETRY_PG) if pg else (_Q_FRESH, _Q_RETRY)))
    for pg in (False, True) for own in (False, True)}
# the distinct zones of a campaign's recipients (read once per campaign and process)
_Q_ZONES = select(RecipientRow.timezone).where(
    RecipientRow.campaign_id == bindparam("cid")).distinct()
# the first retry time after now of one campaign, per kind: one seek into ix_recipients_due each
_Q_NEXT_RETRY = select(*[
    select(RecipientRow.next_at)
    .where(RecipientRow.campaign_id == bindparam("cid"),
           RecipientRow.state == RecipientState.IDLE.value, RecipientRow.kind == kind.value,
           RecipientRow.next_at > bindparam("at"))
    .order_by(RecipientRow.next_at).limit(1).scalar_subquery() for kind in Kind])


class FastPath(StoreEngine):
    """``_rows`` and ``_insert``: the statements above (and others) run with the least Python."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``StoreEngine.__init__``, and the compiled statements of ``_rows`` and ``_insert``."""
        super().__init__(url, create=create)
        self._sql_cache: dict[Any, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        self._sqlite_datetime: Callable[[Any], Any] = UtcDateTime().dialect_impl(
            self.engine.dialect).bind_processor(self.engine.dialect) or (lambda v: v)

    def _rows(self, s: Session, stmt: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """Run one statement of the scheduling pass; its rows as plain tuples.

        On SQLite straight on the driver's cursor, the statement compiled once per store: the
        pass runs about a dozen small statements, and SQLAlchemy's execution machinery costs
        2 to 10 times what SQLite needs to run each (bench/RESULTS.md). Date-times then come
        back as SQLite's text: read them with ``_as_utc``. Elsewhere, through SQLAlchemy."""
        conn = s.connection()
        if not self.sqlite:
            return [tuple(r) for r in conn.execute(stmt, params or {})]
        sql, names, fixed = self._compiled(stmt)
        given = params or {}
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            rows: list[Any] = cur.execute(sql, [self._bind(given[n]) if n in given else fixed[n]
                                                for n in names]).fetchall()
            return rows
        finally:
            cur.close()

    def _insert(self, s: Session, table_insert: Any, rows: list[dict[str, Any]]) -> None:
        """An executemany of ``rows`` (every one with the same keys), as ``_rows`` runs them."""
        if not rows:
            return
        conn = s.connection()
        if not self.sqlite:
            conn.execute(table_insert, rows)
            return
        keys = tuple(rows[0])
        sql, names, _ = self._compiled(table_insert, keys)
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.executemany(sql, [[self._bind(r[n]) for n in names] for r in rows])
        finally:
            cur.close()

    def _compiled(self, stmt: Any, keys: tuple[str, ...] | None = None
                  ) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        key = (id(stmt), keys)
        got = self._sql_cache.get(key)
        if got is None:
            # literal IN lists are rendered into the SQL (only in statements without parameters)
            c = stmt.compile(dialect=self.engine.dialect,
                             column_keys=list(keys) if keys is not None else None,
                             compile_kwargs={"render_postcompile": stmt is _Q_LIVE_VERSIONS})
            got = (c.string, tuple(c.positiontup or ()), dict(c.params))
            self._sql_cache[key] = got
        return got

    def _bind(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return self._sqlite_datetime(value)
        if isinstance(value, dict):
            return json.dumps(value)  # the JSON columns (event detail), as SQLAlchemy writes
        return value
