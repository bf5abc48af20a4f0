"""The daemon's TOML configuration (see the sample ``dialer.toml`` at the repository root)."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dialer.configfields import Secret as Secret
from dialer.configfields import parse_int as parse_int
from dialer.configfields import parse_password as parse_password
from dialer.core.cluster import LeaseTerms
from dialer.core.domain import SIP_REJECT_CODES as REJECT_CODES
from dialer.core.errors import ConfigError
from dialer.core.health import HealthPolicy
from dialer.core.recipients import DEFAULT_EXTENSION_PATTERN, DEFAULT_REGION, NumberRules
from dialer.core.routing import DEFAULT_ROUTE
from dialer.mailer import SmtpConfig, parse_smtp

MAX_CALLS_PER_WORKER = 4  # PJSUA_MAX_CALLS of the pjsua2 wheel
MAX_TRUNKS = 8  # a SIP worker's accounts (sip.worker.MAX_ACCOUNTS): one per trunk

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
class Config:
    """Everything ``dialer serve`` needs."""

    path: Path | None
    database_url: str
    bind: str = "127.0.0.1"
    workers: int = 4
    calls_per_worker: int = MAX_CALLS_PER_WORKER
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


_int = parse_int  # the names the parsers below used first
_password = parse_password


def _trunk(name: str, t: Any, base: Path) -> TrunkConfig:
    where = f"[trunks.{name}]"
    if not isinstance(t, dict):
        raise ConfigError(f"{where} must be a table")
    uri = t.get("uri")
    if not isinstance(uri, str) or not urlsplit(uri).scheme.startswith("sip"):
        raise ConfigError(f"{where}.uri must be a SIP URI such as \"sip:pbx.example.com\"")
    transport = str(t.get("transport", "udp")).lower()
    if transport not in ("udp", "tcp"):
        raise ConfigError(f"{where}.transport must be udp or tcp, not {transport!r}")
    registrar = t.get("registrar")
    username = t.get("username")
    password = _password(t, where, base)
    if registrar and not isinstance(registrar, str):
        raise ConfigError(f"{where}.registrar must be a SIP URI")
    if password is not None and not username:
        raise ConfigError(f"{where}: a password needs a username")
    proxy = t.get("proxy")
    if proxy is not None and (not isinstance(proxy, str)
                              or not urlsplit(proxy).scheme.startswith("sip")):
        raise ConfigError(f"{where}.proxy must be a SIP URI")
    sources = t.get("allowed_sources", [])
    if not isinstance(sources, list) or not all(isinstance(x, str) for x in sources):
        raise ConfigError(f"{where}.allowed_sources must be a list of addresses or CIDRs")
    try:
        nets = tuple(str(ipaddress.ip_network(n.strip(), strict=False)) for n in sources)
    except ValueError as exc:
        raise ConfigError(f"{where}.allowed_sources: {exc}") from exc
    return TrunkConfig(name=name, uri=uri, registrar=registrar or None, username=username,
                       password=password, transport=transport,
                       caller_id=str(t["caller_id"]) if t.get("caller_id") else None,
                       expires=_int(t, "expires", 300, where, 30, 86400) or 300,
                       retry_interval=_int(t, "retry_interval", 30, where, 1, 3600) or 30,
                       proxy=proxy, allowed_sources=nets,
                       keepalive_interval=_seconds(t, "keepalive_interval", 5.0, where, 0, 3600),
                       keepalive_timeout=_seconds(t, "keepalive_timeout", 2.0, where, 0.1, 60),
                       register_timeout=_seconds(t, "register_timeout", 4.0, where, 0.5, 60),
                       invite_timeout=_seconds(t, "invite_timeout", 5.0, where, 0.5, 32),
                       max_calls=_int(t, "max_calls", None, where, 1, 100000),
                       max_cps=_rate(t, "max_cps", where),
                       pai=_flag(t, "pai", where), health=_health(t, where))


def _rate(d: dict[str, Any], key: str, where: str) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.1 <= v <= 10000:
        raise ConfigError(f"{where}.{key} must be a number of calls per second 0.1..10000, "
                          f"not {v!r}")
    return float(v)


def _flag(d: dict[str, Any], key: str, where: str) -> bool:
    v = d.get(key, False)
    if not isinstance(v, bool):
        raise ConfigError(f"{where}.{key} must be true or false, not {v!r}")
    return v


def _health(t: dict[str, Any], where: str) -> HealthPolicy:
    """The trunk's health guard (``dialer.core.health``): ``health_window`` attempts, of which
    ``health_failures`` unreachable or congestion mark it unhealthy for ``backoff`` s, doubled
    each time it trips again, up to ``backoff_max``."""
    d = HealthPolicy()
    window = _int(t, "health_window", d.window, where, 1, 1000) or d.window
    failures = _int(t, "health_failures", min(d.failures, window), where, 1, window) or 1
    backoff = _seconds(t, "backoff", d.backoff, where, 1, 86400)
    return HealthPolicy(window=window, failures=failures, backoff=backoff,
                        backoff_max=_seconds(t, "backoff_max", max(d.backoff_max, backoff),
                                             where, backoff, 86400))





def _routes(raw: Any, trunks: dict[str, TrunkConfig], name: str) -> dict[str, tuple[str, ...]]:
    """``[routes.<name>] trunks = [...]``: each an ordered list of configured trunks."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: [routes] must be a table of routes")
    out: dict[str, tuple[str, ...]] = {}
    for route, r in raw.items():
        where = f"[routes.{route}]"
        names = r.get("trunks") if isinstance(r, dict) else None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where}.trunks must be a non-empty list of trunk names")
        unknown = [n for n in names if n not in trunks]
        if unknown:
            raise ConfigError(f"{where}: unknown trunk(s) {', '.join(unknown)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}.trunks names a trunk twice")
        out[str(route)] = tuple(names)
    out.setdefault(DEFAULT_ROUTE, (DEFAULT_ROUTE,))
    return out


def _seconds(d: dict[str, Any], key: str, default: float, where: str, lo: float,
             hi: float) -> float:
    """``d[key]`` as a number of seconds in ``lo..hi``; a one-line ConfigError otherwise."""
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ConfigError(f"{where}.{key} must be a number of seconds {lo:g}..{hi:g}, not {v!r}")
    return float(v)


def load(path: str | Path) -> Config:
    """Read and validate a config file; every problem is a one-line ConfigError."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from exc
    return parse(raw, p)


def parse(raw: dict[str, Any], path: Path | None = None) -> Config:
    """Validate an already-parsed config mapping."""
    base = path.parent if path else Path.cwd()
    name = str(path) if path else "config"
    db = raw.get("database", {})
    url = os.environ.get("DIALER_DB") or db.get("url") or "sqlite:///dialer.db"
    sip = raw.get("sip", {})
    trunks_raw = raw.get("trunks", {})
    if not isinstance(trunks_raw, dict):
        raise ConfigError(f"{name}: [trunks] must be a table")
    for needed in ("internal", "external"):
        if needed not in trunks_raw:
            raise ConfigError(f"{name}: missing trunk [trunks.{needed}]")
    bad = [n for n in trunks_raw if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", n)]
    if bad:
        raise ConfigError(f"{name}: trunk name {bad[0]!r}: letters, digits, . _ - (at most 64)")
    if len(trunks_raw) > MAX_TRUNKS:
        raise ConfigError(f"{name}: {len(trunks_raw)} trunks; a SIP worker holds at most "
                          f"{MAX_TRUNKS}")
    trunks = {n: _trunk(n, t, base) for n, t in trunks_raw.items()}
    metrics = raw.get("metrics", {})
    numbers = raw.get("numbers", {})
    data_dir = Path(str(raw.get("data", {}).get("dir", "dialer-data")))
    return Config(
        path=path,
        database_url=str(url),
        bind=_bind(sip),
        workers=_int(sip, "workers", 4, "[sip]", 1, 1000) or 4,
        calls_per_worker=_int(sip, "calls_per_worker", MAX_CALLS_PER_WORKER, "[sip]", 1,
                              MAX_CALLS_PER_WORKER) or MAX_CALLS_PER_WORKER,
        rtp_port=_int(sip, "rtp_port", 10000, "[sip]", 1024, 65000) or 10000,
        sip_port=_sip_port(sip),
        sip_log_level=_int(sip, "log_level", 1, "[sip]", 0, 6) or 0,
        trunks=trunks,
        routes=_routes(raw.get("routes"), trunks, name),
        metrics_port=_int(metrics, "port", None, "[metrics]", 0, 65535),
        metrics_bind=str(metrics.get("bind", "127.0.0.1")),
        numbers=NumberRules(region=str(numbers.get("region", DEFAULT_REGION)),
                            extension_pattern=str(numbers.get("extension_pattern",
                                                              DEFAULT_EXTENSION_PATTERN))),
        node=str(raw.get("node", socket.gethostname())),
        data_dir=data_dir if data_dir.is_absolute() else base / data_dir,
        language=str(raw.get("language", "en")),
        smtp=parse_smtp(raw.get("smtp"), base),
        sip_reject_code=_reject_code(sip),
        drain_timeout=_seconds(sip, "drain_timeout", 60.0, "[sip]", 0, 3600),
        orphan_timeout=_seconds(sip, "orphan_timeout", 60.0, "[sip]", 1, 3600),
        lease=_lease(raw.get("cluster", {})),
    )


def _sip_port(sip: dict[str, Any]) -> int:
    port = _int(sip, "port", 5070, "[sip]", 0, 65000)
    if port is not None and 0 < port < 1024:
        raise ConfigError(f"[sip].port must be 0 (any) or 1024..65000, not {port}")
    return port or 0


def _lease(d: dict[str, Any]) -> LeaseTerms:
    """``[cluster]``: ``lease`` and ``heartbeat`` seconds (dialer.core.cluster)."""
    terms = LeaseTerms(lease=_seconds(d, "lease", 15.0, "[cluster]", 3, 600),
                       heartbeat=_seconds(d, "heartbeat", 3.0, "[cluster]", 0.5, 200))
    problem = terms.check()
    if problem:
        raise ConfigError(f"[cluster]: {problem}")
    return terms


def _bind(sip: dict[str, Any]) -> str:
    """``[sip] bind``: the IPv4 address the PBX reaches the workers at (it is also what they
    advertise in Via, Contact and SDP, so never a wildcard)."""
    value = str(sip.get("bind", "127.0.0.1"))
    try:
        addr = ipaddress.ip_address(value)
    except ValueError as exc:
        raise ConfigError(f"[sip].bind must be an IPv4 address, not {value!r}") from exc
    if addr.version != 4 or addr.is_unspecified:
        raise ConfigError(f"[sip].bind must be the IPv4 address the PBX reaches (it is "
                          f"advertised in SIP and SDP), not {value}")
    return value


def _reject_code(sip: dict[str, Any]) -> int:
    code = _int(sip, "reject_code", 403, "[sip]", 100, 699) or 403
    if code not in REJECT_CODES:
        raise ConfigError(f"[sip].reject_code must be one of "
                          f"{', '.join(map(str, REJECT_CODES))}, not {code}")
    return code
