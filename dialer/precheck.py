"""``dialer campaign check TEMPLATE``: what would go wrong if this template were launched now.

``check_campaign`` takes values (the template, the number rules, the trunks' registration states,
the limits, the audio and the prompts) and returns findings; it reads only the audio files it is
handed and writes nothing. The estimate of the duration is a pure function too
(``estimate_duration``), so the live view can reuse it.

Findings, by code (severity):

- ``template_disabled`` (error), ``no_recipients`` (error), ``threshold_too_high`` (error)
- ``bad_number`` (error): a number the current ``[numbers]`` rules no longer read as stored
  (wrong extension pattern, invalid E.164, kind mismatch)
- ``duplicate_number`` (error): two recipients that dial the same number
- ``bad_email`` (warning): an address the message could not be mailed to
- ``audio_missing`` / ``audio_invalid`` (error): the message is not in the database or is not a
  normalised WAV the SIP library can play; ``audio_length`` (warning) when its length disagrees
  with the template's; ``prompt_missing`` / ``prompt_invalid`` (error) for the prompts the
  dialogue needs
- ``trunk_unregistered`` (error) / ``trunk_unknown`` (warning): a trunk some recipients need
- ``no_capacity`` (error): a limit of 0 leaves some recipients uncallable
- ``would_block`` (warning): the global limit of active campaigns is reached
- ``estimate`` (info): the estimated duration under the current limits
"""

from __future__ import annotations

import enum
import json
import logging
import math
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dialer import zones
from dialer.core import routing, window
from dialer.core.domain import CampaignSettings, Kind, Limits
from dialer.core.errors import DialerError, ValidationError
from dialer.core.keys import RANDOM, RANDOM_DIGITS
from dialer.core.recipients import NumberRules, normalise_email, normalise_number
from media.audio import validate_normalised, wav_seconds

logger = logging.getLogger(__name__)


class Severity(str, enum.Enum):
    """How bad a finding is: errors should stop a launch, warnings deserve a look."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One thing the check found; ``position`` and ``number`` name the recipient, if any."""

    severity: Severity
    code: str
    message: str
    position: int | None = None
    number: str | None = None

    def line(self) -> str:
        """One line for a terminal: ``error  duplicate_number  #4 201: ...``."""
        who = ""
        if self.position is not None:
            who = f"#{self.position} {self.number or ''}".rstrip() + ": "
        return f"{self.severity.value:<7} {self.code:<18} {who}{self.message}"

    def as_dict(self) -> dict[str, object]:
        """For ``--json``."""
        return {"severity": self.severity.value, "code": self.code, "message": self.message,
                "position": self.position, "number": self.number}


class RecipientLike(Protocol):
    """What the check reads of a recipient (``dialer.core.recipients.Recipient`` fits)."""

    @property
    def number(self) -> str: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def email(self) -> str | None: ...


class TemplateLike(Protocol):
    """What the check reads of a template (``dialer.storage.store.TemplateView`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def settings(self) -> CampaignSettings: ...
    @property
    def audio_seconds(self) -> float: ...
    @property
    def recipients(self) -> Sequence[RecipientLike]: ...


# ----- the estimate -----

@dataclass(frozen=True, kw_only=True)
class CallModel:
    """Assumptions about how calls go, for the estimate (defaults: a working day's alert)."""

    answer_rate: float = 0.7  # share of attempts answered and confirmed
    ring_seconds: float = 8.0  # ringing before an answer
    setup_seconds: float = 1.0  # INVITE to the first ring
    key_seconds: float = 3.0  # reaction time before a key is pressed
    prompt_seconds: float = 4.0  # each of "press 1", "press 9", goodbye, when not measured


@dataclass(frozen=True, kw_only=True)
class DurationEstimate:
    """Expected and worst-case duration of a campaign, and what they rest on."""

    expected_seconds: float
    worst_seconds: float  # nobody answers: every attempt rings out
    concurrency: int  # calls at a time, all limits applied
    calls_expected: float
    success_call_seconds: float
    failed_call_seconds: float


def _min_limit(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def estimate_duration(*, internal: int, external: int, settings: CampaignSettings,
                      global_limits: Limits, capacity: int | None = None,
                      message_seconds: float,
                      prompt_seconds: Mapping[str, float] | None = None,
                      model: CallModel = CallModel()) -> DurationEstimate:
    """Estimate how long ``internal`` + ``external`` recipients take under the limits.

    Work (call-seconds) is divided by the concurrency each limit allows (campaign and global,
    total and per kind, and ``capacity``: the worker slots); retries add their delay to the
    longest chain of attempts of one recipient. Unlimited everywhere and no capacity: all at once.
    """
    prompts = prompt_seconds or {}
    st = settings
    n = internal + external
    p = min(max(model.answer_rate, 0.0), 1.0)
    attempts = max(1, st.attempts)

    def prompt(name: str) -> float:
        return float(prompts.get(name, model.prompt_seconds))

    success = model.setup_seconds + model.ring_seconds + message_seconds + prompt("goodbye")
    if st.answer_confirm:
        success += prompt("answer_prompt") + model.key_seconds
    if st.listen_confirm:
        success += prompt("listen_prompt") + model.key_seconds
    failed = model.setup_seconds + st.ring_timeout
    # expected attempts per recipient: 1 + q + q^2 + ... (attempts terms), q = 1 - p
    q = 1.0 - p
    calls = attempts if p == 0 else (1.0 - q ** attempts) / p
    reached = 1.0 - q ** attempts
    per_recipient = (calls - reached) * failed + reached * success
    lim = st.limits
    c_total = _min_limit(lim.total, global_limits.total, capacity)
    c_int = _min_limit(lim.internal, global_limits.internal, c_total)
    c_ext = _min_limit(lim.external, global_limits.external, c_total)

    def span(work: float, count: int, conc: int | None) -> float:
        if count == 0:
            return 0.0
        c = count if conc is None else max(1, min(conc, count))
        return work / c

    expected = max(span(internal * per_recipient, internal, c_int),
                   span(external * per_recipient, external, c_ext),
                   span(n * per_recipient, n, c_total))
    worst = max(span(internal * attempts * failed, internal, c_int),
                span(external * attempts * failed, external, c_ext),
                span(n * attempts * failed, n, c_total))
    # one recipient's chain of attempts cannot be faster than its retry delays allow
    expected_chain = (math.ceil(calls) - 1) * (failed + st.retry_delay) + success if n else 0.0
    worst_chain = (attempts - 1) * (failed + st.retry_delay) + failed if n else 0.0
    concurrency = n if c_total is None else min(c_total, n)
    if c_int is not None and external == 0:
        concurrency = min(concurrency, c_int)
    if c_ext is not None and internal == 0:
        concurrency = min(concurrency, c_ext)
    return DurationEstimate(expected_seconds=max(expected, expected_chain),
                            worst_seconds=max(worst, worst_chain),
                            concurrency=max(0, concurrency), calls_expected=calls * n,
                            success_call_seconds=success, failed_call_seconds=failed)


def _human(seconds: float) -> str:
    s = int(math.ceil(seconds))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{round(s / 60)} min"
    return f"{s // 3600} h {round(s % 3600 / 60):02d} min"


# ----- trunk states from a running daemon -----

def trunk_states_from_metrics(text: str,
                              metric: str = "dialer_trunk_registered") -> dict[str, bool]:
    """``dialer_trunk_registered{trunk=...}`` (or ``metric``, such as ``dialer_trunk_healthy``)
    of a Prometheus exposition, as trunk -> bool."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, bool] = {}
    for family in text_string_to_metric_families(text):
        if family.name == metric:
            for s in family.samples:
                trunk = s.labels.get("trunk")
                if trunk:
                    out[trunk] = out.get(trunk, True) and s.value >= 1
    return out


def fetch_trunk_states(url: str, timeout: float = 2.0,
                       metric: str = "dialer_trunk_registered") -> dict[str, bool | None]:
    """Trunk states (``metric``) from a daemon's metrics endpoint (``http://host:port/metrics``).

    An unreachable daemon gives ``{}`` (every trunk then reads as unknown), never an exception:
    a pre-launch check must work while the daemon is down.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (operator URL)
            text = resp.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError) as exc:
        logger.info("no trunk states from %s: %s", url, exc)
        return {}
    return dict(trunk_states_from_metrics(text, metric))


# ----- the check -----

def _audio_findings(audio: Path | bytes | None, expected_seconds: float) -> list[Finding]:
    if audio is None:
        return [Finding(severity=Severity.ERROR, code="audio_missing",
                        message="the message audio is not in the database")]
    with tempfile.TemporaryDirectory(prefix="dialer-check-") as tmp:
        path = audio if isinstance(audio, Path) else Path(tmp) / "message.wav"
        if isinstance(audio, bytes):
            path.write_bytes(audio)
        if not path.is_file():
            return [Finding(severity=Severity.ERROR, code="audio_missing",
                            message=f"the message audio file {path} does not exist")]
        try:
            validate_normalised(path)
            seconds = wav_seconds(path)
        except DialerError as exc:
            shown = str(exc).replace(str(path), "message audio")
            return [Finding(severity=Severity.ERROR, code="audio_invalid", message=shown)]
    if expected_seconds and abs(seconds - expected_seconds) > 0.05:
        return [Finding(severity=Severity.WARNING, code="audio_length",
                        message=f"the message lasts {seconds:.2f} s, the template says "
                                f"{expected_seconds:.2f} s")]
    return []


def _prompt_findings(settings: CampaignSettings,
                     prompt_set: Callable[[str], Mapping[str, Path]]
                     ) -> tuple[list[Finding], dict[str, float]]:
    needed = ["goodbye"]
    if settings.answer_confirm:
        needed.append("answer_prompt")
    if settings.listen_confirm:
        needed.append("listen_prompt")
    if settings.connect_key is not None:
        needed += ["connecting", "transfer_failed"]
    try:
        prompts = prompt_set(settings.language)
    except DialerError as exc:
        return [Finding(severity=Severity.ERROR, code="prompt_missing", message=str(exc))], {}
    findings: list[Finding] = []
    seconds: dict[str, float] = {}
    for name in needed:
        path = prompts.get(name)
        if path is None or not Path(path).is_file():
            findings.append(Finding(severity=Severity.ERROR, code="prompt_missing",
                                    message=f"prompt {name!r} ({settings.language}) is missing"))
            continue
        try:
            validate_normalised(path)
            seconds[name] = wav_seconds(path)
        except DialerError as exc:
            findings.append(Finding(severity=Severity.ERROR, code="prompt_invalid",
                                    message=f"prompt {name!r}: {exc}"))
    return findings + _key_prompt_findings(settings), seconds


def _key_prompt_findings(settings: CampaignSettings) -> list[Finding]:
    """A random key plays the shipped prompt of its digit, a fixed key the one that says it, a
    connect key the offer that says it: each must be there and sound."""
    from media.prompts import CONNECT_PROMPT, DEFAULT_KEYS, key_prompt_path

    findings: list[Finding] = []
    for name, on, key in (("answer_prompt", settings.answer_confirm, settings.answer_key),
                          ("listen_prompt", settings.listen_confirm, settings.listen_key),
                          (CONNECT_PROMPT, settings.connect_key is not None,
                           settings.connect_key)):
        keys = "" if not on or key is None else RANDOM_DIGITS if key == RANDOM else key
        for digit in keys.replace(DEFAULT_KEYS.get(name, ""), ""):  # 1, 9: checked above
            try:
                validate_normalised(key_prompt_path(settings.language, name, digit))
            except DialerError as exc:
                findings.append(Finding(severity=Severity.ERROR, code="prompt_missing",
                                        message=f"prompt {name!r} for key {digit}: {exc}"))
    return findings


def _default_prompt_set(language: str) -> Mapping[str, Path]:
    from media.prompts import prompt_set

    return prompt_set(language)


def check_campaign(template_view: TemplateLike, *, rules: NumberRules,
                   trunk_states: Mapping[str, bool | None], limits: Limits,
                   audio: Path | bytes | None,
                   prompt_set: Callable[[str], Mapping[str, Path]] | None = None,
                   recipients: Sequence[RecipientLike] | None = None,
                   max_campaigns: int | None = None, active_campaigns: int = 0,
                   capacity: int | None = None, model: CallModel = CallModel(),
                   routes: Mapping[str, tuple[str, ...]] | None = None,
                   trunk_health: Mapping[str, bool] | None = None,
                   now: float | None = None) -> list[Finding]:
    """Everything that would go wrong launching ``template_view`` now, errors first.

    ``trunk_states``: trunk name -> registered (True), not registered (False) or unknown (None
    or absent); internal recipients use trunk ``internal``, external ones the trunks of the
    template's route (``routes``, ``dialer.core.routing``; the route ``external`` by default):
    they can be called when one of them is registered and in service (``trunk_health``: trunk
    -> healthy, from the daemon's metrics).
    ``limits``/``max_campaigns``: the global settings in force; ``active_campaigns``: how many are
    active now. ``audio``: the message as a file (``SqlStore.media_file``) or bytes, None when the
    database has none. ``prompt_set``: language -> prompt files (``media.prompts.prompt_set``).
    ``recipients`` replaces the template's list (a launch with ``--recipients``).
    ``capacity``: call slots of the worker pool (``workers * calls_per_worker``).
    ``now``: a calling window closed at that time is reported (with when it opens).
    """
    tpl = template_view
    st = tpl.settings
    recs = list(recipients if recipients is not None else tpl.recipients)
    found: list[Finding] = []

    def add(severity: Severity, code: str, message: str, position: int | None = None,
            number: str | None = None) -> None:
        found.append(Finding(severity=severity, code=code, message=message, position=position,
                             number=number))

    if not tpl.enabled:
        add(Severity.ERROR, "template_disabled", f"template {tpl.name!r} is disabled")
    if not recs:
        add(Severity.ERROR, "no_recipients", f"template {tpl.name!r} has no recipients")
    if st.threshold is not None and st.threshold > len(recs):
        add(Severity.ERROR, "threshold_too_high",
            f"the completion threshold {st.threshold} is above the {len(recs)} recipients")

    # numbers: each read again with the current rules; duplicates by what is actually dialled
    seen: dict[str, int] = {}
    kinds = {Kind.INTERNAL: 0, Kind.EXTERNAL: 0}
    for pos, r in enumerate(recs, start=1):
        try:
            dialled, kind = normalise_number(r.number, rules, r.kind)
        except ValidationError as exc:
            add(Severity.ERROR, "bad_number", str(exc), pos, r.number)
            continue
        if dialled != r.number:
            add(Severity.WARNING, "bad_number",
                f"stored as {r.number} but the current rules read it as {dialled}", pos, r.number)
        kinds[kind] += 1
        if dialled in seen:
            add(Severity.ERROR, "duplicate_number",
                f"{dialled} is also recipient #{seen[dialled]}: it would be called twice",
                pos, r.number)
        else:
            seen[dialled] = pos
        if r.email:
            try:
                normalise_email(r.email)
            except ValidationError as exc:
                add(Severity.WARNING, "bad_email", str(exc), pos, r.number)

    found.extend(_audio_findings(audio, tpl.audio_seconds))
    prompt_findings, prompt_seconds = _prompt_findings(st, prompt_set or _default_prompt_set)
    found.extend(prompt_findings)

    for kind, count in kinds.items():
        if not count:
            continue
        route = st.external_route if kind is Kind.EXTERNAL else None
        names = ((routing.INTERNAL_TRUNK,) if kind is Kind.INTERNAL
                 else routing.external_trunks(routes or {}, route))
        healthy = trunk_health or {}
        states = [False if healthy.get(n) is False else trunk_states.get(n) for n in names]
        trunk = names[0] if len(names) == 1 else f"route {route} ({', '.join(names)})"
        if not names:
            add(Severity.ERROR, "route_unknown",
                f"route {route} is not configured ([routes.{route}]): its {count} recipient(s) "
                "would wait")
        elif True not in states and None not in states:
            out_of_service = [n for n in names if healthy.get(n) is False]
            add(Severity.ERROR, "trunk_unregistered",
                f"trunk {trunk} is not registered"
                + (f" or out of service ({', '.join(out_of_service)})" if out_of_service else "")
                + f": its {count} recipient(s) would wait until it is")
        elif True not in states:
            add(Severity.WARNING, "trunk_unknown",
                f"registration of trunk {trunk} is unknown (is `dialer serve` running?); "
                f"{count} recipient(s) need it")
        for scope, value in ((f"campaign max {kind.value} calls",
                              getattr(st.limits, kind.value)),
                             ("campaign max calls", st.limits.total),
                             (f"global max {kind.value} calls", getattr(limits, kind.value)),
                             ("global max calls", limits.total), ("worker capacity", capacity)):
            if value == 0:
                add(Severity.ERROR, "no_capacity",
                    f"{scope} is 0: the {count} {kind.value} recipient(s) cannot be called")
                break
    w = window.window_of(st.window, st.window_days, st.timezone)
    if w is not None and now is not None:
        zs = zones.zone_map([None, *(getattr(r, "timezone", None) for r in recs)], w.timezone)
        if not window.open_zones(now, w, zs):
            tz = zs.get(None)
            add(Severity.WARNING, "window_closed", f"calling window {w} is closed now: "
                + (window.waiting_text(now, w, tz, w.timezone) if tz is not None
                   else "its zone is unknown here"))
    if max_campaigns is not None and active_campaigns >= max_campaigns:
        add(Severity.WARNING, "would_block",
            f"{active_campaigns} campaign(s) active, the global limit is {max_campaigns}: it "
            "would start blocked until one ends (by priority)")

    if any(kinds.values()):
        est = estimate_duration(internal=kinds[Kind.INTERNAL], external=kinds[Kind.EXTERNAL],
                                settings=st, global_limits=limits, capacity=capacity,
                                message_seconds=tpl.audio_seconds, prompt_seconds=prompt_seconds,
                                model=model)
        add(Severity.INFO, "estimate",
            f"about {_human(est.expected_seconds)} for {sum(kinds.values())} recipient(s) at "
            f"{est.concurrency} call(s) at a time, {st.attempts} attempt(s) each "
            f"{st.retry_delay:g} s apart (at most {_human(est.worst_seconds)} if nobody "
            f"answers; assumes {model.answer_rate:.0%} of calls answered)")

    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    return sorted(found, key=lambda f: (order[f.severity], f.position or 0))


def findings_json(findings: Sequence[Finding]) -> str:
    """The findings as a JSON array (for ``--json``)."""
    return json.dumps([f.as_dict() for f in findings], indent=2)


__all__ = ["CallModel", "DurationEstimate", "Finding", "Severity", "check_campaign",
           "estimate_duration", "fetch_trunk_states", "findings_json",
           "trunk_states_from_metrics"]
