"""How short of CPU the machine is: Linux's pressure stall information (PSI).

``/proc/pressure/cpu`` counts, in microseconds, the time at least one runnable task waited for a
CPU (its ``some`` line, ``total=``). ``CpuPressure.sample`` returns the share of the wall time
since the previous sample that this was so: 0.0 on an idle machine, towards 1.0 when tasks
always queue. On a dialer node that is what the audio hears: every call's audio leaves from a
worker's clock thread each 20 ms, and a clock thread that waits sends its packets late and
bunched (bench/RESULTS.md, issue 16). The node's overload hold (``dialer.core.admission``) reads
it besides the workers' own lateness: a machine-wide measure, so a busy neighbour counts too.
None where the kernel has no PSI (before 4.20, or ``psi=0``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

PSI_CPU = Path("/proc/pressure/cpu")
SAMPLE_S = 1.0  # how often a new share is worked out (reading the file costs a few us)


def read_stall_us(path: Path = PSI_CPU) -> int | None:
    """The ``some`` line's ``total`` (us), or None without PSI."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                if key == "total" and value.isdigit():
                    return int(value)
    return None


class CpuPressure:
    """The share of time tasks waited for a CPU, over the last ``SAMPLE_S`` or more."""

    def __init__(self, read: Callable[[], int | None] = read_stall_us,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read, self._clock = read, clock
        self._last, self._at = read(), clock()
        self.share: float | None = None if self._last is None else 0.0

    def sample(self) -> float | None:
        """The latest share (re-read once ``SAMPLE_S`` has passed since the last reading)."""
        now = self._clock()
        if self._last is None or now - self._at < SAMPLE_S:
            return self.share
        stall = self._read()
        if stall is None:
            self.share = None
        else:
            self.share = min(1.0, max(0.0, (stall - self._last) / 1e6 / (now - self._at)))
            self._last = stall
        self._at = now
        return self.share
