#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install bodycam editable with the given extras.
#   scripts/setup.sh              runtime only (enough for the simulator)
#   scripts/setup.sh dev,compile  + test tools and TensorFlow for model building
# Quiet and idempotent: nothing is reinstalled while pyproject.toml is unchanged and the extras
# asked for are already in; pip's own output goes to .venv/setup.log (shown when it fails).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: bodycam needs Python >= 3.11 ($PY is $("$PY" -V 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    PYTHON="$PY" ./scripts/system-deps.sh python3-venv
    "$PY" -m venv .venv
fi
stamp=.venv/bodycam-setup
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have_extras=""
if [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$want" ]; then
    have_extras=$(sed -n 2p "$stamp")
    missing=0
    for e in ${extras//,/ }; do
        case ",$have_extras," in *",$e,"*) ;; *) missing=1 ;; esac
    done
    [ "$missing" = 0 ] && exit 0
fi
# keep what an earlier set-up installed (test.sh's extras must survive demo.sh and back)
all=$(printf '%s\n' ${extras//,/ } ${have_extras//,/ } | sort -u | paste -sd, -)
log=.venv/setup.log
echo "setup: installing bodycam into .venv${all:+ with extras $all} (first time: a minute or two; log: $log)" >&2
if ! { .venv/bin/python -m pip install -q --upgrade pip \
        && .venv/bin/python -m pip install -q -e ".${all:+[$all]}"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "setup: pip install failed (above; whole log: $log)" >&2
    exit 1
fi
printf '%s\n%s\n' "$want" "$all" > "$stamp"
