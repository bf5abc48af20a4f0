"""Cells of the CSV files the dialer writes, made safe to open in a spreadsheet.

OWASP's rule against CSV injection: a text cell that starts with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return would be read by Excel, LibreOffice or Google Sheets as a formula (a
recipient named ``=cmd|' /C calc'!A0``), so it is written with a leading single quote ``'``,
which those programs show as text. Per column:

* text columns (names, e-mail addresses, actors, JSON data, anything an operator typed) always go
  through ``neutralise``;
* number columns (``cell(..., number=True)``) keep a value that is a number, ``+`` and digits
  (E.164, ``+390669820000``) or digits (an extension): a spreadsheet reads those as numbers,
  not formulas, and a quote would make the file unusable as a list of numbers. Anything else in
  a number column is text and is neutralised.

``restore`` undoes ``neutralise`` exactly (the recipients importer applies it, so an exported
file imports back to the same names). To make that exact, a value that already starts with
quotes followed by a trigger character (``'=x``) gets one quote more (``''=x``); a quote
followed by anything else (``'quoted``, ``O'Brien``) is left alone both ways. Pure functions.
"""

from __future__ import annotations

import re

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula."""

_NUMBER = re.compile(r"\+?[0-9]+")


def _quoted_trigger(value: str) -> bool:
    """Whether ``value`` is zero or more quotes then a trigger character."""
    rest = value.lstrip("'")
    return rest[:1] in TRIGGERS


def neutralise(value: str) -> str:
    """``value`` as a CSV cell no spreadsheet runs as a formula (``'`` prefixed when needed)."""
    return "'" + value if _quoted_trigger(value) else value


def restore(value: str) -> str:
    """The value ``neutralise`` was given to write ``value``."""
    if value[:1] == "'" and _quoted_trigger(value[1:]):
        return value[1:]
    return value


def cell(value: str, *, number: bool = False) -> str:
    """A text cell, or a number column's cell (numbers as they are, anything else as text)."""
    if number and _NUMBER.fullmatch(value):
        return value
    return neutralise(value)
