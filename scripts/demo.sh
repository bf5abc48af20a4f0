#!/usr/bin/env bash
# From nothing to a finished demo campaign: a venv, the package, then `dialer demo`.
# No root needed: the demo's phones are a PJSUA2 process on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dialer demo "$@"
