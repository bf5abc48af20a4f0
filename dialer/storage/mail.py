"""What the e-mail queue (``dialer.mailqueue``) reads and records: whom to mail, and how it went."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from dialer.core.domain import CampaignState, EmailPolicy, RecipientState
from dialer.storage.chain import Chain
from dialer.storage.models import AttemptRow, CampaignRow, EventRow, RecipientRow
from dialer.storage.records import MailJob, MailTarget, settings_from_dict


class Mail(Chain):
    """The campaign e-mails."""

    # ----- e-mail (dialer.mailqueue) -----

    def mail_job(self, campaign_id: int, trigger: str, recipient_id: int | None = None,
                 attempt_id: str | None = None) -> MailJob | None:
        """Whom to mail for ``trigger``, or None when the campaign's ``email`` setting says no.

        ``launch``: every recipient with an address, if the setting is ``on_launch`` and the
        campaign has become active exactly once (its first activation, not a reactivation after
        granted attempts). ``unreached``: recipient ``recipient_id``, if the setting is
        ``unreached``, it is ``failed`` now, ``attempt_id`` is its latest attempt (the one that
        made it failed: an earlier attempt's job, handled late, mails nobody) and it has an
        address.
        """
        with self.session() as s:
            c = s.get(CampaignRow, campaign_id)
            if c is None:
                return None
            st = settings_from_dict(c.settings)
            q = select(RecipientRow).where(RecipientRow.campaign_id == campaign_id,
                                           RecipientRow.email.is_not(None))
            if trigger == "launch":
                if st.email != EmailPolicy.ON_LAUNCH.value:
                    return None
                activations = sum(
                    1 for d in s.scalars(select(EventRow.detail).where(
                        EventRow.campaign_id == campaign_id, EventRow.kind == "campaign_state"))
                    if isinstance(d, dict) and d.get("new") == CampaignState.ACTIVE.value)
                if activations != 1:
                    return None
            elif trigger == "unreached":
                if st.email != EmailPolicy.UNREACHED.value or recipient_id is None:
                    return None
                latest = s.scalar(select(AttemptRow.id)
                                  .where(AttemptRow.recipient_id == recipient_id)
                                  .order_by(AttemptRow.created_at.desc(), AttemptRow.id.desc())
                                  .limit(1))
                if attempt_id is not None and latest != attempt_id:
                    return None
                q = q.where(RecipientRow.id == recipient_id,
                            RecipientRow.state == RecipientState.FAILED.value)
            else:
                raise ValueError(f"unknown mail trigger {trigger!r}")
            recs = s.scalars(q.order_by(RecipientRow.position)).all()
            return MailJob(campaign_id=c.id, name=c.name, audio_sha=c.audio_sha,
                           text=st.tts_text,
                           recipients=[MailTarget(id=r.id, number=r.number, name=r.name,
                                                  email=r.email) for r in recs if r.email])

    def record_emails(self, campaign_id: int, results: Sequence[tuple[int, str, bool, str]], *,
                      at: float) -> None:
        """One ``email_sent`` / ``email_failed`` event per ``(recipient id, address, sent,
        detail)``: the Message-ID when sent, the reason when not."""
        if not results:
            return
        with self.session() as s:
            rows = [self._event(s, "email_sent" if sent else "email_failed", at=at,
                                campaign_id=campaign_id, recipient_id=recipient_id,
                                email=address, detail=detail)
                    for recipient_id, address, sent, detail in results]
            s.flush()
            # a report that comes after the run was sealed joins its chain (the head moves)
            self._seal(s, campaign_id, at, appended=[r.id for r in rows])
