#!/usr/bin/env bash
# Creates .venv with a Python the pjsua2 wheel supports (3.11 or 3.12) and installs the project.
# Usage: scripts/setup.sh [test]   ("test" adds the test dependencies, import-linter among them)
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 or 3.12 is needed (the pjsua2-python wheel exists only up to 3.12)" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  "$py" -m venv .venv
fi
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}" 2>&1 \
  | grep -v -e "^WARNING: Location" -e "is ignored: it is neither" || true
.venv/bin/python -c "import pjsua2, sqlalchemy, typer" || { echo "error: the install failed" >&2; exit 1; }
if [ -n "$extras" ] && [ ! -x .venv/bin/lint-imports ]; then
  echo "error: the install failed: no .venv/bin/lint-imports (import-linter, a test extra)" >&2
  exit 1
fi
