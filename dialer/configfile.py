"""The shape of ``dialer.toml`` as pydantic models: every table and key, typed and bounded.

Unknown keys are refused (``extra="forbid"``: ``[sip] workrs = 4`` is an error, not a silent
default) and every problem is reported in one go, each with where it is (``[sip].workrs: unknown
key``). ``dialer.config`` turns a checked file into the daemon's ``Config`` (reading the
passwords then, and only then).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticError
from pydantic_core import ErrorDetails

from dialer.core.alerts import parse_matcher
from dialer.core.domain import SIP_REJECT_CODES
from dialer.core.errors import DialerError

MAX_CALLS_PER_WORKER = 4  # PJSUA_MAX_CALLS of the pjsua2 wheel
MAX_TRUNKS = 8  # a SIP worker's accounts (sip.worker.MAX_ACCOUNTS): one per trunk
LANGUAGES = ("en", "it")  # the prompts shipped (media/prompts)
TRUNK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


# ----- field types: each check says what is wanted, and what was found -----

def _checked(check: Callable[[Any], Any]) -> BeforeValidator:
    return BeforeValidator(check)


def ints(lo: int, hi: int | None = None, *, optional: bool = False) -> BeforeValidator:
    """An integer in ``lo..hi`` (None too when ``optional``)."""
    bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"

    def check(v: Any) -> int | None:
        if v is None and optional:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            raise ValueError(f"must be an integer {bound}, not {v!r}")
        return v

    return BeforeValidator(check)


def secs(lo: float, hi: float, *, optional: bool = False) -> BeforeValidator:
    """A number of seconds in ``lo..hi``."""

    def check(v: Any) -> float | None:
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise ValueError(f"must be a number of seconds {lo:g}..{hi:g}, not {v!r}")
        return float(v)

    return BeforeValidator(check)


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a string, not {v!r}")
    return v


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, not {v!r}")
    return v


def _sip_uri(v: Any) -> str:
    if not isinstance(v, str) or not urlsplit(v).scheme.startswith("sip"):
        raise ValueError(f"must be a SIP URI such as \"sip:pbx.example.com\", not {v!r}")
    return v


def _transport(v: Any) -> str:
    if not isinstance(v, str) or v.lower() not in ("udp", "tcp"):
        raise ValueError(f"must be udp or tcp, not {v!r}")
    return v.lower()


def _networks(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of addresses or CIDRs")
    try:
        return tuple(str(ipaddress.ip_network(n.strip(), strict=False)) for n in v)
    except ValueError as exc:
        raise ValueError(f"{exc}") from exc


def _rate(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.1 <= v <= 10000:
        raise ValueError(f"must be a number of calls per second 0.1..10000, not {v!r}")
    return float(v)


def _caller_id(v: Any) -> str | None:
    if v is None or v == "":
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ValueError(f"must be a number or a name, not {v!r}")
    return str(v)


def _bind(v: Any) -> str:
    """The IPv4 address the PBX reaches the workers at (also what they advertise in Via,
    Contact and SDP, so never a wildcard)."""
    try:
        addr = ipaddress.ip_address(v if isinstance(v, str) else "")
    except ValueError as exc:
        raise ValueError(f"must be an IPv4 address, not {v!r}") from exc
    if addr.version != 4 or addr.is_unspecified:
        raise ValueError(f"must be the IPv4 address the PBX reaches (it is advertised in SIP "
                         f"and SDP), not {v}")
    return str(v)


def _sip_port(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not (v == 0 or 1024 <= v <= 65000):
        raise ValueError(f"must be 0 (any) or 1024..65000, not {v!r}")
    return v


def _reject_code(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v not in SIP_REJECT_CODES:
        raise ValueError(f"must be one of {', '.join(map(str, SIP_REJECT_CODES))}, not {v!r}")
    return v


def _listen(v: Any) -> str:
    """An address to listen on (IPv4 or IPv6; 0.0.0.0 or :: for every one)."""
    try:
        return str(ipaddress.ip_address(v if isinstance(v, str) else ""))
    except ValueError as exc:
        raise ValueError(f"must be an IP address to listen on, not {v!r}") from exc


def _actor(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", v):
        raise ValueError(f"must be an operator name (letters, digits, . _ @ -), not {v!r}")
    return v


def _language(v: Any) -> str:
    if v not in LANGUAGES:
        raise ValueError(f"must be one of {', '.join(LANGUAGES)}, not {v!r}")
    return str(v)


Text = Annotated[str, _checked(_text)]
OptText = Annotated[str | None, _checked(lambda v: None if v is None else _text(v))]
Flag = Annotated[bool, _checked(_flag)]
SipUri = Annotated[str, _checked(_sip_uri)]
OptSipUri = Annotated[str | None, _checked(lambda v: None if v in (None, "") else _sip_uri(v))]


class Table(BaseModel):
    """A TOML table: unknown keys refused, values never coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrunkFile(Table):
    uri: SipUri
    registrar: OptSipUri = None
    username: OptText = None
    password: Any = None  # refused: see the check below
    password_env: OptText = None
    password_file: OptText = None
    transport: Annotated[str, _checked(_transport)] = "udp"
    caller_id: Annotated[str | None, _checked(_caller_id)] = None
    expires: Annotated[int, ints(30, 86400)] = 300
    retry_interval: Annotated[int, ints(1, 3600)] = 30
    proxy: OptSipUri = None
    allowed_sources: Annotated[tuple[str, ...], _checked(_networks)] = ()
    keepalive_interval: Annotated[float, secs(0, 3600)] = 5.0
    keepalive_timeout: Annotated[float, secs(0.1, 60)] = 2.0
    register_timeout: Annotated[float, secs(0.5, 60)] = 4.0
    invite_timeout: Annotated[float, secs(0.5, 32)] = 5.0
    max_calls: Annotated[int | None, ints(1, 100000, optional=True)] = None
    max_cps: Annotated[float | None, _checked(_rate)] = None
    pai: Flag = False
    health_window: Annotated[int, ints(1, 1000)] = 10
    health_failures: Annotated[int | None, ints(1, 1000, optional=True)] = None
    backoff: Annotated[float, secs(1, 86400)] = 30.0
    backoff_max: Annotated[float | None, secs(1, 86400, optional=True)] = None

    @field_validator("password", mode="before")
    @classmethod
    def _no_password(cls, v: Any) -> None:
        if v is not None:
            raise ValueError("a password is never written in the config; use password_env "
                             "or password_file")

    @model_validator(mode="after")
    def _together(self) -> TrunkFile:
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password needs a username")
        if self.health_failures is not None and self.health_failures > self.health_window:
            raise ValueError(f"health_failures must be an integer 1..{self.health_window} "
                             f"(the health_window), not {self.health_failures}")
        if self.backoff_max is not None and self.backoff_max < self.backoff:
            raise ValueError(f"backoff_max must be at least the backoff ({self.backoff:g} s)")
        return self


class RouteFile(Table):
    trunks: Annotated[tuple[str, ...], _checked(lambda v: _route(v))]


def _route(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(n, str) for n in v):
        raise ValueError("must be a non-empty list of trunk names")
    if len(set(v)) != len(v):
        raise ValueError("names a trunk twice")
    return tuple(v)


class DatabaseFile(Table):
    url: Text = "sqlite:///dialer.db"


class DataFile(Table):
    dir: OptText = None  # default: $STATE_DIRECTORY (systemd), else ./dialer-data


class SipFile(Table):
    bind: Annotated[str, _checked(_bind)] = "127.0.0.1"
    workers: Annotated[int, ints(1, 1000)] = 4
    calls_per_worker: Annotated[int, ints(1, MAX_CALLS_PER_WORKER)] = MAX_CALLS_PER_WORKER
    port: Annotated[int, _checked(_sip_port)] = 5070
    rtp_port: Annotated[int, ints(1024, 65000)] = 10000
    log_level: Annotated[int, ints(0, 6)] = 1
    reject_code: Annotated[int, _checked(_reject_code)] = 403
    drain_timeout: Annotated[float, secs(0, 3600)] = 60.0
    orphan_timeout: Annotated[float, secs(1, 3600)] = 60.0
    overload_pressure: Annotated[float, Field(ge=0.0, le=1.0)] = 0.50


class NumbersFile(Table):
    region: Text = "IT"
    extension_pattern: Text = r"\d{2,6}"

    @field_validator("extension_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return v


class MetricsFile(Table):
    port: Annotated[int | None, ints(0, 65535, optional=True)] = None
    bind: Text = "127.0.0.1"


class ClusterFile(Table):
    lease: Annotated[float, secs(3, 600)] = 15.0
    heartbeat: Annotated[float, secs(0.5, 200)] = 3.0


def _matchers(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(m, str) for m in v):
        raise ValueError('must be a list of matchers such as ["severity=\\"critical\\""]')
    for m in v:
        try:
            parse_matcher(m)
        except DialerError as exc:
            raise ValueError(str(exc)) from None
    return tuple(v)


class AlertRouteFile(Table):
    """One ``[[alertmanager.routes]]`` entry: label matchers (Alertmanager's syntax; none:
    every alert), the template an alert they match launches, and whether its resolution stops
    the campaign."""

    matchers: Annotated[tuple[str, ...], _checked(_matchers)] = ()
    template: Text
    stop_on_resolve: Flag = False


class AlertmanagerFile(Table):
    """``[alertmanager]``: the webhook receiver (off without this table)."""

    bind: Annotated[str, _checked(_listen)] = "127.0.0.1"
    port: Annotated[int, ints(0, 65535)]
    token: Any = None  # refused: see the check below
    token_env: OptText = None
    token_file: OptText = None
    actor: Annotated[str, _checked(_actor)] = "alertmanager"
    max_body: Annotated[int, ints(1024, 64 * 1024 * 1024)] = 1024 * 1024
    routes: list[AlertRouteFile] = Field(default_factory=list)

    @field_validator("token", mode="before")
    @classmethod
    def _no_token(cls, v: Any) -> None:
        if v is not None:
            raise ValueError("a token is never written in the config; use token_env or "
                             "token_file")

    @model_validator(mode="after")
    def _source(self) -> AlertmanagerFile:
        if bool(self.token_env) == bool(self.token_file):
            raise ValueError("needs its bearer token from exactly one of token_env or "
                             "token_file")
        if not self.routes:
            raise ValueError("needs at least one [[alertmanager.routes]] entry")
        return self


def _trunks(v: Any) -> Any:
    if not isinstance(v, dict):
        raise ValueError("must be a table of trunks ([trunks.internal], [trunks.external], ...)")
    bad = [n for n in v if not TRUNK_NAME.fullmatch(n)]
    if bad:
        raise ValueError(f"trunk name {bad[0]!r}: letters, digits, . _ - (at most 64)")
    if len(v) > MAX_TRUNKS:
        raise ValueError(f"{len(v)} trunks; a SIP worker holds at most {MAX_TRUNKS}")
    missing = [n for n in ("internal", "external") if n not in v]
    if missing:
        raise ValueError(f"missing trunk [trunks.{missing[0]}]")
    return v


class ConfigFile(Table):
    """The whole file."""

    node: OptText = None
    language: Annotated[str, _checked(_language)] = "en"
    database: DatabaseFile = Field(default_factory=DatabaseFile)
    data: DataFile = Field(default_factory=DataFile)
    sip: SipFile = Field(default_factory=SipFile)
    numbers: NumbersFile = Field(default_factory=NumbersFile)
    trunks: Annotated[dict[str, TrunkFile], _checked(_trunks)] = Field(default_factory=dict,
                                                                       validate_default=True)
    routes: dict[str, RouteFile] = Field(default_factory=dict)
    cluster: ClusterFile = Field(default_factory=ClusterFile)
    metrics: MetricsFile = Field(default_factory=MetricsFile)
    smtp: dict[str, Any] | None = None  # checked by dialer.mailer.parse_smtp
    alertmanager: AlertmanagerFile | None = None  # the receiver: off without it


TABLES = {"database", "data", "sip", "numbers", "cluster", "metrics", "smtp", "alertmanager"}
NESTED = {"trunks", "routes"}  # tables of tables


def validate(raw: dict[str, Any]) -> tuple[ConfigFile | None, list[str]]:
    """The checked file, or None and every problem found, each naming its place."""
    try:
        return ConfigFile.model_validate(raw), []
    except PydanticError as exc:
        return None, [problem(e) for e in exc.errors()]


def problem(e: ErrorDetails) -> str:
    """One pydantic error as the place in the file and what is wrong there."""
    loc = [str(p) for p in e["loc"]]
    kind = e["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "is required"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        msg = "must be a table"
    else:
        msg = e["msg"].removeprefix("Value error, ")
    depth = 2 if loc and loc[0] in NESTED else 1 if loc and loc[0] in TABLES else 0
    table, key = loc[:depth], loc[depth:]
    if loc[:2] == ["alertmanager", "routes"] and len(loc) > 2 and loc[2].isdigit():
        # [[alertmanager.routes]] is an array of tables: its entries by their position
        table, key = [f"alertmanager.routes #{int(loc[2]) + 1}"], loc[3:]
    if kind in ("model_type", "dict_type", "model_attributes_type") and not key:
        return f"[{'.'.join(table)}] {msg}"
    if not table:
        return f"{'.'.join(key)}: {msg}" if kind == "extra_forbidden" else \
            f"{'.'.join(key)} {msg}" if key else msg
    place = f"[{'.'.join(table)}]" + (f".{'.'.join(key)}" if key else "")
    if kind == "extra_forbidden" or not key or not msg.startswith(("must", "is ")):
        return f"{place}: {msg}"
    return f"{place} {msg}"
