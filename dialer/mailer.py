"""E-mail of a campaign's message to its recipients that have an address (SMTP).

The message goes out as a plain-text mail with the audio attached as a WAV file; when the message
was made by text to speech its text is the body, so it can be read as well as heard. One SMTP
connection carries the whole batch; a recipient the server refuses does not stop the others, and
every recipient gets a ``MailResult``.

Configuration: the ``[smtp]`` table of ``dialer.toml`` (``parse_smtp``)::

    [smtp]
    host = "smtp.example.com"          # required to send any mail
    port = 587                         # default 587 with starttls, 25 without
    starttls = true                    # upgrade the connection with STARTTLS (default true)
    username = "dialer"                # optional: SMTP AUTH...
    password_env = "DIALER_SMTP_PASSWORD"        # ...the password from the environment
    # password_file = "/etc/dialer/smtp.password"  # ...or from a file (never in this file)
    sender = "Alert dialer <alerts@example.com>"  # required: the From address
    subject = "Alert: {campaign}"      # {campaign} is the campaign name
    timeout = 30                       # seconds for connecting and each SMTP command

Credentials are refused without STARTTLS unless the server is on loopback: a password never
crosses the network in clear.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Protocol

from dialer.configfields import Secret, parse_int, parse_password
from dialer.core.errors import ConfigError, ValidationError
from dialer.core.recipients import normalise_email

logger = logging.getLogger(__name__)

LOOPBACK = ("localhost", "127.0.0.1", "::1")
DEFAULT_SUBJECT = "Alert: {campaign}"


@dataclass(frozen=True, kw_only=True)
class SmtpConfig:
    """Where and how to send mail (the ``[smtp]`` table)."""

    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    sender: str
    subject: str = DEFAULT_SUBJECT
    timeout: float = 30.0


class MailRecipient(Protocol):
    """What the mailer reads of a recipient (``dialer.core.recipients.Recipient`` fits)."""

    @property
    def number(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def email(self) -> str | None: ...


@dataclass(frozen=True, kw_only=True)
class MailResult:
    """What happened to the mail of one recipient."""

    number: str
    email: str
    sent: bool
    error: str | None = None
    message_id: str | None = None


def parse_smtp(raw: Any, base: Path | None = None, *, secrets: bool = True
               ) -> SmtpConfig | None:
    """Validate the ``[smtp]`` table (None when absent: no mail is sent).

    ``base`` is the directory relative ``password_file`` paths are read from (the config's).
    Every problem is a one-line ``ConfigError``.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("[smtp] must be a table")
    where = "[smtp]"
    unknown = set(raw) - {"host", "port", "starttls", "username", "password_env",
                          "password_file", "password", "sender", "subject", "timeout"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    host = raw.get("host")
    if not isinstance(host, str) or not host.strip():
        raise ConfigError(f"{where}.host must be the SMTP server's name, such as "
                          "\"smtp.example.com\"")
    starttls = raw.get("starttls", True)
    if not isinstance(starttls, bool):
        raise ConfigError(f"{where}.starttls must be true or false, not {starttls!r}")
    port = parse_int(raw, "port", 587 if starttls else 25, where, 1, 65535)
    assert port is not None
    timeout = raw.get("timeout", 30)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 600:
        raise ConfigError(f"{where}.timeout must be a number of seconds in (0, 600], "
                          f"not {timeout!r}")
    username = raw.get("username")
    if username is not None and (not isinstance(username, str) or not username):
        raise ConfigError(f"{where}.username must be a non-empty string")
    password = parse_password(raw, where, base or Path.cwd(), reveal=secrets)
    if password is not None and not username:
        raise ConfigError(f"{where}: a password needs a username")
    if username and not starttls and host.strip().lower() not in LOOPBACK:
        raise ConfigError(f"{where}: credentials without starttls would cross the network in "
                          "clear; set starttls = true")
    sender = raw.get("sender")
    if not isinstance(sender, str) or not sender.strip():
        raise ConfigError(f"{where}.sender must be the From address, such as "
                          "\"Alert dialer <alerts@example.com>\"")
    display, address = parseaddr(sender)
    try:
        address = normalise_email(address)
    except ValidationError as exc:
        raise ConfigError(f"{where}.sender: {exc}") from exc
    subject = raw.get("subject", DEFAULT_SUBJECT)
    if not isinstance(subject, str) or not subject.strip():
        raise ConfigError(f"{where}.subject must be a non-empty string")
    try:
        subject.format(campaign="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{where}.subject: only {{campaign}} may be used ({exc})") from exc
    return SmtpConfig(host=host.strip(), port=port, starttls=starttls, username=username,
                      password=password, sender=formataddr((display, address)),
                      subject=subject, timeout=float(timeout))


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return slug or "message"


class Mailer:
    """Sends a campaign's message to recipients by SMTP.

    ``smtp_factory`` and ``ssl_context`` are for tests (a local server, a private CA).
    """

    def __init__(self, config: SmtpConfig, *,
                 smtp_factory: Callable[..., smtplib.SMTP] = smtplib.SMTP,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self._factory = smtp_factory
        self._ssl = ssl_context

    def build_message(self, campaign_name: str, recipient: MailRecipient,
                      audio: bytes | None, text: str | None = None) -> EmailMessage:
        """The mail of one recipient (``recipient.email`` must be set)."""
        assert recipient.email
        cfg = self.config
        msg = EmailMessage()
        msg["Subject"] = cfg.subject.format(campaign=campaign_name)
        msg["From"] = cfg.sender
        msg["To"] = formataddr((recipient.name or "", recipient.email))
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain=parseaddr(cfg.sender)[1].split("@")[-1])
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to an alert
        greeting = f"{recipient.name},\n\n" if recipient.name else ""
        if text:
            body = (f"{greeting}{text.strip()}\n\n"
                    f"(Alert campaign \"{campaign_name}\"; the spoken message is attached.)\n")
        else:
            body = (f"{greeting}A message was sent to you in the alert campaign "
                    f"\"{campaign_name}\". Please listen to the attached recording.\n")
        msg.set_content(body)
        if audio is not None:
            msg.add_attachment(audio, maintype="audio", subtype="wav",
                               filename=f"{_slug(campaign_name)}.wav")
        return msg

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        smtp = self._factory(cfg.host, cfg.port, timeout=cfg.timeout)
        try:
            smtp.ehlo()
            if cfg.starttls:
                smtp.starttls(context=self._ssl or ssl.create_default_context())
                smtp.ehlo()
            if cfg.username:
                smtp.login(cfg.username, cfg.password.reveal() if cfg.password else "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send_campaign(self, campaign_name: str, recipients: Iterable[MailRecipient],
                      audio_path: Path | None, text: str | None = None) -> list[MailResult]:
        """Mail the message to every recipient with an address; one result for each of them.

        Recipients without an address are left out. A server that cannot be reached, or refuses
        the login, fails every remaining recipient with that reason; nothing is raised.
        """
        targets = [r for r in recipients if r.email]
        if not targets:
            return []
        audio = audio_path.read_bytes() if audio_path is not None else None
        results: list[MailResult] = []
        smtp: smtplib.SMTP | None = None
        try:
            for r in targets:
                assert r.email
                msg = self.build_message(campaign_name, r, audio, text)
                try:
                    if smtp is None:
                        smtp = self._connect()
                    try:
                        refused = smtp.send_message(msg)
                    except smtplib.SMTPServerDisconnected:
                        smtp.close()  # the server hung up between two mails: once more
                        smtp = self._connect()
                        refused = smtp.send_message(msg)
                except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError,
                        smtplib.SMTPSenderRefused) as exc:
                    results.append(MailResult(number=r.number, email=r.email, sent=False,
                                              error=_reason(exc)))
                    continue
                except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
                    reason = _reason(exc)
                    logger.warning("mail of campaign %r not sent: %s", campaign_name, reason)
                    results.extend(MailResult(number=t.number, email=str(t.email), sent=False,
                                              error=reason) for t in targets[len(results):])
                    break
                if refused:
                    results.append(MailResult(number=r.number, email=r.email, sent=False,
                                              error=_reason(refused)))
                else:
                    results.append(MailResult(number=r.number, email=r.email, sent=True,
                                              message_id=str(msg["Message-ID"])))
                    logger.info("mailed the message of campaign %r to %s", campaign_name,
                                r.email, extra={"recipient": r.number})
        finally:
            if smtp is not None:
                try:
                    smtp.quit()
                except (smtplib.SMTPException, OSError):
                    smtp.close()
        return results


def _reason(exc: object) -> str:
    """One line from an smtplib error (or a refused-recipients dict)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        exc = exc.recipients
    if isinstance(exc, dict):
        parts = []
        for addr, (code, text) in exc.items():
            msg = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
            parts.append(f"{addr}: {code} {msg}")
        return "; ".join(parts)
    if isinstance(exc, smtplib.SMTPResponseException):
        msg = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        return f"{exc.smtp_code} {msg}"
    if isinstance(exc, socket.timeout):
        return "timed out"
    return " ".join(str(exc).split()) or type(exc).__name__
