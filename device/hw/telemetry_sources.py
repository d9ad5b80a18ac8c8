"""Board telemetry: CPU temperature, throttling, free storage, battery.

Each reading is a :class:`Reading`: a value, or ``None`` with the reason it is absent
(never a fake zero). All paths come from :class:`TelemetrySourcesConfig` so tests
point them at temporary files. Nothing here raises on a missing or garbled source.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bodycam.device.hw.config import TelemetrySourcesConfig

# get_throttled bits (Raspberry Pi firmware)
THROTTLE_BITS = {
    0: "under_voltage",
    1: "freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "under_voltage_occurred",
    17: "freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}


@dataclass(frozen=True)
class Reading:
    value: Any
    reason: str | None = None  # why value is None

    @property
    def present(self) -> bool:
        return self.value is not None


def _absent(reason: str) -> Reading:
    return Reading(None, reason)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def decode_throttled(value: int) -> dict[str, Any]:
    flags = {name: bool(value >> bit & 1) for bit, name in THROTTLE_BITS.items()}
    return {"raw": f"0x{value:x}", **flags}


class TelemetrySources:
    def __init__(self, config: TelemetrySourcesConfig, data_dir: str | Path) -> None:
        self._cfg = config
        self._data_dir = Path(data_dir)
        self._vcgencmd_failed = False

    def cpu_temp_c(self) -> Reading:
        """Highest temperature over the thermal zones, in degrees Celsius."""
        zones = sorted(glob.glob(self._cfg.thermal_glob))
        if not zones:
            return _absent(f"no thermal zone matches {self._cfg.thermal_glob}")
        temps = []
        for z in zones:
            text = _read_text(Path(z))
            if text is not None and text.lstrip("-").isdigit():
                temps.append(int(text) / 1000.0)
        if not temps:
            return _absent("thermal zones unreadable")
        return Reading(round(max(temps), 1))

    def throttled(self) -> Reading:
        """Decoded get_throttled flags (sysfs first, then ``vcgencmd get_throttled``)."""
        text = _read_text(Path(self._cfg.throttled_path))
        if text is not None:
            try:
                return Reading(decode_throttled(int(text, 16)))
            except ValueError:
                return _absent(f"unparsable {self._cfg.throttled_path}: {text[:40]!r}")
        if not self._cfg.vcgencmd or self._vcgencmd_failed:
            return _absent("no get_throttled source on this platform")
        exe = shutil.which(self._cfg.vcgencmd)
        if exe is None:
            self._vcgencmd_failed = True
            return _absent(f"{self._cfg.throttled_path} absent and {self._cfg.vcgencmd} not found")
        try:
            out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=2, check=True)
            value = int(out.stdout.strip().split("=", 1)[1], 16)
        except (OSError, subprocess.SubprocessError, IndexError, ValueError) as exc:
            return _absent(f"vcgencmd get_throttled failed: {exc}")
        return Reading(decode_throttled(value))

    def storage(self) -> Reading:
        """Free and total bytes of the file system holding the data directory."""
        try:
            usage = shutil.disk_usage(self._data_dir)
        except OSError as exc:
            return _absent(f"data dir {self._data_dir}: {exc.strerror}")
        return Reading({"free_bytes": usage.free, "total_bytes": usage.total})

    def battery(self) -> Reading:
        """Capacity percent (and status) of the configured power_supply gauge."""
        if not self._cfg.battery:
            return _absent("no battery gauge configured")
        base = Path(self._cfg.power_supply_root) / self._cfg.battery
        text = _read_text(base / "capacity")
        if text is None:
            return _absent(f"{base}/capacity not readable")
        if not text.isdigit() or int(text) > 100:
            return _absent(f"{base}/capacity: unexpected {text[:20]!r}")
        status = _read_text(base / "status")
        return Reading({"percent": int(text), "status": status})

    def read_all(self) -> dict[str, Any]:
        """``{name: value}`` for present sources plus ``{"absent": {name: reason}}``."""
        out: dict[str, Any] = {}
        absent: dict[str, str] = {}
        for name, reading in (
            ("cpu_temp_c", self.cpu_temp_c()),
            ("throttled", self.throttled()),
            ("storage", self.storage()),
            ("battery", self.battery()),
        ):
            if reading.present:
                out[name] = reading.value
            else:
                absent[name] = reading.reason or "absent"
        if absent:
            out["absent"] = absent
        return out
