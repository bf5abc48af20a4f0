"""The daemon mails a campaign's message through a real SMTP server (aiosmtpd on loopback): to
everyone with an address at launch (``on_launch``), or only to the recipients that end failed
(``unreached``); each result is an ``email_sent`` / ``email_failed`` event. The real daemon loop
and store run in the simulator (tests/sim.py); the mail goes out on the daemon's mail thread."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dialer.core.domain import CampaignSettings, Kind
from dialer.core.recipients import Recipient
from dialer.mailer import SmtpConfig
from dialer.storage.store import SqlStore
from tests.sim import T0, Behaviour, Simulation

pytest.importorskip("aiosmtpd", reason="aiosmtpd is not installed")

from tests.test_mailer import Inbox, inbox  # noqa: E402,F401  (inbox: the SMTP server fixture)

AUDIO = b"RIFF fake message audio"
PEOPLE = [("101", "ada@example.com"), ("102", None), ("103", "cy@example.com"),
          ("104", "dee@example.com")]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = SqlStore(f"sqlite:///{tmp_path}/dialer.db")
    s.migrate()
    yield s
    s.dispose()


def launch(store: SqlStore, **settings: Any) -> int:
    sha = hashlib.sha256(AUDIO).hexdigest()
    store.add_media(data=AUDIO, sha256=sha, rate=8000, seconds=4.0, source=None, now=T0)
    cs = CampaignSettings(retry_delay=30.0, attempts=2, ring_timeout=20.0, **settings)
    store.add_template(name="Fire", settings=cs, audio_sha=sha, audio_seconds=4.0,
                       recipients=[Recipient(number=n, kind=Kind.INTERNAL, name=f"P{n}", email=e)
                                   for n, e in PEOPLE], now=T0, actor="test")
    return store.start_campaign(template="Fire", name="Fire drill", now=T0, start_at=T0,
                                actor="test")


def run(store: SqlStore, tmp_path: Path, port: int,
        script: dict[str, list[Behaviour]]) -> Simulation:
    sim = Simulation(store, tmp_path / "data", script)
    sim.daemon.mail.smtp = SmtpConfig(host="127.0.0.1", port=port, starttls=False,
                                      sender="Alerts <alerts@example.com>")
    sim.run(done=lambda: store.list_campaigns()[0]["state"] in ("completed", "incomplete"))
    sim.daemon.mail.join()
    return sim


def email_events(store: SqlStore, cid: int) -> list[tuple[str, str]]:
    return [(e["kind"], e["detail"]["email"]) for e in store.events_of(cid)
            if e["kind"].startswith("email_")]


def test_on_launch_mails_everyone_with_an_address_once(store: SqlStore, tmp_path: Path,
                                                       inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    cid = launch(store, email="on_launch", tts_text="Fire in building B. Leave now.")
    sim = run(store, tmp_path, port, {"102": [Behaviour("busy")]})
    sim.stop()
    got = sorted(rcpt[0] for rcpt, _ in box.mails)
    assert got == ["ada@example.com", "cy@example.com", "dee@example.com"]
    for _, msg in box.mails:
        assert msg["Subject"] == "Alert: Fire drill"
        [att] = list(msg.iter_attachments())
        assert att.get_content_type() == "audio/wav" and att.get_content() == AUDIO
        body = msg.get_body(("plain",))
        assert body is not None
        assert "Fire in building B. Leave now." in body.get_content()
    assert sorted(email_events(store, cid)) == [("email_sent", "ada@example.com"),
                                                ("email_sent", "cy@example.com"),
                                                ("email_sent", "dee@example.com")]
    sample = sim.daemon.metrics.registry.get_sample_value
    assert sample("dialer_emails_total", {"result": "sent"}) == 3
    assert sample("dialer_emails_total", {"result": "failed"}) == 0


def test_unreached_mails_only_the_failed_recipients(store: SqlStore, tmp_path: Path,
                                                    inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    cid = launch(store, email="unreached")
    # 103 busy twice (failed, has an address); 102 failed too but has none; 101, 104 answer
    sim = run(store, tmp_path, port, {"103": [Behaviour("busy")], "102": [Behaviour("busy")]})
    sim.stop()
    assert [rcpt for rcpt, _ in box.mails] == [["cy@example.com"]]
    assert email_events(store, cid) == [("email_sent", "cy@example.com")]
    detail = store.campaign_detail(cid)
    assert {r["number"]: r["state"] for r in detail["recipients"]} == {
        "101": "contacted", "102": "failed", "103": "failed", "104": "contacted"}


def test_without_smtp_each_mail_is_an_email_failed_event(store: SqlStore, tmp_path: Path) -> None:
    cid = launch(store, email="on_launch")
    sim = Simulation(store, tmp_path / "data", {})
    sim.run(done=lambda: store.list_campaigns()[0]["state"] in ("completed", "incomplete"))
    sim.daemon.mail.join()
    sim.stop()
    events = [e for e in store.events_of(cid) if e["kind"].startswith("email_")]
    assert [e["kind"] for e in events] == ["email_failed"] * 3
    assert all("[smtp]" in e["detail"]["detail"] for e in events)


def test_off_sends_nothing(store: SqlStore, tmp_path: Path, inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    cid = launch(store)
    run(store, tmp_path, port, {"103": [Behaviour("busy")]}).stop()
    assert box.mails == [] and email_events(store, cid) == []
