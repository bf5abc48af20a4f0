"""An attempt's life after its claim: which worker carries it, its progress (ringing, answer,
keys, confirmations), its end and what that does to its recipient, and the accounting of calls
left open by a node that died. The daemon's side, like the scheduling pass."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dialer.core import lifecycle, scheduler
from dialer.core.domain import Outcome, RecipientState
from dialer.storage.fastpath import _Q_RUNNING
from dialer.storage.models import AttemptRow, CampaignRow, EventRow, RecipientRow
from dialer.storage.records import (
    AttemptMeta,
    EndReport,
    settings_from_dict,
    to_dt,
    to_ts,
)
from dialer.storage.trunks import Trunks


class Attempts(Trunks):
    """The calls in progress as the daemon reports them."""

    def recover(self, *, node: str, now: float, keep: Collection[str] = ()) -> int:
        """Account for calls a previous run of this node left open (it died): ``interrupted``
        (not counted), or ``contacted`` when every confirmation had been recorded. ``keep``:
        calls a live worker still carries (they go on and end on their own)."""
        with self.session() as s:
            open_ids = [aid for aid in s.scalars(select(AttemptRow.id).where(
                AttemptRow.ended_at.is_(None), AttemptRow.node == node)).all()
                if aid not in keep]
        for aid in open_ids:
            self.finish_attempt(EndReport(attempt_id=aid, outcome=Outcome.INTERRUPTED, at=now,
                                          reason="the daemon stopped during the call"))
        return len(open_ids)

    def set_attempt_worker(self, attempt_id: str, worker: int) -> None:
        self.set_attempt_workers([(attempt_id, worker)])

    def set_attempt_workers(self, pairs: Sequence[tuple[str, int]]) -> None:
        """Which worker carries each attempt, for a whole scheduling pass in one transaction."""
        if not pairs:
            return
        with self.session() as s:
            for attempt_id, worker in pairs:
                s.execute(update(AttemptRow).where(AttemptRow.id == attempt_id)
                          .values(worker=worker))

    def record_progress(self, attempt_id: str, what: str, at: float, /, **detail: Any) -> None:
        """Ringing, answered, a key, a confirmation: stamp the attempt and append the event.

        Positional-only: a confirmation's detail is itself named ``what`` (answer or listen).
        """
        self.record_progress_many([(attempt_id, what, at, detail)])

    def record_progress_many(self, items: Sequence[tuple[str, str, float, dict[str, Any]]], *,
                             once: bool = False) -> None:
        """``record_progress`` for several ``(attempt_id, what, at, detail)`` in one transaction,
        in order: the daemon batches what one loop round brought (at 50 calls a second, one
        small transaction per event is what limits the daemon, bench/RESULTS.md).

        ``once``: the items may have been recorded already (a worker handing its events over
        again to a restarted daemon): one already stored (same attempt, kind and time) is
        skipped."""
        if not items:
            return
        with self.session() as s:
            for attempt_id, what, at, detail in items:
                a = s.get(AttemptRow, attempt_id)
                if a is None or a.ended_at is not None:
                    continue
                when = to_dt(at)
                if once and s.scalar(select(EventRow.id).where(  # ix_events_campaign
                        EventRow.campaign_id == a.campaign_id,
                        EventRow.attempt_id == attempt_id, EventRow.kind == what,
                        EventRow.at == when).limit(1)) is not None:
                    continue
                field = lifecycle.stamped_time(what, detail)
                if field is not None and not (field == "ringing_at" and a.ringing_at is not None):
                    setattr(a, field, when)
                if what == "key":
                    a.keys = lifecycle.with_key(a.keys, detail)
                self._event(s, what, at=at, campaign_id=a.campaign_id,
                            recipient_id=a.recipient_id, attempt_id=a.id, **detail)

    def finish_attempt(self, report: EndReport) -> Outcome | None:
        """Close an attempt and apply it to its recipient; idempotent (None if already closed).

        Returns the outcome stored: the report's, or ``contacted`` when the attempt's recorded
        confirmations prove the message was heard (``lifecycle.confirmed``)."""
        with self.session() as s:
            return self._finish_in(s, report)

    def _finish_in(self, s: Session, report: EndReport) -> Outcome | None:
        """``finish_attempt`` within the transaction ``s``."""
        a = s.get(AttemptRow, report.attempt_id, with_for_update=not self.sqlite)
        if a is None or a.ended_at is not None:
            return None
        a.ended_at = to_dt(report.at)
        a.status = report.status
        a.reason = (report.reason or "")[:200] or None
        a.q850 = report.q850
        a.outcome = report.outcome.value
        a.answered_at = a.answered_at or to_dt(report.answered_at)
        a.answer_confirmed_at = a.answer_confirmed_at or to_dt(report.answer_confirmed_at)
        a.listen_confirmed_at = a.listen_confirmed_at or to_dt(report.listen_confirmed_at)
        if report.keys:
            a.keys = report.keys[:100]
        rec = s.get(RecipientRow, a.recipient_id, with_for_update=not self.sqlite)
        camp = s.get(CampaignRow, a.campaign_id)
        assert rec is not None and camp is not None
        st = settings_from_dict(camp.settings)
        outcome = report.outcome
        if not outcome.success and lifecycle.confirmed(
                answer_confirm=st.answer_confirm, listen_confirm=st.listen_confirm,
                answer_confirmed_at=to_ts(a.answer_confirmed_at),
                listen_confirmed_at=to_ts(a.listen_confirmed_at)):
            # Every confirmation was recorded: whatever happened to the call afterwards (the
            # goodbye cut by a crash, a stop), the recipient was reached and confirmed.
            outcome = Outcome.CONTACTED
            a.outcome = outcome.value
        upd = lifecycle.after_attempt(attempts=rec.attempts, max_attempts=rec.max_attempts,
                                      outcome=outcome, now=report.at,
                                      retry_delay=st.retry_delay,
                                      stopped=rec.state == RecipientState.STOPPED.value,
                                      calls=rec.calls or 0)
        old_state = rec.state
        rec.state = upd.state.value
        rec.attempts = upd.attempts
        rec.next_at = to_dt(upd.next_at)
        rec.last_outcome = outcome.value
        rec.last_status = report.status
        rec.last_reason = a.reason
        if a.answered_at is not None:
            rec.answered_at = a.answered_at
        if a.answer_confirmed_at is not None:
            rec.answer_confirmed_at = a.answer_confirmed_at
        if a.listen_confirmed_at is not None:
            rec.confirmed_at = a.listen_confirmed_at
        self._event(s, "attempt_ended", at=report.at, campaign_id=a.campaign_id,
                    recipient_id=rec.id, attempt_id=a.id, outcome=outcome.value,
                    status=report.status, reason=a.reason, q850=report.q850, keys=a.keys)
        if a.trunk:
            self._judge_trunk(s, a.trunk, outcome, report.at, a.campaign_id)
        if rec.state != old_state:
            self._event(s, "recipient_state", at=report.at, campaign_id=a.campaign_id,
                        recipient_id=rec.id, old=old_state, new=rec.state,
                        attempts=rec.attempts)
        # the last call of a campaign stopped while calls went on seals its run (this reads
        # the campaign's state afresh under its lock: a stop may have committed meanwhile)
        self._seal(s, a.campaign_id, report.at)
        return outcome

    def attempt_meta(self, ids: Collection[str]) -> dict[str, AttemptMeta]:
        """What the daemon keeps in memory of each *open* attempt among ``ids`` (a call a
        re-attached worker carries); closed or unknown ids are left out."""
        out: dict[str, AttemptMeta] = {}
        if not ids:
            return out
        with self.session() as s:
            rows = s.execute(select(AttemptRow, CampaignRow.settings)
                             .join(CampaignRow, CampaignRow.id == AttemptRow.campaign_id)
                             .where(AttemptRow.id.in_(list(ids)),
                                    AttemptRow.ended_at.is_(None))).all()
            for a, settings in rows:
                out[a.id] = AttemptMeta(campaign_id=a.campaign_id, recipient_id=a.recipient_id,
                                        kind=a.kind, email=settings_from_dict(settings).email,
                                        created_at=to_ts(a.created_at) or 0.0)
        return out

    def open_attempts(self, node: str) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(AttemptRow.id).where(AttemptRow.ended_at.is_(None),
                                                              AttemptRow.node == node)))

    def running_counts(self) -> scheduler.Counts:
        """Calls in progress across every node (from the attempts table)."""
        with self.session() as s:
            r = _running(s)
            return scheduler.Counts(sum(v.internal for v in r.values()),
                                    sum(v.external for v in r.values()))


def _running(s: Session) -> dict[int, scheduler.Counts]:
    out: dict[int, scheduler.Counts] = {}
    for cid, kind, _trunk, n in s.connection().execute(_Q_RUNNING):
        cur = out.get(cid, scheduler.Counts())
        out[cid] = (scheduler.Counts(cur.internal + n, cur.external) if kind == "internal"
                    else scheduler.Counts(cur.internal, cur.external + n))
    return out
