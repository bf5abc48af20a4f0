"""Type-level proof that the implementations fit the ports (checked by ``mypy --strict dialer``).

Nothing here runs: a signature of ``SqlStore`` or of the fake that drifts from its port makes
mypy reject the assignments below (tests/test_ports.py also compares the signatures at run time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dialer.core.ports import AdminPort, AlertPort, DispatchPort, MailPort, StorePort
    from dialer.storage.store import SqlStore
    from dialer.testing.memory import MemoryStore
    from dialer.testing.setup import SetupPort


def _sql_store(s: SqlStore) -> tuple[DispatchPort, AdminPort, MailPort, StorePort, SetupPort,
                                     AlertPort]:
    return s, s, s, s, s, s


def _memory_store(s: MemoryStore) -> tuple[DispatchPort, MailPort, SetupPort]:
    return s, s, s
