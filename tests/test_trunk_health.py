"""The registration health of a trunk (``sip.trunks.Registrations``), driven by hand: a fake
module stands for the SIP stack, times are given."""

from __future__ import annotations

from typing import cast

from dialer import ipc
from sip.pjmodule import Module
from sip.trunks import Registrations, Trunk


class FakeModule:
    """Stands for ``sip.pjmodule.Module``: ``reachable`` says whether an OPTIONS can leave."""

    def __init__(self) -> None:
        self.reachable = False
        self.sent: list[int] = []

    def send_options(self, target: str, from_uri: str, call_id: str, cseq: int) -> bool:
        self.sent.append(cseq)
        return self.reachable


def registrations() -> tuple[Registrations, Trunk, list[ipc.Reg], list[str]]:
    reports: list[ipc.Reg] = []
    downs: list[str] = []
    regs = Registrations(reports.append, lambda trunk, why: downs.append(why))
    trunk = Trunk(name="internal", uri="sip:pbx", transport="tcp", id_uri="sip:dialer@pbx")
    trunk.registers = True
    trunk.probe_uri = "sip:pbx"
    trunk.probe_call_id = "probe-1"
    trunk.keepalive_interval = 1.0
    trunk.keepalive_timeout = 2.0
    regs.trunks[trunk.name] = trunk
    return regs, trunk, reports, downs


def test_an_unanswered_keepalive_reports_the_trunk_down() -> None:
    regs, trunk, reports, downs = registrations()
    module = cast(Module, FakeModule())  # the fake has the one method ``check`` calls
    regs.check(0.0, module)  # refused: unanswered from now on
    regs.check(1.5, module)
    assert reports == [] and trunk.down is None
    regs.check(2.5, module)
    assert [r.code for r in reports] == [408] and trunk.down is not None and len(downs) == 1


def test_a_keepalive_that_failed_before_a_registration_succeeded_is_forgotten() -> None:
    """The registrar was down (the keep-alive could not leave), then pjsua's own retry
    registered: the old keep-alive's timeout must not report the registered trunk down again
    (it did, 1 ms after "registered", and the calls just dispatched ended trunk_down)."""
    regs, trunk, reports, downs = registrations()
    fake = FakeModule()
    module = cast(Module, fake)  # the fake has the one method ``check`` calls
    regs.check(0.0, module)
    fake.reachable = True
    regs.registration_changed("internal", 200, 300)
    regs.check(2.5, module)
    assert reports == [] and downs == [] and trunk.down is None
    # A keep-alive sent after the registration and left unanswered still counts.
    regs.check(5.0, module)
    assert [r.code for r in reports] == [408]
