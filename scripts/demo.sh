#!/usr/bin/env bash
# The README's first command: set up, then run the firmware loop on the bundled example clip
# (an embedded MQTT broker and a subscriber show the markers arriving). Extra arguments go to
# `bodycam-sim run`, e.g. scripts/demo.sh --realtime
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/bodycam-sim run examples/range_demo.mp4 --out runs/range_demo "$@"
