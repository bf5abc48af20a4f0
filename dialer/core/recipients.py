"""Recipient numbers and e-mail addresses: validation and normalisation (pure). The CSV reader
built on these rules is ``dialer.csvimport``.

A number is an *internal* extension when it matches the extension pattern (short digit strings by
default), otherwise an *external* number, normalised to E.164 with ``phonenumbers`` and a default
region for numbers written without the international prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email

from dialer.core.domain import Kind
from dialer.core.errors import ValidationError

DEFAULT_EXTENSION_PATTERN = r"\d{2,6}"
DEFAULT_REGION = "IT"


@dataclass(frozen=True, kw_only=True)
class NumberRules:
    """How numbers are read: the default region and what an extension looks like."""

    region: str = DEFAULT_REGION
    extension_pattern: str = DEFAULT_EXTENSION_PATTERN


@dataclass(frozen=True, kw_only=True)
class Recipient:
    """A validated recipient, in list order."""

    number: str
    kind: Kind
    name: str | None = None
    email: str | None = None
    timezone: str | None = None  # its own calling-window zone (None: the template's)


def normalise_number(raw: str, rules: NumberRules = NumberRules(),
                     kind: Kind | None = None) -> tuple[str, Kind]:
    """Return (stored number, kind) or raise ValidationError with the reason."""
    return _normalise_number(raw, rules, kind, re.compile(rules.extension_pattern))


def _normalise_number(raw: str, rules: NumberRules, kind: Kind | None,
                      extension: re.Pattern[str]) -> tuple[str, Kind]:
    text = raw.strip()
    if not text:
        raise ValidationError("empty number")
    is_ext = extension.fullmatch(text) is not None
    if kind is Kind.INTERNAL or (kind is None and is_ext):
        if not is_ext:
            raise ValidationError(
                f"{text!r} is not an extension (pattern {rules.extension_pattern})")
        return text, Kind.INTERNAL
    try:
        parsed = phonenumbers.parse(text, rules.region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(_not_a_number(text, rules, PARSE_REASONS.get(
            exc.error_type, "not a phone number"))) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(_not_a_number(text, rules, "no such number in its plan"))
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), Kind.EXTERNAL


PARSE_REASONS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "no known country code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not a number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
    phonenumbers.NumberParseException.TOO_LONG: "too long",
}


def _not_a_number(text: str, rules: NumberRules, reason: str) -> str:
    """Why ``text`` is refused, and the two settings that decide how it is read."""
    return (f"{text!r} is neither an extension (pattern {rules.extension_pattern}, "
            f"--extension-pattern) nor a phone number of region {rules.region} (--region): "
            f"{reason}; write other countries' numbers as +CC...")


# Plain ASCII addresses that email-validator certainly accepts unchanged: dot-atom local part of
# common characters, lower-case host names of letters, digits and single hyphens (no "--", so no
# IDNA "xn--" label to decode), an alphabetic top-level domain. Anything else, and special-use
# domains, go to email-validator itself (tests/test_recipients.py proves both agree).
_PLAIN_EMAIL = re.compile(
    r"(?P<local>[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*)"
    r"@(?P<domain>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?P<tld>[a-z]{2,63}))")


def plain_email(address: str) -> str | None:
    """``address`` if it is a plain ASCII address email-validator would accept unchanged, else
    None (then only email-validator can tell). About 30 times faster than email-validator."""
    m = _PLAIN_EMAIL.fullmatch(address)
    if (m is None or len(address) > 254 or len(m["local"]) > 64 or "--" in m["domain"]
            or m["tld"] in email_validator.SPECIAL_USE_DOMAIN_NAMES):
        return None
    return address


def normalise_email(raw: str) -> str:
    """Return the normalised address or raise ValidationError."""
    text = raw.strip()
    fast = plain_email(text)
    if fast is not None:
        return fast
    try:
        return str(validate_email(text, check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise ValidationError(f"{text!r} is not an e-mail address ({exc})") from exc


def make_recipient(number: str, *, name: str | None = None, email: str | None = None,
                   kind: str | Kind | None = None, rules: NumberRules = NumberRules(),
                   timezone: str | None = None) -> Recipient:
    """Validate one recipient given field by field (``timezone``: a zone name the caller has
    checked, ``dialer.zones``; the core cannot read the zone database)."""
    return _make_recipient(number, name, email, kind, rules, re.compile(rules.extension_pattern),
                           timezone)


def _make_recipient(number: str, name: str | None, email: str | None, kind: str | Kind | None,
                    rules: NumberRules, extension: re.Pattern[str],
                    timezone: str | None = None) -> Recipient:
    k: Kind | None
    if kind is None or kind == "":
        k = None
    else:
        try:
            k = Kind(str(kind.value if isinstance(kind, Kind) else kind).strip().lower())
        except ValueError as exc:
            raise ValidationError(f"kind {kind!r} is neither internal nor external") from exc
    stored, k2 = _normalise_number(number, rules, k, extension)
    mail = normalise_email(email) if email and email.strip() else None
    return Recipient(number=stored, kind=k2, name=(name or "").strip() or None, email=mail,
                     timezone=(timezone or "").strip() or None)
