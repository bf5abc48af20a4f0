"""The SIP worker through Kamailio as the PBX: registration and digest-challenged INVITEs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.test_sip_worker import PhoneSim, WorkerProc, media, phones  # noqa: F401 - fixtures

pytestmark = [pytest.mark.sip, pytest.mark.kamailio]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_registered_trunk_places_an_authenticated_call(
        transport: str, start_kamailio: Callable[..., Any], phones: PhoneSim,  # noqa: F811
        media: dict[str, str]) -> None:  # noqa: F811
    kam = start_kamailio(routes={"300": f"127.0.0.1:{phones.port}"})
    trunk = {"uri": kam.uri, "registrar": kam.uri, "username": kam.user,
             "password": kam.password, "transport": transport, "register": True}
    worker = WorkerProc(phones, media, trunk)
    try:
        reg = worker.wait_for(lambda e: e["ev"] == "reg", 10)
        assert (reg["trunk"], reg["code"]) == ("internal", 200) and reg["expires"] > 0
        kam.wait_registered()
        # The test PBX challenges the INVITE (407) and wants the From user to be the auth user,
        # so no caller number here.
        call_id = worker.dial("300", from_uri=None)
        ended = worker.ended(call_id)
        assert (ended["outcome"], ended["keys"]) == ("contacted", "19")
        rec = phones.record(call_id)  # the Call-ID survives the proxy
        assert rec["call_id"] == call_id and rec["from"].startswith('"Alert Desk" <sip:dialer@')
    finally:
        worker.stop()


def test_wrong_password_is_reported(start_kamailio: Callable[..., Any], phones: PhoneSim,  # noqa: F811
                                    media: dict[str, str]) -> None:  # noqa: F811
    kam = start_kamailio()
    trunk = {"uri": kam.uri, "registrar": kam.uri, "username": kam.user,
             "password": "wrong", "transport": "udp", "register": True}
    worker = WorkerProc(phones, media, trunk)
    try:
        reg = worker.wait_for(lambda e: e["ev"] == "reg", 10)
        assert reg["code"] in (401, 403, 407)
    finally:
        worker.stop()
