#!/usr/bin/env bash
# Type-check the four packages under their real import names (bodycam.*).
# The folders are mapped onto bodycam.* by setuptools; tools/mypy_root holds
# symlinks with the same mapping so mypy sees the same module names.
set -euo pipefail
cd "$(dirname "$0")/.."
MYPYPATH=tools/mypy_root exec mypy -p bodycam.device -p bodycam.hw_sim -p bodycam.model_compile -p bodycam.base "$@"
