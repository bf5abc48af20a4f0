"""The e-mail side of ``MemoryStore`` (``MailPort``: ``dialer.storage.mail`` without the
database): which recipients a mailing of a campaign goes to, and the record of what was sent."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dialer.core.domain import CampaignState, EmailPolicy, RecipientState
from dialer.core.records import MailJob, MailTarget

if TYPE_CHECKING:
    from dialer.testing.memory_rows import _Attempt, _Campaign, _Event, _Recipient


class MemoryMail:
    """``mail_job`` and ``record_emails``, under the store's lock."""

    _lock: threading.RLock
    campaigns: dict[int, _Campaign]
    attempts: dict[str, _Attempt]
    events: list[_Event]

    if TYPE_CHECKING:
        def _event(self, kind: str, /, *, at: float, campaign_id: int | None = None,
                   recipient_id: int | None = None, attempt_id: str | None = None,
                   actor: str | None = None, **detail: Any) -> None: ...

        def _recipients_of(self, cid: int) -> list[_Recipient]: ...

    def mail_job(self, campaign_id: int, trigger: str, recipient_id: int | None = None,
                 attempt_id: str | None = None) -> MailJob | None:
        with self._lock:
            return self._mail_job(campaign_id, trigger, recipient_id, attempt_id)

    def record_emails(self, campaign_id: int, results: Sequence[tuple[int, str, bool, str]], *,
                      at: float) -> None:
        with self._lock:
            self._record_emails(campaign_id, results, at=at)

    def _mail_job(self, campaign_id: int, trigger: str, recipient_id: int | None,
                  attempt_id: str | None) -> MailJob | None:
        c = self.campaigns.get(campaign_id)
        if c is None:
            return None
        st = c.settings
        recs = [r for r in self._recipients_of(campaign_id) if r.email is not None]
        if trigger == "launch":
            if st.email != EmailPolicy.ON_LAUNCH.value:
                return None
            activations = sum(1 for e in self.events
                              if e.campaign_id == campaign_id and e.kind == "campaign_state"
                              and e.detail.get("new") == CampaignState.ACTIVE.value)
            if activations != 1:
                return None
        elif trigger == "unreached":
            if st.email != EmailPolicy.UNREACHED.value or recipient_id is None:
                return None
            mine = sorted((a for a in self.attempts.values() if a.recipient_id == recipient_id),
                          key=lambda a: (a.created_at, a.seq))
            latest = mine[-1].id if mine else None
            if attempt_id is not None and latest != attempt_id:
                return None
            recs = [r for r in recs if r.id == recipient_id and r.state is RecipientState.FAILED]
        else:
            raise ValueError(f"unknown mail trigger {trigger!r}")
        return MailJob(campaign_id=c.id, name=c.name, audio_sha=c.audio_sha, text=st.tts_text,
                       recipients=[MailTarget(id=r.id, number=r.number, name=r.name,
                                              email=r.email) for r in recs if r.email])

    def _record_emails(self, campaign_id: int, results: Sequence[tuple[int, str, bool, str]],
                       *, at: float) -> None:
        for recipient_id, address, sent, detail in results:
            self._event("email_sent" if sent else "email_failed", at=at, campaign_id=campaign_id,
                        recipient_id=recipient_id, email=address, detail=detail)

