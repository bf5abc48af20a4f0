"""The storage ports (dialer.core.ports) and their implementations agree.

At run time: every member of a port exists on its implementations with the same parameters
(names, kinds, defaults). Statically: ``dialer.testing.conformance`` assigns ``SqlStore`` and
``MemoryStore`` to the ports, checked here by ``mypy --strict`` (also part of the project's own
``mypy --strict dialer``).
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

import pytest

from dialer.core import ports
from dialer.storage.store import SqlStore
from dialer.testing.memory import MemoryStore
from dialer.testing.setup import SetupPort

ROOT = Path(__file__).resolve().parent.parent


def members(port: type) -> list[str]:
    """The methods and properties a Protocol declares, its bases' included."""
    out: set[str] = set()
    for klass in port.__mro__:
        if klass is object or not getattr(klass, "_is_protocol", False):
            continue
        if klass.__name__ in ("Protocol", "Generic"):
            continue
        out |= {name for name, value in vars(klass).items()
                if not name.startswith("_") and (callable(value) or isinstance(value, property))}
    return sorted(out)


def shape(fn: Any) -> list[tuple[str, Any, Any]]:
    """Parameters without ``self``: (name, kind, default or ``empty``)."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    return [(p.name, p.kind, p.default) for p in params]


def same_parameters(port_fn: Any, impl_fn: Any) -> bool:
    want, got = shape(port_fn), shape(impl_fn)
    if [(n, k) for n, k, _ in want] != [(n, k) for n, k, _ in got]:
        return False
    for (_, _, w), (_, _, g) in zip(want, got, strict=True):
        if w is inspect.Parameter.empty:
            if g is not inspect.Parameter.empty:
                return False
        elif w is Ellipsis:
            if g is inspect.Parameter.empty:  # the port says "has a default" only
                return False
        elif w != g:
            return False
    return True


CASES = [(ports.DispatchPort, SqlStore), (ports.AdminPort, SqlStore), (SetupPort, SqlStore),
         (ports.AlertPort, SqlStore),
         (ports.DispatchPort, MemoryStore), (SetupPort, MemoryStore)]


@pytest.mark.parametrize("port,impl", CASES, ids=lambda x: x.__name__)
def test_implementations_have_the_ports_signatures(port: type, impl: type) -> None:
    names = members(port)
    assert names, port
    for name in names:
        assert hasattr(impl, name), f"{impl.__name__} has no {name}"
        want, got = inspect.getattr_static(port, name), inspect.getattr_static(impl, name)
        if isinstance(want, property):
            assert isinstance(got, property), (impl.__name__, name)
            continue
        assert same_parameters(want, got), (impl.__name__, name, shape(want), shape(got))


def test_the_ports_cover_what_the_daemon_and_the_mail_thread_call() -> None:
    import re

    called: set[str] = set()
    for module in ("dialer/daemon.py", "dialer/mailqueue.py"):
        called |= set(re.findall(r"self\.store\.([a-z_]+)", (ROOT / module).read_text()))
    assert called and called <= set(members(ports.DispatchPort)), called - set(
        members(ports.DispatchPort))


def test_dispatch_and_admin_ports_split_sql_store_s_public_methods() -> None:
    public = {name for klass in SqlStore.__mro__ if klass is not object
              for name, value in vars(klass).items()
              if not name.startswith("_") and (callable(value) or isinstance(value, property))}
    dispatch, admin = set(members(ports.DispatchPort)), set(members(ports.AdminPort))
    alerts = set(members(ports.AlertPort))
    assert not dispatch & admin
    assert alerts & (dispatch | admin) == {"roles_of"}  # who may launch: the CLI's question too
    # left out on purpose: plumbing (SQLAlchemy sessions) and one-item forms of batch methods
    assert public - dispatch - admin - alerts == {"session", "set_attempt_worker",
                                                  "record_progress"}


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_proves_the_implementations_fit_their_ports() -> None:
    from mypy import api

    out, err, status = api.run(["--strict", "--no-error-summary",
                                str(ROOT / "dialer/testing/conformance.py")])
    assert status == 0, out + err
