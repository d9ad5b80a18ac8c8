"""`bodycam doctor` on simulated parts: all ok; then each part broken, and exactly its line fails.

The parts are the firmware's real adapters over simulated hardware: `PiCamera` over the fake
picamera2 (real H.264), `RpiGpioFactory` over the fake rpi-lgpio, the real `LocationTracker` on
a pseudo-terminal fed by the NMEA simulator in real time, the clip's audio as microphone, the
Edge TPU probe against a stand-in libedgetpu, a real Mosquitto with a password file, and
`systemd-analyze security` on the packaged unit.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _clips import make_plain_clip
from _edgetpu import build_fake_libedgetpu, model_with_edgetpu_build
from _mqtt import Mosquitto

from bodycam.device.assemble import HardwareParts
from bodycam.device.clock import SystemClock
from bodycam.device.config import AppConfig, config_from_dict
from bodycam.device.doctor import Check, DoctorOptions, exit_code, render, run_doctor, to_json
from bodycam.device.hw.config import CameraConfig
from bodycam.device.hw.gnss import GnssLocation, LocationTracker
from bodycam.device.hw.gpio import RpiGpioFactory
from bodycam.device.hw.picamera_adapter import PiCamera
from bodycam.hw_sim.fake_picamera2 import FakePicamera2Module, Picamera2
from bodycam.hw_sim.gnss_sim import GnssSimulator, PtyPort, Route, Waypoint
from bodycam.hw_sim.gpio_sim import FakeRPiGPIO, SimPinFactory
from bodycam.hw_sim.sim_microphone import ClipMicrophone

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["camera", "encoder", "microphone", "edgetpu", "gpio", "gnss", "storage", "broker", "unit"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("doctor")
    libs = build_fake_libedgetpu(base / "lib")
    model = model_with_edgetpu_build(base / "model")
    clip = make_plain_clip(base / "a.mp4", seconds=2, audio=True)
    (base / "mqtt_password").write_text("s3cret\n")
    broker = Mosquitto(base / "mosquitto", extra=["allow_anonymous false", f"password_file {base / 'passwd'}"])
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(base / "passwd"), "cam-07", "s3cret"], check=True,
                   capture_output=True, timeout=30)
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true\n", ""))
    broker.start()
    unit = base / "bodycam.service"  # the packaged unit, ExecStart pointed at a binary that exists here
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}",
                           (ROOT / "systemd/bodycam.service").read_text(), flags=re.M))
    try:
        yield {"base": base, "libs": libs, "model": model, "clip": clip, "broker": broker, "unit": unit}
    finally:
        broker.stop()


class NmeaFeed:
    """The NMEA simulator writing a fix every 200 ms of real time, on the system clock."""

    def __init__(self, port: PtyPort) -> None:
        route = Route([Waypoint(0.0, 52.2053, 0.1218, 12.0), Waypoint(600.0, 52.2071, 0.1250, 13.0)])
        self.sim = GnssSimulator(port, route, time.time_ns())
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.sim.write_epoch(time.monotonic() - self._t0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def config(env: dict[str, Any], tmp_path: Path, gnss_device: str, **over: Any) -> AppConfig:
    data: dict[str, Any] = {
        "device": {"id": "cam-07", "data_dir": str(tmp_path / "data")},
        "detector": {"model": str(env["model"]), "edgetpu_library": env["libs"]["OK"],
                     "edgetpu_probe_timeout_s": 5},
        "mqtt": {"url": env["broker"].url, "username": "cam-07",
                 "password_file": str(env["base"] / "mqtt_password"), "connect_timeout_s": 5},
        "gnss": {"device": gnss_device, "read_timeout_s": 0.05},
    }
    for section, values in over.items():
        data.setdefault(section, {}).update(values)
    return config_from_dict(data)


def parts(env: dict[str, Any], cfg: AppConfig, *, camera: CameraConfig | None = None, platform: str = "vc4",
          busy: tuple[int, ...] = (), microphone: bool = True) -> HardwareParts:
    clock = SystemClock()
    cam_cfg = camera or CameraConfig(main_size=(320, 240), lores_size=(160, 90), iperiod=15)
    cam = PiCamera(cam_cfg, segment_s=2.0, pre_event_s=1.0, picamera2_module=FakePicamera2Module(platform=platform))
    pins = RpiGpioFactory(FakeRPiGPIO(SimPinFactory(clock), "rpi-lgpio", busy=busy))
    location = GnssLocation(LocationTracker(replace(cfg.gnss), clock), cfg.gnss.max_fix_age_s)
    return HardwareParts(camera=cam, clock=clock, pins=pins, location=location, footage=cam, footage_sound=cam,
                         microphone=ClipMicrophone(env["clip"], origin_ns=Picamera2.boot_ns) if microphone else None)


def doctor(env: dict[str, Any], tmp_path: Path, *, feed: bool = True, unit: Path | None = None,
           parts_kw: dict[str, Any] | None = None, **over: Any) -> list[Check]:
    port = PtyPort()
    nmea = NmeaFeed(port) if feed else None
    try:
        cfg = config(env, tmp_path, port.device, **over)
        return run_doctor(cfg, parts(env, cfg, **(parts_kw or {})),
                          DoctorOptions(unit=unit or env["unit"], gnss_wait_s=4.0))
    finally:
        if nmea is not None:
            nmea.stop()
        port.close()


def levels(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.level for c in checks}


def test_all_ok_on_simulated_parts(env: dict[str, Any], tmp_path: Path) -> None:
    checks = doctor(env, tmp_path)
    assert [c.name for c in checks] == NAMES
    assert levels(checks) == dict.fromkeys(NAMES, "ok"), render(checks)
    by = {c.name: c for c in checks}
    assert "lores YUV420 160x92 -> model input 160x90" in by["camera"].detail
    assert "frames decode" in by["encoder"].detail and "AAC sound" in by["encoder"].detail
    assert "ran once on the Edge TPU" in by["edgetpu"].detail
    assert "system clock - GNSS" in by["gnss"].detail
    assert "with credentials" in by["broker"].detail
    assert "exposure 1.6" in by["unit"].detail
    assert exit_code(checks) == 0
    out = json.loads(to_json(checks))
    assert out["result"] == "ok" and [c["name"] for c in out["checks"]] == NAMES


def _only(checks: list[Check], name: str, level: str = "fail") -> Check:
    bad = {c.name: c.level for c in checks if c.level != "ok"}
    assert bad == {name: level}, render(checks)
    (c,) = [c for c in checks if c.name == name]
    assert c.fix, "a failing line says how to fix it"
    return c


@pytest.mark.parametrize(("broken", "line", "words"), [
    ({"parts_kw": {"camera": CameraConfig(main_size=(320, 240), lores_size=(160, 90), lores_format="RGB888")}},
     "camera", "lores stream must be YUV"),
    ({"parts_kw": {"busy": (17,)}}, "gpio", "GPIO busy"),
    ({"feed": False}, "gnss", "no NMEA"),
    ({"storage": True}, "storage", "not writable"),
    ({"mqtt": {"password_file": "WRONG"}}, "broker", "refused"),
    ({"mqtt": {"url": "mqtt://127.0.0.1:1"}}, "broker", "127.0.0.1:1"),
    ({"detector": {"edgetpu_library": "CRASH"}}, "edgetpu", "SIGSEGV"),
    ({"unit": "weak"}, "unit", "exposure"),
])
def test_each_broken_part_fails_its_own_line(env: dict[str, Any], tmp_path: Path, broken: dict[str, Any],
                                             line: str, words: str) -> None:
    kw: dict[str, Any] = dict(broken)
    if kw.pop("storage", False):
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        kw["device"] = {"data_dir": str(blocker / "data")}
    if kw.get("unit") == "weak":
        weak = tmp_path / "bodycam.service"
        weak.write_text("[Unit]\nDescription=x\n[Service]\nExecStart=" + sys.executable + "\n")
        kw["unit"] = weak
    if "mqtt" in kw and kw["mqtt"].get("password_file") == "WRONG":
        wrong = tmp_path / "wrong"
        wrong.write_text("guess\n")
        kw["mqtt"] = {"password_file": str(wrong)}
    if "detector" in kw:
        kw["detector"] = {"edgetpu_library": env["libs"][kw["detector"]["edgetpu_library"]]}
    checks = doctor(env, tmp_path, **kw)
    failed = _only(checks, line) if line != "camera" else None
    if line == "camera":  # the encoder cannot be tested without a camera: both lines fail
        bad = {c.name: c.level for c in checks if c.level != "ok"}
        assert bad == {"camera": "fail", "encoder": "fail"}, render(checks)
        failed = checks[0]
    assert failed is not None and words in failed.detail, render(checks)
    assert exit_code(checks) == 2


def test_a_missing_microphone_is_a_warning(env: dict[str, Any], tmp_path: Path) -> None:
    checks = doctor(env, tmp_path, parts_kw={"microphone": False})
    _only(checks, "microphone", "warn")
    assert exit_code(checks) == 1
    assert {c.name: c for c in checks}["encoder"].detail.endswith("; no sound (no microphone)")


def test_the_command_line(env: dict[str, Any], tmp_path: Path) -> None:
    """`bodycam doctor --json` on a machine without the camera hardware: the camera line fails."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[device]\nid = "cam-07"\ndata_dir = "{tmp_path / "data"}"\n[gpio]\nenabled = false\n'
                   f'[gnss]\nenabled = false\n[mqtt]\nenabled = false\n[microphone]\nenabled = false\n')
    res = subprocess.run([sys.executable, "-m", "bodycam.device.cli", "doctor", "--config", str(cfg), "--json"],
                         capture_output=True, text=True, timeout=300)
    out = json.loads(res.stdout)
    by = {c["name"]: c for c in out["checks"]}
    assert [c["name"] for c in out["checks"]] == NAMES
    assert by["camera"]["level"] == "fail" and "picamera2" in by["camera"]["detail"]
    assert by["storage"]["level"] == "ok" and by["gpio"]["level"] == "ok"
    assert res.returncode == 2 and out["result"] == "fail"
