"""The Alertmanager receiver: an HTTP endpoint of ``dialer serve`` for Prometheus Alertmanager's
webhook notifications (``[alertmanager]`` in dialer.toml; off without it).

``POST /alertmanager`` (the one path) with ``Authorization: Bearer <token>`` and a notification
of Alertmanager's webhook schema (version 4). Each alert is matched against the routes
(``dialer.core.alerts`` decides: the first route whose matchers accept its labels); a firing
alert launches the route's template, once per firing period (the store's ``alert_launches``
row, in the launch's own transaction), and a resolved one stops that campaign when the route
has ``stop_on_resolve``. The reply is 200 with what was done to each alert.

Nothing is stored for a request that is refused: 404 another path, 405 another method, 401 a
missing or wrong token (compared in constant time; checked before the body is read), 413 a body
over ``max_body``, 400 one that is not JSON or not a notification, 403 when the receiver's
operator (``actor``, default ``alertmanager``) does not hold the campaigns role. 503 when the
database does not answer: Alertmanager retries, and what was done already is not done twice.
The token never reaches a log line or the database.

Threads: ``http.server.ThreadingHTTPServer`` serves each request on a thread of its own, off the
daemon's loop. The store is safe there: every call is its own transaction on a connection of
the engine's pool (SQLite's single writer serialises them with the loop's own, as with the
mail thread's); the loop is told of a launch (``on_change``) so that its next pass, within the
safety interval anyway, places the calls.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError

from dialer.core.alerts import (
    Alert,
    AlertAction,
    AlertStatus,
    period_start,
    route_for,
)
from dialer.core.errors import DialerError, StoreUnavailable
from dialer.core.permissions import Role, allows

if TYPE_CHECKING:
    from dialer.config import AlertmanagerConfig
    from dialer.core.ports import AlertPort
    from dialer.metrics import Metrics

logger = logging.getLogger(__name__)

PATH = "/alertmanager"
FINGERPRINT = r"^[0-9A-Za-z]{1,64}$"


class _Model(BaseModel):
    # Alertmanager may add fields in a later version: unknown ones are ignored, known ones
    # are checked strictly (no number taken for a string)
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class AlertIn(_Model):
    """One alert of a webhook notification."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: AwareDatetime = Field(strict=False)  # RFC 3339 text
    endsAt: AwareDatetime | None = Field(default=None, strict=False)
    generatorURL: str = ""
    fingerprint: str = Field(pattern=FINGERPRINT)


class Notification(_Model):
    """Alertmanager's webhook payload (version 4)."""

    version: Literal["4"]
    groupKey: str
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str]
    commonLabels: dict[str, str]
    commonAnnotations: dict[str, str]
    externalURL: str
    alerts: list[AlertIn] = Field(min_length=1)


class Refused(Exception):
    """A request answered with an error status (nothing stored)."""

    def __init__(self, status: int, result: str, message: str) -> None:
        super().__init__(message)
        self.status, self.result = status, result


class AlertReceiver:
    """The webhook endpoint and what it does with each notification."""

    def __init__(self, config: AlertmanagerConfig, store: AlertPort, *,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.on_change = on_change  # the daemon's notify: a campaign was launched or stopped
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----- the server -----

    def start(self) -> None:
        """Listen on ``bind:port`` (a DialerError when it cannot) and serve on a thread."""
        receiver = self

        class Handler(_Handler):
            pass

        Handler.receiver = receiver
        server = ThreadingHTTPServer if ":" not in self.config.bind else _Ipv6Server
        try:
            self._server = server((self.config.bind, self.config.port), Handler)
        except OSError as exc:
            raise DialerError(f"[alertmanager]: cannot listen on {self.config.bind}:"
                              f"{self.config.port}: {exc.strerror or exc}") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="alertmanager-receiver", daemon=True)
        self._thread.start()
        logger.info("Alertmanager receiver on http://%s:%d%s (%d route(s), token from %s)",
                    self.config.bind, self.port, PATH, len(self.config.routes),
                    self.config.token_source)
        actor = self.config.actor
        try:
            if not allows(self.store.roles_of(actor), Role.CAMPAIGNS):
                logger.warning("Alertmanager receiver: operator %r does not hold the campaigns "
                               "role, every notification is refused until an admin runs: "
                               "dialer operator add %s --role campaigns", actor, actor)
        except StoreUnavailable:
            pass  # the daemon says so itself

    @property
    def port(self) -> int:
        """The port it listens on (the configured one, or the one chosen for port 0)."""
        return int(self._server.server_address[1]) if self._server else self.config.port

    def stop(self) -> None:
        """Stop taking requests (those being handled finish on their threads)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ----- a request -----

    def authorized(self, header: str | None) -> bool:
        """Whether ``Authorization`` carries the bearer token (compared in constant time)."""
        scheme, _, given = (header or "").partition(" ")
        expected = self.config.token.reveal().encode()
        return (scheme.lower() == "bearer"
                and hmac.compare_digest(given.strip().encode(), expected))

    def notification(self, body: bytes) -> Notification:
        """The checked notification of a request body (``Refused`` 400 otherwise)."""
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refused(400, "bad_request", f"not JSON: {exc}") from None
        except RecursionError:  # [[[[...: deeper than any notification
            raise Refused(400, "bad_request", "not JSON: nested too deep") from None
        try:
            return Notification.model_validate(raw)
        except PydanticError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            raise Refused(400, "bad_request", f"not an Alertmanager notification: {where}: "
                          f"{first['msg']} ({exc.error_count()} problem(s))") from None

    def handle(self, note: Notification) -> list[dict[str, Any]]:
        """Do what each alert of a checked notification asks; what was done, per alert.

        ``Refused`` 403 (nothing done) when an alert would act and the receiver's operator
        may not launch campaigns; StoreUnavailable when the database does not answer."""
        alerts = [_alert(a) for a in note.alerts]
        routed = [(a, route_for(self.config.routes, a.labels)) for a in alerts]
        actor = self.config.actor
        if any(r is not None for _, r in routed) and not allows(self.store.roles_of(actor),
                                                                Role.CAMPAIGNS):
            raise Refused(403, "forbidden", f"operator {actor!r} does not hold the campaigns "
                          f"role: dialer operator add {actor} --role campaigns")
        done: list[dict[str, Any]] = []
        for alert, route in routed:
            entry: dict[str, Any] = {"fingerprint": alert.fingerprint, "alertname": alert.name,
                                     "status": alert.status.value, "starts_at": alert.starts_at}
            campaign: int | None = None
            if route is None:
                action = AlertAction.UNMATCHED
            else:
                entry["route"] = route.index
                try:
                    if alert.status is AlertStatus.FIRING:
                        action, campaign = self.store.alert_fired(alert, route, actor=actor,
                                                                  now=self.clock())
                    else:
                        action, campaign = self.store.alert_resolved(alert, route, actor=actor,
                                                                     now=self.clock())
                except StoreUnavailable:
                    raise
                except DialerError as exc:  # a missing or disabled template: nothing stored
                    action = AlertAction.FAILED
                    entry["error"] = str(exc)
                    logger.error("alert %r (%s): route %d cannot launch template %r: %s",
                                 alert.name, alert.fingerprint, route.index, route.template,
                                 exc)
            entry["action"], entry["campaign"] = action.value, campaign
            if action in (AlertAction.LAUNCHED, AlertAction.STOPPED):
                logger.info("alert %r (%s, since %s) %s: campaign %s", alert.name,
                            alert.fingerprint, alert.starts_at, action.value, campaign,
                            extra={"campaign": campaign})
                if self.on_change is not None:
                    self.on_change()
            if self.metrics is not None:
                self.metrics.alert_handled(action.value, alert.name,
                                           route.template if route else None)
            done.append(entry)
        return done

    def respond(self, method: str, path: str, auth: str | None, length: str | None,
                read: Callable[[int], bytes], client: str = "") -> tuple[int, dict[str, Any]]:
        """The status and JSON reply of one request (``read``: the body, once authorized;
        ``client``: its address, for the log)."""
        try:
            if path.split("?", 1)[0] != PATH:
                raise Refused(404, "not_found", f"no such path: POST {PATH}")
            if method != "POST":
                raise Refused(405, "method_not_allowed", f"{method} not allowed: POST {PATH}")
            if not self.authorized(auth):
                raise Refused(401, "unauthorized", "missing or wrong bearer token")
            try:
                size = int(length or "")
            except ValueError:
                raise Refused(400, "bad_request", "a Content-Length is required") from None
            if size < 0 or size > self.config.max_body:
                raise Refused(413, "too_large", f"the body is over {self.config.max_body} "
                              "bytes")
            done = self.handle(self.notification(read(size)))
        except Refused as exc:
            self._count(exc.result)
            if exc.status not in (404, 405):
                logger.warning("Alertmanager receiver: %d to %s: %s", exc.status,
                               client or "?", exc)
            return exc.status, {"error": str(exc)}
        except StoreUnavailable as exc:
            self._count("unavailable")
            logger.error("Alertmanager receiver: the database does not answer (%s): 503, "
                         "Alertmanager will retry", exc)
            return 503, {"error": "the database does not answer; retry"}
        self._count("ok")
        return 200, {"alerts": done}

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.alert_request(result)


def _alert(a: AlertIn) -> Alert:
    ends = (period_start(a.endsAt) if a.status == "resolved" and a.endsAt is not None
            else None)
    return Alert(status=AlertStatus(a.status), fingerprint=a.fingerprint,
                 starts_at=period_start(a.startsAt), ends_at=ends, labels=dict(a.labels),
                 annotations=dict(a.annotations), generator_url=a.generatorURL)


class _Ipv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """The HTTP side: every method goes to ``AlertReceiver.respond``."""

    receiver: AlertReceiver
    timeout = 10  # seconds a client may take to send its request (a slow one holds a thread)
    server_version = "dialer"
    sys_version = ""

    def _serve(self) -> None:
        method = self.command
        status, reply = self.receiver.respond(
            method, self.path, self.headers.get("Authorization"),
            self.headers.get("Content-Length"), self.rfile.read, self.address_string())
        body = (json.dumps(reply) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="dialer"')
        if status == 405:
            self.send_header("Allow", "POST")
        if status != 200:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """The request line at debug level (never a header: the token is in one)."""
        logger.debug("Alertmanager receiver: %s %s", self.address_string(), format % args)
