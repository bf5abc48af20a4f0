"""The escalation of ``MemoryStore`` (``dialer.storage.escalations`` without the database): the
same decisions (``dialer.core.escalation``), the follow-up launched by ``start_campaign``."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dialer.core import escalation as esc
from dialer.core import lifecycle
from dialer.core.domain import RecipientState
from dialer.core.errors import DialerError
from dialer.core.recipients import Recipient

if TYPE_CHECKING:
    from dialer.testing.memory_rows import _Campaign, _Event, _Recipient, _Template

ACTOR = "escalation"


class MemoryEscalations:
    """``escalate``."""

    _lock: threading.RLock
    campaigns: dict[int, _Campaign]
    templates: dict[str, _Template]
    events: list[_Event]

    if TYPE_CHECKING:
        def _event(self, kind: str, /, *, at: float, campaign_id: int | None = None,
                   recipient_id: int | None = None, attempt_id: str | None = None,
                   actor: str | None = None, **detail: Any) -> None: ...

        def _tally(self, cid: int) -> lifecycle.Tally: ...

        def _recipients_of(self, cid: int) -> list[_Recipient]: ...

        def start_campaign(self, *, template: str, name: str | None, now: float,
                           start_at: float, actor: str, audio_sha: str | None = None,
                           audio_seconds: float | None = None,
                           recipients: Sequence[Recipient] | None = None,
                           tts_text: str | None = None) -> int: ...

    def escalate(self, *, now: float) -> esc.Pass:
        with self._lock:
            outcomes: list[esc.Outcome] = []
            check_at: float | None = None
            for c in sorted(self.campaigns.values(), key=lambda c: c.id):
                rule = esc.rule_of(c.settings)
                if rule is None or c.escalation is not None:
                    continue
                decision = esc.decide(rule, state=c.state, contacted=self._tally(c.id).contacted,
                                      start_at=c.start_at, now=now)
                if decision.verdict is esc.Verdict.WAIT:
                    if decision.check_at is not None:
                        check_at = (decision.check_at if check_at is None
                                    else min(check_at, decision.check_at))
                    continue
                if decision.verdict is esc.Verdict.NEVER:
                    c.escalation = "never"
                    self._event("escalation_decided", at=now, campaign_id=c.id, actor=ACTOR,
                                escalate=False, cause=decision.cause)
                    outcomes.append(esc.Outcome(campaign_id=c.id, verdict=decision.verdict,
                                                cause=decision.cause))
                    continue
                outcomes.append(self._launch(c, rule, decision.cause, now))
            return esc.Pass(outcomes=tuple(outcomes), check_at=check_at)

    def _links(self, c: _Campaign) -> dict[str, Any] | None:
        to = next((f.id for f in self.campaigns.values() if f.escalated_from == c.id), None)
        return esc.links(dataclasses.asdict(c.settings), c.escalation, c.escalated_from, to)

    def _launch(self, c: _Campaign, rule: esc.Rule, cause: str, now: float) -> esc.Outcome:
        tpl = self.templates.get(rule.to)
        unreached = [Recipient(number=r.number, kind=r.kind, name=r.name, email=r.email,
                               timezone=r.timezone)
                     for r in self._recipients_of(c.id)
                     if r.state is not RecipientState.CONTACTED]
        recipients = esc.followup_list(list(tpl.recipients) if tpl else [], unreached,
                                       rule.pass_unreached)
        try:
            followup = self.start_campaign(template=rule.to, name=f"{c.name} (escalation)"[:100],
                                           now=now, start_at=now, actor=ACTOR,
                                           recipients=recipients or None)
        except DialerError as exc:
            c.escalation = "failed"
            self._event("escalation_failed", at=now, campaign_id=c.id, actor=ACTOR,
                        template=rule.to, cause=cause, error=str(exc))
            return esc.Outcome(campaign_id=c.id, verdict=esc.Verdict.LAUNCH, cause=cause,
                               error=str(exc))
        c.escalation = "launched"
        self.campaigns[followup].escalated_from = c.id
        for e in self.events:  # SqlStore writes the link in the follow-up's first event
            if e.campaign_id == followup and e.kind == "campaign_created":
                e.detail["escalated_from"] = c.id
        self._event("campaign_escalated", at=now, campaign_id=c.id, actor=ACTOR,
                    escalated_to=followup, template=rule.to, cause=cause,
                    recipients=len(recipients),
                    passed_on=len(recipients) - (len(tpl.recipients) if tpl else 0))
        return esc.Outcome(campaign_id=c.id, verdict=esc.Verdict.LAUNCH, cause=cause,
                           followup_id=followup)
