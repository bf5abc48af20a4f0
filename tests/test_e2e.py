"""End to end: campaigns launched from the CLI, dialled by the real ``dialer serve`` over SIP to
SIPp far ends (and through Kamailio), checked in the database and against what SIPp received.

Timing: the default English prompts are used ("press 1" 4.0 s, "press 9" 3.4 s, goodbye 2.0 s);
the SIPp scenarios press 1 during the first prompt and 9 during the second, so each confirmed call
lasts about message + 5 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from testkit import Kamailio, Sipp
from testkit.harness import Dialer

pytestmark = pytest.mark.sip

# From the ACK: key 1 one second into the "press 1" prompt; key 9 1.5 s into the "press 9"
# prompt that follows a MESSAGE-second message.
MESSAGE = 1.0
KEY1_MS = 1000
KEY9_MS = int((MESSAGE + 1.5) * 1000)


def numbers(n: int, first: int = 1001) -> list[str]:
    return [str(first + i) for i in range(n)]


def trunk(sipp: Sipp) -> dict[str, Any]:
    return {"uri": sipp.uri}


def call_ids(d: Dialer, cid: int) -> list[str]:
    return sorted(a["id"] for a in d.attempts(cid))


def assert_attempts_match_invites(d: Dialer, cid: int, *sipps: Sipp) -> None:
    """Every attempt in the database is an INVITE SIPp received, and the other way round."""
    received = sorted(c for s in sipps for c in s.received_call_ids())
    assert call_ids(d, cid) == received


def launch(dialer: Callable[..., Dialer], sipp: Sipp, recipients: list[str], *,
           workers: int = 4, global_max_calls: int | None = None,
           **template: Any) -> tuple[Dialer, int]:
    """A dialer whose two trunks lead to ``sipp``, a template "T" with ``recipients`` and the
    given options, optionally a global call limit (set with the CLI), one campaign launched, and
    ``dialer serve`` running."""
    d = dialer(internal=trunk(sipp), external=trunk(sipp), workers=workers)
    if global_max_calls is not None:
        d.cli("settings", "set", "--max-calls", str(global_max_calls))
    d.template("T", recipients, **template)
    cid = d.start_campaign("T")
    d.serve()
    return d, cid


def finished(d: Dialer, cid: int, timeout: float = 60) -> dict[str, Any]:
    return d.wait_state(cid, ["completed", "incomplete"], timeout)


def test_answer_and_confirm_is_contacted_after_one_attempt(start_sipp, dialer) -> None:
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    d, cid = launch(dialer, sipp, ["1001"], message=MESSAGE, attempts=3, ring_timeout=10)
    detail = finished(d, cid)
    assert detail["state"] == "completed"
    rec = detail["recipients"][0]
    assert (rec["state"], rec["attempts"], rec["calls"]) == ("contacted", 0, 1)
    assert rec["answered_at"] and rec["confirmed_at"]
    [attempt] = d.attempts(cid)
    assert attempt["outcome"] == "contacted" and attempt["keys"] == "19"
    assert attempt["answer_confirmed_at"] and attempt["listen_confirmed_at"]
    assert_attempts_match_invites(d, cid, sipp)
    assert sipp.ended_call_ids() == {attempt["id"]: "bye-received"}


def test_busy_fails_after_exactly_the_attempts(start_sipp, dialer) -> None:
    sipp = start_sipp("busy")
    d, cid = launch(dialer, sipp, ["1001"], attempts=3, retry_delay=0.3)
    detail = finished(d, cid)
    assert detail["state"] == "incomplete"
    rec = detail["recipients"][0]
    assert (rec["state"], rec["attempts"], rec["last_status"]) == ("failed", 3, 486)
    attempts = d.attempts(cid)
    assert [a["outcome"] for a in attempts] == ["busy"] * 3
    assert [a["status"] for a in attempts] == [486] * 3
    assert_attempts_match_invites(d, cid, sipp)


def test_no_answer_is_cancelled_at_the_ring_timeout_and_retried(start_sipp, dialer) -> None:
    sipp = start_sipp("no_answer")
    d, cid = launch(dialer, sipp, ["1001"], attempts=2, ring_timeout=1, retry_delay=0.3)
    detail = finished(d, cid)
    attempts = d.attempts(cid)
    assert [(a["outcome"], a["status"]) for a in attempts] == [("no_answer", 487)] * 2
    assert detail["recipients"][0]["state"] == "failed"
    assert set(sipp.ended_call_ids().values()) == {"cancelled"}
    assert_attempts_match_invites(d, cid, sipp)


def test_hang_up_mid_message_is_not_contacted(start_sipp, dialer) -> None:
    sipp = start_sipp("hangup_mid_message", keys={"key1_ms": KEY1_MS, "hangup_ms": 1000})
    d, cid = launch(dialer, sipp, ["1001"], message=4.0, attempts=2, retry_delay=0.3)
    detail = finished(d, cid)
    rec = detail["recipients"][0]
    assert rec["state"] == "failed" and rec["confirmed_at"] is None
    attempts = d.attempts(cid)
    assert [a["outcome"] for a in attempts] == ["hung_up", "hung_up"]
    assert all(a["keys"] == "1" and a["answer_confirmed_at"] for a in attempts)
    assert_attempts_match_invites(d, cid, sipp)


def test_wrong_key_repeats_the_message(start_sipp, dialer) -> None:
    sipp = start_sipp("wrong_key", keys={"key1_ms": KEY1_MS, "wrong_ms": KEY9_MS,
                                          "key9_ms": KEY9_MS})
    d, cid = launch(dialer, sipp, ["1001"], message=MESSAGE, attempts=1)
    detail = finished(d, cid)
    assert detail["state"] == "completed"
    [attempt] = d.attempts(cid)
    assert attempt["outcome"] == "contacted" and attempt["keys"] == "159"
    plays = [e["detail"].get("prompt") for e in d.store.events_of(cid)
             if e["kind"] == "played" and e["attempt_id"] == attempt["id"]]
    # press 1, message, press 9, (wrong key) message again, press 9, goodbye
    assert plays == ["answer_prompt", "message", "listen_prompt", "message", "listen_prompt",
                     "goodbye"]
    assert_attempts_match_invites(d, cid, sipp)


def test_campaign_limit_of_three_is_never_exceeded(start_sipp, dialer) -> None:
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    d, cid = launch(dialer, sipp, numbers(12), message=MESSAGE, max_calls=3,
                    answer_confirm=False, listen_confirm=False)
    detail = finished(d, cid, 120)
    assert detail["state"] == "completed"
    assert sipp.peak_calls() == 3
    assert_attempts_match_invites(d, cid, sipp)


def test_global_limit_of_ten_runs_ten_calls_across_three_workers(start_sipp, dialer) -> None:
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    d, cid = launch(dialer, sipp, numbers(20), workers=5, global_max_calls=10,
                    message=3.0, answer_confirm=False, listen_confirm=False)
    detail = finished(d, cid, 120)
    assert detail["state"] == "completed"
    assert sipp.peak_calls() == 10
    workers = {a["worker"] for a in d.attempts(cid)}
    assert len(workers) >= 3
    assert_attempts_match_invites(d, cid, sipp)


def test_kill_9_of_a_worker_mid_call(start_sipp, dialer) -> None:
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": 6500})
    d, cid = launch(dialer, sipp, numbers(6), workers=3, message=5.0, attempts=3, retry_delay=0.2)

    def answered_worker() -> int | None:
        for a in d.attempts(cid):
            if a["answered_at"] and not a["ended_at"] and a["worker"] is not None:
                return int(a["worker"]) + 1  # +1: worker 0 is a valid answer
        return None

    victim = d.wait(answered_worker, 30, "a call to be answered") - 1
    pid = d.worker_pids()[victim]
    held = [a["id"] for a in d.attempts(cid) if a["worker"] == victim and not a["ended_at"]]
    os.kill(pid, signal.SIGKILL)
    detail = finished(d, cid, 120)
    assert d.daemon is not None and d.daemon.poll() is None, "the daemon died with its worker"
    assert detail["state"] == "completed"
    lost = {a["id"]: a for a in d.attempts(cid) if a["outcome"] == "interrupted"}
    assert set(held) <= set(lost) and lost
    assert all("died" in (a["reason"] or "") for a in lost.values())
    assert d.worker_pids()[victim] != pid, "the worker was not restarted"
    assert_attempts_match_invites(d, cid, sipp)


@pytest.mark.kamailio
def test_registered_trunk_through_kamailio(start_sipp, start_kamailio, dialer) -> None:
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    kam: Kamailio = start_kamailio(user="dialer", password="s3cret-pw",
                                   routes={"*": sipp.address})
    kam.stop()  # the registrar is down when the dialer starts
    # TCP: with the registrar down the connection is refused at once (UDP would wait 32 s).
    internal = {"uri": kam.uri, "registrar": kam.uri, "username": "dialer",
                "password_env": "TEST_TRUNK_PASSWORD", "transport": "tcp", "retry_interval": 2}
    d = dialer(internal=internal, external=trunk(sipp),
               env={"TEST_TRUNK_PASSWORD": "s3cret-pw"})
    d.template("T", numbers(3), message=MESSAGE, attempts=1)
    cid = d.start_campaign("T")
    d.serve()
    d.wait(lambda: "trunk internal not registered" in d.log_text() or None, 30,
           "the failed registration to be reported")
    d.wait(lambda: "-> active" in d.log_text() or None, 10, "the campaign to become active")
    # Registration retried and failed again (2 s apart), the scheduler ran all along:
    # nothing is dialled, no attempt burned.
    d.wait(lambda: d.log_text().count("trunk internal not registered") >= 2 or None, 30,
           "a second failed registration")
    assert d.attempts(cid) == []
    assert all(r["attempts"] == 0 and r["state"] == "idle" for r in d.campaign(cid)["recipients"])
    kam.start()
    d.wait(lambda: "trunk internal registered" in d.log_text() or None, 60,
           "the trunk to register once the registrar is back")
    assert kam.registrations(), "Kamailio has no registration"
    detail = d.wait_state(cid, ["completed", "incomplete"], 90)
    assert detail["state"] == "completed", detail
    assert_attempts_match_invites(d, cid, sipp)
    assert "s3cret-pw" not in d.log_text()


def test_sip_info_dtmf_confirms_too(start_sipp, dialer) -> None:
    sipp = start_sipp("answer_info_dtmf", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    d, cid = launch(dialer, sipp, ["1001"], message=MESSAGE, attempts=1)
    detail = finished(d, cid)
    assert detail["state"] == "completed"
    [attempt] = d.attempts(cid)
    assert attempt["outcome"] == "contacted" and attempt["keys"] == "19"
    assert_attempts_match_invites(d, cid, sipp)


def test_raising_the_global_limit_mid_campaign_takes_effect_at_once(start_sipp, dialer) -> None:
    """max_calls 2, then 6 while the campaign runs: SIPp sees at most 2 calls before the change,
    6 soon after it, never more (the safety pass notices the CLI's change within a second)."""
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    d, cid = launch(dialer, sipp, numbers(24), workers=3, global_max_calls=2,
                    message=3.0, answer_confirm=False, listen_confirm=False)
    sipp.wait_for_invites(4, 30)  # two rounds of two calls under the first limit
    before = list(sipp.events())
    d.store.set_settings(actor="test", now=0.0, max_calls=6)
    detail = finished(d, cid, 120)
    assert detail["state"] == "completed"
    from testkit import peak_concurrency

    assert peak_concurrency(before) == 2
    assert sipp.peak_calls() == 6
    assert_attempts_match_invites(d, cid, sipp)


def test_lowering_the_global_limit_mid_campaign_places_no_call_above_it(start_sipp,
                                                                        dialer) -> None:
    """max_calls 6, then 2: the calls in progress finish, no new call starts above 2."""
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    d, cid = launch(dialer, sipp, numbers(16), workers=3, global_max_calls=6,
                    message=3.0, answer_confirm=False, listen_confirm=False)
    sipp.wait_for_invites(6, 30)
    d.store.set_settings(actor="test", now=0.0, max_calls=2)
    n_before = len(sipp.events())
    detail = finished(d, cid, 120)
    assert detail["state"] == "completed"
    events = sipp.events()
    # replay: after the change (plus the up to one second until the daemon's next pass), every
    # INVITE arrives with at most 2 calls open
    open_calls: set[str] = set()
    late_peaks = []
    change_ms = events[n_before - 1].clock_ms + 1000 if n_before else 0
    for e in events:
        if e.kind == "INVITE":
            open_calls.add(e.call_id)
            if e.clock_ms > change_ms:
                late_peaks.append(len(open_calls))
        elif e.kind == "END":
            open_calls.discard(e.call_id)
    assert late_peaks and max(late_peaks) <= 2, late_peaks
    assert_attempts_match_invites(d, cid, sipp)


def test_sigterm_lets_every_call_in_progress_finish_its_dialogue(start_sipp, dialer) -> None:
    """16 calls in progress when SIGTERM comes: each hears its message to the goodbye, the far
    end gets the dialer's BYE after it, nobody new is called, and the daemon exits 0."""
    message = 4.0
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS,
                                              "key9_ms": int((message + 1.5) * 1000)})
    d, cid = launch(dialer, sipp, numbers(24), message=message, max_calls=16)
    d.wait(lambda: sum(1 for a in d.attempts(cid) if a["answered_at"]) >= 16 or None, 60,
           "16 calls answered")
    in_progress = [a["id"] for a in d.attempts(cid) if not a["ended_at"]]
    assert len(in_progress) == 16
    assert d.daemon is not None
    d.daemon.send_signal(signal.SIGTERM)
    assert d.daemon.wait(90) == 0, d.log_tail()
    by_id = {a["id"]: a for a in d.attempts(cid)}
    assert len(by_id) == 16, "a new call was placed while stopping"
    assert [by_id[i]["outcome"] for i in in_progress] == ["contacted"] * 16, d.log_tail()
    assert all(by_id[i]["listen_confirmed_at"] for i in in_progress)
    ended = sipp.wait_for_ended(16, 10)
    assert {ended.get(i) for i in in_progress} == {"bye-received"}
    assert_attempts_match_invites(d, cid, sipp)


def _kill_daemon_and_workers(d: Dialer) -> None:
    pids = list(d.worker_pids().values())
    assert d.daemon is not None
    d.daemon.kill()
    d.daemon.wait(10)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_kill_9_of_the_daemon_and_its_workers_costs_no_attempt(start_sipp, dialer) -> None:
    """Calls cut by the crash are ``interrupted``, not counted: with ``--attempts 1`` every
    such recipient is called again after the restart and contacted."""
    message = 3.0
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS,
                                              "key9_ms": int((message + 1.5) * 1000)})
    d, cid = launch(dialer, sipp, numbers(8), message=message, attempts=1)
    d.wait(lambda: sum(1 for a in d.attempts(cid)
                       if a["answered_at"] and not a["listen_confirmed_at"]
                       and not a["ended_at"]) >= 2 or None, 60, "two calls mid-message")
    _kill_daemon_and_workers(d)
    cut = {a["id"] for a in d.attempts(cid) if not a["ended_at"]}
    assert cut
    d.serve()
    detail = finished(d, cid, 120)
    attempts = d.attempts(cid)
    outcomes = {a["id"]: a["outcome"] for a in attempts}
    assert {outcomes[i] for i in cut} <= {"interrupted", "contacted"}
    assert "interrupted" in {outcomes[i] for i in cut}
    assert detail["state"] == "completed", detail  # every recipient contacted, --attempts 1
    # Every INVITE is an attempt. An attempt is recorded before its INVITE leaves, so one
    # claimed in the instant of the kill may never have left: then it is interrupted too.
    received = set(sipp.received_call_ids())
    assert received <= set(outcomes)
    assert {outcomes[i] for i in set(outcomes) - received} <= {"interrupted"}


def test_kill_9_after_key_9_is_contacted_with_one_call(start_sipp, dialer) -> None:
    """Both confirmations stored, goodbye playing, then kill -9: contacted, never redialled."""
    sipp = start_sipp("answer_confirm", keys={"key1_ms": KEY1_MS, "key9_ms": KEY9_MS})
    d, cid = launch(dialer, sipp, numbers(4), attempts=3)
    confirmed = d.wait(lambda: [a["id"] for a in d.attempts(cid)
                                if a["listen_confirmed_at"] and not a["ended_at"]] or None,
                       60, "a call confirmed and still playing its goodbye")
    _kill_daemon_and_workers(d)
    d.serve()
    detail = finished(d, cid, 120)
    attempts = d.attempts(cid)
    mine = [a for a in attempts if a["id"] in confirmed]
    assert mine and all(a["outcome"] == "contacted" for a in mine)
    numbers_called = [a["recipient_id"] for a in attempts]
    for a in mine:  # one call for that recipient, never a second
        assert numbers_called.count(a["recipient_id"]) == 1
    assert detail["state"] == "completed"
    received = set(sipp.received_call_ids())
    assert received <= {a["id"] for a in attempts}
    assert {a["outcome"] for a in attempts if a["id"] not in received} <= {"interrupted"}
