"""Base tests: the Mosquitto fixture from tests/_mqtt.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _mqtt import mosquitto  # noqa: F401
