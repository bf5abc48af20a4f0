"""What a worker's report of a call's progress becomes: the history event it records, the log
line it makes, the counter it moves (``dialer.daemon`` calls ``progress_of`` for every
progress message of the wire)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dialer import ipc

TRANSFER_KINDS: dict[str, str] = {
    "requested": "transfer_requested",
    "accepted": "transfer_accepted",
    "connected": "transferred",
    "failed": "transfer_failed",
}
"""The history event of each step of a transfer to the connect key's URI."""

PROGRESS = (ipc.Ringing, ipc.Answered, ipc.Played, ipc.Key, ipc.Confirmed, ipc.Refusal,
            ipc.Transfer)
"""The wire's progress messages (one history event each)."""


@dataclass(frozen=True)
class Progress:
    """One progress message as the daemon records it."""

    call_id: str
    kind: str  # the history event
    detail: dict[str, Any] = field(default_factory=dict)
    log: str | None = None  # the daemon's line about it (None: none)
    counter: tuple[str, str] | None = None  # (what is counted, its label): see Metrics.progress


def progress_of(msg: ipc.Event) -> Progress:
    """The record of one message of ``PROGRESS``."""
    if isinstance(msg, (ipc.Ringing, ipc.Answered)):
        return Progress(msg.call_id, msg.EV, log=msg.EV)
    if isinstance(msg, ipc.Played):
        return Progress(msg.call_id, "played", {"prompt": msg.prompt})
    if isinstance(msg, ipc.Key):
        return Progress(msg.call_id, "key", {"key": msg.key}, log=f"key {msg.key}")
    if isinstance(msg, ipc.Confirmed):
        what = str(msg.what)
        return Progress(msg.call_id, "confirmed", {"what": what}, log=f"confirmed {what}",
                        counter=("confirmation", what))
    if isinstance(msg, ipc.Refusal):  # a wrong digit at a random key's prompt
        return Progress(msg.call_id, "key_refused", {"what": msg.what, "key": msg.key},
                        counter=("refusal", str(msg.what)))
    if isinstance(msg, ipc.Transfer):
        result = str(msg.result)
        kind = TRANSFER_KINDS.get(result, "transfer_" + result)
        return Progress(msg.call_id, kind, {"to": msg.to, "code": msg.code},
                        log=f"{kind.replace('_', ' ')} to {msg.to} ({msg.code or 'no code'})",
                        counter=("transfer", result))
    raise TypeError(f"not a progress message: {msg!r}")
