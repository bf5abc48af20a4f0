"""Time zones by name (the IANA database through ``zoneinfo``): what the pure calling windows
(``dialer.core.window``) are given as ``tzinfo``. Resolving a name reads the time zone files,
which the core never does; this module does it for the storage adapter, the in-memory fake,
the CSV reader and the CLI."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import zoneinfo
from collections.abc import Iterable

from dialer.core.errors import ValidationError

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=512)
def zone(name: str) -> dt.tzinfo:
    """The zone named ``name`` ("Europe/Rome", "UTC"), or ValidationError naming it."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValidationError(f"time zone {name!r} is unknown (an IANA name such as "
                              "Europe/Rome or UTC)") from exc


def check(name: str) -> str:
    """``name`` stripped, once known to be a zone (ValidationError otherwise)."""
    name = name.strip()
    zone(name)
    return name


def zone_map(names: Iterable[str | None], default: str) -> dict[str | None, dt.tzinfo]:
    """The zones of a campaign's recipients for ``dialer.core.window.open_zones``: each name
    (None: the recipients without one of their own, in ``default``, the campaign's zone)
    resolved. A zone this machine does not know (its time zone database is older than the one
    that checked the CSV) is left out with a warning: its recipients wait, nobody is called at
    a guessed hour."""
    out: dict[str | None, dt.tzinfo] = {}
    for name in set(names):
        try:
            out[name] = zone(default if name is None else name)
        except ValidationError:
            logger.warning("time zone %r is unknown on this machine: its recipients are not "
                           "called", default if name is None else name)
    return out
