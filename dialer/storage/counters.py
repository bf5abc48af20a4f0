"""Per-campaign recipient counters (``campaigns.n_idle`` ... ``n_stopped``), kept exact.

A scheduling pass reads how many recipients of each active campaign stand in each state (to
settle it: completed, incomplete, or still running) from these columns instead of counting up to
millions of recipient rows. They are maintained in ONE place, this module:

* every change of ``RecipientRow.state`` made through the ORM (``rec.state = ...``, in any store
  method, including ones written later) is seen by an attribute listener, which books a delta in
  the session; just before the session flushes, the deltas become one atomic
  ``UPDATE campaigns SET n_x = n_x + d`` per campaign, in the same transaction as the recipient
  change (atomic increments, so concurrent nodes on PostgreSQL never lose an update);
* a store method that changes recipient states with Core statements instead (the claim of a
  scheduling pass, the hot path) books the same deltas with ``shift``; they are applied with the
  ORM ones, at the latest when the transaction commits;
* recipients inserted in bulk (``start_campaign``) set the counters of their new campaign
  directly (``fresh_counts``);
* a NULL counter means "not counted yet" (campaigns from before revision 0003, or after a bulk
  change that could not be booked): ``recount`` counts that campaign's recipients once and
  stores the result. NULL + d stays NULL, so a missed count is never made up.

Every counter update is an UPDATE of the campaign row, so it also moves ``campaigns.version``
(revision 0004): a scheduling pass that keeps campaigns in memory re-reads exactly the ones whose
recipients changed. A change of a recipient's retry time (``next_at``) alone moves the version too.

The rule for everyone touching recipients: change ``state`` through the ORM attribute, or with a
Core statement followed by ``shift`` for each recipient changed; a bulk change must call
``invalidate`` for the campaigns it touched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session, attributes, object_session
from sqlalchemy.orm.base import NEVER_SET, NO_VALUE

from dialer.core import lifecycle
from dialer.core.domain import RecipientState
from dialer.storage.models import CampaignRow, RecipientRow

COLUMN = {state.value: f"n_{state.value}" for state in RecipientState}
_DELTAS = "dialer.recipient_deltas"


def fresh_counts(n_recipients: int) -> dict[str, int]:
    """The counters of a new campaign whose ``n_recipients`` recipients are all idle."""
    out = {col: 0 for col in COLUMN.values()}
    out["n_idle"] = n_recipients
    return out


def tally_of(row: Any) -> lifecycle.Tally | None:
    """The tally from a row with the counter columns, or None when any is NULL (not counted)."""
    values = [getattr(row, col) for col in COLUMN.values()]
    if any(v is None for v in values):
        return None
    return lifecycle.Tally(**{state: int(getattr(row, col)) for state, col in COLUMN.items()})


def count(s: Session, campaign_ids: Iterable[int]) -> dict[int, lifecycle.Tally]:
    """Count recipients by state with a GROUP BY: the truth the counters must equal."""
    ids = list(campaign_ids)
    acc: dict[int, dict[str, int]] = {cid: {} for cid in ids}
    if not ids:
        return {}
    q = (select(RecipientRow.campaign_id, RecipientRow.state, func.count())
         .where(RecipientRow.campaign_id.in_(ids))
         .group_by(RecipientRow.campaign_id, RecipientRow.state))
    for cid, state, n in s.execute(q):
        acc[cid][state] = n
    return {cid: lifecycle.Tally(**d) for cid, d in acc.items()}


def recount(s: Session, campaign_ids: Iterable[int]) -> dict[int, lifecycle.Tally]:
    """Count the recipients of these campaigns and store the counters; return the tallies."""
    _apply(s)  # book pending deltas first: the count below sees the flushed rows
    s.flush()
    tallies = count(s, campaign_ids)
    for cid, t in tallies.items():
        s.execute(update(CampaignRow).where(CampaignRow.id == cid).values(
            **{col: getattr(t, state) for state, col in COLUMN.items()}))
    return tallies


def invalidate(s: Session, campaign_ids: Iterable[int]) -> None:
    """Mark counters unknown after a bulk change: the next pass recounts these campaigns."""
    for cid in campaign_ids:
        s.execute(update(CampaignRow).where(CampaignRow.id == cid).values(
            **{col: None for col in COLUMN.values()}))


def shift(s: Session, campaign_id: int, old: RecipientState | str,
          new: RecipientState | str, n: int = 1) -> None:
    """Book ``n`` recipients of a campaign moved from ``old`` to ``new`` by a Core statement.

    Applied with the ORM deltas: at the next flush, by ``apply``, or when the transaction
    commits, whichever comes first."""
    if _column(old) == _column(new) or n == 0:
        return
    deltas = _deltas(s)
    deltas[campaign_id][_column(old)] -= n
    deltas[campaign_id][_column(new)] += n


def apply(s: Session) -> None:
    """Write the booked deltas now (one atomic UPDATE per campaign, in campaign order)."""
    _apply(s)


def _deltas(s: Session) -> dict[int, dict[str, int]]:
    deltas: dict[int, dict[str, int]] = s.info.setdefault(
        _DELTAS, defaultdict(lambda: defaultdict(int)))
    return deltas


def _book(target: RecipientRow, new: Any, old: Any) -> None:
    s = object_session(target)
    if s is None or target.campaign_id is None:
        return
    known_old = old not in (NO_VALUE, NEVER_SET, None)
    if known_old and old == new:
        return
    deltas = _deltas(s)
    if known_old:
        deltas[target.campaign_id][_column(old)] -= 1
    if new is not None:
        deltas[target.campaign_id][_column(new)] += 1


@event.listens_for(RecipientRow.state, "set", active_history=True)
def _on_state_set(target: RecipientRow, value: Any, oldvalue: Any, _initiator: Any) -> None:
    if attributes.instance_state(target).key is None:
        return  # a new row: counted once, in its final state, when it is flushed
    _book(target, value, oldvalue)


@event.listens_for(RecipientRow.next_at, "set", active_history=True)
def _on_next_at_set(target: RecipientRow, value: Any, oldvalue: Any, _initiator: Any) -> None:
    if attributes.instance_state(target).key is None or target.campaign_id is None:
        return
    if oldvalue in (NO_VALUE, NEVER_SET) or oldvalue != value:
        s = object_session(target)
        if s is not None:
            _deltas(s)[target.campaign_id]  # no counter moves, the version does (_apply)


def _apply(s: Session) -> None:
    deltas: dict[int, dict[str, int]] | None = s.info.pop(_DELTAS, None)
    if not deltas:
        return
    conn = s.connection()
    for cid in sorted(deltas):  # a fixed order: two nodes never lock campaigns crosswise
        values = {col: getattr(CampaignRow, col) + d for col, d in deltas[cid].items() if d}
        # any UPDATE of the row moves its version (onupdate); with no counter to move, say so
        conn.execute(_Q_BUMP.where(CampaignRow.id == cid).values(**values) if values
                     else _Q_BUMP.where(CampaignRow.id == cid).values(
                         version=CampaignRow.version + 1))


_Q_BUMP = update(CampaignRow)


@event.listens_for(Session, "before_flush")
def _before_flush(s: Session, _ctx: Any, _instances: Any) -> None:
    for obj in s.new:
        if isinstance(obj, RecipientRow) and obj.campaign_id is not None:
            _book_new(s, obj.campaign_id, obj.state or RecipientState.IDLE.value, +1)
    for obj in s.deleted:
        if isinstance(obj, RecipientRow) and obj.campaign_id is not None:
            _book_new(s, obj.campaign_id, obj.state or RecipientState.IDLE.value, -1)
    _apply(s)


def _book_new(s: Session, campaign_id: int, state: str, sign: int) -> None:
    deltas: dict[int, dict[str, int]] = s.info.setdefault(
        _DELTAS, defaultdict(lambda: defaultdict(int)))
    deltas[campaign_id][_column(state)] += sign


def _column(state: Any) -> str:
    return COLUMN[str(getattr(state, "value", state))]


@event.listens_for(Session, "before_commit")
def _before_commit(s: Session) -> None:
    # deltas booked with ``shift`` after the last flush (a Core-only transaction never flushes)
    _apply(s)


@event.listens_for(Session, "after_rollback")
def _after_rollback(s: Session) -> None:
    s.info.pop(_DELTAS, None)
