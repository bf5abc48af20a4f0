"""The SIP test peers work on their own, before any dialer is involved.

A PJSUA2 probe (PCMU/PCMA only, so telephone-event is offered on PT 120 like the dialer's)
calls the SIPp far ends directly and through Kamailio; a SIPp caller checks the concurrency
bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit import (
    DTMF_PAYLOAD_TYPE,
    Kamailio,
    PeerError,
    PjProbe,
    Sipp,
    SippEvent,
    parse_sipp_log,
    parse_ul_dump,
    peak_concurrency,
    read_rtp_payload_types,
)

StartSipp = Callable[..., Sipp]
StartKamailio = Callable[..., Kamailio]

# Short far-end timings: the probe plays no prompts, it only listens for keys.
FAST = {"key1_ms": 200, "key9_ms": 300, "wrong_ms": 300, "hangup_ms": 300}


def ended_at(sipp: Sipp, probe: PjProbe, count: int = 1) -> dict[str, str]:
    """Calls ended at SIPp, polling the probe meanwhile (its ACKs go out while it polls)."""
    return probe.wait(
        lambda: len(sipp.ended_call_ids()) >= count and sipp.ended_call_ids(), 3, "call end at SIPp"
    )


@pytest.fixture(scope="module")
def probe() -> Iterator[PjProbe]:
    """One PJSUA2 endpoint for the module (one per process is all PJSUA2 allows)."""
    pytest.importorskip("pjsua2")
    ua = PjProbe()
    yield ua
    ua.close()


# -- pure helpers --------------------------------------------------------------------------


def test_peak_concurrency_counts_calls_between_invite_and_end() -> None:
    log = "\n".join(
        [
            "PEER INVITE a 10",
            "PEER INVITE b 11",
            "PEER KEY a 1 20",
            "PEER END a bye-received 30",
            "PEER INVITE c 31",
            "PEER INVITE d 32",
            "unrelated line",
            "PEER END b cancelled 40",
        ]
    )
    events = parse_sipp_log(log)
    assert events[2] == SippEvent("KEY", "a", "1", 20)
    assert [e.call_id for e in events if e.kind == "INVITE"] == ["a", "b", "c", "d"]
    assert peak_concurrency(events) == 3  # b, c, d open together


def test_parse_ul_dump_reads_contacts() -> None:
    dump = (
        "{\n\tDomains: {\n\t\tDomain: {\n\t\t\tDomain: location\n\t\t\tSize: 1024\n"
        "\t\t\tAoRs: {\n\t\t\t\tInfo: {\n\t\t\t\t\tAoR: dialer\n\t\t\t\t\tHashID: 1\n"
        "\t\t\t\t\tContacts: {\n\t\t\t\t\t\tContact: {\n"
        "\t\t\t\t\t\t\tAddress: sip:dialer@127.0.0.1:5070;ob\n\t\t\t\t\t\t\tExpires: 58\n"
        "\t\t\t\t\t\t}\n\t\t\t\t\t}\n\t\t\t\t}\n\t\t\t}\n\t\t}\n\t}\n}\n"
    )
    [reg] = parse_ul_dump(dump)
    assert (reg.aor, reg.contact, reg.expires) == ("dialer", "sip:dialer@127.0.0.1:5070;ob", 58)


@pytest.mark.sip
def test_dtmf_captures_carry_payload_type_120(dtmf_captures: dict[str, Path]) -> None:
    for key in ("1", "5", "9"):
        assert set(read_rtp_payload_types(dtmf_captures[key])) == {DTMF_PAYLOAD_TYPE}


# -- SIPp far ends, called directly ----------------------------------------------------------


@pytest.mark.sip
@pytest.mark.parametrize(
    ("scenario", "digits"),
    [("answer_confirm", ["1", "9"]), ("wrong_key", ["1", "5", "9"])],
)
def test_far_end_keys_reach_pjsua(
    probe: PjProbe, start_sipp: StartSipp, scenario: str, digits: list[str]
) -> None:
    sipp = start_sipp(scenario, keys=FAST)
    call = probe.call(sipp.uri, call_id=f"attempt-{scenario}")
    probe.wait(lambda: len(call.digits) >= len(digits) or call.disconnected, 5, "DTMF")
    assert call.digits == digits
    probe.hangup_all()
    probe.wait(lambda: call.disconnected, 3, "hang-up")
    assert ended_at(sipp, probe) == {f"attempt-{scenario}": "bye-received"}
    assert sipp.received_call_ids() == [f"attempt-{scenario}"]
    assert [d for _, d in sipp.keys_sent()] == digits
    assert sipp.errors() == ""


@pytest.mark.sip
def test_answer_confirm_accepts_an_early_bye(probe: PjProbe, start_sipp: StartSipp) -> None:
    sipp = start_sipp("answer_confirm", keys={"key1_ms": 5000})
    call = probe.call(sipp.uri)
    probe.wait(lambda: call.confirmed, 3, "answer")
    probe.hangup_all()
    probe.wait(lambda: call.disconnected, 3, "hang-up")
    assert ended_at(sipp, probe) == {call.call_id: "bye-received"}
    assert call.digits == []


@pytest.mark.sip
@pytest.mark.parametrize(("scenario", "status"), [("busy", 486), ("unavailable", 480)])
def test_rejecting_far_ends(
    probe: PjProbe, start_sipp: StartSipp, scenario: str, status: int
) -> None:
    sipp = start_sipp(scenario)
    call = probe.call(sipp.uri)
    probe.wait(lambda: call.disconnected, 3, f"{status}")
    assert call.status == status
    assert not call.confirmed
    assert ended_at(sipp, probe) == {call.call_id: f"rejected-{status}"}


@pytest.mark.sip
def test_no_answer_rings_until_cancel(probe: PjProbe, start_sipp: StartSipp) -> None:
    sipp = start_sipp("no_answer")
    call = probe.call(sipp.uri)
    probe.wait(lambda: "EARLY" in call.states, 3, "180 Ringing")
    probe.poll(0.2)
    assert not call.disconnected
    probe.hangup_all()  # CANCEL, like the dialer's ring timeout
    probe.wait(lambda: call.disconnected, 3, "487")
    assert call.status == 487
    assert ended_at(sipp, probe) == {call.call_id: "cancelled"}


@pytest.mark.sip
def test_concurrent_calls_are_counted(start_sipp: StartSipp) -> None:
    far = start_sipp("answer_confirm", keys=FAST)
    caller = start_sipp(
        "uac_check", remote=far.address, service="1001", calls=3, limit=3, rate=100,
        keys={"hold_ms": 1000}, trace_msg=False,
    )  # fmt: skip
    assert caller.wait(10) == 0, caller.diagnostics()
    ended = far.wait_for_ended(3, 3)
    assert set(ended.values()) == {"bye-received"}
    assert sorted(far.received_call_ids()) == sorted(ended)
    assert far.peak_calls() == 3

    one_at_a_time = start_sipp("busy")
    caller = start_sipp(
        "uac_check", remote=one_at_a_time.address, service="1001", calls=3, limit=1,
        keys={"hold_ms": 0}, trace_msg=False,
    )  # fmt: skip
    assert caller.wait(10) == 1  # every call was refused
    one_at_a_time.wait_for_ended(3, 3)
    assert one_at_a_time.peak_calls() == 1


# -- Kamailio as the PBX ---------------------------------------------------------------------


@pytest.mark.kamailio
@pytest.mark.sip
def test_kamailio_registers_only_with_the_right_password(
    probe: PjProbe, start_kamailio: StartKamailio
) -> None:
    pbx = start_kamailio(user="trunk7", password="right-pw")
    good = probe.account("trunk7", registrar=pbx.uri, password="right-pw")
    bad = probe.account("trunk7", registrar=pbx.uri, password="wrong-pw")
    try:
        probe.wait(lambda: good.codes and bad.codes, 5, "registration results")
        assert good.codes == [200]
        assert bad.codes == [403]
        [reg] = pbx.wait_registered("trunk7")
        assert reg.contact.startswith("sip:trunk7@127.0.0.1:")
    finally:
        probe.drop(good)
        probe.drop(bad)


@pytest.mark.kamailio
@pytest.mark.sip
def test_kamailio_proxies_an_authenticated_invite_to_sipp(
    probe: PjProbe, start_sipp: StartSipp, start_kamailio: StartKamailio
) -> None:
    far = start_sipp("hangup_mid_message", keys=FAST)
    pbx = start_kamailio(routes={"1001": far.address})
    trunk = probe.account(pbx.user, registrar=pbx.uri, password=pbx.password)
    stranger = probe.account(pbx.user, password="wrong-pw")
    try:
        probe.wait(lambda: trunk.codes, 5, "registration")
        call = probe.call(f"sip:1001@{pbx.address}", account=trunk, call_id="attempt-via-pbx")
        # The far end's BYE crosses the proxy through the recorded route.
        probe.wait(lambda: call.disconnected, 5, "far-end BYE")
        assert call.confirmed and call.digits == ["1"]
        assert ended_at(far, probe) == {"attempt-via-pbx": "bye-sent"}

        refused = probe.call(f"sip:1001@{pbx.address}", account=stranger)
        probe.wait(lambda: refused.disconnected, 5, "refusal")
        assert refused.status in (403, 407)
        assert far.received_call_ids() == ["attempt-via-pbx"]
    finally:
        probe.drop(trunk)
        probe.drop(stranger)


@pytest.mark.kamailio
def test_kamailio_restart_forgets_registrations_keeps_routes(
    start_kamailio: StartKamailio,
) -> None:
    pbx = start_kamailio(routes={"1001": "127.0.0.1:5999"})
    port = pbx.port
    pbx.stop()
    assert not pbx.running()
    with pytest.raises(PeerError):
        pbx.registrations()  # control socket gone with the process
    pbx.start()
    assert pbx.port == port
    assert pbx.registrations() == []
    assert "sip:127.0.0.1:5999" in pbx.rpc("htable.dump", "routes").stdout
