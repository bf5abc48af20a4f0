"""How the CLI shows values and tables: one formatter for every cell, tables that fit the terminal.

``shown`` turns any value of a setting, a record or an event into what a person reads: ``yes`` /
``no``, ``none`` for an unset value or an unlimited limit, local times for timestamps (POSIX
seconds or ISO strings, by key), ``k=v`` lists for mappings, numbers without trailing zeros;
never a Python repr. ``fit`` builds a Rich table that fits the console: columns are dropped by
priority (the least needed first) until every header shows whole, then long cells fold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

TIME_KEYS = ("_at", "_until", "created", "started", "heartbeat")


def when(value: float | str | None, *, today_short: bool = True) -> str:
    """A timestamp (POSIX seconds or ISO) in the local zone: the time alone for today's, the
    date and minute otherwise (a table cell), or empty."""
    if value is None or value == "":
        return ""
    stamp = (dt.datetime.fromtimestamp(value, dt.UTC) if isinstance(value, (int, float))
             else dt.datetime.fromisoformat(value))
    local = stamp.astimezone()
    if today_short and local.date() == dt.datetime.now().astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M")


def shown(value: Any, key: str = "") -> str:
    """``value`` as a table shows it (``key``: its name, which tells a timestamp)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith(TIME_KEYS) and isinstance(value, (int, float, str)) and value != "":
        try:
            return when(value)
        except (ValueError, OverflowError, OSError):
            return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={shown(v, str(k))}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(shown(v) for v in value) or "-"
    return str(value)


@dataclass(frozen=True)
class Col:
    """A column: its header, how much it is needed (1: always shown; higher: dropped first when
    the table is too wide), and whether it is a number (right-aligned, never folded)."""

    header: str
    priority: int = 1
    number: bool = False


def fit(cols: Sequence[Col], rows: Iterable[Sequence[str]], *, width: int,
        title: str | None = None) -> Table:
    """A table of ``rows`` under ``cols`` that fits ``width`` columns of terminal."""
    data = [list(r) for r in rows]
    keep = list(range(len(cols)))

    natural = [max([len(c.header), *(Text.from_markup(r[i]).cell_len for r in data)])
               for i, c in enumerate(cols)]

    def least(i: int) -> int:
        """The width column ``i`` may not be squeezed below: a number or a column always shown
        keeps its values whole (up to 40); the others fold, but not below 16 or their header."""
        c = cols[i]
        if c.number or c.priority == 1:
            return max(len(c.header), min(natural[i], 40))
        return max(len(c.header), min(natural[i], 16))

    def need(idx: list[int]) -> int:  # the cells, a space each side, one between, the edges
        return sum(least(i) for i in idx) + 3 * (len(idx) - 1) + 2

    while need(keep) > width and any(cols[i].priority > 1 for i in keep):
        worst = max(cols[i].priority for i in keep)
        keep.remove(max(i for i in keep if cols[i].priority == worst))
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for i in keep:
        c = cols[i]
        table.add_column(c.header, justify="right" if c.number else "left",
                         no_wrap=c.number, min_width=least(i), overflow="fold")
    for r in data:
        table.add_row(*(r[i] for i in keep))
    return table
