"""What the daemon records of a worker's progress messages (``dialer.progress``): the history
event, the log line and the counter of each, transfers included."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from dialer import ipc
from dialer.metrics import Metrics
from dialer.progress import PROGRESS, TRANSFER_KINDS, progress_of


def test_every_progress_message_has_its_event() -> None:
    made = {type(m): progress_of(m).kind for m in (
        ipc.Ringing(call_id="c", at=1.0), ipc.Answered(call_id="c", at=1.0),
        ipc.Played(call_id="c", prompt="message", at=1.0), ipc.Key(call_id="c", key="1", at=1.0),
        ipc.Confirmed(call_id="c", what="answer", at=1.0),
        ipc.Refusal(call_id="c", what="listen", key="3", at=1.0),
        ipc.Transfer(call_id="c", result="failed", code=603, to="sip:b@x", at=1.0))}
    assert set(made) == set(PROGRESS)
    assert made == {ipc.Ringing: "ringing", ipc.Answered: "answered", ipc.Played: "played",
                    ipc.Key: "key", ipc.Confirmed: "confirmed", ipc.Refusal: "key_refused",
                    ipc.Transfer: "transfer_failed"}


@pytest.mark.parametrize(("result", "kind"), sorted(TRANSFER_KINDS.items()))
def test_each_step_of_a_transfer_is_an_event_a_line_and_a_count(result: str, kind: str) -> None:
    rec = progress_of(ipc.Transfer(call_id="c", result=result, code=202, to="sip:b@x", at=1.0))
    assert (rec.call_id, rec.kind, rec.detail) == ("c", kind, {"to": "sip:b@x", "code": 202})
    assert rec.log is not None and "sip:b@x" in rec.log
    m = Metrics()
    assert rec.counter is not None
    m.progress(*rec.counter)
    text = generate_latest(m.registry).decode()
    assert f'dialer_transfers_total{{result="{result}"}} 1.0' in text


def test_a_message_that_is_not_progress_is_refused() -> None:
    with pytest.raises(TypeError):
        progress_of(ipc.Slots(held=1))
