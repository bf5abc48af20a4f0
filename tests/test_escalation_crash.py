"""Escalation launches a run's follow-up once (issue 15), against what breaks a daemon: two
daemons (nodes) checking at the same moment, and a daemon killed with SIGKILL inside the
escalation's transaction or just after its commit, then restarted. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from dialer.core import escalation as esc
from dialer.core.domain import CampaignSettings, Outcome
from dialer.storage.models import CampaignRow, RunRow
from dialer.storage.store import EndReport, SqlStore
from dialer.testing.setup import launch, recipient
from tests.fixtures_core import db_url, pg_database  # noqa: F401 - pytest fixtures

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000.0


def incomplete_run(url: str) -> int:
    """A run that escalates to "Managers" when incomplete, ended incomplete (not yet checked)."""
    s = SqlStore(url)
    s.migrate()
    try:
        s.add_media(data=b"m", sha256="0" * 64, rate=8000, seconds=2.0, source=None, now=NOW)
        s.add_template(name="Managers", settings=CampaignSettings(attempts=1), audio_sha="0" * 64,
                       audio_seconds=2.0, recipients=[recipient("201")], now=NOW, actor="t")
        cid = launch(s, "Fire", ["101"], now=NOW, attempts=1, escalate_to="Managers")
        (call,) = s.tick(now=NOW, node="n").calls
        s.finish_attempt(EndReport(attempt_id=call.attempt_id, outcome=Outcome.BUSY,
                                   at=NOW + 1))
        s.tick(now=NOW + 2, node="n")
        assert s.campaign_detail(cid)["state"] == "incomplete"
        return cid
    finally:
        s.dispose()


def standing(url: str, cid: int) -> tuple[str | None, list[int]]:
    """The run's escalation mark and the follow-ups launched for it."""
    s = SqlStore(url)
    try:
        with s.session() as sess:
            mark = sess.scalar(select(CampaignRow.escalation).where(CampaignRow.id == cid))
            followups = list(sess.scalars(select(RunRow.id).where(RunRow.escalated_from == cid)))
        return mark, followups
    finally:
        s.dispose()


def test_two_daemons_checking_at_once_launch_one_followup(db_url: str) -> None:  # noqa: F811
    cid = incomplete_run(db_url)
    stores = [SqlStore(db_url) for _ in range(2)]
    start = threading.Barrier(2)
    passes: list[esc.Pass] = []

    def check(store: SqlStore) -> None:
        start.wait(timeout=10)
        passes.append(store.escalate(now=NOW + 3))

    threads = [threading.Thread(target=check, args=(st,)) for st in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for st in stores:
        st.dispose()
    assert len(passes) == 2
    launched = [o for p in passes for o in p.outcomes if o.followup_id is not None]
    assert len(launched) == 1
    assert standing(db_url, cid) == ("launched", [launched[0].followup_id])


DIE = textwrap.dedent("""
    import os, signal, sys
    from dialer.storage import escalations
    from dialer.storage.store import SqlStore

    url, where, now = sys.argv[1], sys.argv[2], float(sys.argv[3])
    name = "_launch_followup" if where == "inside" else "_carry_out"
    original = getattr(escalations.Escalations, name)

    def dying(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if where == "inside":
            args[0].flush()  # the follow-up's rows are written, the transaction not committed
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(escalations.Escalations, name, dying)
    SqlStore(url).escalate(now=now)
""")


@pytest.mark.parametrize("where", ["inside", "after"])
def test_a_daemon_killed_at_the_escalation_then_restarted_launches_one(
        db_url: str, where: str) -> None:  # noqa: F811
    cid = incomplete_run(db_url)
    died = subprocess.run([sys.executable, "-c", DIE, db_url, where, str(NOW + 3)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert died.returncode == -9, died.stderr
    mark, followups = standing(db_url, cid)
    if where == "inside":  # rolled back with the process: nothing launched, still to decide
        assert (mark, followups) == ("armed", [])
    else:
        assert mark == "launched" and len(followups) == 1
    restarted = SqlStore(db_url)
    try:
        first = restarted.escalate(now=NOW + 4)
        again = restarted.escalate(now=NOW + 5)
    finally:
        restarted.dispose()
    assert [o.followup_id is not None for o in first.outcomes] == \
        ([True] if where == "inside" else [])
    assert again.outcomes == ()
    mark, after = standing(db_url, cid)
    assert mark == "launched" and len(after) == 1
    if where == "after":
        assert after == followups
