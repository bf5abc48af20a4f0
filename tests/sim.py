"""A discrete-event simulator of the dialer: the real daemon loop, the real SqlStore, the real pure
scheduler, lifecycle and dialogue, with a fake SIP gateway on a virtual clock.

``FakeGateway`` implements ``dialer.gateway.Gateway``. Each dialled number follows a script of
``Behaviour``s (one per call, the last one repeating): ring for N seconds then answer, be busy,
reject, never answer (cancelled at the ring timeout), press a wrong key first, hang up in the
middle of the message, or stay silent. An answered call is driven by the real
``dialer.core.dialogue.step`` exactly as the SIP worker drives it (prompts, timers, keys,
repeats), and the gateway emits the worker's IPC events (``ringing``, ``answered``,
``played``, ``key``, ``confirmed``, ``ended``). Time only moves when the daemon waits:
``poll(timeout)`` jumps the clock to the next scripted event or to the end of the timeout, so
hours of campaigns run in seconds and the daemon's wake-ups are exact or visibly late.

``Simulation`` wires it to ``dialer.daemon.Daemon`` (``step`` is the daemon's own loop turn)
and calls an optional checker after every step, i.e. at every instant something can change.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialer import ipc
from dialer.config import Config, TrunkConfig
from dialer.core import dialogue as dlg
from dialer.core import outcome as oc
from dialer.core.cluster import NodeLoad
from dialer.core.domain import DialogueSettings
from dialer.daemon import Daemon
from dialer.gateway import GatewayEvent
from dialer.storage.store import SqlStore
from dialer.testing.memory import MemoryStore

T0 = 1_900_000_000.0
BEHAVIOURS = ("confirm", "busy", "reject", "no_answer", "wrong_key", "hangup_mid_message",
              "silent")  # the property tests' behaviours; also "fixed_key" (tests/test_sim_keys.py)


@dataclass(frozen=True)
class Behaviour:
    """What a recipient does on one call. ``after``: seconds of ringing before it answers (or
    before the busy/reject reply). ``fixed_key``: an auto-attendant that presses ``key`` at
    every prompt, whatever the prompt says (``confirm`` presses the key the prompt announces).
    ``connect_first``: presses the connect key at the first prompt, then confirms whatever
    follows; ``confirm_connect``: confirms, then presses the connect key when it is offered.
    ``transfer``: what the PBX reports of a REFER (2xx: 202 then that final status; else that
    status refuses the REFER)."""

    kind: str = "confirm"
    after: float = 2.0
    key: str = "5"
    transfer: int = 200

    def succeeds(self, *, answer_confirm: bool, listen_confirm: bool, max_repeats: int,
                 ring_timeout: float) -> bool:
        """Whether this call ends ``contacted`` under these settings (the model of the rules)."""
        if self.kind in ("busy", "reject", "no_answer", "hangup_mid_message"):
            return False
        if self.after >= ring_timeout:
            return False  # cancelled before it answers
        if self.kind == "confirm":
            return True
        if self.kind == "silent":
            return not answer_confirm and not listen_confirm
        if self.kind == "fixed_key":
            raise ValueError("fixed_key: whether it succeeds depends on the keys of the call")
        assert self.kind == "wrong_key"
        return (not answer_confirm and not listen_confirm) or max_repeats >= 1


class VirtualClock:
    """Time as the simulation says; callable like ``time.time``."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class _Call:
    call_id: str
    number: str
    behaviour: Behaviour
    ring_timeout: float
    dialogue: dlg.DialogueState
    prompts_heard: int = 0
    answered: bool = False
    ended: bool = False


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    call_id: str = field(compare=False)
    what: str = field(compare=False)
    arg: Any = field(compare=False, default=None)


class FakeGateway:
    """The ``Gateway`` of the simulator: scripted recipients on a virtual clock."""

    def __init__(self, clock: VirtualClock, script: Mapping[str, Sequence[Behaviour]], *,
                 capacity: int = 1000, default: Behaviour = Behaviour()) -> None:
        self.clock = clock
        self.script = script
        self.default = default
        self.capacity = capacity
        self.calls: dict[str, _Call] = {}
        self.dialled: dict[str, int] = {}  # number -> calls placed so far
        self.ended = 0
        self._heap: list[_Event] = []
        self._seq = itertools.count()
        self._out: list[GatewayEvent] = []
        self.horizon: float | None = None  # poll never moves the clock past it
        self.fence_at: float | None = None  # the node's lease, as the daemon last told it
        self.fenced = 0  # calls hung up because the lease ran out (as a worker does)
        self.demands: list[int] = []  # what the daemon told ``demand`` after each pass
        self.kept = 1  # the workers a real pool would keep (``pool_size``)

    # ----- Gateway -----

    def attach(self) -> tuple[list[GatewayEvent], set[str]]:
        return [], set()  # a simulated node starts with no worker left by a previous run

    def ack(self) -> None:
        pass  # the simulated calls keep nothing for a next daemon

    def detach(self) -> None:
        raise NotImplementedError("a simulated node has no worker to hand its calls to")

    def start(self, size: int) -> None:
        pass

    def resize(self, size: int) -> None:
        pass

    def demand(self, calls: int) -> None:
        self.demands.append(calls)  # the simulated node has no processes to start

    def free_slots(self) -> int:
        return self.capacity - len(self.calls)

    def busy_slots(self) -> int:
        return len(self.calls)

    def node_load(self) -> NodeLoad:
        return NodeLoad(slots=self.capacity)

    def ready_count(self) -> int:
        return 1

    def pool_size(self) -> int:
        return self.kept

    def next_wakeup_in(self) -> float | None:
        return None

    def begin_shutdown(self) -> None:
        for call_id in list(self.calls):
            self.hangup(call_id)

    def active(self) -> bool:
        return False

    def close(self, timeout: float) -> None:
        pass

    def dial(self, message: ipc.Dial) -> int | None:
        if len(self.calls) >= self.capacity:
            return None
        if self.fence_at is not None and self.clock.now >= self.fence_at:  # as a fenced worker
            self._emit(ipc.Ended(call_id=message.call_id, status=None, reason=oc.FENCED,
                                 q850=None, outcome="interrupted", answered_at=None, keys="",
                                 answer_confirmed_at=None, listen_confirmed_at=None,
                                 at=self.clock.now))
            return 0
        number = message.uri.split(":", 1)[1].split("@", 1)[0]
        n = self.dialled.get(number, 0)
        self.dialled[number] = n + 1
        seq = self.script.get(number) or [self.default]
        behaviour = seq[min(n, len(seq) - 1)]
        settings = DialogueSettings(**message.dialogue)
        call = _Call(call_id=message.call_id, number=number, behaviour=behaviour,
                     ring_timeout=float(message.ring_timeout), dialogue=dlg.start(settings))
        self.calls[call.call_id] = call
        self._at(0.05, call, "ringing")
        b = behaviour
        if b.kind == "no_answer" or b.after >= call.ring_timeout:
            self._at(call.ring_timeout, call, "ring_timeout")  # we cancel it then: 487
        elif b.kind == "busy":
            self._at(b.after, call, "final", 486)
        elif b.kind == "reject":
            self._at(b.after, call, "final", 603)
        else:
            self._at(b.after, call, "answer")
        return 0

    def trust(self, sources: list[str]) -> None:
        pass

    def trunk_state(self, trunk: str, up: bool, reason: str) -> None:
        pass  # the simulated phones have no trunk to lose

    def lease(self, valid_for: float) -> None:
        self.fence_at = self.clock.now + valid_for
        self._fence()

    def _fence(self) -> None:
        """As a SIP worker does on its own clock: past the lease, every call is hung up."""
        if self.fence_at is None or self.clock.now < self.fence_at:
            return
        for call in list(self.calls.values()):
            self.fenced += 1
            self._end(call, oc.hangup_status(call.answered), oc.FENCED, abort=oc.FENCED)

    def hangup(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            self._end(call, oc.hangup_status(call.answered), "hung up by the dialer",
                      abort="hung up by the dialer")

    def poll(self, timeout: float) -> list[GatewayEvent]:
        deadline = self.clock.now + max(0.0, timeout)
        if self.horizon is not None:
            deadline = min(deadline, max(self.clock.now, self.horizon))
        if self.fence_at is not None and self.calls and self.clock.now < self.fence_at:
            deadline = min(deadline, self.fence_at)
        if self._heap and self._heap[0].at <= deadline:
            self.clock.now = max(self.clock.now, self._heap[0].at)
            while self._heap and self._heap[0].at <= self.clock.now:
                self._run(heapq.heappop(self._heap))
        else:
            self.clock.now = deadline
        self._fence()
        out, self._out = self._out, []
        return out

    # ----- the far end and the dialogue -----

    def _at(self, delay: float, call: _Call, what: str, arg: Any = None) -> None:
        heapq.heappush(self._heap, _Event(self.clock.now + delay, next(self._seq), call.call_id,
                                          what, arg))

    def _emit(self, msg: ipc.Event) -> None:
        """What the worker would report, on worker 0, at the virtual clock's time."""
        self._out.append((0, msg))

    def _run(self, ev: _Event) -> None:
        call = self.calls.get(ev.call_id)
        if call is None or call.ended:
            return
        now = self.clock.now
        if ev.what == "ringing":
            self._emit(ipc.Ringing(call_id=call.call_id, at=now))
        elif ev.what == "final":
            self._end(call, int(ev.arg), "final reply")
        elif ev.what == "ring_timeout":
            ring = oc.ring_timeout(now=now, deadline=ev.at, answered=call.answered,
                                   sip_confirmed=False, aborting=False)
            if ring is oc.RingTimeout.CANCEL:
                self._end(call, 487, "final reply")  # CANCEL -> 487 Request Terminated
        elif ev.what == "answer":
            call.answered = True
            self._emit(ipc.Answered(call_id=call.call_id, at=now))
            self._feed(call, dlg.Answered(now))
        elif ev.what == "digit":
            self._emit(ipc.Key(call_id=call.call_id, key=str(ev.arg), at=now))
            self._feed(call, dlg.Digit(str(ev.arg), now))
        elif ev.what == "timer":
            self._feed(call, dlg.TimerFired(int(ev.arg), now))
        elif ev.what == "transfer":
            code, final = ev.arg
            self._feed(call, dlg.TransferStatus(code, final, now))
        elif ev.what == "remote_hangup":
            if oc.remote_hangup_counts(answered=call.answered, abort_reason=None):
                self._feed(call, dlg.RemoteHangup(now))
            self._end(call, 200, "BYE received")

    def _feed(self, call: _Call, event: dlg.Event) -> None:
        call.dialogue, commands = dlg.step(call.dialogue, event)
        for cmd in commands:
            if isinstance(cmd, dlg.Play):
                self._emit(ipc.Played(call_id=call.call_id, prompt=cmd.prompt.value,
                                      at=self.clock.now))
                self._react(call, cmd.prompt)
            elif isinstance(cmd, dlg.StartTimer):
                self._at(cmd.seconds, call, "timer", cmd.token)
            elif isinstance(cmd, dlg.Confirmed):
                self._emit(ipc.Confirmed(call_id=call.call_id, what=cmd.what,
                                         at=self.clock.now))
            elif isinstance(cmd, dlg.Refused):
                self._emit(ipc.Refusal(call_id=call.call_id, what=cmd.what, key=cmd.key,
                                       at=self.clock.now))
            elif isinstance(cmd, dlg.Transferred):
                self._emit(ipc.Transfer(call_id=call.call_id, result=cmd.result, code=cmd.code,
                                        to=call.dialogue.settings.connect_to, at=cmd.at))
            elif isinstance(cmd, dlg.Transfer):
                code = call.behaviour.transfer
                if 200 <= code < 300:
                    self._at(0.1, call, "transfer", (202, False))
                    self._at(1.0, call, "transfer", (code, True))
                else:
                    self._at(0.1, call, "transfer", (code, True))
            elif isinstance(cmd, dlg.HangUp):
                self._end(call, 200, "BYE sent")
                return

    def _react(self, call: _Call, prompt: dlg.Prompt) -> None:
        """What the scripted recipient does when a prompt starts playing."""
        kind = call.behaviour.kind
        s = call.dialogue.settings
        if prompt is dlg.Prompt.MESSAGE and kind == "hangup_mid_message":
            self._at(max(0.01, s.message_seconds / 2), call, "remote_hangup")
            return
        if prompt is dlg.Prompt.CONNECT_OFFER and kind == "confirm_connect":
            self._at(1.0, call, "digit", s.connect_key)
            return
        if prompt not in (dlg.Prompt.ANSWER_PROMPT, dlg.Prompt.LISTEN_PROMPT):
            return
        call.prompts_heard += 1
        if kind == "connect_first" and call.prompts_heard == 1:
            self._at(1.0, call, "digit", s.connect_key)
            return
        if kind == "silent":
            return
        right = s.answer_key if prompt is dlg.Prompt.ANSWER_PROMPT else s.listen_key
        if kind == "fixed_key":
            self._at(1.0, call, "digit", call.behaviour.key)
        elif kind == "wrong_key" and call.prompts_heard == 1:
            wrong = "5" if right != "5" else "6"
            self._at(1.0, call, "digit", wrong)
        elif kind in ("confirm", "wrong_key", "hangup_mid_message", "connect_first",
                      "confirm_connect"):
            self._at(1.0, call, "digit", right)

    def _end(self, call: _Call, status: int, reason: str, abort: str | None = None) -> None:
        """The call is over: its outcome as the worker decides it (``dialer.core.outcome``)."""
        outcome, reason = oc.decide(oc.CallEnd(
            status=status, reason=reason, answered=call.answered,
            dialogue_outcome=call.dialogue.outcome, dialogue_success=call.dialogue.success,
            abort_reason=abort))
        call.ended = True
        del self.calls[call.call_id]
        self.ended += 1
        d = call.dialogue
        self._emit(ipc.Ended(call_id=call.call_id, status=status, reason=reason, q850=None,
                             outcome=outcome.value, answered_at=d.answered_at, keys=d.keys,
                             answer_confirmed_at=d.answer_confirmed_at,
                             listen_confirmed_at=d.listen_confirmed_at, at=self.clock.now))


def sim_config(store: SqlStore | MemoryStore, data_dir: Path, node: str = "sim") -> Config:
    """A daemon configuration for the simulator: two trunks needing no registration."""
    return Config(path=None, database_url=store.url, node=node, data_dir=data_dir,
                  trunks={"internal": TrunkConfig(name="internal", uri="sip:pbx.test"),
                          "external": TrunkConfig(name="external", uri="sip:carrier.test")})


class Simulation:
    """The real ``Daemon`` on a ``FakeGateway`` and a ``VirtualClock``."""

    def __init__(self, store: SqlStore | MemoryStore, data_dir: Path,
                 script: Mapping[str, Sequence[Behaviour]] | None = None, *,
                 start: float = T0, safety_interval: float = 3600.0, capacity: int = 1000,
                 default: Behaviour = Behaviour(),
                 draw: Callable[[int], int] | None = None) -> None:
        self.store = store
        self.clock = VirtualClock(start)
        self.gateway = FakeGateway(self.clock, script or {}, capacity=capacity, default=default)
        self.daemon = Daemon(sim_config(store, data_dir), store, clock=self.clock,
                             gateway=self.gateway, safety_interval=safety_interval,
                             durations=_durations, handle_signals=False, draw=draw)
        self.steps = 0
        self.daemon.start()

    @property
    def now(self) -> float:
        return self.clock.now

    def run(self, *, until: float | None = None, done: Callable[[], bool] | None = None,
            check: Callable[[Simulation], None] | None = None, max_steps: int = 200_000) -> None:
        """Step the daemon until ``done()`` or the virtual time ``until``; ``check`` after each
        step."""
        self.gateway.horizon = until
        while self.steps < max_steps:
            if until is not None and self.clock.now >= until:
                return
            self.daemon.step()
            self.steps += 1
            if check is not None:
                check(self)
            if done is not None and not self.gateway.calls and done():
                return
        raise AssertionError(f"the simulation did not finish in {max_steps} steps "
                             f"(virtual time {self.clock.now - T0:.0f} s)")

    def stop(self) -> None:
        self.daemon.shutdown()


_DURATIONS = {"answer_prompt": 4.0, "listen_prompt": 3.4, "goodbye": 2.0}


def _durations(path: str) -> float:
    """Prompt durations without reading the files (those of the English prompts)."""
    name = Path(path).stem.rstrip("0123456789").rstrip("_")  # answer_prompt_4: a random key's
    return _DURATIONS.get(name, 2.0)
