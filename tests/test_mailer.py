"""E-mail of the message against a real SMTP server (aiosmtpd) on loopback: plain, and STARTTLS
with AUTH and a private CA; refused recipients; an unreachable server; the ``[smtp]`` table."""

from __future__ import annotations

import email
import email.policy
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from dialer.config import Secret
from dialer.core.errors import ConfigError
from dialer.core.recipients import Recipient, make_recipient
from dialer.mailer import Mailer, SmtpConfig, parse_smtp

aiosmtpd = pytest.importorskip("aiosmtpd", reason="aiosmtpd is not installed (pip install "
                               "-e '.[test]')")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40  # any bytes: the mailer attaches as is


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Inbox:
    """What the server received: (envelope recipients, parsed message) per DATA."""

    mails: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.mails.append((list(envelope.rcpt_tos), msg))
        return "250 Message accepted"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        ok = auth_data.login == b"dialer" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)  # handled=True: we would answer ourselves


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    port = free_port()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield box, port
    finally:
        ctl.stop()


@pytest.fixture
def tls_inbox(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    box = Inbox()
    port = free_port()
    ctl = Controller(box, hostname="127.0.0.1", port=port, tls_context=server_ctx,
                     require_starttls=True, authenticator=box.authenticate,
                     auth_require_tls=True)
    ctl.start()
    try:
        yield box, port, cert
    finally:
        ctl.stop()


def people() -> list[Recipient]:
    return [make_recipient("201", name="Ada Lovelace", email="ada@example.com"),
            make_recipient("202", name="No Mail"),
            make_recipient("203", email="alan@example.com")]


def plain(port: int) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, starttls=False,
                      sender="Alert dialer <alerts@example.com>")


def test_the_message_reaches_every_recipient_with_an_address(inbox: tuple[Inbox, int],
                                                              tmp_path: Path) -> None:
    box, port = inbox
    wav = tmp_path / "m.wav"
    wav.write_bytes(AUDIO)
    results = Mailer(plain(port)).send_campaign("Fire drill B", people(), wav)
    assert [(r.number, r.email, r.sent) for r in results] == [
        ("201", "ada@example.com", True), ("203", "alan@example.com", True)]
    assert [rcpt for rcpt, _ in box.mails] == [["ada@example.com"], ["alan@example.com"]]
    _, msg = box.mails[0]
    assert msg["Subject"] == "Alert: Fire drill B"
    assert msg["From"] == "Alert dialer <alerts@example.com>"
    assert msg["To"] == "Ada Lovelace <ada@example.com>"
    assert msg["Message-ID"] == results[0].message_id
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_body(("plain",))
    assert body is not None and "Please listen to the attached recording" in body.get_content()
    attachments = list(msg.iter_attachments())
    assert len(attachments) == 1
    att = attachments[0]
    assert att.get_content_type() == "audio/wav"
    assert att.get_filename() == "fire-drill-b.wav"
    assert att.get_content() == AUDIO


def test_the_tts_text_is_the_body(inbox: tuple[Inbox, int], tmp_path: Path) -> None:
    box, port = inbox
    wav = tmp_path / "m.wav"
    wav.write_bytes(AUDIO)
    text = "Evacuate building B now. Gather at point 3."
    Mailer(plain(port)).send_campaign("Evacuazione", people()[:1], wav, text=text)
    (_, msg), = box.mails
    body = msg.get_body(("plain",))
    assert body is not None
    content = body.get_content().replace("\r\n", "\n")
    assert content.startswith("Ada Lovelace,\n\nEvacuate building B now. Gather at point 3.")
    assert [a.get_content_type() for a in msg.iter_attachments()] == ["audio/wav"]


def test_a_refused_recipient_does_not_stop_the_others(inbox: tuple[Inbox, int],
                                                      tmp_path: Path) -> None:
    box, port = inbox
    box.refuse.add("ada@example.com")
    wav = tmp_path / "m.wav"
    wav.write_bytes(AUDIO)
    results = Mailer(plain(port)).send_campaign("Fire", people(), wav)
    assert [(r.email, r.sent) for r in results] == [("ada@example.com", False),
                                                    ("alan@example.com", True)]
    assert results[0].error is not None and "550" in results[0].error
    assert [rcpt for rcpt, _ in box.mails] == [["alan@example.com"]]


def test_starttls_and_login(tls_inbox: tuple[Inbox, int, Path], tmp_path: Path) -> None:
    box, port, ca = tls_inbox
    wav = tmp_path / "m.wav"
    wav.write_bytes(AUDIO)
    cfg = SmtpConfig(host="localhost", port=port, starttls=True, username="dialer",
                     password=Secret("s3cret"), sender="alerts@example.com")
    ctx = ssl.create_default_context(cafile=str(ca))
    results = Mailer(cfg, ssl_context=ctx).send_campaign("Fire", people(), wav)
    assert all(r.sent for r in results) and len(results) == 2
    assert box.logins == [(b"dialer", b"s3cret")]
    assert len(box.mails) == 2
    # a wrong password: every recipient fails with the server's answer, nothing is raised
    bad = SmtpConfig(host="localhost", port=port, starttls=True, username="dialer",
                     password=Secret("wrong"), sender="alerts@example.com")
    results = Mailer(bad, ssl_context=ctx).send_campaign("Fire", people(), wav)
    assert [r.sent for r in results] == [False, False]
    assert results[0].error is not None and "535" in results[0].error
    # and a server certificate nobody vouches for is refused
    results = Mailer(cfg).send_campaign("Fire", people(), wav)
    assert not any(r.sent for r in results)
    assert "CERTIFICATE_VERIFY_FAILED" in (results[0].error or "")


def test_an_unreachable_server_fails_each_recipient_with_the_reason(tmp_path: Path) -> None:
    wav = tmp_path / "m.wav"
    wav.write_bytes(AUDIO)
    cfg = SmtpConfig(host="127.0.0.1", port=free_port(), starttls=False, timeout=2,
                     sender="alerts@example.com")
    results = Mailer(cfg).send_campaign("Fire", people(), wav)
    assert [r.sent for r in results] == [False, False]
    assert "refused" in (results[0].error or "").lower()


def test_nobody_with_an_address_sends_nothing() -> None:
    cfg = SmtpConfig(host="127.0.0.1", port=1, starttls=False, sender="alerts@example.com")
    assert Mailer(cfg).send_campaign("Fire", [make_recipient("202")], None) == []


# ----- the [smtp] table -----

def test_parse_smtp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert parse_smtp(None) is None
    monkeypatch.setenv("DIALER_SMTP_PASSWORD", "pw-from-env")
    cfg = parse_smtp({"host": "smtp.example.com", "username": "dialer",
                      "password_env": "DIALER_SMTP_PASSWORD",
                      "sender": "Alert dialer <Alerts@Example.com>"})
    assert cfg is not None
    assert (cfg.host, cfg.port, cfg.starttls, cfg.username) == ("smtp.example.com", 587, True,
                                                                "dialer")
    assert cfg.password is not None and cfg.password.reveal() == "pw-from-env"
    assert "pw-from-env" not in repr(cfg)
    assert cfg.sender == "Alert dialer <Alerts@example.com>"
    (tmp_path / "smtp.password").write_text("pw-from-file\n")
    cfg = parse_smtp({"host": "localhost", "starttls": False, "username": "u",
                      "password_file": "smtp.password", "sender": "a@example.com",
                      "subject": "[{campaign}] alert", "timeout": 5}, tmp_path)
    assert cfg is not None and cfg.port == 25 and cfg.timeout == 5.0
    assert cfg.password is not None and cfg.password.reveal() == "pw-from-file"
    assert cfg.subject == "[{campaign}] alert"


@pytest.mark.parametrize("table, message", [
    ({"sender": "a@example.com"}, "[smtp].host"),
    ({"host": "h"}, "[smtp].sender"),
    ({"host": "h", "sender": "not an address"}, "[smtp].sender"),
    ({"host": "h", "sender": "a@example.com", "password": "x"}, "never written in the config"),
    ({"host": "h", "sender": "a@example.com", "password_env": "NOPE_NOT_SET"}, "NOPE_NOT_SET"),
    ({"host": "h", "sender": "a@example.com", "port": 70000}, "[smtp].port"),
    ({"host": "h", "sender": "a@example.com", "starttls": "yes"}, "[smtp].starttls"),
    ({"host": "smtp.example.com", "sender": "a@example.com", "starttls": False,
      "username": "u"}, "in clear"),
    ({"host": "h", "sender": "a@example.com", "subject": "{name}"}, "[smtp].subject"),
    ({"host": "h", "sender": "a@example.com", "colour": "red"}, "unknown key"),
    ("smtp.example.com", "[smtp] must be a table"),
])
def test_parse_smtp_errors(table: Any, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_smtp(table)
