"""The picamera2 adapter against the fake picamera2 module (and a real-camera test on a Pi)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from bodycam.device.errors import DependencyError, HardwareError
from bodycam.device.hw.config import CameraConfig
from bodycam.device.hw.picamera_adapter import PiCamera
from bodycam.hw_sim.fake_picamera2 import FakePicamera2Module, read_packets

CFG = CameraConfig(main_size=(640, 480), lores_size=(160, 96), framerate=30.0, iperiod=15, buffer_s=2.0)


def cam(tmp_path: Path, frames: int = 10**9, cfg: CameraConfig = CFG, segment_s: float | None = None) -> tuple[PiCamera, FakePicamera2Module]:
    mod = FakePicamera2Module(frames)
    return PiCamera(cfg, segment_s=segment_s, picamera2_module=mod), mod


def test_frames_carry_sensor_time_and_rgb_lores(tmp_path: Path) -> None:
    c, mod = cam(tmp_path)
    info = c.start()
    assert (info.width, info.height, info.fps) == (640, 480, 30.0)
    fake = mod.instances[0]
    assert fake.camera_config is not None and fake.camera_config["lores"]["size"] == (160, 96)
    assert fake.camera_config["controls"]["FrameDurationLimits"] == (33333, 33333)
    frames = [c.read() for _ in range(3)]
    c.stop()
    assert all(f is not None for f in frames)
    f0, f2 = frames[0], frames[2]
    assert f0 is not None and f2 is not None
    assert f0.index == 0 and f0.t_ns == fake.boot_ns and f2.t_ns - f0.t_ns == 2 * 33_333_000
    assert f0.lores.shape == (96, 160, 3) and f0.lores.dtype == np.uint8
    # R ramps over columns, G over rows (YUV420 -> RGB within chroma-subsampling error)
    assert abs(int(f0.lores[48, 0, 0]) - 0) < 8 and abs(int(f0.lores[48, 159, 0]) - 255) < 8
    assert abs(int(f0.lores[95, 80, 1]) - 255) < 8 and abs(int(f0.lores[0, 80, 1]) - 0) < 8
    assert fake.outstanding == 0 and fake.closed  # every request released, camera closed
    assert c.read() is None  # after stop


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888", "XRGB8888", "XBGR8888"])
def test_rgb_formats_come_out_in_rgb_order(tmp_path: Path, fmt: str) -> None:
    cfg = CameraConfig(main_size=(640, 480), lores_size=(160, 96), lores_format=fmt)  # type: ignore[arg-type]
    c, _ = cam(tmp_path, cfg=cfg)
    c.start()
    for _ in range(5):
        f = c.read()
    c.stop()
    assert f is not None and f.lores.shape == (96, 160, 3)
    assert f.lores[0, 159, 0] == 255 and f.lores[95, 0, 1] == 255 and f.lores[10, 10, 2] == 4


def test_recording_includes_pre_event_buffer_from_a_keyframe(tmp_path: Path) -> None:
    c, _ = cam(tmp_path)
    c.start()
    for _ in range(100):  # 3.3 s: the 2 s buffer is full
        c.read()
    c.start_recording(lambda k: tmp_path / f"rec/segment-{k:05d}.mp4")
    for _ in range(30):
        c.read()
    c.stop_recording()
    pk = read_packets(tmp_path / "rec/segment-00000.mp4")
    first, last = pk[0], pk[-1]
    assert first["keyframe"] and first["frame"] % 15 == 0
    assert 100 - 61 <= first["frame"] <= 100 - 45  # ~2 s before the trigger, at a keyframe
    assert last["frame"] == 129  # the buffered tail was flushed on stop
    assert [p["frame"] for p in pk] == list(range(first["frame"], 130))  # nothing lost or repeated
    assert not c.recording
    # after stopping, the pre-event buffer starts again and a new recording works
    for _ in range(10):
        c.read()
    c.start_recording(lambda k: tmp_path / f"rec2/segment-{k:05d}.mp4", include_buffer=False)
    for _ in range(20):
        c.read()
    c.stop()
    pk2 = read_packets(tmp_path / "rec2/segment-00000.mp4")
    assert pk2[0]["keyframe"] and 140 <= pk2[0]["frame"] < 140 + 15 and pk2[-1]["frame"] == 159


def test_segments_rotate(tmp_path: Path) -> None:
    c, _ = cam(tmp_path, segment_s=1.0)
    c.start()
    c.start_recording(lambda k: tmp_path / f"segment-{k:05d}.mp4")
    for _ in range(110):
        c.read()
    c.stop_recording()
    c.stop()
    assert [p.name for p in c.segments] == [f"segment-{k:05d}.mp4" for k in range(4)]
    frames = [[p["frame"] for p in read_packets(s)] for s in c.segments]
    for seg in frames:
        assert seg and seg[0] % 15 == 0  # each segment starts at a keyframe
    flat = [f for seg in frames for f in seg]
    assert flat == sorted(set(flat)) and flat[0] == 0 and flat[-1] == 109
    assert 110 - len(flat) <= 3 * 14  # the documented loss: < iperiod frames per boundary


def test_camera_timeout_is_a_hardware_error(tmp_path: Path) -> None:
    c, _ = cam(tmp_path, frames=3)
    c.start()
    for _ in range(3):
        assert c.read() is not None
    with pytest.raises(HardwareError, match="frontend has timed out"):
        c.read()
    c.stop()


def test_missing_camera_and_missing_picamera2(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HardwareError, match="camera 1: cannot open"):
        PiCamera(CameraConfig(camera_index=1, lores_size=(160, 96)), picamera2_module=FakePicamera2Module())
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(DependencyError, match="python3-picamera2"):
        PiCamera(CFG)


def test_import_does_not_load_picamera2() -> None:
    import bodycam.device.hw.picamera_adapter  # noqa: F401

    assert sys.modules.get("picamera2") is None


@pytest.mark.hardware
def test_real_camera_delivers_frames(tmp_path: Path) -> None:
    c = PiCamera(CFG)
    c.start()
    try:
        frames = [c.read() for _ in range(60)]
        c.start_recording(lambda k: tmp_path / f"segment-{k:05d}.mp4")
        for _ in range(60):
            c.read()
        c.stop_recording()
    finally:
        c.stop()
    ts = [f.t_ns for f in frames if f is not None]
    assert len(ts) == 60 and all(b > a for a, b in itertools.pairwise(ts))
    assert (tmp_path / "segment-00000.mp4").stat().st_size > 10_000


def test_example_config_starts_the_lores_stream_at_the_model_size_without_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 10 item 10: the shipped example config must not log a size mismatch at every start."""
    import dataclasses
    import logging

    from bodycam.device import firmware
    from bodycam.device.clock import SystemClock
    from bodycam.device.config import load_config
    from bodycam.device.hw import picamera_adapter
    from bodycam.device.hw.config import GnssConfig, GpioConfig
    from bodycam.device.hw.watchdog import Watchdog

    example = Path(__file__).resolve().parents[2] / "docs" / "config.example.toml"
    mod = FakePicamera2Module(10)
    monkeypatch.setattr(picamera_adapter, "_import_picamera2", lambda: mod)
    cfg = dataclasses.replace(load_config(example), gnss=GnssConfig(enabled=False),
                              gpio=GpioConfig(enabled=False))
    assert load_config(example).camera.lores_size is None
    clock = SystemClock()
    with caplog.at_level(logging.DEBUG):
        camera = firmware.real_parts(cfg, clock, Watchdog(clock, environ={})).camera
        camera.start()
        frame = camera.read()
        camera.stop()
    assert frame is not None and frame.lores.shape == (90, 160, 3)
    # 90 rows: the chroma planes of I420 start mid-row; R ramps over columns, G over rows
    assert abs(int(frame.lores[45, 0, 0]) - 0) < 8 and abs(int(frame.lores[45, 159, 0]) - 255) < 8
    assert abs(int(frame.lores[89, 80, 1]) - 255) < 8 and abs(int(frame.lores[0, 80, 1]) - 0) < 8
    assert mod.instances[0].camera_config["lores"]["size"] == (160, 90)
    assert not [r for r in caplog.records if "lores" in r.getMessage()]


def test_a_lores_size_that_differs_from_the_model_is_overridden_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses

    from bodycam.device import firmware
    from bodycam.device.clock import SystemClock
    from bodycam.device.config import AppConfig
    from bodycam.device.hw import picamera_adapter
    from bodycam.device.hw.config import GnssConfig, GpioConfig
    from bodycam.device.hw.watchdog import Watchdog

    mod = FakePicamera2Module(10)
    monkeypatch.setattr(picamera_adapter, "_import_picamera2", lambda: mod)
    cfg = AppConfig(camera=dataclasses.replace(CameraConfig(), lores_size=(160, 96)),
                    gnss=GnssConfig(enabled=False), gpio=GpioConfig(enabled=False))
    clock = SystemClock()
    firmware.real_parts(cfg, clock, Watchdog(clock, environ={})).camera.start()
    assert mod.instances[0].camera_config["lores"]["size"] == (160, 90)
    assert any(r.levelname == "WARNING" and "camera.lores_size 160x96 ignored" in r.getMessage()
               for r in caplog.records)


def test_a_camera_without_a_lores_size_is_refused() -> None:
    with pytest.raises(HardwareError, match="lores_size is not set"):
        PiCamera(CameraConfig(), picamera2_module=FakePicamera2Module(1))
