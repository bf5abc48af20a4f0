"""Errors a user can act on. The CLI turns each into one clear line and exit code 1."""

from __future__ import annotations


class DialerError(Exception):
    """Base of every error the dialer reports to its user."""


class ConfigError(DialerError):
    """The TOML configuration is missing, malformed or incomplete. ``problems``: each problem
    found, where it is and what is wrong (the message joins them)."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class NotFound(DialerError):
    """A template, campaign, recipient or run that does not exist."""


class ValidationError(DialerError):
    """A value the user gave is not acceptable."""


class CsvError(ValidationError):
    """A recipients CSV file has bad lines; ``problems`` lists (line number, reason)."""

    def __init__(self, path: str, problems: list[tuple[int, str]]) -> None:
        self.path = path
        self.problems = problems
        shown = "; ".join(f"line {n}: {why}" for n, why in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(f"{path}: {shown}{more}")


class AudioError(ValidationError):
    """An audio file that cannot be decoded, is empty or is too long."""


class StateError(DialerError):
    """An operation that the current state of a campaign or recipient does not allow."""


class StoreUnavailable(DialerError):
    """The database cannot be reached or did not answer (a lost connection, a refused one, a
    timeout): what was being written was not written, and may be tried again."""


class NodeConflict(DialerError):
    """Another live node runs under this node's name, or a second ``dialer serve`` on a SQLite
    database (one node only)."""


class LeaseLost(DialerError):
    """This node's lease is no longer valid: it may not place calls until it joins again."""
