"""The recipients CSV: read, check every row with the rules of ``dialer.core.recipients``,
report every bad line with its number. Large files are checked in a forked process
(``PARALLEL_MIN_ROWS``), so that the caller's thread stays free for progress output.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import contextlib
import csv
import gc
import io
import multiprocessing
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import phonenumbers

from dialer import zones
from dialer.core.csvcells import restore
from dialer.core.domain import Kind
from dialer.core.errors import CsvError, ValidationError
from dialer.core.recipients import NumberRules, Recipient, _make_recipient

PROGRESS_EVERY = 500

# phonenumbers compiles its metadata's patterns at every check and relies on the re module's
# bounded cache; told to, it keeps them (its own switch, same answers): 8% fewer instructions
# per external number (bench/RESULTS.md, valgrind). Not in every phonenumbers release.
_keep_patterns = getattr(phonenumbers, "enable_pattern_cache", None)
if _keep_patterns is not None:
    _keep_patterns()


def parse_csv(text: str, *, source: str = "recipients.csv",
              rules: NumberRules = NumberRules()) -> list[Recipient]:
    """Parse a whole recipients CSV; all or nothing: any bad line raises CsvError naming each."""
    return [rec for _, rec in parse_csv_lines(text, source=source, rules=rules)]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off meanwhile, back as the caller had it.

    A file's rows and recipients are hundreds of thousands of objects in no cycle; the
    collector, started every 700 allocations, scanned the growing heap again and again: the
    check of 100,000 rows took 1.5-2.3 s with it, 1.2-1.4 s without (one CPU,
    bench/RESULTS.md). Reference counting still frees everything as it goes."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def parse_csv_lines(text: str, *, source: str = "recipients.csv",
                    rules: NumberRules = NumberRules(),
                    progress: Callable[[int], None] | None = None
                    ) -> list[tuple[int, Recipient]]:
    """As ``parse_csv``, each recipient with the line of the file it came from.

    ``progress`` is called with the current line number every ``PROGRESS_EVERY`` lines (a
    progress bar for long files).

    Rows are read first, then checked (``phonenumbers`` and e-mail validation are nearly all of
    the time; a large file is checked on two processes, ``PARALLEL_MIN_ROWS``), then merged in
    file order: repeated numbers and every problem are reported exactly as a line-by-line pass
    would. The cyclic garbage collector is paused meanwhile
    (``_collector_paused``)."""
    with _collector_paused():
        return _parse_csv_lines(text, source=source, rules=rules, progress=progress)


def _parse_csv_lines(text: str, *, source: str, rules: NumberRules,
                     progress: Callable[[int], None] | None) -> list[tuple[int, Recipient]]:
    """``parse_csv_lines`` with the collector paused."""
    # csv.reader rather than DictReader (a dict per row costs more than the checks of an
    # extension), with DictReader's rules: blank rows skipped, short rows padded, a repeated
    # column name keeps its last value.
    problems: list[tuple[int, str]] = []
    reader = csv.reader(io.StringIO(text))
    try:
        first = next(reader, [])
    except csv.Error as exc:
        raise CsvError(source, [(1, f"unreadable CSV ({exc})")]) from exc
    header = [h.strip().lower() for h in first]
    if "number" not in header:
        raise CsvError(source, [(1, "the header row has no 'number' column")])
    unknown = [h for h in header if h not in ("number", "name", "email", "kind", "timezone")]
    if unknown:
        raise CsvError(source, [(1, f"unknown column(s): {', '.join(unknown)}")])
    width = len(header)
    column = {h: i for i, h in enumerate(header)}  # the last one of a repeated name
    columns = _Columns(width=width, distinct=tuple(sorted(column.values())),
                       number=column["number"], name=column.get("name"),
                       email=column.get("email"), kind=column.get("kind"),
                       timezone=column.get("timezone"))
    rows: list[tuple[int, list[str]]] = []
    unreadable: tuple[int, str] | None = None
    try:
        for row in reader:
            if row:  # an empty line: DictReader skips it before anything else
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        unreadable = (reader.line_num, f"unreadable CSV ({exc})")
    checked = _check_rows_parallel(rows, columns, rules, progress)
    out: list[tuple[int, Recipient]] = []
    seen: dict[str, int] = {}
    for line, rec in checked:
        if isinstance(rec, str):
            problems.append((line, rec))
            continue
        if rec.number in seen:
            problems.append((line, f"{rec.number} repeats line {seen[rec.number]}"))
            continue
        seen[rec.number] = line
        out.append((line, rec))
    if unreadable is not None:
        problems.append(unreadable)
    if problems:
        raise CsvError(source, problems)
    if not out:
        raise CsvError(source, [(1, "no recipients")])
    return out


PARALLEL_MIN_ROWS = 20_000
"""From this many rows on, the second half of a file is checked in a forked process."""


@dataclass(frozen=True)
class _Columns:
    """Where each field of a row is (None: no such column)."""

    width: int
    distinct: tuple[int, ...]
    number: int
    name: int | None
    email: int | None
    kind: int | None
    timezone: int | None = None


_Checked = list[tuple[int, "Recipient | str"]]  # (line, recipient or what is wrong with it)


def _check_rows(rows: Sequence[tuple[int, list[str]]], c: _Columns, rules: NumberRules,
                progress: Callable[[int], None] | None) -> _Checked:
    """Validate rows one by one; blank ones are dropped, a bad one becomes its problem."""
    extension = re.compile(rules.extension_pattern)
    out: _Checked = []
    for line, row in rows:
        if progress is not None and line % PROGRESS_EVERY == 0:
            progress(line)
        if len(row) > c.width:
            out.append((line, "more fields than the header"))
            continue
        if len(row) < c.width:
            row = row + [""] * (c.width - len(row))
        if not any(row[i].strip() for i in c.distinct):
            continue  # blank line
        try:  # restore: a cell our own export quoted against spreadsheet formulas
            tz = None if c.timezone is None else row[c.timezone].strip() or None
            out.append((line, _make_recipient(
                restore(row[c.number].strip()),
                None if c.name is None else restore(row[c.name].strip()),
                None if c.email is None else restore(row[c.email].strip()),
                None if c.kind is None else row[c.kind], rules, extension,
                None if tz is None else zones.check(tz))))
        except ValidationError as exc:
            out.append((line, str(exc)))
    return out


def _check_rows_plain(rows: Sequence[tuple[int, list[str]]], c: _Columns,
                      rules: NumberRules
                      ) -> list[tuple[int, tuple[str, str, str | None, str | None, str | None]
                                      | str]]:
    """``_check_rows`` in a worker process: plain tuples travel back faster than dataclasses."""
    return [(line, rec if isinstance(rec, str)
             else (rec.number, rec.kind.value, rec.name, rec.email, rec.timezone))
            for line, rec in _check_rows(rows, c, rules, None)]


def _check_rows_parallel(rows: list[tuple[int, list[str]]], c: _Columns, rules: NumberRules,
                         progress: Callable[[int], None] | None) -> _Checked:
    """``_check_rows`` on two processes for a large file: this one checks the first half while
    a forked one checks the second. Falls back to one process where fork is not available or
    not safe (threads running on Python 3.12+), when this process may run on one CPU only (a
    forked worker would share it: the rows sent there and back are pure cost), or when the
    worker fails to start."""
    if len(rows) < PARALLEL_MIN_ROWS or _usable_cpus() < 2 or not _can_fork():
        return _check_rows(rows, c, rules, progress)
    half = len(rows) // 2
    try:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("fork"))
    except (OSError, ValueError):
        return _check_rows(rows, c, rules, progress)
    with pool:
        future = pool.submit(_check_rows_plain, rows[half:], c, rules)
        head = _check_rows(rows[:half], c, rules, progress)
        try:
            tail_plain = future.result()
        except concurrent.futures.process.BrokenProcessPool:
            return head + _check_rows(rows[half:], c, rules, progress)
    if progress is not None:
        for line, _ in rows[half:]:
            if line % PROGRESS_EVERY == 0:
                progress(line)
    tail: _Checked = [(line, rec if isinstance(rec, str) else
                       Recipient(number=rec[0], kind=Kind(rec[1]), name=rec[2], email=rec[3],
                                 timezone=rec[4]))
                      for line, rec in tail_plain]
    return head + tail


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. systemd's CPUAffinity=)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _can_fork() -> bool:
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    # Python 3.12 warns (and may deadlock) when a process with threads forks
    return sys.version_info < (3, 12) or threading.active_count() == 1
