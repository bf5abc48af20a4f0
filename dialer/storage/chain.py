"""The history chain in the database: sealing a run when it is over, and reading it back to
verify (the hashing and the verdict are ``dialer.core.chain``'s; this module reads and writes).

When a run is sealed: whichever node makes the last move, in its transaction. A run is over when
its campaign is final (completed, terminated) or deleted, and none of its calls is open: the
move to a final state seals it (``Dispatch._transition``) unless calls go on (a campaign stopped
while calls ring), and then the end of the last call does (``Attempts._finish_in``). Exactly once
across nodes: the seal takes the campaign row's lock, then the run row's, before it looks at the
state and the open calls (on PostgreSQL, at READ COMMITTED, whoever waits for the other's lock
then sees what the other committed); SQLite's single writer serialises anyway.

What is the record of a row (``ATTEMPT_FIELDS``, ``EVENT_FIELDS``): every column but the chain's
and ``attempts.worker`` (the index of the worker process that carried the call on its node, set
right after the claim by a separate transaction that may land after a very short call ended:
bookkeeping of the node, not what happened to the call). A column added later is chained only if
it is added to these lists (and old chains then verify with the list they were sealed with: keep
it in mind before adding one).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Table, bindparam, event, select, update
from sqlalchemy.orm import Session

from dialer.core import chain
from dialer.core.domain import CampaignState
from dialer.core.errors import NotFound
from dialer.storage.history import History
from dialer.storage.models import AttemptRow, CampaignRow, EventRow, RunRow
from dialer.storage.records import to_dt

ATTEMPT_FIELDS = ("id", "campaign_id", "recipient_id", "number", "kind", "node", "lease",
                  "trunk", "created_at", "ringing_at", "answered_at", "answer_confirmed_at",
                  "listen_confirmed_at", "ended_at", "status", "reason", "q850", "keys",
                  "outcome", "answer_key", "listen_key")
EVENT_FIELDS = ("id", "at", "campaign_id", "recipient_id", "attempt_id", "kind", "actor",
                "detail")
_CHAIN = ("chain_seq", "chain_prev", "chain_hash")


def snapshot(run: RunRow) -> dict[str, Any]:
    """What of the run the genesis binds: everything written at launch."""
    return {"name": run.name, "template": run.template_name, "created_at": run.created_at,
            "created_by": run.created_by, "start_at": run.start_at, "settings": run.settings,
            "audio_sha256": run.audio_sha, "audio_seconds": run.audio_seconds,
            "recipients": run.recipients, "escalated_from": run.escalated_from}


class Chain(History):
    """Seals runs and reads their chains; ``runs_sealed`` counts this store's seals (the
    daemon's ``dialer_runs_sealed_total``)."""

    _runs_sealed = 0

    @property
    def runs_sealed(self) -> int:
        return self._runs_sealed

    def _chain_rows(self, s: Session, run_id: int,
                    events: Collection[int] | None = None) -> list[chain.Row]:
        """The run's attempts and events as stored, read with Core statements (the values the
        database gives back, not those an ORM object still holds); only the events ``events``
        when given."""
        a, e = AttemptRow.__table__, EventRow.__table__
        out: list[chain.Row] = []
        if events is None:
            for r in s.execute(select(*(a.c[f] for f in ATTEMPT_FIELDS + _CHAIN))
                               .where(a.c.campaign_id == run_id)).mappings():
                out.append(chain.Row(kind=chain.Kind.ATTEMPT, id=str(r["id"]),
                                     at=r["created_at"],
                                     content={f: r[f] for f in ATTEMPT_FIELDS},
                                     seq=r["chain_seq"], prev=r["chain_prev"],
                                     hash=r["chain_hash"]))
        q = select(*(e.c[f] for f in EVENT_FIELDS + _CHAIN)).where(e.c.campaign_id == run_id)
        if events is not None:
            q = q.where(e.c.id.in_(list(events)))
        for r in s.execute(q).mappings():
            out.append(chain.Row(kind=chain.Kind.EVENT, id=str(r["id"]), at=r["at"],
                                 content={f: r[f] for f in EVENT_FIELDS}, seq=r["chain_seq"],
                                 prev=r["chain_prev"], hash=r["chain_hash"]))
        return out

    def _seal(self, s: Session, run_id: int, now: float, *,
              appended: Collection[int] = ()) -> bool:
        """Seal the run if it is over and not sealed yet; with ``appended``, append those events
        (written after the seal) to its chain instead, if it has one. True if it sealed."""
        lock = not self.sqlite
        state = s.scalar(select(CampaignRow.state).where(CampaignRow.id == run_id)
                         .with_for_update() if lock else
                         select(CampaignRow.state).where(CampaignRow.id == run_id))
        if state is not None and not CampaignState(state).finished:
            return False
        run = s.get(RunRow, run_id, with_for_update=lock, populate_existing=lock)
        if run is None:
            return False
        sealed = run.chain_head is not None
        if sealed != bool(appended):  # appending needs a chain; a seal comes from a move
            return False
        s.flush()
        if s.scalar(select(AttemptRow.id).where(AttemptRow.campaign_id == run_id,
                                                AttemptRow.ended_at.is_(None)).limit(1)):
            return False
        if sealed:
            assert run.chain_head is not None and run.chain_rows is not None
            rows = [r for r in self._chain_rows(s, run_id, appended) if r.hash is None]
            links = chain.seal(rows, start=run.chain_head, seq=run.chain_rows)
        else:
            links = chain.seal(self._chain_rows(s, run_id),
                               start=chain.genesis(run_id, snapshot(run)))
        for kind, model in ((chain.Kind.ATTEMPT, AttemptRow), (chain.Kind.EVENT, EventRow)):
            params = [{"key": link.id if kind is chain.Kind.ATTEMPT else int(link.id),
                       "seq": link.seq, "prev": link.prev, "hash": link.hash}
                      for link in links if link.kind is kind]
            if params:  # one executemany per table: a run can have many thousand rows
                t = model.__table__
                assert isinstance(t, Table)
                s.execute(update(t).where(t.c.id == bindparam("key")).values(
                    chain_seq=bindparam("seq"), chain_prev=bindparam("prev"),
                    chain_hash=bindparam("hash")), params)
        if links:
            run.chain_head = links[-1].hash
        elif not sealed:
            run.chain_head = chain.genesis(run_id, snapshot(run))  # a run with no row at all
        run.chain_rows = (run.chain_rows or 0) + len(links)
        if run.sealed_at is None:
            run.sealed_at = to_dt(now)
            event.listen(s, "after_commit", self._count_seal, once=True)
        return not sealed

    def _append_late(self, s: Session, run_id: int, now: float) -> None:
        """Events just written to a run that may be sealed already (its escalation decided, its
        alert resolved, after its end): appended to its chain if it is, as a late e-mail is."""
        if s.scalar(select(RunRow.chain_head).where(RunRow.id == run_id)) is None:
            return  # not sealed: its seal will take them
        s.flush()
        late = list(s.scalars(select(EventRow.id).where(EventRow.campaign_id == run_id,
                                                        EventRow.chain_hash.is_(None))))
        if late:
            self._seal(s, run_id, now, appended=late)

    def _count_seal(self, _session: Session) -> None:
        self._runs_sealed += 1

    def verify_run(self, run_id: int, expect_head: str | None = None) -> chain.Report:
        """Recompute the chain of a run from its stored rows (``dialer.core.chain.verify``)."""
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is None:
                raise NotFound(f"no run with id {run_id}")
            state = s.scalar(select(CampaignRow.state).where(CampaignRow.id == run_id))
            active = state is not None and not CampaignState(state).finished or (
                state is not None and s.scalar(select(AttemptRow.id).where(
                    AttemptRow.campaign_id == run_id, AttemptRow.ended_at.is_(None)).limit(1))
                is not None)
            return chain.verify(run_id, self._chain_rows(s, run_id),
                                genesis_hash=chain.genesis(run_id, snapshot(run)),
                                head=run.chain_head, count=run.chain_rows, active=active,
                                expect_head=expect_head)
