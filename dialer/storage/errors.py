"""What a storage failure means to the person who typed the command: one line with a hint.

The CLI cannot import SQLAlchemy (``lint-imports``), so it hands any exception it did not expect
to ``explain`` (through ``dialer.bootstrap``): a bad database URL, a driver that is not
installed, a server that does not answer, a file that cannot be created become one sentence;
anything else is None (a bug, shown as such).
"""

from __future__ import annotations

import errno
import re

from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

DRIVERS = {"psycopg": "psycopg 3: pip install 'alert-dialer[postgresql]', or use "
                      "postgresql:// (psycopg 3)",
           "psycopg2": "psycopg2 is not installed: use postgresql:// (psycopg 3) instead of "
                       "postgresql+psycopg2://"}


def redact(url: str) -> str:
    """``url`` with any password in it replaced by ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def explain(exc: BaseException, url: str | None = None) -> str | None:
    """One line for a storage or file problem ``exc`` (``url``: the database asked for, shown
    without its password); None when ``exc`` is none of those."""
    where = f" ({redact(url)})" if url else ""
    if isinstance(exc, NoSuchModuleError):
        return (f"unknown kind of database{where}: use sqlite:///FILE or "
                f"postgresql://USER@HOST/DB")
    if isinstance(exc, ArgumentError):
        return (f"not a database URL{where}: use sqlite:///FILE or "
                f"postgresql://USER@HOST/DB")
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        hint = DRIVERS.get(exc.name.split(".")[0], f"pip install {exc.name.split('.')[0]}")
        return f"the database driver {exc.name} is missing{where}: {hint}"
    if isinstance(exc, DBAPIError):
        first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        return f"database error{where}: {first} (is the server up, and the URL right?)"
    if isinstance(exc, SQLAlchemyError):
        return f"database error{where}: {str(exc).splitlines()[0]}"
    if isinstance(exc, OSError):
        name = f": {exc.filename}" if exc.filename else ""
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            return f"address already in use{name} (another dialer serve? see its config)"
        return f"{reason}{name}"
    return None
