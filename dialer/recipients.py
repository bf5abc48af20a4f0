"""Recipient numbers and the recipients CSV: validation and normalisation (pure, no I/O beyond
reading the text handed in).

A number is an *internal* extension when it matches the extension pattern (short digit strings by
default), otherwise an *external* number, normalised to E.164 with ``phonenumbers`` and a default
region for numbers written without the international prefix.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from dialer.domain import Kind
from dialer.errors import CsvError, ValidationError

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


def normalise_number(raw: str, rules: NumberRules = NumberRules(),
                     kind: Kind | None = None) -> tuple[str, Kind]:
    """Return (stored number, kind) or raise ValidationError with the reason."""
    text = raw.strip()
    if not text:
        raise ValidationError("empty number")
    is_ext = re.fullmatch(rules.extension_pattern, text) is not None
    if kind is Kind.INTERNAL or (kind is None and is_ext):
        if not is_ext:
            raise ValidationError(f"{text!r} is not an extension (pattern {rules.extension_pattern})")
        return text, Kind.INTERNAL
    try:
        parsed = phonenumbers.parse(text, rules.region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(f"{text!r} is not a phone number ({exc})") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(f"{text!r} is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), Kind.EXTERNAL


def normalise_email(raw: str) -> str:
    """Return the normalised address or raise ValidationError."""
    try:
        return str(validate_email(raw.strip(), check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise ValidationError(f"{raw.strip()!r} is not an e-mail address ({exc})") from exc


def make_recipient(number: str, *, name: str | None = None, email: str | None = None,
                   kind: str | Kind | None = None, rules: NumberRules = NumberRules()) -> Recipient:
    """Validate one recipient given field by field."""
    k: Kind | None
    if kind is None or kind == "":
        k = None
    else:
        try:
            k = Kind(str(kind.value if isinstance(kind, Kind) else kind).strip().lower())
        except ValueError as exc:
            raise ValidationError(f"kind {kind!r} is neither internal nor external") from exc
    stored, k2 = normalise_number(number, rules, k)
    mail = normalise_email(email) if email and email.strip() else None
    return Recipient(number=stored, kind=k2, name=(name or "").strip() or None, email=mail)


def parse_csv(text: str, *, source: str = "recipients.csv",
              rules: NumberRules = NumberRules()) -> list[Recipient]:
    """Parse a whole recipients CSV; all or nothing: any bad line raises CsvError naming each."""
    return [rec for _, rec in parse_csv_lines(text, source=source, rules=rules)]


def parse_csv_lines(text: str, *, source: str = "recipients.csv",
                    rules: NumberRules = NumberRules()) -> list[tuple[int, Recipient]]:
    """As ``parse_csv``, each recipient with the line of the file it came from."""
    problems: list[tuple[int, str]] = []
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise CsvError(source, [(1, f"unreadable CSV ({exc})")]) from exc
    if "number" not in header:
        raise CsvError(source, [(1, "the header row has no 'number' column")])
    unknown = [h for h in header if h not in ("number", "name", "email", "kind")]
    if unknown:
        raise CsvError(source, [(1, f"unknown column(s): {', '.join(unknown)}")])
    reader.fieldnames = header
    out: list[tuple[int, Recipient]] = []
    seen: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if None in row:
                problems.append((line, "more fields than the header"))
                continue
            values = {k: (v or "") for k, v in row.items()}
            if not any(v.strip() for v in values.values()):
                continue  # blank line
            try:
                rec = make_recipient(values.get("number", ""), name=values.get("name"),
                                     email=values.get("email"), kind=values.get("kind"),
                                     rules=rules)
            except ValidationError as exc:
                problems.append((line, str(exc)))
                continue
            if rec.number in seen:
                problems.append((line, f"{rec.number} repeats line {seen[rec.number]}"))
                continue
            seen[rec.number] = line
            out.append((line, rec))
    except csv.Error as exc:
        problems.append((reader.line_num, f"unreadable CSV ({exc})"))
    if problems:
        raise CsvError(source, problems)
    if not out:
        raise CsvError(source, [(1, "no recipients")])
    return out
