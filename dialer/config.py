"""The daemon's TOML configuration (see the sample ``dialer.toml`` at the repository root)."""

from __future__ import annotations

import functools
import logging
import os
import socket
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dialer.configfields import Secret as Secret
from dialer.configfields import parse_password
from dialer.configfile import MAX_CALLS_PER_WORKER as MAX_CALLS_PER_WORKER
from dialer.configfile import MAX_TRUNKS as MAX_TRUNKS
from dialer.configfile import AlertmanagerFile, ConfigFile, TrunkFile, validate
from dialer.core.alerts import AlertRoute, parse_matcher
from dialer.core.cluster import LeaseTerms
from dialer.core.errors import ConfigError
from dialer.core.health import HealthPolicy
from dialer.core.recipients import NumberRules
from dialer.core.routing import DEFAULT_ROUTE
from dialer.mailer import SmtpConfig, parse_smtp

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrunkConfig:
    """One SIP trunk: where calls go, and the optional registration."""

    name: str
    uri: str
    registrar: str | None = None
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    transport: str = "udp"
    caller_id: str | None = None
    expires: int = 300  # registration lifetime asked of the registrar
    retry_interval: int = 30  # seconds between registration attempts after a failure
    proxy: str | None = None  # optional outbound proxy
    # Extra addresses/CIDRs SIP is accepted from besides the trunk's own hosts (a PBX cluster).
    allowed_sources: tuple[str, ...] = ()
    # Registration health (issue 9): an OPTIONS to the registrar every keepalive_interval s
    # (0: none) that must be answered (any status) within keepalive_timeout s, and a REGISTER
    # that must have its final answer within register_timeout s; else the trunk is not
    # registered at once, and nothing is dialled on it until the registrar answers again.
    keepalive_interval: float = 5.0
    keepalive_timeout: float = 2.0
    register_timeout: float = 4.0
    # An INVITE that has no provisional response after this many seconds ends `unreachable`
    # (408), and a call we hung up that is not over this long after is ended: no call holds a
    # pjsua call slot for PJSIP's 32 s transaction timeout.
    invite_timeout: float = 5.0
    # Issue 13: the carrier's limits, respected by the scheduler across every node like the
    # global limits (None: no limit): channels (calls in progress) and call attempts per second.
    max_calls: int | None = None
    max_cps: float | None = None
    # A P-Asserted-Identity header with the caller number, for PBXs that insist the From user is
    # the authentication user: the caller number still shows.
    pai: bool = False
    health: HealthPolicy = field(default_factory=HealthPolicy)

    @property
    def host(self) -> str:
        """``host[:port]`` of the trunk URI."""
        return _hostport(self.uri)

    def target(self, number: str) -> str:
        """The request URI that dials ``number`` through this trunk."""
        params = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{number}@{self.host}{params}"


@dataclass(frozen=True, kw_only=True)
class AlertmanagerConfig:
    """``[alertmanager]``: the webhook receiver for Prometheus Alertmanager (dialer.alerthook)."""

    bind: str = "127.0.0.1"
    port: int = 0  # 0: any free port (tests)
    token: Secret = field(repr=False)  # the bearer token Alertmanager sends (token_env/_file)
    token_source: str = ""  # where the token is read from (config check shows this, not it)
    actor: str = "alertmanager"  # the operator the audit log names for its launches
    max_body: int = 1024 * 1024  # bytes of a request's body, at most
    routes: tuple[AlertRoute, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything ``dialer serve`` needs."""

    path: Path | None
    database_url: str
    bind: str = "127.0.0.1"
    workers: int = 4
    calls_per_worker: int = MAX_CALLS_PER_WORKER
    # the node's overload hold steps down over this CPU pressure (dialer.core.admission; 0: the
    # hold follows the workers' lateness only)
    overload_pressure: float = 0.50
    rtp_port: int = 10000  # below the kernel's ephemeral ports (32768-60999 on Linux)
    # Worker i listens on sip_port + i (UDP and TCP), so a PBX can allow the range; a worker
    # that replaces one still finishing its calls takes sip_port + workers + i. 0: any port.
    sip_port: int = 5070
    sip_log_level: int = 1
    trunks: dict[str, TrunkConfig] = field(default_factory=dict)
    # [routes.<name>] trunks = [...]: the trunks an external call of a template routed by that
    # name tries, in order; a template without a route goes by DEFAULT_ROUTE (the external trunk)
    routes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    metrics_port: int | None = None
    metrics_bind: str = "127.0.0.1"
    numbers: NumberRules = field(default_factory=NumberRules)
    node: str = field(default_factory=socket.gethostname)
    data_dir: Path = Path("dialer-data")
    language: str = "en"
    smtp: SmtpConfig | None = None  # [smtp]: None sends no mail
    sip_reject_code: int = 403  # the answer to an INVITE from the PBX (a dial-out-only UA)
    # SIGTERM: no new calls; those in progress may finish their dialogue this long, then are
    # hung up (the shipped unit's TimeoutStopSec leaves room for it).
    drain_timeout: float = 60.0
    # A SIP worker with no daemon attached this long takes it that none is coming: it lets its
    # calls finish, then exits (what no daemon took is kept in the state directory).
    orphan_timeout: float = 60.0
    # [cluster]: this node's lease on the database (dialer.core.cluster)
    lease: LeaseTerms = field(default_factory=LeaseTerms)
    log_format: str = "text"  # serve --log-format (dialer.logs), passed on to the workers
    alertmanager: AlertmanagerConfig | None = None  # [alertmanager]: None runs no receiver

    @property
    def state_dir(self) -> Path:
        """Where this node's SIP workers keep their sockets (``dialer.pool``): they outlive the
        daemon there, and its next start finds them."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.node) or "node"
        return self.data_dir / "run" / safe

    def allowed_sources(self) -> list[str]:
        """Where SIP is accepted from: the addresses of the trunks' hosts (URI, registrar,
        proxy; resolved now) and each trunk's ``allowed_sources`` networks."""
        return self.resolve_sources()[0]

    def resolve_sources(self) -> tuple[list[str], list[str]]:
        """``allowed_sources()`` and the hosts that did not resolve (their SIP is not accepted)."""
        out: list[str] = []
        failed: list[str] = []
        for t in self.trunks.values():
            for uri in (t.uri, t.registrar, t.proxy):
                if not uri:
                    continue
                host = _host(uri)
                try:
                    for info in socket.getaddrinfo(host, None):
                        addr = str(info[4][0])
                        if addr not in out:
                            out.append(addr)
                except OSError:
                    logger.warning("trunk %s: cannot resolve %s; SIP from it is not accepted",
                                   t.name, host)
                    failed.append(host)
            out.extend(n for n in t.allowed_sources if n not in out)
        return out, failed


def _host(uri: str) -> str:
    """The host of a SIP URI (an IPv6 reference without its brackets)."""
    hostport = _hostport(uri)
    if hostport.startswith("["):
        return hostport[1:].split("]", 1)[0]
    return hostport.rsplit(":", 1)[0] if ":" in hostport else hostport


def _hostport(uri: str) -> str:
    rest = uri.split(":", 1)[1] if uri.lower().startswith(("sip:", "sips:")) else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    return rest.rsplit("@", 1)[-1]


def load(path: str | Path, *, secrets: bool = True) -> Config:
    """Read and validate a config file; every problem is in one one-line ConfigError."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from exc
    return parse(raw, p, secrets=secrets)


def parse(raw: dict[str, Any], path: Path | None = None, *, secrets: bool = True) -> Config:
    """Validate an already-parsed config mapping: every problem at once, in one ConfigError
    (``problems`` lists them). ``secrets=False`` (``dialer config check``) leaves the passwords
    unread: what is checked is where they come from, not their values."""
    base = path.parent if path else Path.cwd()
    name = str(path) if path else "config"
    checked, problems = validate(raw)
    cfg: Config | None = None
    if checked is not None:
        try:
            cfg = _config(checked, path, base, secrets)
        except ConfigError as exc:
            problems = list(exc.problems)
    if cfg is None:
        raise ConfigError(f"{name}: " + "; ".join(problems), problems=problems)
    return cfg


def data_dir(configured: str | None) -> Path:
    """Where the data (audio cache, the workers' sockets) goes: ``[data] dir``, relative to
    systemd's ``$STATE_DIRECTORY`` (``StateDirectory=dialer``: /var/lib/dialer) when set, else to
    the working directory; by default that directory itself, else ``./dialer-data``."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    root = Path(state) if state else Path.cwd()
    if configured is None:
        return root if state else root / "dialer-data"
    p = Path(configured)
    return p if p.is_absolute() else root / p


def _config(f: ConfigFile, path: Path | None, base: Path, secrets: bool) -> Config:
    """The daemon's Config of a checked file; what cannot be known from the file alone (the
    passwords, the routes' trunks, [cluster], [smtp]) is checked here, all of it."""
    problems: list[str] = []

    def attempt(what: Callable[[], T]) -> T | None:
        try:
            return what()
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None

    trunks: dict[str, TrunkConfig | None] = {}
    for n, t in f.trunks.items():
        trunks[n] = attempt(functools.partial(_trunk, n, t, base, secrets))
    routes: dict[str, tuple[str, ...]] = {}
    for route, r in f.routes.items():
        unknown = [n for n in r.trunks if n not in f.trunks]
        if unknown:
            problems.append(f"[routes.{route}]: unknown trunk(s) {', '.join(unknown)}")
        routes[route] = r.trunks
    routes.setdefault(DEFAULT_ROUTE, (DEFAULT_ROUTE,))
    lease = LeaseTerms(lease=f.cluster.lease, heartbeat=f.cluster.heartbeat)
    if problem := lease.check():
        problems.append(f"[cluster]: {problem}")
    smtp = attempt(lambda: parse_smtp(f.smtp, base, secrets=secrets))
    am = f.alertmanager
    alertmanager = attempt(lambda: _alertmanager(am, base, secrets)) if am else None
    if problems:
        raise ConfigError("; ".join(problems), problems=problems)
    return Config(
        path=path,
        database_url=os.environ.get("DIALER_DB") or f.database.url,
        bind=f.sip.bind,
        workers=f.sip.workers,
        calls_per_worker=f.sip.calls_per_worker,
        overload_pressure=f.sip.overload_pressure,
        rtp_port=f.sip.rtp_port,
        sip_port=f.sip.port,
        sip_log_level=f.sip.log_level,
        trunks={n: t for n, t in trunks.items() if t is not None},
        routes=routes,
        metrics_port=f.metrics.port,
        metrics_bind=f.metrics.bind,
        numbers=NumberRules(region=f.numbers.region, extension_pattern=f.numbers.extension_pattern),
        node=f.node or socket.gethostname(),
        data_dir=data_dir(f.data.dir),
        language=f.language,
        smtp=smtp,
        sip_reject_code=f.sip.reject_code,
        drain_timeout=f.sip.drain_timeout,
        orphan_timeout=f.sip.orphan_timeout,
        lease=lease,
        alertmanager=alertmanager,
    )


def _alertmanager(a: AlertmanagerFile, base: Path, secrets: bool) -> AlertmanagerConfig:
    where = "[alertmanager]"
    token = parse_password(a.model_dump(include={"token_env", "token_file"}, exclude_none=True),
                           where, base, reveal=secrets, key="token")
    assert token is not None  # AlertmanagerFile wants one source
    if secrets and not token.reveal():
        raise ConfigError(f"{where}: the bearer token is empty")
    source = f"env {a.token_env}" if a.token_env else f"file {a.token_file}"
    routes = tuple(AlertRoute(index=i, matchers=tuple(parse_matcher(m) for m in r.matchers),
                              template=r.template, stop_on_resolve=r.stop_on_resolve)
                   for i, r in enumerate(a.routes, 1))
    return AlertmanagerConfig(bind=a.bind, port=a.port, token=token, token_source=source,
                              actor=a.actor, max_body=a.max_body, routes=routes)


def _trunk(name: str, t: TrunkFile, base: Path, secrets: bool) -> TrunkConfig:
    where = f"[trunks.{name}]"
    password = parse_password(t.model_dump(include={"password_env", "password_file"},
                                           exclude_none=True), where, base, reveal=secrets)
    d = HealthPolicy()
    failures = t.health_failures if t.health_failures is not None else min(d.failures,
                                                                           t.health_window)
    return TrunkConfig(name=name, uri=t.uri, registrar=t.registrar, username=t.username,
                       password=password, transport=t.transport, caller_id=t.caller_id,
                       expires=t.expires, retry_interval=t.retry_interval, proxy=t.proxy,
                       allowed_sources=t.allowed_sources,
                       keepalive_interval=t.keepalive_interval,
                       keepalive_timeout=t.keepalive_timeout,
                       register_timeout=t.register_timeout, invite_timeout=t.invite_timeout,
                       max_calls=t.max_calls, max_cps=t.max_cps, pai=t.pai,
                       health=HealthPolicy(window=t.health_window, failures=failures,
                                           backoff=t.backoff,
                                           backoff_max=(t.backoff_max if t.backoff_max
                                                        is not None else
                                                        max(d.backoff_max, t.backoff))))
