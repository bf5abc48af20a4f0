#!/usr/bin/env bash
# From nothing to the whole test suite: the system packages the tests need (SIPp, Kamailio,
# Prometheus' promtool, Chromium, espeak-ng, tcpdump, Alertmanager; apt, as root), a venv with
# the test dependencies, the import contracts (lint-imports), ruff, mypy, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "warning: ${need[*]} missing and not root: the SIP tests that need them will be skipped" >&2
  fi
fi

bash scripts/setup.sh test
# The architecture first: a broken import contract (pyproject.toml [tool.importlinter]) fails
# the run before any test does.
if ! .venv/bin/lint-imports --no-logo; then
  echo "error: lint-imports: an import contract is broken (see above)" >&2
  exit 1
fi
if ! .venv/bin/ruff check --quiet .; then
  echo "error: ruff: the code breaks a lint rule of pyproject.toml (see above)" >&2
  exit 1
fi
if ! .venv/bin/python -m mypy --strict dialer sip media cli testkit tests bench; then
  echo "error: mypy found a type error (see above)" >&2
  exit 1
fi
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no test" >&2
fi
exit "$rc"
