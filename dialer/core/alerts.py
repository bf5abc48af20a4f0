"""Launch from monitoring (pure): which ``[[alertmanager.routes]]`` entry an Alertmanager alert
takes, whether a firing alert opens a new firing period, what a resolution does, and the name
of the campaign it launches.

An alert's *firing period* is its fingerprint (a hash of its labels, computed by Alertmanager)
and its ``startsAt``: Alertmanager repeats a firing notification with the same ``startsAt``
(every ``repeat_interval``, after a restart, from each member of an HA pair), sends the
resolution with the same ``startsAt`` and an ``endsAt``, and an alert that fires again later
has a new ``startsAt``. The store keeps one row per period (``alert_launches``, unique on both),
so "exactly once per period" holds across restarts and across several receivers.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dialer.core.domain import CampaignState
from dialer.core.errors import ValidationError

LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")
NAME_MAX = 100  # a campaign name (the caller display name): dialer.core.validation.NAME_RE


class MatchOp(str, enum.Enum):
    """Alertmanager's matcher operators."""

    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True)
class Matcher:
    """``label op value`` as Alertmanager writes it (``severity="critical"``,
    ``team=~"ops|infra"``). A missing label matches as the empty string, and a regular
    expression must match the whole value (Alertmanager anchors it), as in Alertmanager."""

    label: str
    op: MatchOp
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.label, "")
        if self.op is MatchOp.EQ:
            return v == self.value
        if self.op is MatchOp.NE:
            return v != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(v) is not None
        return found if self.op is MatchOp.RE else not found

    def __str__(self) -> str:
        return f'{self.label}{self.op.value}"{_quote(self.value)}"'


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        out, i, body = [], 0, text[1:-1]
        while i < len(body):
            c = body[i]
            if c == "\\" and i + 1 < len(body):
                nxt = body[i + 1]
                out.append("\n" if nxt == "n" else nxt)
                i += 2
                continue
            if c == '"':
                raise ValidationError("an unescaped \" inside the quoted value")
            out.append(c)
            i += 1
        return "".join(out)
    if '"' in text:
        raise ValidationError("the value must be quoted as a whole (\"...\")")
    return text


def parse_matcher(text: str) -> Matcher:
    """A matcher in Alertmanager's syntax, or ValidationError saying what is wrong."""
    m = _MATCHER.fullmatch(text)
    if m is None:
        raise ValidationError(f"{text!r}: not a matcher such as severity=\"critical\" "
                              "(label, then = != =~ or !~, then a value)")
    label, op, raw = m.group(1), MatchOp(m.group(2)), m.group(3)
    try:
        value = _unquote(raw)
    except ValidationError as exc:
        raise ValidationError(f"{text!r}: {exc}") from None
    pattern = None
    if op in (MatchOp.RE, MatchOp.NRE):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValidationError(f"{text!r}: not a regular expression ({exc})") from None
    return Matcher(label, op, value, pattern)


@dataclass(frozen=True, kw_only=True)
class AlertRoute:
    """One ``[[alertmanager.routes]]`` entry: the alerts whose labels every matcher accepts
    launch ``template``; ``stop_on_resolve``: the resolution stops (terminates) the campaign."""

    index: int  # 1-based position in the file: the first route that matches is taken
    matchers: tuple[Matcher, ...]
    template: str
    stop_on_resolve: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


class AlertStatus(str, enum.Enum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One alert of a notification, as the receiver checked it."""

    status: AlertStatus
    fingerprint: str
    starts_at: str  # canonical UTC (``period_start``): the firing period's key with fingerprint
    ends_at: str | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    generator_url: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


@dataclass(frozen=True, kw_only=True)
class KnownPeriod:
    """What the store knows of a firing period: the campaign it launched (None: it was seen
    resolved first), whether its resolution was handled, and that campaign's state now (None:
    the campaign was deleted)."""

    campaign_id: int | None
    resolved: bool
    campaign_state: CampaignState | None = None


class AlertAction(str, enum.Enum):
    """What the receiver did with one alert (the reply, the metrics, the log)."""

    LAUNCHED = "launched"  # a new firing period: a campaign was launched
    DUPLICATE = "duplicate"  # this period was handled already (a repeated notification)
    UNMATCHED = "unmatched"  # no route takes its labels: nothing done
    STOPPED = "stopped"  # resolved: its campaign was stopped (stop_on_resolve)
    RESOLVED = "resolved"  # resolved: recorded, its campaign left as it is
    FAILED = "failed"  # the launch was refused (a disabled or missing template): nothing stored


def route_for(routes: Sequence[AlertRoute], labels: Mapping[str, str]) -> AlertRoute | None:
    """The first route whose matchers all accept ``labels`` (None: no route takes them)."""
    return next((r for r in routes if r.matches(labels)), None)


def on_firing(known: KnownPeriod | None) -> AlertAction:
    """A firing alert launches a campaign only when its period is new; a period seen before,
    launched or already resolved (a late firing notification after its resolution), is not
    launched again."""
    return AlertAction.LAUNCHED if known is None else AlertAction.DUPLICATE


def on_resolved(route: AlertRoute, known: KnownPeriod | None) -> AlertAction:
    """What a resolution does: stop the campaign of its period when the route says so and the
    campaign is not finished already; else record it (once)."""
    if known is not None and known.resolved:
        return AlertAction.DUPLICATE
    if (known is not None and route.stop_on_resolve and known.campaign_state is not None
            and not known.campaign_state.finished):
        return AlertAction.STOPPED
    return AlertAction.RESOLVED


def period_start(value: dt.datetime) -> str:
    """The canonical text of a ``startsAt`` (UTC, microseconds): the same instant gives the same
    key whichever zone or precision Alertmanager wrote it in."""
    if value.tzinfo is None:
        raise ValidationError("startsAt must carry a time zone")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def campaign_name(alert: Alert) -> str:
    """The campaign's name: the alert's name, kept to what a campaign name allows (letters,
    digits, spaces, - and _; at most 100): other characters become spaces."""
    cleaned = " ".join(re.sub(r"[^\w -]", " ", alert.name).split())[:NAME_MAX].strip()
    return cleaned or "alert"


def describe(view: Mapping[str, object] | None) -> str | None:
    """One line on the alert that launched a campaign (``campaign show``, ``history show``,
    the HTML report), from the store's view of its period; None for a campaign no alert
    launched."""
    if not view:
        return None
    text = (f"Alertmanager alert {view.get('alertname')} (fingerprint {view.get('fingerprint')}, "
            f"firing since {view.get('starts_at')}, route {view.get('route')})")
    if view.get("resolved_at"):
        text += (f"; resolved {view.get('resolved_at')}"
                 + (", campaign stopped" if view.get("stopped_on_resolve") else ""))
    return text
