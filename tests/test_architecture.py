"""The import contracts of pyproject.toml (``[tool.importlinter]``) hold on the tree, and they
have teeth: a copy of the packages with one forbidden import injected fails ``lint-imports``,
naming the contract it breaks and the import that breaks it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dialer", "sip", "media", "cli", "testkit")


def _lint_imports() -> str:
    script = Path(sys.executable).parent / "lint-imports"
    found = str(script) if script.exists() else shutil.which("lint-imports")
    if found is None or importlib.util.find_spec("importlinter") is None:
        pytest.skip("import-linter is not installed (scripts/setup.sh test installs it)")
    return found


def run_lint(where: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages of ``where``, with the pyproject.toml there."""
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run([_lint_imports(), "--no-cache", "--no-logo"], cwd=where, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def copy_tree(tmp: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def test_the_tree_keeps_every_contract() -> None:
    p = run_lint(ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert " 0 broken" in p.stdout
    assert "BROKEN" not in p.stdout


@pytest.mark.parametrize(("module", "line", "contract", "link"), [
    ("dialer/core/scheduler.py", "import sqlalchemy",
     "dialer.core is pure: no framework, driver, clock, I/O or adapter",
     "dialer.core.scheduler -> sqlalchemy"),
    ("dialer/core/lifecycle.py", "import time",
     "dialer.core is pure: no framework, driver, clock, I/O or adapter",
     "dialer.core.lifecycle -> time"),
    ("cli/watch.py", "from dialer.storage.store import SqlStore",
     "cli reaches the store and the daemon's machinery only through dialer.bootstrap",
     "cli.watch -> dialer.storage.store"),
    ("media/prompts.py", "import sqlalchemy",
     "Only dialer.storage imports sqlalchemy and alembic", "media.prompts -> sqlalchemy"),
    ("dialer/report.py", "import pjsua2",
     "Only sip imports pjsua2", "dialer.report -> pjsua2"),
    ("dialer/pool.py", "import msgspec",
     "Only dialer.ipc imports msgspec", "dialer.pool -> msgspec"),
    ("dialer/daemon.py", "import rich",
     "Only cli imports typer and rich", "dialer.daemon -> rich"),
    ("dialer/core/domain.py", "import dialer.metrics",
     "Layers: cli -> dialer.bootstrap", "dialer.core.domain -> dialer.metrics"),
    ("dialer/mailer.py", "import dialer.config",
     "No import cycles between the modules of a package", "No cycles are allowed in dialer."),
])
def test_a_forbidden_import_fails(tmp_path: Path, module: str, line: str, contract: str,
                                  link: str) -> None:
    tree = copy_tree(tmp_path)
    target = tree / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # injected\n",
                      encoding="utf-8")
    p = run_lint(tree)
    assert p.returncode != 0, p.stdout + p.stderr
    broken = [ln for ln in p.stdout.splitlines() if ln.endswith("BROKEN")]
    # A long contract name wraps in the summary: the broken contracts' section repeats it whole.
    assert broken, p.stdout
    section = p.stdout.split("Broken contracts", 1)[1]
    assert contract in section, p.stdout
    assert link in section, p.stdout


def test_the_core_never_reads_the_clock() -> None:
    """``datetime`` is allowed in dialer.core (records convert POSIX times); reading the time
    through it is not: the core is given the time."""
    import ast

    readers = {"now", "utcnow", "today", "fromtimestamp_now"}
    found = []
    for path in sorted((ROOT / "dialer" / "core").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in readers:
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert not found, found


def test_no_module_above_600_lines() -> None:
    """Issue 11's bound: a module of the product that grows past 600 lines is split, not let
    grow (the worker reached 601 after the fork server landed)."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for package in ("dialer", "sip", "media", "cli")
             for p in (ROOT / package).rglob("*.py")}
    assert len(sizes) > 40
    assert {name: n for name, n in sizes.items() if n > 600} == {}
