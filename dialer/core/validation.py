"""Validation of what operators type: template names and the settings of a template (pure)."""

from __future__ import annotations

import re
import unicodedata

from dialer.core import escalation, window
from dialer.core.domain import CampaignSettings, EmailPolicy
from dialer.core.errors import ValidationError
from dialer.core.keys import RANDOM, RANDOM_DIGITS

NAME_RE = re.compile(r"[\w -]{1,100}")  # \w: letters of any alphabet ("Città"), digits, _
DTMF_KEYS = set("0123456789*#")
# A SIP or SIPS URI a call may be transferred to: [user@]host[:port][;params], nothing that
# could end the Refer-To header or the URI (no spaces, quotes, angle brackets, CR or LF).
SIP_URI_RE = re.compile(r"sips?:(?:[A-Za-z0-9_.!~*'()&=+$,;?/%-]+@)?"
                        r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
                        r"(?::[0-9]{1,5})?(?:;[A-Za-z0-9_.!~*'()&=+$%:-]+)*", re.IGNORECASE)


def template_name(name: str) -> str:
    """A template name per SPEC section 1 (letters, digits, spaces, - and _), or ValidationError.

    Letters of any alphabet (the reference product is Italian: "Città Allarme"), in their
    composed form (NFC), so that a name typed with a combining accent is the same name."""
    name = unicodedata.normalize("NFC", name)
    if not NAME_RE.fullmatch(name) or not name.strip():
        raise ValidationError(f"template name {name!r}: use letters, digits, spaces, - and _ "
                              "(at most 100)")
    return name


def limit(value: int | None, name: str) -> int | None:
    """A concurrency limit: 0 or more, None for unlimited."""
    if value is not None and value < 0:
        raise ValidationError(f"{name} must be 0 or more")
    return value


def settings(st: CampaignSettings, recipients: int | None = None) -> CampaignSettings:
    """Check every field of a template's settings; ``recipients`` bounds the threshold."""
    if not 1 <= st.attempts <= 99:
        raise ValidationError("attempts must be between 1 and 99")
    if st.ring_timeout <= 0 or st.key_timeout <= 0:
        raise ValidationError("ring-timeout and key-timeout must be positive")
    if st.retry_delay < 0 or st.max_repeats < 0:
        raise ValidationError("retry-delay and max-repeats must not be negative")
    if st.max_repeats > 20:
        raise ValidationError("max-repeats must be 20 or less")
    for key_name, key in (("answer-key", st.answer_key), ("listen-key", st.listen_key)):
        if key != RANDOM and (key not in DTMF_KEYS or len(key) != 1):
            raise ValidationError(f"{key_name} {key!r} must be one of 0-9, * and #, or random")
    if (st.answer_key == st.listen_key != RANDOM and st.answer_confirm
            and st.listen_confirm):
        raise ValidationError("answer-key and listen-key must differ")
    limit(st.limits.total, "max-calls")
    limit(st.limits.internal, "max-internal")
    limit(st.limits.external, "max-external")
    if st.threshold is not None:
        if st.threshold < 1:
            raise ValidationError(f"threshold {st.threshold} must be 1 or more (or none: all)")
        if recipients and st.threshold > recipients:
            raise ValidationError(f"threshold {st.threshold} must be between 1 and the "
                                  f"{recipients} recipients")
    if st.priority < -1000 or st.priority > 1000:
        raise ValidationError("priority must be between -1000 and 1000")
    if st.caller_number is not None and not re.fullmatch(r"\+?[0-9A-Za-z._*#-]{1,40}",
                                                         st.caller_number):
        raise ValidationError(f"caller number {st.caller_number!r}: digits, optionally with +")
    if st.external_route is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}",
                                                          st.external_route):
        raise ValidationError(f"external route {st.external_route!r}: letters, digits, . _ -")
    if st.window is not None:
        window.window_of(st.window, st.window_days, st.timezone)  # ValidationError if malformed
    elif st.window_days is not None or st.timezone is not None:
        raise ValidationError("--window-days and --timezone need --window (an urgent template "
                              "has no window)")
    if st.email not in {p.value for p in EmailPolicy}:
        raise ValidationError(f"email {st.email!r}: off, on-launch or unreached")
    connect(st)
    escalation.check(st)
    return st


def connect(st: CampaignSettings) -> None:
    """The connect key (``--connect-key``/``--connect-to``): both or neither, a DTMF key no
    confirmation in use takes (nor a digit a random key may draw), a SIP URI."""
    if (st.connect_key is None) != (st.connect_to is None):
        raise ValidationError("--connect-key and --connect-to go together (none: no connect key)")
    if st.connect_key is None:
        if st.connect_confirms:
            raise ValidationError("--connect-confirms needs --connect-key and --connect-to")
        return
    key = st.connect_key
    if key not in DTMF_KEYS or len(key) != 1:
        raise ValidationError(f"connect-key {key!r} must be one of 0-9, * and #")
    for name, used, other in (("answer", st.answer_confirm, st.answer_key),
                              ("listen", st.listen_confirm, st.listen_key)):
        if used and other == key:
            raise ValidationError(f"connect-key {key} is the {name} key: use another")
        if used and other == RANDOM and key in RANDOM_DIGITS:
            raise ValidationError(f"connect-key {key}: a random {name} key may draw it (use 0, "
                                  "1, 9, * or #)")
    if not SIP_URI_RE.fullmatch(st.connect_to or "") or len(st.connect_to or "") > 200:
        raise ValidationError(f"connect-to {st.connect_to!r} must be a SIP URI such as "
                              "sip:bridge@pbx.example.com")
