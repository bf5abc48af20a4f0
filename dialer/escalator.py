"""The daemon's side of escalation (``dialer.core.escalation`` decides, the store carries it
out): when to check, and what a check tells the log and the metrics."""

from __future__ import annotations

import logging

from dialer.core.ports import DispatchPort
from dialer.metrics import Metrics

logger = logging.getLogger("dialer.daemon")

CHECK_S = 5.0  # the longest between two checks (a run another node ended)


class Escalator:
    """Checks after a pass that moved a campaign, when a rule's time comes (the daemon folds
    it into its next due time), and at least every ``CHECK_S``; the first pass of a daemon
    always checks (a follow-up a crash left due)."""

    def __init__(self, store: DispatchPort, metrics: Metrics) -> None:
        self.store, self.metrics = store, metrics
        self._at = float("-inf")

    def due(self, now: float, *, moved: bool) -> bool:
        return moved or now >= self._at

    def check(self, now: float) -> tuple[float | None, bool]:
        """One check: (when the next rule's time comes, whether a follow-up was launched)."""
        done = self.store.escalate(now=now)
        self._at = min(now + CHECK_S, done.check_at or now + CHECK_S)
        launched = False
        for o in done.outcomes:
            result = "failed" if o.error else "launched" if o.followup_id else "never"
            self.metrics.escalations.labels(result).inc()
            if o.error:
                logger.error("campaign %s: its escalation (%s) failed: %s", o.campaign_id,
                             o.cause, o.error, extra={"campaign": o.campaign_id})
            elif o.followup_id is not None:
                launched = True
                logger.info("campaign %s escalated to campaign %s (%s)", o.campaign_id,
                            o.followup_id, o.cause, extra={"campaign": o.campaign_id})
        return done.check_at, launched
