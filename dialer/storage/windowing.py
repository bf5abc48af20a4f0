"""The scheduling pass's reads for campaigns with a calling window (``dialer.core.window``
decides which zones are open): each campaign's recipients' zones, resolved once, and the
candidates of the zones open now."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from dialer import zones
from dialer.core import scheduler, window
from dialer.core.domain import Kind
from dialer.storage.fastpath import _Q_ZONED, _Q_ZONES, FastPath
from dialer.storage.records import _as_utc


class Windowing(FastPath):
    """``_zones`` and ``_zoned`` for ``Dispatch``."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        super().__init__(url, create=create)
        # campaign id -> its recipients' zones (fixed at launch), and whether all are known here
        self._zone_cache: dict[int, tuple[dict[str | None, dt.tzinfo], bool]] = {}

    def _zones(self, s: Session, cid: int, w: window.Window) -> dict[str | None, dt.tzinfo]:
        """The zones of a campaign's recipients (None: those in the campaign's own zone)."""
        got = self._zone_cache.get(cid)
        if got is None:
            names = {z for (z,) in self._rows(s, _Q_ZONES, {"cid": cid})}
            resolved = zones.zone_map(names, w.timezone)
            got = (resolved, len(resolved) == len(names))
            self._zone_cache[cid] = got
        return got[0]

    def _zoned(self, s: Session, cid: int, n_int: int, n_ext: int, kinds: frozenset[Kind],
               at: dt.datetime, now_open: frozenset[str | None]) -> list[scheduler.Candidate]:
        """``_candidates`` of the recipients in the zones open now: the same LIMITed reads,
        one per open zone, merged in the same order (fresh by position, then retries called
        longest ago first) and cut to what this decision can take."""
        fresh: list[tuple[int, int, str]] = []
        retry: list[tuple[float, int, int, str]] = []
        order = sorted(now_open, key=lambda z: (z is not None, z or ""))
        for kind, n in ((Kind.INTERNAL, n_int), (Kind.EXTERNAL, n_ext)):
            if n <= 0 or kind not in kinds:
                continue
            got: list[tuple[int, int, str]] = []
            for z in order:
                q_fresh, _ = _Q_ZONED[(not self.sqlite, z is None)]
                got += [(pos, rid, kind.value) for pos, rid in self._rows(
                    s, q_fresh, {"cid": cid, "kind": kind.value, "n": n, "at": at, "tz": z})]
            got = sorted(got)[:n]
            fresh += got
            left = n - len(got)
            if left <= 0:
                continue
            again: list[tuple[float, int, int, str]] = []
            for z in order:
                _, q_retry = _Q_ZONED[(not self.sqlite, z is None)]
                again += [(_as_utc(last).timestamp() if last is not None else 0.0, pos, rid,
                           kind.value) for last, pos, rid in self._rows(
                    s, q_retry, {"cid": cid, "kind": kind.value, "n": left, "at": at, "tz": z})]
            retry += sorted(again)[:left]
        fresh.sort()
        retry.sort()
        return ([scheduler.Candidate(rid, Kind(k), True) for _, rid, k in fresh]
                + [scheduler.Candidate(rid, Kind(k), False) for _, _, rid, k in retry])

