"""The source filter's decision for every kind of received SIP message (``sip.trust``), row by
row."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip import trust
from sip.trust import DROP, FOREIGN, NOT_PEER, PASS, Seen, SourceFilter

PBX = "10.0.0.5"
CLUSTER = "10.0.1.7"  # another node of the PBX cluster (allowed_sources)
STRANGER = "127.0.0.3"
CALL = "attempt-1@alert-dialer"


def make(reject: int = 403) -> SourceFilter:
    f = SourceFilter(trust.networks([PBX, "10.0.1.0/24"]), reject)
    f.call_started(CALL)
    return f


def answered(f: SourceFilter, by: str = PBX) -> None:
    assert f.decide(Seen(by, False, "INVITE", CALL, "far", 180)) is PASS


def req(src: str, method: str, call_id: str = CALL, to_tag: str = "far") -> Seen:
    return Seen(src, True, method, call_id, to_tag)


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS", "MESSAGE", "SUBSCRIBE", "REGISTER",
                                    "BYE", "ACK", "CANCEL", "NOTIFY"])
@pytest.mark.parametrize("to_tag", ["", "far"])
def test_anything_from_a_stranger_is_dropped_and_counted(method: str, to_tag: str) -> None:
    f = make()
    answered(f)
    assert f.decide(req(STRANGER, method, to_tag=to_tag)) == DROP
    assert f.decide(Seen(STRANGER, False, method, CALL, to_tag, 200)) == DROP
    assert f.take_dropped() == {FOREIGN: 2}
    assert f.take_dropped() == {}


@pytest.mark.parametrize(("method", "verdict"), [
    ("INVITE", 403), ("OPTIONS", 200), ("MESSAGE", 403), ("SUBSCRIBE", 403), ("REGISTER", 403),
    ("NOTIFY", 403), ("CANCEL", 481), ("ACK", DROP)])
def test_unsolicited_requests_from_the_pbx_are_answered_before_pjsua(method: str,
                                                                    verdict: object) -> None:
    f = make()
    assert f.decide(req(PBX, method, call_id="theirs", to_tag="")) == verdict
    assert f.decide(req(CLUSTER, method, call_id="theirs", to_tag="")) == verdict
    assert f.take_dropped() == {}


@pytest.mark.parametrize("code", [403, 488, 603])
def test_the_refusal_of_an_invite_is_configurable(code: int) -> None:
    assert make(code).decide(req(PBX, "INVITE", call_id="x", to_tag="")) == code


def test_a_refusal_code_outside_the_list_is_refused() -> None:
    with pytest.raises(ValueError, match="reject code 486"):
        SourceFilter([], 486)


def test_an_invite_reusing_our_call_id_without_a_to_tag_is_still_unsolicited() -> None:
    f = make()
    answered(f)
    assert f.decide(req(PBX, "INVITE", to_tag="")) == 403


@pytest.mark.parametrize("method", ["BYE", "INVITE", "UPDATE", "INFO", "NOTIFY", "ACK"])
def test_in_dialog_requests_only_from_the_dialog_peer(method: str) -> None:
    f = make()
    answered(f, by=PBX)
    assert f.decide(req(PBX, method)) is PASS
    assert f.decide(req(CLUSTER, method)) == DROP  # trusted, but not this call's far end
    assert f.take_dropped() == {NOT_PEER: 1}


def test_the_first_answer_picks_the_peer_and_other_answers_are_dropped() -> None:
    f = make()
    answered(f, by=CLUSTER)
    assert f.peers(CALL) == {CLUSTER}
    assert f.decide(Seen(PBX, False, "INVITE", CALL, "far", 200)) == DROP
    assert f.decide(Seen(CLUSTER, False, "INVITE", CALL, "far", 200)) is PASS
    assert f.decide(req(CLUSTER, "BYE")) is PASS


def test_in_dialog_request_before_any_answer_is_dropped() -> None:
    f = make()
    assert f.decide(req(PBX, "BYE")) == DROP


def test_in_dialog_request_for_no_call_of_ours_gets_481_and_its_ack_nothing() -> None:
    f = make()
    assert f.decide(req(PBX, "BYE", call_id="gone")) == 481
    assert f.decide(req(PBX, "ACK", call_id="gone")) == DROP


def test_a_finished_calls_late_requests_go_to_pjsip_from_its_peer_only() -> None:
    """A retransmitted BYE after the call is over: PJSIP's transaction answers it again."""
    f = make()
    answered(f)
    f.call_ended(CALL)
    assert f.decide(req(PBX, "BYE")) is PASS
    assert f.decide(req(CLUSTER, "BYE")) == DROP
    assert f.decide(req(STRANGER, "BYE")) == DROP


def test_only_the_most_recent_finished_calls_are_remembered() -> None:
    f = make()
    answered(f)
    f.call_ended(CALL)
    for i in range(trust.RECENT):
        f.call_started(f"c{i}")
        assert f.decide(Seen(PBX, False, "INVITE", f"c{i}", "t", 180)) is PASS
        f.call_ended(f"c{i}")
    assert f.decide(req(PBX, "BYE")) == 481  # forgotten: bounded memory
    assert f.decide(req(PBX, "BYE", call_id=f"c{trust.RECENT - 1}")) is PASS


def test_responses_to_other_transactions_pass_from_the_pbx_only() -> None:
    f = make()
    assert f.decide(Seen(PBX, False, "REGISTER", "reg-1", "x", 200)) is PASS
    assert f.decide(Seen(STRANGER, False, "REGISTER", "reg-1", "x", 200)) == DROP


def test_an_unparsable_source_is_foreign() -> None:
    f = make()
    assert f.decide(req("not-an-ip", "OPTIONS", to_tag="")) == DROP


def test_ipv6_networks() -> None:
    f = SourceFilter(trust.networks(["2001:db8::/64"]))
    assert f.trusts("2001:db8::1") and not f.trusts("2001:db9::1") and not f.trusts("127.0.0.1")


@given(st.ip_addresses(v=4))
def test_only_addresses_inside_the_networks_are_trusted(addr: object) -> None:
    f = SourceFilter(trust.networks(["10.0.0.0/8", "192.0.2.1"]))
    a = str(addr)
    expected = a.startswith("10.") or a == "192.0.2.1"
    assert f.trusts(a) is expected
    verdict = f.decide(req(a, "OPTIONS", call_id="x", to_tag=""))
    assert (verdict == 200) is expected and (verdict == DROP) is (not expected)


# ----- the kernel filter on the TCP listener (sip.sockfilter) -----


@given(st.ip_addresses(v=4))
def test_the_socket_filter_program_accepts_exactly_the_trusted_networks(addr: object) -> None:
    from sip import sockfilter

    nets = trust.networks(["10.0.0.0/8", "192.0.2.1", "127.0.0.1", "2001:db8::/32"])
    a = str(addr)
    expected = a.startswith("10.") or a in ("192.0.2.1", "127.0.0.1")
    assert sockfilter.run(sockfilter.program(nets), a) is expected


def test_a_socket_filter_with_no_network_drops_everything() -> None:
    from sip import sockfilter

    assert not sockfilter.run(sockfilter.program([]), "127.0.0.1")
