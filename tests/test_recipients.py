"""Numbers and the recipients CSV (dialer.core.recipients)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialer.core.domain import Kind
from dialer.core.errors import CsvError, ValidationError
from dialer.core.recipients import (
    NumberRules,
    Recipient,
    make_recipient,
    normalise_email,
    normalise_number,
    plain_email,
)
from dialer.csvimport import parse_csv, parse_csv_lines

I, E = Kind.INTERNAL, Kind.EXTERNAL


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("101", ("101", I)),
        (" 2001 ", ("2001", I)),
        ("12", ("12", I)),
        ("123456", ("123456", I)),
        ("06 6982 0000", ("+390669820000", E)),  # Rome, no +39: region IT
        ("+39 06 6982 0000", ("+390669820000", E)),
        ("0039 06 69820000", ("+390669820000", E)),
        ("347 123 4567", ("+393471234567", E)),  # Italian mobile
        ("+44 20 7946 0958", ("+442079460958", E)),
        ("+1 (202) 456-1111", ("+12024561111", E)),
    ],
)
def test_normalise_number(raw: str, expected: tuple[str, Kind]) -> None:
    assert normalise_number(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "1", "abc", "+39 12", "1234567", "+999 1234",
                                 "06 6982 0000 0000 0000", "12a"])
def test_bad_numbers(raw: str) -> None:
    with pytest.raises(ValidationError):
        normalise_number(raw)


def test_region_and_extension_pattern_are_configurable() -> None:
    uk = NumberRules(region="GB", extension_pattern=r"[1-9]\d{3}")
    assert normalise_number("020 7946 0958", uk) == ("+442079460958", E)
    assert normalise_number("4001", uk) == ("4001", I)
    with pytest.raises(ValidationError):
        normalise_number("0401", uk)  # not an extension any more, not a GB number either


def test_forced_kind() -> None:
    with pytest.raises(ValidationError, match="not an extension"):
        normalise_number("+390669820000", NumberRules(), I)
    assert make_recipient("101", kind="Internal") == Recipient(number="101", kind=I)
    with pytest.raises(ValidationError, match="neither internal nor external"):
        make_recipient("101", kind="mobile")


def test_make_recipient_fields() -> None:
    r = make_recipient(" 06 6982 0000 ", name="  Anna  ", email=" Anna@Example.COM ")
    assert r == Recipient(number="+390669820000", kind=E, name="Anna", email="Anna@example.com")
    assert make_recipient("101", name="  ", email="  ") == Recipient(number="101", kind=I)
    with pytest.raises(ValidationError, match="e-mail"):
        make_recipient("101", email="not-an-address")


def test_parse_csv_in_order() -> None:
    text = ("number,name,email,kind\n"
            "101,Alice,alice@example.com,\n"
            "\n"
            "+39 06 6982 0000,Bob,,external\n"
            "2002,,,\n")
    assert parse_csv(text) == [
        Recipient(number="101", kind=I, name="Alice", email="alice@example.com"),
        Recipient(number="+390669820000", kind=E, name="Bob"),
        Recipient(number="2002", kind=I),
    ]


def test_header_is_case_and_space_insensitive_and_columns_any_order() -> None:
    assert parse_csv(" Name , NUMBER \nAlice,101\n") == [Recipient(number="101", kind=I,
                                                                   name="Alice")]


def test_number_only_csv_and_short_rows() -> None:
    assert parse_csv("number,name\n101\n102,Bo\n") == [
        Recipient(number="101", kind=I), Recipient(number="102", kind=I, name="Bo")]


def problems_of(text: str) -> list[tuple[int, str]]:
    with pytest.raises(CsvError) as info:
        parse_csv(text, source="staff.csv")
    assert str(info.value).startswith("staff.csv: ")
    return info.value.problems


def test_bad_numbers_are_named_with_their_line() -> None:
    problems = problems_of("number,name\n101,A\nxyz,B\n102,C\n+39 12,D\n")
    assert [n for n, _ in problems] == [3, 5]
    assert "'xyz'" in problems[0][1] and "'+39 12'" in problems[1][1]


def test_duplicates_name_both_lines() -> None:
    problems = problems_of("number\n101\n06 6982 0000\n101\n+39 06 69820000\n")
    assert problems == [(4, "101 repeats line 2"), (5, "+390669820000 repeats line 3")]


def test_the_error_message_names_each_line() -> None:
    with pytest.raises(CsvError) as info:
        parse_csv("number\n101\nbad\n101\n", source="x.csv")
    msg = str(info.value)
    assert "line 3:" in msg and "line 4: 101 repeats line 2" in msg and "\n" not in msg


def test_many_problems_are_summarised_on_one_line() -> None:
    text = "number\n" + "".join(f"bad{n}\n" for n in range(15))
    with pytest.raises(CsvError) as info:
        parse_csv(text, source="x.csv")
    assert len(info.value.problems) == 15
    assert str(info.value).endswith("(and 5 more)") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("name,email\nAlice,a@example.com\n", "no 'number' column"),
        ("", "no 'number' column"),
        ("number,phone\n101,1\n", "unknown column(s): phone"),
        ("number,name,extra,more\n101,a,b,c\n", "unknown column(s): extra, more"),
        ("number\n", "no recipients"),
        ("number\n\n   \n", "no recipients"),
    ],
)
def test_header_and_empty_files(text: str, why: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1 and problems[0][0] == 1 and why in problems[0][1]


def test_more_fields_than_the_header() -> None:
    assert problems_of("number,name\n101,A,extra\n102,B\n") == [
        (2, "more fields than the header")]


def test_bad_kind_and_bad_email_are_line_problems() -> None:
    problems = problems_of("number,email,kind\n101,,robot\n102,nope,\n103,,\n")
    assert [n for n, _ in problems] == [2, 3]


def test_all_or_nothing() -> None:
    """One bad line among good ones: nothing is returned."""
    good = "".join(f"{100 + n}\n" for n in range(50))
    with pytest.raises(CsvError) as info:
        parse_csv("number\n" + good + "nonsense\n")
    assert [n for n, _ in info.value.problems] == [52]


def test_quoted_fields() -> None:
    text = 'number,name\n101,"Rossi, Mario"\n"+39 06 6982 0000","Bianchi ""Gigi"""\n'
    assert parse_csv(text) == [Recipient(number="101", kind=I, name="Rossi, Mario"),
                               Recipient(number="+390669820000", kind=E, name='Bianchi "Gigi"')]


# ----- properties -----

cell = st.one_of(
    st.sampled_from(["101", "2002", "06 6982 0000", "+39 347 123 4567", "x", "", " ",
                     "a@example.com", "bad@", "internal", "external", "Mario", '"', ",",
                     "\n", "\r\n", "\x00", "+", "00", "\ufeff"]),
    st.text(max_size=12),
)
header = st.lists(st.sampled_from(["number", "name", "email", "kind", "Number", " name ",
                                   "phone", ""]), min_size=0, max_size=5)


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=200))
    head = ",".join(draw(header))
    rows = draw(st.lists(st.lists(cell, max_size=5), max_size=8))
    sep = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return head + sep + sep.join(",".join(r) for r in rows)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_texts())
def test_any_text_gives_a_full_list_or_a_csv_error(text: str) -> None:
    try:
        out = parse_csv(text, source="r.csv")
    except CsvError as exc:
        assert exc.problems and all(isinstance(n, int) and n >= 1 for n, _ in exc.problems)
        assert str(exc).startswith("r.csv: ")
        return
    except ValidationError:  # allowed by the contract, though parse_csv wraps every one
        return
    # a full list: every recipient valid and normalised, no duplicates
    assert out
    assert len({r.number for r in out}) == len(out)
    for r in out:
        assert normalise_number(r.number, kind=r.kind) == (r.number, r.kind)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_normalise_number_only_raises_validation_error(raw: str) -> None:
    try:
        number, kind = normalise_number(raw)
    except ValidationError:
        return
    assert normalise_number(number) == (number, kind)  # idempotent
    assert number.startswith("+") == (kind is E)


# ----- the fast paths give the answers of the slow ones (bench/RESULTS.md) -----


def reference_parse_csv_lines(text: str, source: str = "r.csv",
                              rules: NumberRules = NumberRules()) -> list[tuple[int, Recipient]]:
    """The line-by-line parser as it was before the fast path (csv.DictReader, make_recipient
    for each row, email-validator for every address), kept as the specification. One fix:
    DictReader reports the line of a blank row that precedes a row; the real line is used."""
    import csv
    import io

    from email_validator import EmailNotValidError, validate_email

    def slow_email(raw: str) -> str:
        try:
            return str(validate_email(raw.strip(), check_deliverability=False).normalized)
        except EmailNotValidError as exc:
            raise ValidationError(f"{raw.strip()!r} is not an e-mail address ({exc})") from exc

    problems: list[tuple[int, str]] = []
    try:
        reader = csv.DictReader(io.StringIO(text))
        head = [h.strip().lower() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise CsvError(source, [(1, f"unreadable CSV ({exc})")]) from exc
    if "number" not in head:
        raise CsvError(source, [(1, "the header row has no 'number' column")])
    unknown = [h for h in head if h not in ("number", "name", "email", "kind")]
    if unknown:
        raise CsvError(source, [(1, f"unknown column(s): {', '.join(unknown)}")])
    reader.fieldnames = head
    out: list[tuple[int, Recipient]] = []
    seen: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.reader.line_num
            if None in row:
                problems.append((line, "more fields than the header"))
                continue
            values = {k: (v or "") for k, v in row.items()}
            if not any(v.strip() for v in values.values()):
                continue
            try:
                rec = make_recipient(values.get("number", ""), name=values.get("name"),
                                     kind=values.get("kind"), rules=rules)
                email = values.get("email")
                if email and email.strip():
                    rec = Recipient(number=rec.number, kind=rec.kind, name=rec.name,
                                    email=slow_email(email))
            except ValidationError as exc:
                problems.append((line, str(exc)))
                continue
            if rec.number in seen:
                problems.append((line, f"{rec.number} repeats line {seen[rec.number]}"))
                continue
            seen[rec.number] = line
            out.append((line, rec))
    except csv.Error as exc:
        problems.append((reader.reader.line_num, f"unreadable CSV ({exc})"))
    if problems:
        raise CsvError(source, problems)
    if not out:
        raise CsvError(source, [(1, "no recipients")])
    return out


def outcome(parse: Any, text: str) -> Any:
    try:
        return ("ok", parse(text))
    except CsvError as exc:
        return ("error", exc.problems)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_texts())
def test_the_fast_parser_answers_as_the_line_by_line_one(text: str) -> None:
    assert outcome(lambda t: parse_csv_lines(t, source="r.csv"), text) == outcome(
        reference_parse_csv_lines, text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_texts(), st.integers(1, 4))
def test_checking_on_two_processes_answers_as_one(drawn: str, copies: int) -> None:
    import dialer.csvimport as recipients_module

    # the same rows several times over: large enough to split, with repeats across the halves
    text = drawn
    if "\n" in text:
        head, _, body = text.partition("\n")
        text = head + "\n" + "\n".join([body] * copies)
    serial = outcome(lambda t: parse_csv_lines(t, source="r.csv"), text)
    old = recipients_module.PARALLEL_MIN_ROWS
    recipients_module.PARALLEL_MIN_ROWS = 2
    try:
        assert outcome(lambda t: parse_csv_lines(t, source="r.csv"), text) == serial
    finally:
        recipients_module.PARALLEL_MIN_ROWS = old


def test_a_large_file_is_checked_on_two_processes_with_every_problem_named() -> None:
    rows = [f"{100000 + i},P{i},p{i}@example.com" if i % 2 else f"+3906698{i:05d}" for i in
            range(30_000)]
    rows[7] = "not a number"
    rows[25_000] = rows[24_000]  # a repeat across the two halves
    text = "number,name,email\n" + "\n".join(rows) + "\n"
    with pytest.raises(CsvError) as err:
        parse_csv_lines(text, source="big.csv")
    assert outcome(lambda t: parse_csv_lines(t, source="big.csv"), text) == outcome(
        lambda t: reference_parse_csv_lines(t, source="big.csv"), text)
    assert [line for line, _ in err.value.problems] == [9, 25_002]
    seen: list[int] = []
    parse_csv_lines("number\n" + "\n".join(str(100000 + i) for i in range(25_000)),
                    progress=seen.append)
    assert seen == list(range(500, 25_001, 500))


plain_addresses = st.from_regex(
    r"[A-Za-z0-9_%+.\-]{1,70}@([a-zA-Z0-9\-]{1,64}\.){0,4}[a-zA-Z0-9\-]{0,64}", fullmatch=True)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(plain_addresses, st.text(max_size=40),
                 st.builds(lambda a, b, c: f"{a}@{b}.{c}", st.from_regex(r"[a-z0-9._+-]{1,66}",
                                                                        fullmatch=True),
                           st.from_regex(r"[a-z0-9-]{1,66}", fullmatch=True),
                           st.sampled_from(["com", "it", "test", "local", "xn--p1ai", "c0m",
                                            "localhost", "onion", "co", "museum", "a"]))))
def test_the_plain_email_fast_path_agrees_with_email_validator(address: str) -> None:
    from email_validator import EmailNotValidError, validate_email

    fast = plain_email(address)
    try:
        slow: str | None = str(validate_email(address, check_deliverability=False).normalized)
    except EmailNotValidError:
        slow = None
    if fast is not None:
        assert fast == slow  # accepted only when email-validator accepts it unchanged


@pytest.mark.parametrize("address", [
    "person1@example.com", "a.b+c@mail.example.it", "x_y%z@a-b.co",
])
def test_plain_addresses_take_the_fast_path(address: str) -> None:
    assert plain_email(address) == address == normalise_email(address)


@pytest.mark.parametrize("address", [
    "A@Example.COM", "a@localhost", "a@b.test", "a@xn--80ak6aa92e.com", "a..b@example.com",
    ".a@example.com", "a@-b.com", "a@b", "\u00e0@example.com", "a" * 65 + "@example.com",
])
def test_other_addresses_go_to_email_validator(address: str) -> None:
    assert plain_email(address) is None
