"""Numbers and the recipients CSV (dialer.recipients)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialer.domain import Kind
from dialer.errors import CsvError, ValidationError
from dialer.recipients import NumberRules, Recipient, make_recipient, normalise_number, parse_csv

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
