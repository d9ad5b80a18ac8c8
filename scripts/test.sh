#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, type-check, then the whole suite
# (unit + integration tiers; `hardware` skips off a Pi, `slow` needs --run-slow).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/system-deps.sh
./scripts/setup.sh dev,compile,postgres
. .venv/bin/activate
ruff check .
tools/typecheck.sh
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
