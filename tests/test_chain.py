"""The history chain's pure part (dialer.core.chain): canonical form, seal, and the verdict on
rows altered, inserted, deleted, on a changed snapshot and on a head kept elsewhere."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialer.core import chain
from dialer.core.chain import Kind, Problem, Row, Status

T0 = dt.datetime(2026, 12, 3, 14, 0, tzinfo=dt.UTC)
SNAPSHOT = {"name": "Fire drill", "settings": {"attempts": 3, "retry_delay": 60.0}}
GENESIS = chain.genesis(7, SNAPSHOT)


def rows(n: int = 5) -> list[Row]:
    """A run's rows in canonical order: an attempt every other row, events between."""
    out: list[Row] = []
    for i in range(n):
        at = T0 + dt.timedelta(seconds=i)
        if i % 2:
            out.append(Row(kind=Kind.ATTEMPT, id=f"call-{i}", at=at,
                           content={"id": f"call-{i}", "created_at": at, "status": 486,
                                    "outcome": "busy", "keys": ""}))
        else:
            out.append(Row(kind=Kind.EVENT, id=str(i + 1), at=at,
                           content={"id": i + 1, "at": at, "kind": "campaign_state",
                                    "detail": {"new": "active", "old": "scheduled"}}))
    return out


def sealed(rs: list[Row]) -> tuple[list[Row], str]:
    links = {(link.kind, link.id): link for link in chain.seal(rs, start=GENESIS)}
    out = [dataclasses.replace(r, seq=links[r.kind, r.id].seq, prev=links[r.kind, r.id].prev,
                               hash=links[r.kind, r.id].hash) for r in rs]
    return out, max(links.values(), key=lambda link: link.seq).hash


def verdict(rs: list[Row], head: str, count: int, **kw: object) -> chain.Report:
    return chain.verify(7, rs, genesis_hash=kw.pop("genesis", GENESIS), head=head,  # type: ignore[arg-type]
                        count=count, **kw)  # type: ignore[arg-type]


def first(report: chain.Report) -> tuple[str, str, Problem, int]:
    f = report.findings[0]
    return (f.kind, f.id, f.problem, f.missing)


def test_the_canonical_form_is_sorted_compact_and_fixes_times() -> None:
    when = dt.datetime(2026, 12, 3, 15, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert chain.canonical({"b": 1, "a": [when, None, 1.5, (True, "é")]}) == (
        '{"a":["2026-12-03T14:00:00.000000Z",null,1.5,[true,"é"]],"b":1}'.encode())
    assert chain.digest({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()
    with pytest.raises(ValueError, match="naive"):
        chain.canonical(dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        chain.canonical(float("nan"))


def test_a_seal_orders_by_time_then_kind_then_id_and_links_every_row() -> None:
    a = Row(kind=Kind.EVENT, id="10", at=T0, content={"x": 1})
    b = Row(kind=Kind.EVENT, id="9", at=T0, content={"x": 2})
    c = Row(kind=Kind.ATTEMPT, id="zz", at=T0, content={"x": 3})
    d = Row(kind=Kind.ATTEMPT, id="aa", at=T0 - dt.timedelta(seconds=1), content={"x": 4})
    links = chain.seal([a, b, c, d], start=GENESIS)
    assert [(link.kind, link.id, link.seq) for link in links] == [
        (Kind.ATTEMPT, "aa", 0), (Kind.ATTEMPT, "zz", 1), (Kind.EVENT, "9", 2),
        (Kind.EVENT, "10", 3)]
    assert [link.prev for link in links] == [GENESIS] + [link.hash for link in links[:-1]]
    assert links[0].hash == chain.row_hash(Kind.ATTEMPT, "aa", {"x": 4}, 0, GENESIS)


def test_an_untouched_run_verifies() -> None:
    rs, head = sealed(rows())
    report = verdict(rs, head, 5)
    assert report.status is Status.INTACT and report.findings == ()
    assert report.line() == f"run 7: 5 rows verified, chain head {head}"


def test_a_changed_column_names_that_row_as_altered_and_only_it() -> None:
    rs, head = sealed(rows())
    rs[3] = dataclasses.replace(rs[3], content={**rs[3].content, "status": 200})
    report = verdict(rs, head, 5)
    assert [(f.kind, f.id, f.problem) for f in report.findings] == [
        ("attempt", "call-3", Problem.ALTERED)]
    assert report.line() == ("run 7: chain broken at attempt call-3: altered (its content "
                             "does not give its hash)")


def test_a_row_rewritten_with_its_hash_recomputed_is_found_by_the_next_link() -> None:
    rs, head = sealed(rows())
    r = rs[2]
    content = {**r.content, "detail": {"new": "terminated"}}
    assert r.seq is not None and r.prev is not None
    rs[2] = dataclasses.replace(r, content=content,
                                hash=chain.row_hash(r.kind, r.id, content, r.seq, r.prev))
    assert first(verdict(rs, head, 5)) == ("event", "3", Problem.ALTERED, 0)


def test_an_inserted_row_is_named() -> None:
    rs, head = sealed(rows())
    extra = Row(kind=Kind.EVENT, id="99", at=T0 + dt.timedelta(seconds=2, milliseconds=5),
                content={"id": 99, "kind": "key"})
    report = verdict([*rs, extra], head, 5)
    assert first(report) == ("event", "99", Problem.INSERTED, 0)
    # one that copies the chain columns of a row already there
    dup = dataclasses.replace(rs[1], kind=Kind.EVENT, id="98")
    assert first(verdict([*rs, dup], head, 5))[2] is Problem.INSERTED


def test_a_deleted_middle_row_is_named_by_the_row_after_it() -> None:
    rs, head = sealed(rows())
    report = verdict(rs[:2] + rs[3:], head, 5)
    assert first(report) == ("attempt", "call-3", Problem.DELETED_BEFORE, 1)
    assert "1 row deleted before it" in report.line()


def test_deleted_last_rows_are_missing_at_the_end() -> None:
    rs, head = sealed(rows())
    report = verdict(rs[:3], head, 5)
    assert first(report) == ("run", "7", Problem.MISSING_AT_END, 2)
    assert report.line() == "run 7: chain broken at run 7: 2 rows missing at the end of the chain"


def test_a_deleted_first_row_and_a_changed_snapshot() -> None:
    rs, head = sealed(rows())
    assert first(verdict(rs[1:], head, 5)) == ("attempt", "call-1", Problem.DELETED_BEFORE, 1)
    other = chain.genesis(7, {**SNAPSHOT, "name": "Quiet drill"})
    assert first(verdict(rs, head, 5, genesis=other))[2] is Problem.SNAPSHOT_ALTERED


def test_a_changed_head_or_count_is_named() -> None:
    rs, head = sealed(rows())
    assert first(verdict(rs, "0" * 64, 5))[2] is Problem.HEAD_ALTERED
    assert first(verdict(rs, head, 4))[2] is Problem.HEAD_ALTERED
    assert verdict([], GENESIS, 0).ok  # a run with no row: its head is the genesis


def test_runs_without_a_chain() -> None:
    old = chain.verify(7, rows(), genesis_hash=GENESIS, head=None, count=None)
    assert old.status is Status.NOT_SEALED and "not sealed" in old.line()
    live = chain.verify(7, rows(), genesis_hash=GENESIS, head=None, count=None, active=True)
    assert live.status is Status.NOT_SEALED_YET and "not sealed yet" in live.line()


def test_a_head_kept_elsewhere() -> None:
    rs, head = sealed(rows())
    assert verdict(rs, head, 5, expect_head=head.upper()).ok
    # the chain grew after the export: its head is an earlier row's hash
    more = Row(kind=Kind.EVENT, id="50", at=T0 + dt.timedelta(minutes=1), content={"id": 50})
    [link] = chain.seal([more], start=head, seq=5)
    grown = [*rs, dataclasses.replace(more, seq=link.seq, prev=link.prev, hash=link.hash)]
    report = verdict(grown, link.hash, 6, expect_head=head)
    assert report.ok and report.head_at == 4 and "1 rows appended since" in report.line()
    assert first(verdict(rs, head, 5, expect_head="f" * 64))[2] is Problem.HEAD_UNKNOWN


@settings(deadline=None)  # no timing: the machine is shared
@given(st.integers(min_value=1, max_value=12), st.data())
def test_any_single_change_is_found_where_it_was_made(n: int, data: st.DataObject) -> None:
    rs, head = sealed(rows(n))
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    how = data.draw(st.sampled_from(["alter", "delete", "insert"]))
    r = rs[i]
    if how == "alter":
        rs[i] = dataclasses.replace(r, content={**r.content, "tampered": True})
        expected = (r.kind.value, r.id, Problem.ALTERED)
    elif how == "delete":
        del rs[i]
        expected = (("run", "7", Problem.MISSING_AT_END) if i == n - 1
                    else (rs[i].kind.value, rs[i].id, Problem.DELETED_BEFORE))
    else:
        rs.insert(i, Row(kind=Kind.EVENT, id="1000", at=r.at, content={"id": 1000}))
        expected = ("event", "1000", Problem.INSERTED)
    report = verdict(rs, head, n)
    assert not report.ok
    f = report.findings[0]
    assert (f.kind, f.id, f.problem) == expected
    assert len(report.findings) == 1
