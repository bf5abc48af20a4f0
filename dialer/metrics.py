"""Prometheus metrics of the daemon (prometheus-client), on their own registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    """The daemon's metrics; ``serve`` exposes them over HTTP for Prometheus to scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Gauge("dialer_calls_in_progress", "Calls in progress, by kind.", ["kind"],
                           registry=r)
        self.attempts = Counter("dialer_attempts", "Finished call attempts, by outcome.",
                                ["outcome"], registry=r)
        self.confirmations = Counter("dialer_confirmations", "DTMF confirmations received.",
                                     ["what"], registry=r)
        self.trunk_registered = Gauge("dialer_trunk_registered",
                                      "1 when the trunk can place calls (registered or "
                                      "needing no registration).", ["trunk"], registry=r)
        self.workers_ready = Gauge("dialer_workers_ready", "SIP worker processes ready.",
                                   registry=r)
        self.workers_busy = Gauge("dialer_worker_busy_slots", "Call slots in use in the pool.",
                                  registry=r)
        self.worker_restarts = Counter("dialer_worker_restarts", "SIP workers restarted.",
                                       registry=r)
        self.scheduler_seconds = Histogram("dialer_scheduler_decision_seconds",
                                           "Time of one scheduling pass.", registry=r,
                                           buckets=(.0005, .001, .002, .005, .01, .025, .05, .1,
                                                    .25, .5, 1.0))
        self._server: Any = None

    def serve(self, bind: str, port: int) -> None:
        self._server = start_http_server(port, addr=bind, registry=self.registry)

    def stop(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            thread.join(timeout=2)
            server.server_close()
            self._server = None
