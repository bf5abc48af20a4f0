"""The tamper-evident history of a run: its attempts and events as one SHA-256 hash chain.

A run is *sealed* once, when it is over (its campaign final and none of its calls open): its
rows are put in a canonical order (``order_key``: time, then kind, then id) and each gets a
sequence number ``seq``, ``prev`` (the hash of the row before it; for the first one the run's
``genesis``, a hash of the run id and its configuration snapshot) and ``hash`` = SHA-256 of the
canonical JSON (``canonical``) of its kind, id, content, ``seq`` and ``prev``. The run keeps the
last hash (the *head*) and the number of rows. A row that arrives after the seal (an e-mail report
of a finished run) is appended to the chain, which moves the head: an earlier head is then the
hash of one of its rows, and ``verify`` says so.

``verify`` recomputes the chain from the stored rows and names each row that does not fit:
*altered* (its hash is not that of its content), *inserted* (it carries no hash, or one whose
place is taken), *deleted before it* (a gap in the sequence before it, or its ``prev`` is not the
previous row's hash), *missing at the end* (fewer rows than the run counted), and for the run
itself a snapshot that no longer gives the genesis, or a head that is not the last row's hash.

Why ``prev`` is compared with the previous row's *stored* hash rather than a recomputed one: an
altered row is then named once, as altered, and the rows after it still verify; a deleted row
shows as a break in the links right after it.

The chain has no secret (anyone who can write the database can also rewrite the whole chain);
what proves the record is a head kept elsewhere: every export carries it, and
``verify(..., expect_head=...)`` checks a run against one.

Pure: values in, values out; ``hashlib`` and ``json`` do the work.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class Kind(str, enum.Enum):
    """The two kinds of row a run's chain holds."""

    ATTEMPT = "attempt"
    EVENT = "event"


class Problem(str, enum.Enum):
    """What is wrong with a row (or with the run) of a chain that does not verify."""

    ALTERED = "altered"  # the row's hash is not that of its content
    INSERTED = "inserted"  # not part of the chain sealed
    DELETED_BEFORE = "deleted_before"  # one or more rows before this one are gone
    MISSING_AT_END = "missing_at_end"  # the last row(s) of the chain are gone
    SNAPSHOT_ALTERED = "snapshot_altered"  # the run's snapshot no longer gives the genesis
    HEAD_ALTERED = "head_altered"  # the run's head or count does not match its rows
    HEAD_UNKNOWN = "head_unknown"  # the head given to check against is in no row of the chain


class Status(str, enum.Enum):
    """The verdict on a run's chain."""

    INTACT = "intact"
    BROKEN = "broken"
    NOT_SEALED = "not_sealed"  # finished before the history was chained (no chain at all)
    NOT_SEALED_YET = "not_sealed_yet"  # still running: sealed when it is over


@dataclass(frozen=True, kw_only=True)
class Row:
    """One attempt or event of a run as stored: its content (every column that is the record)
    and its chain columns (``None`` when the row was never chained)."""

    kind: Kind
    id: str
    at: dt.datetime  # an event's time, an attempt's creation
    content: Mapping[str, Any]
    seq: int | None = None
    prev: str | None = None
    hash: str | None = None


@dataclass(frozen=True, kw_only=True)
class Link:
    """The chain columns a seal gives one row."""

    kind: Kind
    id: str
    seq: int
    prev: str
    hash: str


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One thing wrong: the row (``kind``, ``id``; kind ``run`` for the run itself), what is
    wrong, at which place of the chain, and how many rows are missing where rows are missing."""

    kind: str
    id: str
    problem: Problem
    seq: int | None = None
    missing: int = 0

    def describe(self) -> str:
        """One phrase: ``event 17 altered``, ``attempt abc: 2 rows deleted before it``."""
        what = {
            Problem.ALTERED: "altered (its content does not give its hash)",
            Problem.INSERTED: "inserted (not part of the sealed chain)",
            Problem.DELETED_BEFORE: f"{_rows(self.missing)} deleted before it",
            Problem.MISSING_AT_END: f"{_rows(self.missing)} missing at the end of the chain",
            Problem.SNAPSHOT_ALTERED: "configuration snapshot altered "
                                      "(it no longer gives the chain's genesis)",
            Problem.HEAD_ALTERED: "chain head or row count altered",
            Problem.HEAD_UNKNOWN: "the chain head given is not in this chain",
        }[self.problem]
        subject = "run" if self.kind == "run" else f"{self.kind} {self.id}"
        return f"{subject}: {what}" if self.kind != "run" else f"{subject} {self.id}: {what}"


@dataclass(frozen=True, kw_only=True)
class Report:
    """The verdict on one run: ``findings`` in chain order (the first is the first bad row);
    ``head_at``: the place of ``expect_head`` in the chain when it was given and found."""

    run_id: int
    status: Status
    rows: int = 0
    head: str | None = None
    findings: tuple[Finding, ...] = ()
    expect_head: str | None = None
    head_at: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.INTACT

    def line(self) -> str:
        """The one line ``dialer history verify`` prints."""
        if self.status is Status.NOT_SEALED:
            return (f"run {self.run_id}: not sealed (it finished before the history was "
                    "chained): nothing to verify")
        if self.status is Status.NOT_SEALED_YET:
            return f"run {self.run_id}: not sealed yet (sealed when the run is over)"
        if self.findings:
            more = len(self.findings) - 1
            return (f"run {self.run_id}: chain broken at {self.findings[0].describe()}"
                    + (f" (and {more} more finding{'s' if more > 1 else ''})" if more else ""))
        text = f"run {self.run_id}: {self.rows} rows verified, chain head {self.head}"
        if self.expect_head is not None and self.head_at is not None \
                and self.head_at < self.rows - 1:
            text += (f" (the head given is row {self.head_at + 1}: "
                     f"{self.rows - self.head_at - 1} rows appended since)")
        return text

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` form (docs/cli-json.md)."""
        return {"run": self.run_id, "status": self.status.value, "ok": self.ok,
                "rows": self.rows, "head": self.head, "expect_head": self.expect_head,
                "head_at": self.head_at,
                "findings": [{"kind": f.kind, "id": f.id, "problem": f.problem.value,
                              "seq": f.seq, "missing": f.missing, "text": f.describe()}
                             for f in self.findings]}


def _rows(n: int) -> str:
    return f"{n} row{'s' if n != 1 else ''}"


def _time(value: dt.datetime) -> str:
    """A time as fixed UTC text (microseconds, ``Z``)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime in a chained row")
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _default(value: Any) -> Any:
    """What JSON has no form for: times (``_time``) and mappings that are not dicts."""
    if isinstance(value, dt.datetime):
        return _time(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} has no canonical form")


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False, default=_default)


def canonical(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces, UTF-8, no NaN; times as ``_time``, tuples
    as lists): the bytes that are hashed. The standard library's C encoder does the walk (a
    seal hashes every row of a run)."""
    return _ENCODER.encode(value).encode("utf-8")


def digest(value: Any) -> str:
    """SHA-256 (hex) of ``canonical(value)``."""
    return hashlib.sha256(canonical(value)).hexdigest()


def genesis(run_id: int, snapshot: Mapping[str, Any]) -> str:
    """The ``prev`` of a run's first row: binds the chain to the run and its snapshot."""
    return digest({"chain": "dialer-history-1", "run": run_id, "snapshot": snapshot})


def row_hash(kind: Kind, row_id: str, content: Mapping[str, Any], seq: int, prev: str) -> str:
    """The hash of one row of a chain."""
    return digest({"kind": kind.value, "id": row_id, "content": content, "seq": seq,
                   "prev": prev})


def order_key(row: Row) -> tuple[str, str, int, str]:
    """The canonical order of a seal: time, then kind (attempt before event), then id (events
    by number)."""
    at = _time(row.at)
    number = int(row.id) if row.kind is Kind.EVENT and row.id.isdigit() else 0
    return (at, row.kind.value, number, row.id)


def seal(rows: Sequence[Row], *, start: str, seq: int = 0) -> list[Link]:
    """Chain ``rows`` (in canonical order) after a chain whose last hash is ``start`` (the
    genesis for a new chain) and which holds ``seq`` rows already."""
    links: list[Link] = []
    prev = start
    for n, row in enumerate(sorted(rows, key=order_key), start=seq):
        h = row_hash(row.kind, row.id, row.content, n, prev)
        links.append(Link(kind=row.kind, id=row.id, seq=n, prev=prev, hash=h))
        prev = h
    return links


@dataclass
class _Walk:
    expected_seq: int = 0
    last: str = ""
    findings: list[tuple[float, Finding]] = field(default_factory=list)

    def add(self, place: float, finding: Finding) -> None:
        self.findings.append((place, finding))


def verify(run_id: int, rows: Sequence[Row], *, genesis_hash: str, head: str | None,
           count: int | None, active: bool = False, expect_head: str | None = None) -> Report:
    """The verdict on a run from its stored rows and its stored head and count (``None``: never
    sealed; ``active``: the run is not over). ``expect_head``: a head kept elsewhere (an
    export's) that must be the head, or the hash of one row (the chain grew since)."""
    if head is None or count is None:
        return Report(run_id=run_id,
                      status=Status.NOT_SEALED_YET if active else Status.NOT_SEALED)
    chained = sorted((r for r in rows if r.seq is not None and r.hash is not None),
                     key=lambda r: (r.seq or 0, r.kind.value, r.id))
    walk = _Walk(last=genesis_hash)
    taken: set[int] = set()
    hashes: list[str] = []
    before: Row | None = None
    for r in chained:
        seq = r.seq or 0
        if seq in taken:
            walk.add(seq + 0.5, Finding(kind=r.kind.value, id=r.id, problem=Problem.INSERTED,
                                        seq=seq))
            continue
        taken.add(seq)
        if row_hash(r.kind, r.id, r.content, seq, r.prev or "") != r.hash:
            walk.add(seq, Finding(kind=r.kind.value, id=r.id, problem=Problem.ALTERED, seq=seq))
        elif seq > walk.expected_seq:
            walk.add(seq, Finding(kind=r.kind.value, id=r.id, problem=Problem.DELETED_BEFORE,
                                  seq=seq, missing=seq - walk.expected_seq))
        elif r.prev != walk.last:
            if before is None:
                walk.add(-1, Finding(kind="run", id=str(run_id),
                                     problem=Problem.SNAPSHOT_ALTERED))
            else:  # the row before fits its own hash but not this link: both were rewritten
                walk.add(seq - 1, Finding(kind=before.kind.value, id=before.id,
                                          problem=Problem.ALTERED, seq=before.seq))
        walk.expected_seq = seq + 1
        walk.last = r.hash or ""
        hashes.append(walk.last)
        before = r
    _place_unchained(walk, rows, chained)
    if walk.expected_seq < count:
        walk.add(count, Finding(kind="run", id=str(run_id), problem=Problem.MISSING_AT_END,
                                seq=walk.expected_seq, missing=count - walk.expected_seq))
    elif walk.expected_seq > count or (chained and walk.last != head) \
            or (not chained and head != genesis_hash):
        walk.add(count + 1, Finding(kind="run", id=str(run_id), problem=Problem.HEAD_ALTERED))
    head_at: int | None = None
    if expect_head is not None:
        expect_head = expect_head.lower()
        if expect_head in hashes:
            head_at = hashes.index(expect_head)
        else:
            walk.add(count + 2, Finding(kind="run", id=str(run_id),
                                        problem=Problem.HEAD_UNKNOWN))
    findings = tuple(f for _, f in sorted(walk.findings, key=lambda pf: pf[0]))
    return Report(run_id=run_id, status=Status.BROKEN if findings else Status.INTACT,
                  rows=len(hashes), head=head, findings=findings, expect_head=expect_head,
                  head_at=head_at)


def _place_unchained(walk: _Walk, rows: Sequence[Row], chained: Sequence[Row]) -> None:
    """Rows with no chain columns were inserted: each is placed after the chained row that
    precedes it in canonical order, so that the first finding is the first in the history."""
    keys = [(order_key(r), r.seq or 0) for r in chained]
    for r in rows:
        if r.seq is not None and r.hash is not None:
            continue
        key = order_key(r)
        before = [seq for k, seq in keys if k <= key]
        place = (max(before) if before else -1) + 0.5
        walk.add(place, Finding(kind=r.kind.value, id=r.id, problem=Problem.INSERTED,
                                seq=r.seq))
