"""Escalation carried out (``dialer.core.escalation`` decides): the daemon's check of the armed
runs, and the launch of a follow-up, once per run whatever the restarts and nodes."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dialer.core import escalation as esc
from dialer.core.domain import CampaignState, Kind, RecipientState
from dialer.core.errors import DialerError
from dialer.core.recipients import Recipient
from dialer.core.records import TemplateView, settings_from_dict, to_ts
from dialer.storage import counters
from dialer.storage.campaigns import Campaigns
from dialer.storage.models import CampaignRow, RecipientRow

ACTOR = "escalation"  # the audit's actor of a follow-up the dialer launched by itself


class Escalations(Campaigns):
    """``escalate``: decide every armed run, launch the follow-ups that are due."""

    def escalate(self, *, now: float) -> esc.Pass:
        """One check of the runs whose escalation is not decided yet (``campaigns.escalation =
        'armed'``, an index). A launch and the run's mark are one transaction, and it starts by
        taking the mark (``armed`` -> ``launched``, an UPDATE that only one node or daemon can
        win; ``runs.escalated_from`` is unique besides), so a crash leaves either both or
        neither, and no run is escalated twice. A follow-up that cannot be launched (its template
        deleted, disabled or empty) marks the run ``failed`` with an event saying why."""
        with self.session() as s:
            armed = s.execute(select(CampaignRow.id, CampaignRow.state, CampaignRow.settings,
                                     CampaignRow.start_at)
                              .where(CampaignRow.escalation == "armed")
                              .order_by(CampaignRow.id)).all()
            tallies = counters.count(s, [row.id for row in armed]) if armed else {}
        outcomes: list[esc.Outcome] = []
        check_at: float | None = None
        for cid, state, settings, start_at in armed:
            rule = esc.rule_of(settings_from_dict(settings))
            contacted = tallies[cid].contacted if cid in tallies else 0
            start = to_ts(start_at)
            assert start is not None
            if rule is None:  # the settings carry no rule: nothing to decide
                decision = esc.Decision(verdict=esc.Verdict.NEVER, cause="no rule")
            else:
                decision = esc.decide(rule, state=CampaignState(state), contacted=contacted,
                                      start_at=start, now=now)
            if decision.verdict is esc.Verdict.WAIT:
                if decision.check_at is not None:
                    check_at = (decision.check_at if check_at is None
                                else min(check_at, decision.check_at))
                continue
            outcome = self._carry_out(cid, rule, decision, now)
            if outcome is not None:
                outcomes.append(outcome)
        return esc.Pass(outcomes=tuple(outcomes), check_at=check_at)

    def _carry_out(self, cid: int, rule: esc.Rule | None, decision: esc.Decision,
                   now: float) -> esc.Outcome | None:
        """Mark run ``cid`` decided and, for a launch, launch its follow-up in the same
        transaction; None when another daemon decided it first."""
        launch = decision.verdict is esc.Verdict.LAUNCH and rule is not None
        mark = "launched" if launch else "never"
        try:
            # read first: a transaction of SQLite takes the write lock as it begins
            tpl = self.get_template(rule.to) if launch and rule is not None else None
            with self.session() as s:
                if not self._take(s, cid, mark):
                    return None
                if not launch:
                    self._event(s, "escalation_decided", at=now, campaign_id=cid,
                                actor=ACTOR, escalate=False, cause=decision.cause)
                    self._append_late(s, cid, now)  # a completed run is sealed already
                    return esc.Outcome(campaign_id=cid, verdict=decision.verdict,
                                       cause=decision.cause)
                assert rule is not None and tpl is not None
                followup = self._launch_followup(s, cid, rule, tpl, decision.cause, now)
                return esc.Outcome(campaign_id=cid, verdict=esc.Verdict.LAUNCH,
                                   cause=decision.cause, followup_id=followup)
        except IntegrityError:  # runs.escalated_from: another node launched it meanwhile
            return None
        except DialerError as exc:  # the follow-up cannot be launched: say so, once
            with self.session() as s:
                if not self._take(s, cid, "failed"):
                    return None
                self._event(s, "escalation_failed", at=now, campaign_id=cid, actor=ACTOR,
                            template=rule.to if rule else None, cause=decision.cause,
                            error=str(exc))
                self._append_late(s, cid, now)
            return esc.Outcome(campaign_id=cid, verdict=esc.Verdict.LAUNCH,
                               cause=decision.cause, error=str(exc))

    @staticmethod
    def _take(s: Session, cid: int, mark: str) -> bool:
        """Move run ``cid`` from ``armed`` to ``mark``; False if it was not armed any more (on
        PostgreSQL the UPDATE waits for a concurrent one and then finds the row changed)."""
        taken = s.execute(update(CampaignRow).where(CampaignRow.id == cid,
                                                    CampaignRow.escalation == "armed")
                          .values(escalation=mark))
        return bool(getattr(taken, "rowcount", 0))

    def _launch_followup(self, s: Session, cid: int, rule: esc.Rule, tpl: TemplateView, cause: str,
                now: float) -> int:
        """Launch the follow-up of run ``cid`` in ``s``: its template's list, then (with
        ``pass_unreached``) the run's recipients that were not contacted."""
        origin = s.get(CampaignRow, cid)
        assert origin is not None
        unreached = [Recipient(number=r.number, kind=Kind(r.kind), name=r.name, email=r.email,
                               timezone=r.timezone)
                     for r in s.scalars(select(RecipientRow)
                                        .where(RecipientRow.campaign_id == cid,
                                               RecipientRow.state
                                               != RecipientState.CONTACTED.value)
                                        .order_by(RecipientRow.position))]
        recipients = esc.followup_list(tpl.recipients, unreached, rule.pass_unreached)
        followup = self._start_campaign(
            s, tpl, name=f"{origin.name} (escalation)"[:100], now=now,
            start_at=now, actor=ACTOR, recipients=recipients, escalated_from=cid)
        self._event(s, "campaign_escalated", at=now, campaign_id=cid, actor=ACTOR,
                    escalated_to=followup, template=rule.to, cause=cause,
                    recipients=len(recipients),
                    passed_on=len(recipients) - len(tpl.recipients))
        self._append_late(s, cid, now)
        return followup
