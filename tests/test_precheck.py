"""The pre-launch check: every planted defect is found, a clean template only gets its estimate."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dialer.core.domain import CampaignSettings, Kind, Limits
from dialer.core.recipients import NumberRules, Recipient
from dialer.metrics import Metrics
from dialer.precheck import (
    CallModel,
    Finding,
    Severity,
    check_campaign,
    estimate_duration,
    fetch_trunk_states,
    findings_json,
    trunk_states_from_metrics,
)
from media.audio import AudioInfo, import_audio
from media.prompts import prompt_set

RULES = NumberRules(region="IT", extension_pattern=r"\d{3,6}")
REGISTERED = {"internal": True, "external": True}


@dataclass(frozen=True)
class FakeTemplate:
    """The fields of ``TemplateView`` the check reads."""

    name: str = "Fire"
    enabled: bool = True
    settings: CampaignSettings = field(default_factory=CampaignSettings)
    audio_seconds: float = 2.0
    recipients: list[Recipient] = field(default_factory=list)


def rec(number: str, kind: Kind = Kind.INTERNAL, email: str | None = None) -> Recipient:
    return Recipient(number=number, kind=kind, email=email)


CLEAN = [rec("201", email="ada@example.com"), rec("202"), rec("+390212345678", Kind.EXTERNAL),
         rec("+390287654321", Kind.EXTERNAL)]


@pytest.fixture(scope="module")
def message(tmp_path_factory: pytest.TempPathFactory) -> AudioInfo:
    """A real normalised message of 2 s."""
    d = tmp_path_factory.mktemp("audio")
    t = np.arange(16000 * 2) / 16000
    sf.write(d / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    return import_audio(d / "tone.wav", d / "store")


def codes(findings: list[Finding]) -> list[tuple[str, str, int | None]]:
    return [(f.severity.value, f.code, f.position) for f in findings]


def check(template: FakeTemplate, message: AudioInfo, **kw: object) -> list[Finding]:
    args: dict[str, object] = {"rules": RULES, "trunk_states": REGISTERED, "limits": Limits(),
                               "audio": message.path}
    args.update(kw)
    return check_campaign(template, **args)  # type: ignore[arg-type]


def test_a_clean_template_gets_only_its_estimate(message: AudioInfo) -> None:
    found = check(FakeTemplate(recipients=CLEAN), message)
    assert codes(found) == [("info", "estimate", None)]
    assert found[0].message.startswith("about ")
    assert "4 recipient(s) at 4 call(s) at a time" in found[0].message


def test_every_planted_defect_is_found(message: AudioInfo, tmp_path: Path) -> None:
    recipients = [
        rec("201"),                                  # 1 fine
        rec("12"),                                   # 2 no longer an extension (pattern 3-6)
        rec("201"),                                  # 3 duplicate of 1
        rec("+39 123", Kind.EXTERNAL),               # 4 not a valid number
        rec("+390212345678", Kind.EXTERNAL),         # 5 fine
        rec("+390212345678", Kind.EXTERNAL),         # 6 duplicate of 5
        rec("203", email="not-an-address"),          # 7 bad e-mail
    ]
    st = CampaignSettings(threshold=20, limits=Limits(external=0))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    found = check(FakeTemplate(enabled=False, settings=st, recipients=recipients), message,
                  trunk_states={"internal": True, "external": False},
                  audio=b"this is not audio", max_campaigns=2, active_campaigns=2,
                  prompt_set=lambda lang: {**prompt_set(lang), "listen_prompt": broken})
    got = codes(found)
    for expected in [
        ("error", "template_disabled", None),
        ("error", "threshold_too_high", None),
        ("error", "bad_number", 2),
        ("error", "duplicate_number", 3),
        ("error", "bad_number", 4),
        ("error", "duplicate_number", 6),
        ("warning", "bad_email", 7),
        ("error", "audio_invalid", None),
        ("error", "prompt_invalid", None),
        ("error", "trunk_unregistered", None),
        ("error", "no_capacity", None),
        ("warning", "would_block", None),
        ("info", "estimate", None),
    ]:
        assert expected in got, expected
    assert len(got) == 13, got
    # errors first, then warnings, then the estimate
    order = [f.severity for f in found]
    assert order == sorted(order, key=[Severity.ERROR, Severity.WARNING, Severity.INFO].index)
    dup = next(f for f in found if f.code == "duplicate_number" and f.position == 6)
    assert "+390212345678 is also recipient #5" in dup.message
    assert dup.line().startswith("error   duplicate_number   #6 +390212345678: ")
    assert '"code": "template_disabled"' in findings_json(found)


def test_missing_audio_and_unknown_trunks(message: AudioInfo, tmp_path: Path) -> None:
    found = check(FakeTemplate(recipients=CLEAN), message, audio=None, trunk_states={})
    assert ("error", "audio_missing", None) in codes(found)
    unknown = [f for f in found if f.code == "trunk_unknown"]
    assert len(unknown) == 2 and all(f.severity is Severity.WARNING for f in unknown)
    found = check(FakeTemplate(recipients=CLEAN), message, audio=tmp_path / "gone.wav")
    assert ("error", "audio_missing", None) in codes(found)


def test_audio_checked_from_bytes_and_its_length(message: AudioInfo) -> None:
    data = message.path.read_bytes()
    assert codes(check(FakeTemplate(recipients=CLEAN), message, audio=data)) == [
        ("info", "estimate", None)]
    found = check(FakeTemplate(recipients=CLEAN, audio_seconds=30.0), message)
    assert ("warning", "audio_length", None) in codes(found)


def test_only_the_trunks_in_use_are_checked(message: AudioInfo) -> None:
    internal_only = [r for r in CLEAN if r.kind is Kind.INTERNAL]
    found = check(FakeTemplate(recipients=internal_only), message,
                  trunk_states={"internal": True, "external": False})
    assert codes(found) == [("info", "estimate", None)]


def test_a_launch_with_other_recipients_is_checked_on_those(message: AudioInfo) -> None:
    found = check(FakeTemplate(recipients=CLEAN), message, recipients=[rec("9")])
    assert ("error", "bad_number", 1) in codes(found)


def test_a_global_limit_of_zero(message: AudioInfo) -> None:
    found = check(FakeTemplate(recipients=CLEAN), message, limits=Limits(total=0))
    assert [f.code for f in found].count("no_capacity") == 2


# ----- the estimate -----

SIMPLE = CallModel(answer_rate=1.0, ring_seconds=8.0, setup_seconds=1.0, key_seconds=3.0,
                   prompt_seconds=4.0)


def test_estimate_all_answer_no_confirmations() -> None:
    st = CampaignSettings(answer_confirm=False, listen_confirm=False, limits=Limits(total=5),
                          attempts=5, ring_timeout=30.0, retry_delay=60.0)
    est = estimate_duration(internal=10, external=0, settings=st, global_limits=Limits(),
                            message_seconds=10.0, model=SIMPLE)
    assert est.success_call_seconds == 23.0  # 1 setup + 8 ring + 10 message + 4 goodbye
    assert est.expected_seconds == pytest.approx(10 * 23 / 5)
    assert est.concurrency == 5
    assert est.calls_expected == pytest.approx(10)
    # nobody answers: 5 attempts of 31 s each, 60 s apart -> the retry chain dominates
    assert est.worst_seconds == pytest.approx(max(10 * 5 * 31 / 5, 4 * (31 + 60) + 31))


def test_estimate_respects_every_limit() -> None:
    st = CampaignSettings(answer_confirm=False, listen_confirm=False, retry_delay=0.0)
    est = estimate_duration(internal=6, external=6, settings=st,
                            global_limits=Limits(total=4, internal=2, external=3),
                            message_seconds=10.0, model=SIMPLE)
    assert est.expected_seconds == pytest.approx(max(6 * 23 / 2, 6 * 23 / 3, 12 * 23 / 4))
    est = estimate_duration(internal=6, external=0, settings=st, global_limits=Limits(),
                            capacity=3, message_seconds=10.0, model=SIMPLE)
    assert est.concurrency == 3 and est.expected_seconds == pytest.approx(6 * 23 / 3)
    unlimited = estimate_duration(internal=6, external=0, settings=st, global_limits=Limits(),
                                  message_seconds=10.0, model=SIMPLE)
    assert unlimited.concurrency == 6 and unlimited.expected_seconds == pytest.approx(23)


def test_retries_lengthen_the_estimate() -> None:
    base = dict(internal=20, external=0, global_limits=Limits(total=4), message_seconds=10.0)
    st = CampaignSettings(attempts=5)
    sure = estimate_duration(settings=st, model=dataclasses.replace(SIMPLE, answer_rate=1.0),
                             **base)  # type: ignore[arg-type]
    doubtful = estimate_duration(settings=st, model=dataclasses.replace(SIMPLE, answer_rate=0.5),
                                 **base)  # type: ignore[arg-type]
    assert doubtful.calls_expected > sure.calls_expected
    assert doubtful.expected_seconds > sure.expected_seconds
    assert doubtful.worst_seconds >= doubtful.expected_seconds


# ----- trunk states from the daemon's metrics -----

def test_trunk_states_from_the_metrics_endpoint() -> None:
    m = Metrics()
    m.set_trunk("internal", True, 200)
    m.set_trunk("external", False, 403)
    assert trunk_states_from_metrics(m.render().decode()) == {"internal": True,
                                                              "external": False}
    m.serve("127.0.0.1", 0)
    try:
        states: Mapping[str, bool | None] = fetch_trunk_states(
            f"http://127.0.0.1:{m.port}/metrics")
    finally:
        m.stop()
    assert states == {"internal": True, "external": False}


def test_no_daemon_means_unknown_trunks() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert fetch_trunk_states(f"http://127.0.0.1:{port}/metrics", timeout=1.0) == {}


def test_external_recipients_are_checked_against_their_templates_route(
        message: AudioInfo) -> None:
    routes = {"external": ("external",), "carriers": ("carrier-a", "carrier-b")}
    routed = FakeTemplate(settings=CampaignSettings(external_route="carriers"), recipients=CLEAN)
    states = {"internal": True, "external": False, "carrier-a": False, "carrier-b": True}
    # one trunk of the route can place calls: nothing to say about trunks
    assert "trunk_unregistered" not in [f.code for f in check(
        routed, message, trunk_states=states, routes=routes)]
    # the other one is out of service (the health guard): none can
    found = check(routed, message, trunk_states=states, routes=routes,
                  trunk_health={"carrier-b": False})
    [f] = [f for f in found if f.code == "trunk_unregistered"]
    assert f.message == ("trunk route carriers (carrier-a, carrier-b) is not registered or out "
                         "of service (carrier-b): its 2 recipient(s) would wait until it is")
    # a route no [routes] table defines
    lost = FakeTemplate(settings=CampaignSettings(external_route="nowhere"), recipients=CLEAN)
    [f] = [f for f in check(lost, message, routes=routes) if f.severity is Severity.ERROR]
    assert f.code == "route_unknown" and "route nowhere is not configured" in f.message
    # without a route, the external trunk alone, as before
    assert "trunk_unregistered" in [f.code for f in check(
        FakeTemplate(recipients=CLEAN), message, trunk_states=states, routes=routes)]


def test_a_random_key_needs_the_prompt_of_every_digit(message: AudioInfo,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    st = CampaignSettings(answer_key="random", listen_key="random")
    assert codes(check(FakeTemplate(settings=st, recipients=CLEAN), message)) == [
        ("info", "estimate", None)]  # every shipped per-digit prompt is there
    import media.prompts

    shipped = prompt_set("en")
    monkeypatch.setattr(media.prompts, "PROMPTS_DIR", tmp_path)  # an installation without them
    found = check(FakeTemplate(settings=st, recipients=CLEAN), message,
                  prompt_set=lambda lang: shipped)
    missing = [f.message for f in found if f.code == "prompt_missing"]
    assert len(missing) == 14 and "'listen_prompt' for key 8" in missing[-1]
    fixed = check(FakeTemplate(recipients=CLEAN), message,  # fixed keys need none of them
                  prompt_set=lambda lang: shipped)
    assert codes(fixed) == [("info", "estimate", None)]


def test_a_connect_key_needs_its_offer_and_the_transfer_prompts(message: AudioInfo,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    st = CampaignSettings(connect_key="#", connect_to="sip:bridge@pbx.example.com")
    assert codes(check(FakeTemplate(settings=st, recipients=CLEAN), message)) == [
        ("info", "estimate", None)]
    import media.prompts

    shipped = prompt_set("en")
    monkeypatch.setattr(media.prompts, "PROMPTS_DIR", tmp_path)  # an installation without it
    found = check(FakeTemplate(settings=st, recipients=CLEAN), message,
                  prompt_set=lambda lang: {k: v for k, v in shipped.items()
                                           if k != "transfer_failed"})
    missing = sorted(f.message for f in found if f.code == "prompt_missing")
    assert len(missing) == 2
    assert "'connect_offer' for key #" in missing[0] and "'transfer_failed'" in missing[1]
