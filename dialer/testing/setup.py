"""Setting up campaigns the same way on every store: the part of ``AdminPort`` the fake has too.

``SetupPort`` is what the contract suite and the simulator need besides ``DispatchPort`` to put
templates and campaigns in a store and to read back what happened; ``SqlStore`` and
``MemoryStore`` both implement it with ``SqlStore``'s signatures. ``launch`` is the small
builder on top: one template and one campaign of it in one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

from dialer.core.domain import CampaignSettings, Kind
from dialer.core.ports import DispatchPort
from dialer.core.recipients import Recipient
from dialer.core.records import GlobalSettings


class SetupPort(Protocol):
    """Settings, media, templates, campaign launch, and the reads a test checks."""

    def nodes(self) -> list[dict[str, Any]]:
        ...

    def set_settings(self, *, actor: str, now: float, require_db_role: bool | None = None,
                     **changes: int | None) -> GlobalSettings:
        ...

    def add_media(self, *, data: bytes, sha256: str, rate: int, seconds: float,
                  source: str | None, now: float) -> str:
        ...

    def add_template(self, *, name: str, settings: CampaignSettings, audio_sha: str,
                     audio_seconds: float, recipients: Sequence[Recipient], now: float,
                     actor: str, enabled: bool = True, audit: bool = True) -> int:
        ...

    def start_campaign(self, *, template: str, name: str | None, now: float, start_at: float,
                       actor: str, audio_sha: str | None = None, audio_seconds: float | None = None,
                       recipients: Sequence[Recipient] | None = None,
                       tts_text: str | None = None) -> int:
        ...

    def campaign_detail(self, campaign_id: int) -> dict[str, Any]:
        ...

    def attempts_of(self, campaign_id: int) -> list[dict[str, Any]]:
        ...

    def events_of(self, campaign_id: int) -> list[dict[str, Any]]:
        ...


class ContractStore(DispatchPort, SetupPort, Protocol):
    """A store the contract suite runs on: the daemon's port, and a way to set it up."""


def recipient(number: str, name: str | None = None, email: str | None = None) -> Recipient:
    """A recipient; a number starting with ``+`` is external, any other internal."""
    return Recipient(number=number, kind=Kind.EXTERNAL if number.startswith("+") else Kind.INTERNAL,
                     name=name, email=email)


def launch(store: SetupPort, name: str, numbers: Sequence[str | Recipient], *, now: float,
           start_at: float | None = None, audio: bytes = b"fake audio",
           audio_seconds: float = 4.0, actor: str = "tester", **settings: Any) -> int:
    """A template named ``name`` with these recipients and one campaign of it starting at
    ``start_at`` (default ``now``); its id. ``settings``: ``CampaignSettings`` fields."""
    sha = hashlib.sha256(audio).hexdigest()
    store.add_media(data=audio, sha256=sha, rate=8000, seconds=audio_seconds, source=None,
                    now=now)
    recs = [n if isinstance(n, Recipient) else recipient(n) for n in numbers]
    store.add_template(name=name, settings=CampaignSettings(**settings), audio_sha=sha,
                       audio_seconds=audio_seconds, recipients=recs, now=now, actor=actor)
    return store.start_campaign(template=name, name=None, now=now,
                                start_at=now if start_at is None else start_at, actor=actor)
