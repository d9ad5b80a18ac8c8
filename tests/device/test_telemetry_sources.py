"""Telemetry sources read from temporary sysfs-like trees; absent sources say why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bodycam.device.hw.config import TelemetrySourcesConfig
from bodycam.device.hw.telemetry_sources import TelemetrySources, decode_throttled


def make_tree(tmp_path: Path) -> TelemetrySourcesConfig:
    for i, milli in enumerate(("48312", "51500", "garbage")):
        z = tmp_path / f"thermal/thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "temp").write_text(milli + "\n")
    (tmp_path / "get_throttled").write_text("50005\n")
    bat = tmp_path / "power_supply/battery"
    bat.mkdir(parents=True)
    (bat / "capacity").write_text("87\n")
    (bat / "status").write_text("Discharging\n")
    return TelemetrySourcesConfig(
        thermal_glob=str(tmp_path / "thermal/thermal_zone*/temp"),
        throttled_path=str(tmp_path / "get_throttled"),
        vcgencmd="",
        power_supply_root=str(tmp_path / "power_supply"),
        battery="battery",
    )


def test_all_sources_present(tmp_path: Path) -> None:
    src = TelemetrySources(make_tree(tmp_path), tmp_path)
    got = src.read_all()
    assert got["cpu_temp_c"] == 51.5
    assert got["throttled"]["raw"] == "0x50005"
    assert got["throttled"]["under_voltage"] and got["throttled"]["throttled"]
    assert not got["throttled"]["freq_capped"] and got["throttled"]["under_voltage_occurred"]
    assert got["battery"] == {"percent": 87, "status": "Discharging"}
    st = os.statvfs(tmp_path)
    assert got["storage"]["total_bytes"] == st.f_blocks * st.f_frsize
    assert "absent" not in got


def test_absent_sources_are_reported_not_zero(tmp_path: Path) -> None:
    cfg = TelemetrySourcesConfig(
        thermal_glob=str(tmp_path / "none*/temp"),
        throttled_path=str(tmp_path / "nope"),
        vcgencmd="definitely-not-vcgencmd",
        battery="",
    )
    got = TelemetrySources(cfg, tmp_path / "missing-data-dir").read_all()
    assert set(got) == {"absent"}
    reasons = got["absent"]
    assert "no thermal zone matches" in reasons["cpu_temp_c"]
    assert "not found" in reasons["throttled"]
    assert "missing-data-dir" in reasons["storage"]
    assert reasons["battery"] == "no battery gauge configured"


def test_garbled_sources(tmp_path: Path) -> None:
    cfg = make_tree(tmp_path)
    (tmp_path / "get_throttled").write_text("zzz")
    (tmp_path / "power_supply/battery/capacity").write_text("250")
    for z in (tmp_path / "thermal").iterdir():
        (z / "temp").write_text("n/a")
    src = TelemetrySources(cfg, tmp_path)
    assert src.throttled().reason is not None and "unparsable" in src.throttled().reason  # type: ignore[operator]
    assert src.battery().value is None and "unexpected" in (src.battery().reason or "")
    assert src.cpu_temp_c().reason == "thermal zones unreadable"


def test_vcgencmd_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin/vcgencmd"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n[ \"$1\" = get_throttled ] && echo throttled=0x80008\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent), prepend=os.pathsep)
    cfg = TelemetrySourcesConfig(throttled_path=str(tmp_path / "absent"), vcgencmd="vcgencmd")
    r = TelemetrySources(cfg, tmp_path).throttled()
    assert r.value == decode_throttled(0x80008) and r.value["soft_temp_limit"]
