"""E-mail of a campaign's message, sent off the scheduler's thread.

The daemon's loop must never wait on an SMTP server (a slow or unreachable one takes up to the
``[smtp] timeout`` per connection), so it only *submits* what happened: a campaign became active,
or a recipient's call ended unsuccessfully. One background thread takes the jobs in order, asks
the store whether and to whom to mail (``SqlStore.mail_job``: the campaign's ``email`` setting,
its first activation, the recipient's state), sends with ``dialer.mailer.Mailer`` and records
every result as an ``email_sent`` / ``email_failed`` event (``SqlStore.record_emails``).

The ``email`` setting of a campaign (``dialer.core.domain.EmailPolicy``):

* ``on_launch``: when the campaign becomes active for the first time, every recipient with an
  address gets the message (a campaign made active again by granted attempts is not a launch);
* ``unreached``: a recipient that ends ``failed`` (attempts used up) gets it;
* ``off``: nothing is sent.

Without an ``[smtp]`` table nothing can be sent: each recipient that should have had a mail gets
an ``email_failed`` event saying so, so the operator sees it in the history.

A job lost with the daemon (killed between the decision and the mail) is not replayed: mail is a
courtesy copy of the call, not a guarantee.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dialer.core.errors import DialerError
from dialer.mailer import Mailer, SmtpConfig

if TYPE_CHECKING:
    from dialer.core.ports import MailPort

logger = logging.getLogger(__name__)

Job = tuple[str, int, int | None, str | None]
"""(trigger, campaign id, recipient id, attempt id): trigger ``launch`` (no recipient, no
attempt) or ``unreached``."""


class MailQueue:
    """A queue of mail jobs and the one thread that sends them."""

    def __init__(self, store: MailPort, smtp: SmtpConfig | None, media_dir: Path, *,
                 clock: Callable[[], float] = time.time,
                 mailer: Callable[[SmtpConfig], Mailer] = Mailer,
                 counted: Callable[[bool], None] | None = None) -> None:
        """``counted``: told of each e-mail, sent (True) or failed (the metrics)."""
        self.store: MailPort = store
        self._counted = counted
        self.smtp = smtp
        self.media_dir = media_dir
        self.clock = clock
        self._mailer = mailer
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def launched(self, campaign_id: int) -> None:
        """A campaign became active (the thread checks that it is the first time)."""
        self._submit(("launch", campaign_id, None, None))

    def unreached(self, campaign_id: int, recipient_id: int, attempt_id: str) -> None:
        """Attempt ``attempt_id`` to a recipient ended unsuccessfully (the thread checks that it
        left the recipient failed)."""
        self._submit(("unreached", campaign_id, recipient_id, attempt_id))

    def _submit(self, job: Job) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dialer-mail", daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def join(self) -> None:
        """Wait until every job submitted so far is done (tests)."""
        self._jobs.join()

    def close(self, timeout: float) -> None:
        """Finish the jobs already submitted, waiting at most ``timeout`` seconds."""
        if self._thread is None:
            return
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("stopping with %d mail job(s) not done", self._jobs.qsize())
        self._thread = None

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                self._send(job)
            except Exception:  # one bad job must not stop the mail of every later one
                logger.exception("mail job %s failed", job)
            finally:
                self._jobs.task_done()

    def _send(self, job: Job) -> None:
        trigger, campaign_id, recipient_id, attempt_id = job
        try:
            mail = self.store.mail_job(campaign_id, trigger, recipient_id, attempt_id)
        except DialerError as exc:
            logger.warning("no mail for campaign %d: %s", campaign_id, exc,
                           extra={"campaign": campaign_id})
            return
        if mail is None or not mail.recipients:
            return
        if self.smtp is None:
            self.store.record_emails(campaign_id, [
                (r.id, r.email, False, "no [smtp] table in the configuration")
                for r in mail.recipients], at=self.clock())
            logger.warning("campaign %d asks for e-mail (%s) but [smtp] is not configured",
                           campaign_id, trigger, extra={"campaign": campaign_id})
            return
        audio: Path | None
        try:
            audio = self.store.media_file(mail.audio_sha, self.media_dir)
        except DialerError as exc:
            logger.warning("campaign %d: message audio not attached: %s", campaign_id, exc,
                           extra={"campaign": campaign_id})
            audio = None
        results = self._mailer(self.smtp).send_campaign(mail.name, mail.recipients, audio,
                                                        mail.text)
        # one result per recipient with an address, in order (all of them have one here)
        pairs = list(zip(mail.recipients, results, strict=False))
        self.store.record_emails(campaign_id, [
            (rec.id, res.email, res.sent, (res.message_id if res.sent else res.error) or "")
            for rec, res in pairs], at=self.clock())
        for rec, res in pairs:
            if self._counted is not None:
                self._counted(res.sent)
            log = logger.info if res.sent else logger.warning
            log("e-mail (%s) to %s %s%s", trigger, res.email, "sent" if res.sent else "failed",
                "" if res.sent else f": {res.error}",
                extra={"campaign": campaign_id, "recipient": rec.id})
