"""The mechanisms that keep the store's hot paths cheap (issue 16, part 5), pinned by counting,
never by timing (the figures are in bench/RESULTS.md): the SQL statements of one scheduling
decision, the statements of a large import, and the recipients check staying in one process
when only one CPU is usable."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

import dialer.csvimport as csvimport
from dialer.core.domain import CampaignSettings, Kind, Limits, Outcome
from dialer.core.recipients import Recipient
from dialer.storage.store import EndReport, SqlStore
from testkit.sqlcount import StatementCounter
from tests.fixtures_core import _reset_pg, db_url, migrated, pg_database, store  # noqa: F401

T0 = 1_900_000_000.0


def recipients(n: int, first: int = 0) -> list[Recipient]:
    """Half extensions, half numbers; some with a name, an e-mail address, a zone."""
    return [Recipient(number=str(100000 + i), kind=Kind.INTERNAL,
                      name=f"P\t{i}" if i % 3 == 0 else None)
            if i % 2 else
            Recipient(number=f"+39066{9800000 + i}", kind=Kind.EXTERNAL,
                      email=f"p{i}@example.com" if i % 4 == 0 else None,
                      timezone="Europe/Rome" if i % 5 == 0 else None)
            for i in range(first, first + n)]


def launched(store: SqlStore, n_campaigns: int, per: int) -> None:
    content = b"audio"
    sha = hashlib.sha256(content).hexdigest()
    store.add_media(data=content, sha256=sha, rate=8000, seconds=20.0, source=None, now=T0)
    for k in range(n_campaigns):
        store.add_template(name=f"T{k}", settings=CampaignSettings(
            priority=k % 3, attempts=3, retry_delay=60.0, limits=Limits(total=5)),
            audio_sha=sha, audio_seconds=20.0, recipients=recipients(per, k * per), now=T0,
            actor="test")
        store.start_campaign(template=f"T{k}", name=None, now=T0, start_at=T0, actor="test")
    store.set_settings(actor="test", now=T0, max_calls=12, max_internal=8, max_external=8)


DECISION_MAX_STATEMENTS = {"sqlite": 16, "postgresql": 16}
"""One decision after a call ended, at most, whatever the number of recipients: settings, nodes,
live campaigns' versions, calls in progress, candidates of each kind, the claim (recipient,
attempt, event, counters), and for each of the (at most two) campaigns whose version moved (the
one whose call ended, the one that took the slot) its row and its next retry; BEGIN and COMMIT
(12 + 2 x 2)."""


def test_one_decision_runs_a_handful_of_statements_whatever_the_size(store: SqlStore
                                                                     ) -> None:
    launched(store, 4, 300)
    counted = StatementCounter(store.engine)
    first = store.tick(now=T0, node="n1", capacity=100)
    assert len(first.calls) == 12
    open_calls = [c.attempt_id for c in first.calls]
    now = T0
    per_decision = []
    for k in range(9):
        now += 1
        store.finish_attempt(EndReport(attempt_id=open_calls.pop(0), at=now,
                                       outcome=(Outcome.BUSY, Outcome.CONTACTED)[k % 2]))
        counted.on()
        tick = store.tick(now=now, node="n1", capacity=100)
        if k:  # the first one re-reads every campaign the first pass changed
            per_decision.append(counted.off())
        else:
            counted.off()
        assert len(tick.calls) == 1  # the freed slot is taken again
        open_calls += [c.attempt_id for c in tick.calls]
    limit = DECISION_MAX_STATEMENTS[store.engine.dialect.name]
    assert max(per_decision) <= limit, (per_decision, counted.sql)


IMPORT_ROWS = 25_000
IMPORT_MAX_CALLS = 12
IMPORT_MAX_STATEMENTS = {"sqlite": IMPORT_ROWS + 12, "postgresql": 12}
"""start_campaign with IMPORT_ROWS recipients, at most: the recipients in one call to the
driver; on SQLite one executemany (a statement per row inside SQLite, in-process), on PostgreSQL
one COPY (an executemany is a statement per row on the server, and psycopg's pipeline)."""


def test_a_large_import_inserts_its_recipients_in_one_statement(store: SqlStore) -> None:
    launched(store, 1, 10)
    counted = StatementCounter(store.engine)
    counted.on()
    cid = store.start_campaign(template="T0", name="big", now=T0, start_at=T0 + 86400,
                               actor="test", recipients=recipients(IMPORT_ROWS, 1000))
    assert counted.off() <= IMPORT_MAX_STATEMENTS[store.engine.dialect.name]
    assert counted.calls <= IMPORT_MAX_CALLS
    got = store.campaign_detail(cid)["recipients"]
    fields = ("position", "number", "kind", "name", "email", "timezone", "state", "calls",
              "attempts")
    assert [tuple(r[f] for f in fields) for r in got] == [
        (i, r.number, r.kind.value, r.name, r.email, r.timezone, "idle", 0, 0)
        for i, r in enumerate(recipients(IMPORT_ROWS, 1000), 1)]


@pytest.fixture
def no_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a checker process was started")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refuse)
    yield


def test_a_process_pinned_to_one_cpu_checks_a_large_file_itself(
        monkeypatch: pytest.MonkeyPatch, no_worker: None) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    n = csvimport.PARALLEL_MIN_ROWS + 10
    text = "number\n" + "\n".join(str(100000 + i) for i in range(n)) + "\n"
    assert len(csvimport.parse_csv(text)) == n


def test_checking_a_file_runs_no_garbage_collection(monkeypatch: pytest.MonkeyPatch,
                                                     no_worker: None) -> None:
    """The rows and recipients of a large file are hundreds of thousands of objects that form no
    cycle: the cyclic collector, triggered every 700 allocations, scanned them again and again
    (parse of 100,000 rows 1.5-2.3 s with it, 1.2-1.4 s without, one CPU). It is paused while a
    file is checked, and left as the caller had it."""
    import gc

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    n = 30_000
    text = "number,email\n" + "\n".join(
        f"{100000 + i},p{i}@example.com" if i % 2 else f"+39066{9800000 + i}," for i in range(n)
    ) + "\n"
    runs: list[int] = []
    checking = [False]

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and checking[0]:
            runs.append(info["generation"])

    check = csvimport._parse_csv_lines

    def watched(*args: Any, **kwargs: Any) -> Any:
        checking[0] = True
        try:
            return check(*args, **kwargs)
        finally:
            checking[0] = False

    monkeypatch.setattr(csvimport, "_parse_csv_lines", watched)

    gc.collect()
    gc.callbacks.append(seen)
    try:
        assert gc.isenabled()
        assert len(csvimport.parse_csv(text)) == n
        assert runs == []  # (one young collection follows, when it is enabled again)
        assert gc.isenabled()
        gc.disable()
        try:
            csvimport.parse_csv(text)
            assert not gc.isenabled()  # a caller that had paused it keeps it paused
        finally:
            gc.enable()
    finally:
        gc.callbacks.remove(seen)
