"""Operator roles and what each allows (SPEC section 5). Pure: no storage, no CLI.

* ``campaigns``: templates and campaigns (campaign management);
* ``settings``: the global settings (general settings management);
* ``viewer``: read only;
* ``admin``: everything, plus the operators themselves.

Every role may read; a change needs the role that owns it (or ``admin``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from dialer.core.errors import DialerError, ValidationError


class Role(str, enum.Enum):
    """An operator role; the value is what the CLI and the database show."""

    ADMIN = "admin"
    CAMPAIGNS = "campaigns"
    SETTINGS = "settings"
    VIEWER = "viewer"


class PermissionDenied(DialerError):
    """The caller's roles do not allow the command; ``needed`` names the role it takes."""

    def __init__(self, who: str, command: str, needed: Role, roles: Iterable[Role]) -> None:
        self.who, self.command, self.needed = who, command, needed
        held = ", ".join(sorted(r.value for r in roles)) or "no role: not an operator"
        super().__init__(f"permission denied: '{command}' needs the {needed.value} role "
                         f"({who} has {held})")


def parse_roles(values: Iterable[str]) -> frozenset[Role]:
    """Roles from their names (comma-separated or repeated); ValidationError for unknown ones."""
    out: set[Role] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            try:
                out.add(Role(name))
            except ValueError as exc:
                raise ValidationError(f"unknown role {name!r} (roles: "
                                      f"{', '.join(r.value for r in Role)})") from exc
    if not out:
        raise ValidationError("give at least one role")
    return frozenset(out)


def allows(roles: Iterable[Role], needed: Role) -> bool:
    """Whether an operator holding ``roles`` may run a command that needs ``needed``."""
    held = set(roles)
    if not held:
        return False
    if Role.ADMIN in held or needed is Role.VIEWER:
        return True
    return needed in held
