"""Campaigns: their launch from a template, what the CLI shows of them, and the operator's
actions on them and on their recipients."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from dialer.core import escalation, lifecycle
from dialer.core.domain import CampaignState, RecipientState
from dialer.core.errors import NotFound, StateError, ValidationError
from dialer.core.recipients import NumberRules, Recipient
from dialer.storage import counters
from dialer.storage.alertrows import alert_of
from dialer.storage.dispatch import Dispatch
from dialer.storage.fastpath import _LIVE, _RECIPIENTS, _SETTINGS_COLUMNS
from dialer.storage.history import chain_view
from dialer.storage.models import (
    AttemptRow,
    CampaignRow,
    EventRow,
    RecipientRow,
    RunRow,
)
from dialer.storage.records import (
    TemplateView,
    _as_utc,
    _attempt_dict,
    _event_dict,
    _iso,
    settings_to_dict,
    to_dt,
)
from dialer.storage.templates import Templates


class Campaigns(Templates, Dispatch):
    """Campaigns from launch to deletion, as operators see and act on them."""

    # ----- campaigns -----

    def start_campaign(self, *, template: str, name: str | None, now: float, start_at: float,
                       actor: str, audio_sha: str | None = None, audio_seconds: float | None = None,
                       recipients: Sequence[Recipient] | None = None,
                       tts_text: str | None = None) -> int:
        """Launch a campaign from a template: snapshot its settings and recipient list.

        ``audio_sha`` replaces the template's message; ``tts_text`` is the text it was spoken
        from (None for a recording), kept in the snapshot in place of the template's."""
        tpl = self.get_template(template, with_recipients=recipients is None)
        with self.session() as s:
            return self._start_campaign(s, tpl, name=name, now=now, start_at=start_at,
                                        actor=actor, audio_sha=audio_sha,
                                        audio_seconds=audio_seconds, recipients=recipients,
                                        tts_text=tts_text)

    def _start_campaign(self, s: Session, tpl: TemplateView, *, name: str | None, now: float,
                        start_at: float, actor: str, audio_sha: str | None = None,
                        audio_seconds: float | None = None,
                        recipients: Sequence[Recipient] | None = None,
                        tts_text: str | None = None, escalated_from: int | None = None) -> int:
        """``start_campaign`` of template ``tpl`` (read before: a transaction of SQLite holds
        the write lock from its start) in the transaction ``s``; ``escalated_from``: the run
        this one escalates (``dialer.storage.escalations``). A launch by an alert writes its
        record in the same transaction; the checks come first, so a refused launch writes
        nothing."""
        template = tpl.name
        if not tpl.enabled:
            raise StateError(f"template {template!r} is disabled")
        recs = list(recipients) if recipients is not None else tpl.recipients
        if not recs:
            raise ValidationError(f"template {template!r} has no recipients and none were given")
        st = tpl.settings
        if st.threshold is not None and st.threshold > len(recs):
            raise ValidationError(f"the completion threshold {st.threshold} is above the "
                                  f"{len(recs)} recipients")
        st = dataclasses.replace(st, display_name=name or tpl.name)
        if audio_sha is not None:
            st = dataclasses.replace(st, tts_text=tts_text)
        # SQLite reuses the highest rowid once it is deleted; a run id must never come back
        # (attempts and events of the deleted campaign still carry it)
        fresh_id = None
        if self.sqlite:
            fresh_id = 1 + max(s.scalar(select(func.max(RunRow.id))) or 0,
                               s.scalar(select(func.max(CampaignRow.id))) or 0)
        camp = CampaignRow(id=fresh_id, template_id=tpl.id, template_name=tpl.name,
                           name=name or tpl.name,
                           state=CampaignState.SCHEDULED.value, settings=settings_to_dict(st),
                           audio_sha=audio_sha or tpl.audio_sha,
                           audio_seconds=audio_seconds if audio_seconds is not None
                           else tpl.audio_seconds,
                           priority=st.priority, start_at=to_dt(start_at),
                           created_at=to_dt(now), created_by=actor,
                           escalation="armed" if st.escalate_to is not None else None,
                           **counters.fresh_counts(len(recs)))
        s.add(camp)
        s.flush()
        ids = self._insert_recipients(s, camp.id, recs, st.attempts)
        s.add(RunRow(id=camp.id, name=camp.name, template_name=tpl.name,
                     created_at=to_dt(now), created_by=actor, start_at=to_dt(start_at),
                     settings=settings_to_dict(st), audio_sha=camp.audio_sha,
                     audio_seconds=camp.audio_seconds,
                     recipients=[{"id": rid, "position": pos, "number": r.number,
                                  "name": r.name, "email": r.email, "kind": r.kind._value_,
                                  "timezone": r.timezone}
                                 for (rid, pos), r in zip(ids, recs, strict=False)],
                     escalated_from=escalated_from))
        self._audit(s, actor=actor, now=now, action="campaign.start",
                    target=f"campaign {camp.id}",
                    new={"name": camp.name, "template": tpl.name, "recipients": len(recs),
                         "start_at": _iso(to_dt(start_at)),
                         "audio_sha256": camp.audio_sha})
        extra: dict[str, Any] = {} if escalated_from is None else {
            "escalated_from": escalated_from}
        self._event(s, "campaign_created", at=now, campaign_id=camp.id, actor=actor,
                    template=tpl.name, name=camp.name, recipients=len(recs),
                    start_at=start_at, settings=settings_to_dict(st), **extra)
        return camp.id

    def _insert_recipients(self, s: Session, campaign_id: int, recs: Sequence[Recipient],
                           max_attempts: int) -> list[tuple[int, int]]:
        """Insert a campaign's recipients in one executemany; their (id, position) in order.

        On SQLite the rows go to the driver as plain tuples (every value is a str or an int
        already: SQLAlchemy's per-row parameter processing cost as much as SQLite's insert), and
        ``kind._value_`` (the enum member's value without the descriptor ``.value`` goes
        through: a tenth of the insert's time for 100,000 rows, cProfile). On
        PostgreSQL through psycopg 3 they go in one COPY (one statement whatever their number;
        an executemany is a round trip per 1,000 rows, bench/RESULTS.md)."""
        idle = RecipientState.IDLE.value
        if not self.sqlite and self.engine.dialect.driver == "psycopg":
            conn = s.connection()
            cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cur.copy("COPY recipients (campaign_id, position, number, name, email, kind, "
                          "state, calls, attempts, max_attempts, timezone) FROM STDIN") as copy:
                for i, r in enumerate(recs, 1):
                    copy.write_row((campaign_id, i, r.number, r.name, r.email, r.kind._value_,
                                    idle, 0, 0, max_attempts, r.timezone))
            return [(rid, pos) for rid, pos in s.execute(
                select(RecipientRow.id, RecipientRow.position)
                .where(RecipientRow.campaign_id == campaign_id)
                .order_by(RecipientRow.position))]
        if not self.sqlite:
            s.execute(insert(_RECIPIENTS), [
                {"campaign_id": campaign_id, "position": i + 1, "number": r.number,
                 "name": r.name, "email": r.email, "kind": r.kind.value, "state": idle,
                 "timezone": r.timezone,
                 "calls": 0, "attempts": 0, "max_attempts": max_attempts}
                for i, r in enumerate(recs)])
            return [(rid, pos) for rid, pos in s.execute(
                select(RecipientRow.id, RecipientRow.position)
                .where(RecipientRow.campaign_id == campaign_id)
                .order_by(RecipientRow.position))]
        conn = s.connection()
        conn.exec_driver_sql(
            "INSERT INTO recipients (campaign_id, position, number, name, email, kind, state, "
            "calls, attempts, max_attempts, timezone) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?)",
            [(campaign_id, i, r.number, r.name, r.email, r.kind._value_, idle, max_attempts,
              r.timezone)
             for i, r in enumerate(recs, 1)])
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:  # plain tuples from the driver: SQLAlchemy's row objects cost more than the read
            return cast(list[tuple[int, int]], cur.execute(
                "SELECT id, position FROM recipients WHERE campaign_id = ? ORDER BY position",
                (campaign_id,)).fetchall())
        finally:
            cur.close()

    def list_campaigns(self, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
        with self.session() as s:
            out = []
            q = select(CampaignRow).order_by(CampaignRow.id)
            if states:
                q = q.where(CampaignRow.state.in_(list(states)))
            rows = list(s.scalars(q))
            # The per-campaign counters answer without reading recipients; campaigns not yet
            # counted (NULL counters) are counted once here.
            tallies = {c.id: t for c in rows if (t := counters.tally_of(c)) is not None}
            missing = [c.id for c in rows if c.id not in tallies]
            if missing:
                tallies.update(counters.count(s, missing))
            for c in rows:
                t = tallies.get(c.id, lifecycle.Tally())
                out.append({"id": c.id, "name": c.name, "template": c.template_name,
                            "state": c.state, "priority": c.priority,
                            "start_at": _iso(c.start_at), "recipients": t.total,
                            "contacted": t.contacted, "failed": t.failed, "active": t.active,
                            "idle": t.idle, "stopped": t.stopped})
            return out

    def campaign_detail(self, campaign_id: int) -> dict[str, Any]:
        with self.session() as s:
            c = s.get(CampaignRow, campaign_id)
            if c is None:
                raise NotFound(f"no campaign with id {campaign_id}")
            recs = s.scalars(select(RecipientRow).where(RecipientRow.campaign_id == campaign_id)
                             .order_by(RecipientRow.position)).all()
            run = s.get(RunRow, campaign_id)
            links = escalation.links(
                c.settings, c.escalation, run.escalated_from if run else None,
                s.scalar(select(RunRow.id).where(RunRow.escalated_from == campaign_id)))
            return {
                "id": c.id, "name": c.name, "template": c.template_name, "state": c.state,
                "priority": c.priority, "start_at": _iso(c.start_at), "ended_at": _iso(c.ended_at),
                "settings": c.settings, "escalation": links, "chain": chain_view(run),
                "recipients": [{
                    "position": r.position, "number": r.number, "name": r.name,
                    "kind": r.kind, "state": r.state, "attempts": r.attempts, "calls": r.calls,
                    "last_call_at": _iso(r.last_call_at), "last_outcome": r.last_outcome,
                    "last_status": r.last_status, "last_reason": r.last_reason,
                    "answered_at": _iso(r.answered_at), "confirmed_at": _iso(r.confirmed_at),
                    "answer_confirmed_at": _iso(r.answer_confirmed_at), "email": r.email,
                    "max_attempts": r.max_attempts, "next_at": _iso(r.next_at),
                    "timezone": r.timezone,
                } for r in recs],
                "alert": alert_of(s, c.id),
            }

    def campaign_progress(self, campaign_id: int, *, since: float,
                          events: int = 8) -> dict[str, Any]:
        """What ``dialer campaign watch`` shows, in a few indexed reads of one campaign:
        recipients by state and kind, calls in progress by kind, the first call's time, the
        attempts ended since ``since``, and the last ``events`` events (newest first)."""
        with self.session() as s:
            c = s.get(CampaignRow, campaign_id)
            if c is None:
                raise NotFound(f"no campaign with id {campaign_id}")
            by_state: dict[str, dict[str, int]] = {}
            for state, kind, n in s.execute(
                    select(RecipientRow.state, RecipientRow.kind, func.count())
                    .where(RecipientRow.campaign_id == campaign_id)
                    .group_by(RecipientRow.state, RecipientRow.kind)):
                by_state.setdefault(state, {})[kind] = n
            in_call = dict(s.execute(
                select(AttemptRow.kind, func.count())
                .where(AttemptRow.campaign_id == campaign_id, AttemptRow.ended_at.is_(None))
                .group_by(AttemptRow.kind)).all())
            first = s.scalar(select(func.min(AttemptRow.created_at))
                             .where(AttemptRow.campaign_id == campaign_id))
            recent = s.scalar(select(func.count()).select_from(AttemptRow).where(
                AttemptRow.campaign_id == campaign_id, AttemptRow.ended_at >= to_dt(since)))
            last = s.scalars(select(EventRow).where(EventRow.campaign_id == campaign_id)
                             .order_by(EventRow.id.desc()).limit(events)).all()
            numbers = dict(s.execute(select(RecipientRow.id, RecipientRow.number).where(
                RecipientRow.id.in_([e.recipient_id for e in last if e.recipient_id]))).all())
            return {"id": c.id, "name": c.name, "state": c.state, "template": c.template_name,
                    "start_at": _iso(c.start_at), "ended_at": _iso(c.ended_at),
                    "settings": c.settings, "audio_seconds": c.audio_seconds,
                    "recipients": by_state, "in_call": {k: int(v) for k, v in in_call.items()},
                    "first_call_at": _iso(first), "ended_since": int(recent or 0),
                    "events": [{**_event_dict(e), "number": numbers.get(e.recipient_id or -1)}
                               for e in last]}

    def attempts_of(self, campaign_id: int) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(select(AttemptRow).where(AttemptRow.campaign_id == campaign_id)
                             .order_by(AttemptRow.created_at)).all()
            return [{"id": a.id, "recipient_id": a.recipient_id, "number": a.number,
                     "kind": a.kind, "worker": a.worker, "created_at": _iso(a.created_at),
                     "answered_at": _iso(a.answered_at), "ended_at": _iso(a.ended_at),
                     "status": a.status, "reason": a.reason, "q850": a.q850, "keys": a.keys,
                     "outcome": a.outcome,
                     "answer_confirmed_at": _iso(a.answer_confirmed_at),
                     "listen_confirmed_at": _iso(a.listen_confirmed_at), "node": a.node,
                     "lease": a.lease, "trunk": a.trunk, "answer_key": a.answer_key,
                     "listen_key": a.listen_key} for a in rows]

    def events_of(self, campaign_id: int) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(select(EventRow).where(EventRow.campaign_id == campaign_id)
                             .order_by(EventRow.id)).all()
            return [{"id": e.id, "at": _iso(e.at), "kind": e.kind, "recipient_id": e.recipient_id,
                     "attempt_id": e.attempt_id, "actor": e.actor, "detail": e.detail}
                    for e in rows]

    def set_campaign_state(self, campaign_id: int, action: str, *, actor: str, now: float) -> str:
        """Operator actions: suspend, resume, stop (the new state: ``lifecycle.operator_action``).

        Resume puts a campaign back where it would stand had it not been suspended: scheduled
        while its start time is ahead (or when it never was active), else active, or blocked
        when the maximum of active campaigns is reached."""
        if action not in ("suspend", "resume", "stop"):
            raise ValueError(f"unknown campaign action {action!r}")
        with self.session() as s:
            return self._set_state(s, campaign_id, action, actor=actor, now=now).value

    def _set_state(self, s: Session, campaign_id: int, action: str, *, actor: str, now: float,
                   cause: str | None = None) -> CampaignState:
        """``set_campaign_state`` inside the transaction ``s``; ``cause`` of the transition
        (default: the operator's action)."""
        max_active = self._lock_settings(s)
        c = self._campaign_row(s, campaign_id)
        cur = CampaignState(c.state)
        new = self._operator_action(s, action, c, max_active, now)
        if new is None:
            raise StateError(f"cannot {action} campaign {campaign_id}: it is {cur.value}")
        self._transition(s, c, new, cause=cause or f"operator {action}", now=now, actor=actor)
        self._audit(s, actor=actor, now=now, action=f"campaign.{action}",
                    target=f"campaign {campaign_id}", old={"state": cur.value},
                    new={"state": new.value})
        return new

    def _lock_settings(self, s: Session) -> int | None:
        """The maximum of active campaigns, read under the lock that serialises every
        scheduling pass on PostgreSQL (taken before any campaign row, in the order the passes
        take them); SQLite's single writer already serialises."""
        row = dict(zip(_SETTINGS_COLUMNS, self._settings_row(s), strict=True))
        return cast("int | None", row["max_campaigns"])

    def _operator_action(self, s: Session, action: str, c: CampaignRow, max_active: int | None,
                         now: float) -> CampaignState | None:
        """``lifecycle.operator_action`` on a campaign row, with the other live campaigns."""
        def startable(cid: int, state: str, priority: int, start: Any) -> lifecycle.Startable:
            return lifecycle.Startable(id=cid, state=CampaignState(state), priority=priority,
                                       start_at=_as_utc(start).timestamp())

        me = startable(c.id, c.state, c.priority, c.start_at)
        others: list[lifecycle.Startable] = []
        launched = False
        if action in ("resume", "grant") and me.start_at <= now:
            others = [startable(*row) for row in s.execute(
                select(CampaignRow.id, CampaignRow.state, CampaignRow.priority,
                       CampaignRow.start_at).where(CampaignRow.state.in_(_LIVE),
                                                   CampaignRow.id != c.id))]
            launched = any(
                isinstance(d, dict) and d.get("new") == CampaignState.ACTIVE.value
                for d in s.scalars(select(EventRow.detail).where(
                    EventRow.campaign_id == c.id, EventRow.kind == "campaign_state")))
        return lifecycle.operator_action(action, me, others, max_active, now, launched=launched)

    # ----- campaign operator actions -----

    def _campaign_row(self, s: Session, campaign_id: int) -> CampaignRow:
        c = s.get(CampaignRow, campaign_id, with_for_update=not self.sqlite)
        if c is None:
            raise NotFound(f"no campaign with id {campaign_id}")
        return c

    def grant_attempts(self, campaign_id: int, refs: Sequence[str], attempts: int, *,
                       actor: str, now: float,
                       rules: NumberRules = NumberRules()) -> list[int]:
        """Give recipients ``attempts`` more attempts (every failed one when ``refs`` is empty):
        a failed recipient becomes idle again, an incomplete campaign active again. Returns the
        positions granted."""
        if not 1 <= attempts <= 99:
            raise ValidationError("--attempts must be between 1 and 99")
        with self.session() as s:
            max_active = self._lock_settings(s)
            c = self._campaign_row(s, campaign_id)
            after = self._operator_action(s, "grant", c, max_active, now)
            if after is None:
                raise StateError(f"cannot grant attempts in campaign {campaign_id}: "
                                 f"it is {c.state}")
            recs = list(s.scalars(select(RecipientRow).where(
                RecipientRow.campaign_id == campaign_id).order_by(RecipientRow.position)))
            if refs:
                chosen = []
                for ref in refs:
                    r = self._match(recs, ref, rules, f"campaign {campaign_id}")
                    if r.state in (RecipientState.CONTACTED.value, RecipientState.STOPPED.value):
                        raise StateError(f"recipient {r.position} ({r.number}) is {r.state}: "
                                         "no attempts to grant")
                    if r not in chosen:
                        chosen.append(r)
            else:
                chosen = [r for r in recs if r.state == RecipientState.FAILED.value]
                if not chosen:
                    raise StateError(f"campaign {campaign_id} has no failed recipient")
            for r in chosen:
                old = {"state": r.state, "max_attempts": r.max_attempts}
                r.max_attempts += attempts
                if r.state == RecipientState.FAILED.value:
                    r.state = RecipientState.IDLE.value
                    r.next_at = to_dt(now)
                    self._event(s, "recipient_state", at=now, campaign_id=c.id,
                                recipient_id=r.id, actor=actor, old=old["state"], new=r.state,
                                attempts=r.attempts)
                self._event(s, "attempts_granted", at=now, campaign_id=c.id, recipient_id=r.id,
                            actor=actor, granted=attempts, max_attempts=r.max_attempts)
                self._audit(s, actor=actor, now=now, action="campaign.grant",
                            target=f"campaign {c.id} recipient {r.position} {r.number}",
                            old=old, new={"state": r.state, "max_attempts": r.max_attempts})
            if after.value != c.state:
                # incomplete: active again, or blocked while the maximum of active campaigns
                # leaves it no place (lifecycle.rejoin)
                c.ended_at = None
                self._transition(s, c, after, cause="operator granted attempts",
                                 now=now, actor=actor)
            return [r.position for r in chosen]

    def stop_recipient(self, campaign_id: int, ref: str, *, actor: str, now: float,
                       rules: NumberRules = NumberRules()) -> dict[str, Any]:
        """Stop the attempts to one recipient (a call in progress finishes, none follows)."""
        with self.session() as s:
            c = self._campaign_row(s, campaign_id)
            if CampaignState(c.state).finished:
                raise StateError(f"campaign {campaign_id} is {c.state}")
            recs = list(s.scalars(select(RecipientRow).where(
                RecipientRow.campaign_id == campaign_id).order_by(RecipientRow.position)))
            r = self._match(recs, ref, rules, f"campaign {campaign_id}")
            if RecipientState(r.state).done:
                raise StateError(f"recipient {r.position} ({r.number}) is already {r.state}")
            old = r.state
            r.state = RecipientState.STOPPED.value
            r.next_at = None
            self._event(s, "recipient_state", at=now, campaign_id=c.id, recipient_id=r.id,
                        actor=actor, old=old, new=r.state, attempts=r.attempts,
                        cause="operator stop")
            self._audit(s, actor=actor, now=now, action="campaign.stop-recipient",
                        target=f"campaign {c.id} recipient {r.position} {r.number}",
                        old={"state": old}, new={"state": r.state})
            return {"position": r.position, "number": r.number, "state": r.state}

    def delete_campaign(self, campaign_id: int, *, actor: str, now: float) -> None:
        """Delete a completed or terminated campaign; its run (history) stays."""
        with self.session() as s:
            c = self._campaign_row(s, campaign_id)
            if not CampaignState(c.state).finished:
                raise StateError(f"cannot delete campaign {campaign_id}: it is {c.state} "
                                 "(stop it first)")
            calls = s.scalar(select(func.count()).select_from(AttemptRow).where(
                AttemptRow.campaign_id == campaign_id, AttemptRow.ended_at.is_(None))) or 0
            if calls:  # its end must still find the recipient it accounts for
                raise StateError(f"cannot delete campaign {campaign_id}: {calls} call"
                                 f"{'' if calls == 1 else 's'} still in progress (a stopped "
                                 "campaign's calls are being hung up: try again in a moment)")
            s.execute(delete(RecipientRow).where(
                RecipientRow.campaign_id == campaign_id))
            old = {"name": c.name, "template": c.template_name, "state": c.state}
            s.delete(c)
            self._audit(s, actor=actor, now=now, action="campaign.delete",
                        target=f"campaign {campaign_id}", old=old)

    def recipient_attempts(self, campaign_id: int, ref: str,
                           rules: NumberRules = NumberRules()) -> dict[str, Any]:
        """Every attempt to one recipient of a run, each with its events (from the history)."""
        with self.session() as s:
            run = s.get(RunRow, campaign_id)
            if run is None:
                raise NotFound(f"no campaign with id {campaign_id}")
            recs = [_RunRec(**r) for r in run.recipients]
            r = self._match(recs, ref, rules, f"campaign {campaign_id}")
            rows = s.scalars(select(AttemptRow).where(
                AttemptRow.campaign_id == campaign_id, AttemptRow.recipient_id == r.id)
                .order_by(AttemptRow.created_at, AttemptRow.id)).all()
            events = s.scalars(select(EventRow).where(
                EventRow.campaign_id == campaign_id, EventRow.recipient_id == r.id)
                .order_by(EventRow.id)).all()
            by_attempt: dict[str | None, list[dict[str, Any]]] = {}
            for e in events:
                by_attempt.setdefault(e.attempt_id, []).append(_event_dict(e))
            return {"campaign": campaign_id, "position": r.position, "number": r.number,
                    "name": r.name,
                    "attempts": [{**_attempt_dict(a), "events": by_attempt.get(a.id, [])}
                                 for a in rows],
                    "events": by_attempt.get(None, [])}


@dataclass(frozen=True, kw_only=True)
class _RunRec:
    """A recipient as a run recorded it at launch."""

    id: int
    position: int
    number: str
    name: str | None = None
    email: str | None = None
    kind: str = "internal"
    timezone: str | None = None  # its own calling-window zone (runs from revision 0010 on)
