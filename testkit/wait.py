"""The one poll-until helper of the tests and benchmarks: wait on a condition with a deadline,
never with a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class PeerError(RuntimeError):
    """A test peer failed to start, died, or did not reach the awaited state in time."""


class WaitTimeout(PeerError, AssertionError):
    """The awaited condition did not come true in time (a failed expectation of the test)."""


def until(probe: Callable[[], T | None | bool], timeout: float, what: str,
          interval: float = 0.02, *, check: Callable[[], None] | None = None,
          detail: Callable[[], str] | None = None) -> T:
    """Poll ``probe`` until it returns something truthy (returned) or ``timeout`` s pass.

    ``check`` runs before each poll and may raise to give up early (a process that died);
    ``detail`` adds context to the timeout's message (a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        result = probe()
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise WaitTimeout(f"timed out after {timeout:.1f} s waiting for {what}{extra}")
        time.sleep(interval)
