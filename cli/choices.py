"""The fixed choices of the command line, as Enums: Typer lists them in ``--help``, completes
them in the shell and refuses anything else with one line (exit 2), before the command runs.

They mirror the domain's values (``tests/test_cli_surface.py`` checks each against its source),
spelled as an operator types them (``on-launch``, not ``on_launch``). Completion of template
names and campaign ids (``complete_template``, ``complete_campaign``) reads the database the
command would use, silently: a completion never prints an error.
"""

from __future__ import annotations

from enum import Enum


class Email(str, Enum):
    """``--email``: which recipients are mailed the message (``dialer.core.domain.EmailPolicy``)."""

    off = "off"
    on_launch = "on-launch"
    unreached = "unreached"


class Language(str, Enum):
    """``--language`` / ``--voice``: the shipped prompts and voices (``media.prompts``)."""

    en = "en"
    it = "it"


class EscalateWhen(str, Enum):
    """``--when``: when a run escalates (``dialer.core.escalation.When``)."""

    incomplete = "incomplete"
    below = "below"


class Kind(str, Enum):
    """``--kind``: how a number is dialled (``dialer.core.domain.Kind``)."""

    internal = "internal"
    external = "external"


class RoleName(str, Enum):
    """``--role`` (``dialer.core.permissions.Role``)."""

    admin = "admin"
    campaigns = "campaigns"
    settings = "settings"
    viewer = "viewer"


class State(str, Enum):
    """``--state`` of ``campaign list`` (``dialer.core.domain.CampaignState``)."""

    scheduled = "scheduled"
    active = "active"
    blocked = "blocked"
    suspended = "suspended"
    incomplete = "incomplete"
    completed = "completed"
    terminated = "terminated"


class ExportFormat(str, Enum):
    """``history export --format``."""

    json = "json"
    csv = "csv"


class LogFormat(str, Enum):
    """``serve --log-format``."""

    text = "text"
    json = "json"


def complete_template(incomplete: str) -> list[str]:
    """Shell completion of a template name."""
    return [n for n in _names("templates") if n.startswith(incomplete)]


def complete_campaign(incomplete: str) -> list[str]:
    """Shell completion of a campaign id."""
    return [n for n in _names("campaigns") if n.startswith(incomplete)]


def _names(what: str) -> list[str]:
    from cli.common import db_url
    from dialer.bootstrap import open_store

    try:
        store = open_store(db_url())
    except Exception:  # noqa: BLE001 - no database, no completion; never an error
        return []
    try:
        if what == "templates":
            return [str(t["name"]) for t in store.list_templates()]
        return [str(c["id"]) for c in store.list_campaigns()]
    except Exception:  # noqa: BLE001
        return []
    finally:
        store.dispose()
