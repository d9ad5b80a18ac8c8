"""Camera conformance: one suite, run against the fake picamera2 (CI) and the real camera (`hardware`).

The first group checks picamera2/libcamera behaviour the firmware relies on (the fake must be
at least as strict as this; on a Pi the same tests run against the real module). The second
group runs the firmware's adapter (`PiCamera`) on top of whichever module the parameter gives.
"""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bodycam.device.errors import DependencyError, HardwareError
from bodycam.device.hw.config import CameraConfig
from bodycam.device.hw.picamera_adapter import PiCamera
from bodycam.hw_sim.fake_picamera2 import FakePicamera2Module, read_video

CFG = CameraConfig(main_size=(640, 480), lores_size=(160, 96), framerate=30.0, iperiod=15)
FRAME_US = 33_333


def frame_numbers(frames: list[tuple[int, bool]]) -> list[int]:
    """Frame numbers from decoded times (the container's time base rounds them by microseconds)."""
    return [round(t / FRAME_US) for t, _ in frames]


def _real_module() -> Any:
    import picamera2
    import picamera2.encoders
    import picamera2.outputs

    return picamera2


def _platform(module: Any) -> str:
    if isinstance(module, FakePicamera2Module):
        return str(module.fake_platform)
    from picamera2 import platform as plat  # type: ignore[import-not-found]

    return "vc4" if plat.get_platform() == plat.Platform.VC4 else "pisp"


@pytest.fixture(params=["fake-vc4", "fake-pisp", pytest.param("real", marks=pytest.mark.hardware)])
def module(request: pytest.FixtureRequest) -> Any:
    if request.param == "real":
        return _real_module()
    return FakePicamera2Module(platform=request.param.split("-")[1])


def _configured(module: Any, lores: dict[str, Any], main: tuple[int, int] = (640, 480)) -> Any:
    cam = module.Picamera2(0)
    cfg = cam.create_video_configuration(main={"size": main, "format": "YUV420"}, lores=lores)
    cam.configure(cfg)
    return cam


# -- picamera2 / libcamera behaviour ---------------------------------------------------------
def test_yuv420_lores_rows_are_padded_to_the_isp_stride(module: Any) -> None:
    cam = _configured(module, {"size": (160, 96), "format": "YUV420"})
    try:
        lo = cam.camera_config["lores"]
        assert lo["size"] == (160, 96)
        stride = lo["stride"]
        align = 64 if _platform(module) == "vc4" else 128
        assert stride >= 160 and stride % align == 0
        cam.start()
        req = cam.capture_request()
        try:
            arr = req.make_array("lores")
        finally:
            req.release()
        assert arr.shape == (96 * 3 // 2, stride) and arr.dtype == np.uint8
    finally:
        cam.close()


def test_odd_sizes_and_oversized_lores_are_refused(module: Any) -> None:
    cam = module.Picamera2(0)
    try:
        cfg = cam.create_video_configuration(main={"size": (640, 480), "format": "YUV420"},
                                             lores={"size": (160, 96), "format": "YUV420"})
        cfg["lores"]["size"] = (161, 96)
        with pytest.raises(RuntimeError, match="even"):
            cam.configure(cfg)
        cfg["lores"]["size"] = (800, 96)
        with pytest.raises(RuntimeError, match="may not exceed main"):
            cam.configure(cfg)
    finally:
        cam.close()


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888"])
def test_rgb_lores_only_on_a_pi5(module: Any, fmt: str) -> None:
    cam = module.Picamera2(0)
    try:
        cfg = cam.create_video_configuration(main={"size": (640, 480), "format": "YUV420"},
                                             lores={"size": (160, 96), "format": fmt})
        if _platform(module) == "vc4":
            with pytest.raises(RuntimeError, match="lores stream must be YUV"):
                cam.configure(cfg)
        else:
            cam.configure(cfg)
            cam.start()
            req = cam.capture_request()
            try:
                assert req.make_array("lores").shape == (96, 160, 3)  # padding sliced off
            finally:
                req.release()
    finally:
        cam.close()


def test_yuv420_sizes_the_isp_cannot_produce_are_adjusted(module: Any) -> None:
    cam = _configured(module, {"size": (160, 90), "format": "YUV420"})
    try:
        w, h = cam.camera_config["lores"]["size"]
        assert (w, h) != (160, 90) and w % 2 == 0 and h % 4 == 0
    finally:
        cam.close()


def test_an_unknown_stream_is_an_error(module: Any) -> None:
    cam = module.Picamera2(0)
    try:
        cam.configure(cam.create_video_configuration(main={"size": (640, 480), "format": "YUV420"}))
        cam.start()
        req = cam.capture_request()
        try:
            with pytest.raises(RuntimeError, match="lores"):
                req.make_array("lores")
        finally:
            req.release()
    finally:
        cam.close()


@pytest.mark.parametrize(("main", "name", "encoding"), [((640, 480), "Smpte170m", "Rec601"),
                                                       ((1278, 720), "Smpte170m", "Rec601"),
                                                       ((1280, 720), "Rec709", "Rec709")])
def test_the_colour_space_follows_the_main_size(module: Any, main: tuple[int, int], name: str,
                                                encoding: str) -> None:
    """picamera2 picks Smpte170m (BT.601) under 1280x720 and Rec709 from there; the lores stream shares it."""
    cam = _configured(module, {"size": (160, 96), "format": "YUV420"}, main=main)
    try:
        cs = cam.camera_configuration()["colour_space"]
        assert f"'{name}'" in str(cs)
        assert cs.ycbcrEncoding.name == encoding and cs.range.name == "Limited"
    finally:
        cam.close()


def test_a_colour_space_that_is_not_a_libcamera_one_is_refused(module: Any) -> None:
    cam = module.Picamera2(0)
    try:
        cfg = cam.create_video_configuration(main={"size": (640, 480), "format": "YUV420"})
        cfg["colour_space"] = "Rec709"
        with pytest.raises(RuntimeError, match="Colour space has incorrect type"):
            cam.configure(cfg)
    finally:
        cam.close()


def _record(module: Any, path: Path, frames: int, error_callback: Any = None, buffer_ms: int | None = None,
            options: dict[str, str] | None = None) -> None:
    cam = _configured(module, {"size": (160, 96), "format": "YUV420"}, main=(320, 240))
    try:
        enc = module.encoders.H264Encoder(bitrate=1_000_000, repeat=True, iperiod=15)
        out = module.outputs.PyavOutput(str(path), format="mp4", options=options)
        out.error_callback = error_callback
        if buffer_ms is None:
            cam.start_encoder(enc, out, name="main")
        else:
            circ = module.outputs.CircularOutput2(buffer_duration_ms=buffer_ms)
            cam.start_encoder(enc, circ, name="main")
            circ.open_output(out)
        cam.start()
        for _ in range(frames):
            cam.capture_request().release()
        with pytest.raises(RuntimeError, match="already running"):
            enc.start()
        cam.stop_encoder()
        with pytest.raises(RuntimeError, match="already stopped"):
            enc.stop()
    finally:
        cam.close()


def test_encoder_writes_h264_with_keyframes_every_iperiod(module: Any, tmp_path: Path) -> None:
    _record(module, tmp_path / "a.mp4", 60)
    frames = read_video(str(tmp_path / "a.mp4"))
    assert len(frames) == 60
    assert [i for i, (_, key) in enumerate(frames) if key] == [0, 15, 30, 45]


def test_circular_output_is_a_delay_line(module: Any, tmp_path: Path) -> None:
    """Frames leave CircularOutput2 only when older than its duration (flushed at stop)."""
    path = tmp_path / "d.mp4"
    cam = _configured(module, {"size": (160, 96), "format": "YUV420"}, main=(320, 240))
    try:
        enc = module.encoders.H264Encoder(bitrate=1_000_000, repeat=True, iperiod=15)
        circ = module.outputs.CircularOutput2(buffer_duration_ms=1000)
        cam.start_encoder(enc, circ, name="main")
        out = module.outputs.PyavOutput(str(path), format="mp4", options={"movflags": "frag_keyframe+empty_moov"})
        circ.open_output(out)
        cam.start()
        for _ in range(45):
            cam.capture_request().release()
        in_file_early = len(read_video(str(path)))
        cam.stop_encoder()
    finally:
        cam.close()
    assert in_file_early < 45 - 25  # about a second (30 frames) still only in RAM
    assert len(read_video(str(path))) == 45


def fill(disk: Path, leave_kb: int = 24) -> None:
    import os

    st = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_kb * 1024))


def test_write_errors_reach_only_the_error_callback(module: Any, tiny_disk: Path) -> None:
    fill(tiny_disk)
    errors: list[BaseException] = []
    _record(module, tiny_disk / "full.mp4", 300, error_callback=errors.append)
    assert errors, "the full disk reached the error callback"
    _record(module, tiny_disk / "silent.mp4", 30)  # without a callback: swallowed, no exception


def test_fragmented_mp4_plays_when_cut_short(module: Any, tmp_path: Path) -> None:
    path = tmp_path / "f.mp4"
    _record(module, path, 90, options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    frames = read_video(str(cut))
    assert len(frames) >= 30 and frame_numbers(frames) == list(range(len(frames)))


# -- the adapter on top of it ----------------------------------------------------------------
def cam(module: Any, cfg: CameraConfig = CFG, segment_s: float | None = None, pre_event_s: float = 2.0) -> PiCamera:
    return PiCamera(cfg, segment_s=segment_s, pre_event_s=pre_event_s,
                    picamera2_module=None if not isinstance(module, FakePicamera2Module) else module)


def test_frames_carry_sensor_time_and_rgb_lores(module: Any) -> None:
    c = cam(module)
    info = c.start()
    assert (info.width, info.height, info.fps) == (640, 480, 30.0)
    frames = [c.read() for _ in range(3)]
    c.stop()
    assert all(f is not None for f in frames)
    f0, f2 = frames[0], frames[2]
    assert f0 is not None and f2 is not None
    assert f0.index == 0 and f2.index == 2 and abs(f2.t_ns - f0.t_ns - 2 * FRAME_US * 1000) < 2_000_000
    assert f0.lores.shape == (96, 160, 3) and f0.lores.dtype == np.uint8
    assert c.read() is None  # after stop
    c.stop()  # twice is fine


@pytest.mark.parametrize("platform", ["vc4", "pisp"])
def test_fake_lores_picture_survives_the_padded_stride(platform: str) -> None:
    module = FakePicamera2Module(platform=platform)
    c = cam(module)
    c.start()
    f = c.read()
    c.stop()
    assert f is not None
    # R ramps over columns, G over rows: a stride mistake shears or garbles both
    assert abs(int(f.lores[48, 0, 0]) - 0) < 8 and abs(int(f.lores[48, 159, 0]) - 255) < 8
    assert abs(int(f.lores[95, 80, 1]) - 255) < 8 and abs(int(f.lores[0, 80, 1]) - 0) < 8
    fake = module.instances[-1]
    assert fake.outstanding == 0 and fake.closed


PURE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), (255, 255, 0), (0, 255, 255)]


def _pure_scene(index: int, w: int, h: int) -> np.ndarray:
    return np.full((h, w, 3), PURE[index % len(PURE)], np.uint8)


@pytest.mark.parametrize("platform", ["vc4", "pisp"])
@pytest.mark.parametrize("main", [(640, 480), (1280, 720)])
def test_pure_colours_reach_the_model_in_the_cameras_colour_space(platform: str, main: tuple[int, int]) -> None:
    """Under 1280x720 the YUV lores is BT.601 (picamera2's Smpte170m), from there BT.709: decoded with
    the colour space the camera reports, a pure colour stays pure (the old BT.709-only decode made
    green (0, 216, 0) at 640x480)."""
    mod = FakePicamera2Module(platform=platform, scene=_pure_scene)
    c = PiCamera(CameraConfig(main_size=main, lores_size=(160, 96)), picamera2_module=mod)
    c.start()
    frames = [c.read() for _ in PURE]
    c.stop()
    for colour, f in zip(PURE, frames, strict=True):
        assert f is not None
        got = f.lores.reshape(-1, 3).astype(int)
        err = int(np.abs(got - np.array(colour)).max())
        assert err <= 2, f"{main}: {colour} reached the model as {tuple(got.mean(axis=0).round())}"
    assert c.lores_ycbcr == (("Rec601", False) if main == (640, 480) else ("Rec709", False))


def test_a_yuv_lores_without_a_known_matrix_is_a_start_error() -> None:
    from bodycam.device.hw.picamera_adapter import ycbcr_of
    from bodycam.hw_sim.fake_picamera2 import ColorSpace

    mod = FakePicamera2Module()
    c = PiCamera(CFG, picamera2_module=mod)
    cam = mod.instances[0]
    real_create = cam.create_video_configuration

    def create(**kwargs: Any) -> dict[str, Any]:
        config = real_create(**kwargs)
        # not one of picamera2's standard spaces, so configure() keeps it as it is (no YCbCr matrix)
        config["colour_space"] = ColorSpace(ColorSpace.Primaries.Rec2020, ColorSpace.TransferFunction.Linear,
                                            ColorSpace.YcbcrEncoding.Null, ColorSpace.Range.Full)
        return config

    cam.create_video_configuration = create  # type: ignore[method-assign]
    with pytest.raises(HardwareError, match=r"colour space .* no YCbCr matrix"):
        c.start()
    c.stop()
    with pytest.raises(HardwareError, match="colour space None"):  # a USB webcam reports none
        ycbcr_of(None)
    assert ycbcr_of(ColorSpace.Sycc()) == ("Rec601", True)


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888", "XRGB8888", "XBGR8888"])
def test_rgb_formats_come_out_in_rgb_order_on_a_pi5(fmt: str) -> None:
    mod = FakePicamera2Module(platform="pisp")
    cfg = CameraConfig(main_size=(640, 480), lores_size=(160, 96), lores_format=fmt)  # type: ignore[arg-type]
    c = PiCamera(cfg, picamera2_module=mod)
    c.start()
    for _ in range(5):
        f = c.read()
    c.stop()
    assert f is not None and f.lores.shape == (96, 160, 3)
    assert f.lores[0, 159, 0] == 255 and f.lores[95, 0, 1] == 255 and f.lores[10, 10, 2] == 4


def test_rgb_lores_on_a_pi4_is_a_clear_start_error() -> None:
    cfg = CameraConfig(main_size=(640, 480), lores_size=(160, 96), lores_format="RGB888")
    c = PiCamera(cfg, picamera2_module=FakePicamera2Module(platform="vc4"))
    with pytest.raises(HardwareError, match="lores stream must be YUV"):
        c.start()
    c.stop()


def test_a_lores_size_the_isp_cannot_make_is_rounded_and_the_model_input_cut_from_it(
        caplog: pytest.LogCaptureFixture) -> None:
    mod = FakePicamera2Module()
    c = PiCamera(CameraConfig(main_size=(640, 360), lores_size=(160, 90)), picamera2_module=mod)
    with caplog.at_level(logging.INFO):
        c.start()
    f = c.read()
    c.stop()
    assert mod.instances[0].camera_config["lores"]["size"] == (160, 92) and c.lores_size == (160, 92)
    assert f is not None and f.lores.shape == (90, 160, 3)
    assert any("160x92" in r.message and "160x90" in r.message for r in caplog.records)


def test_frames_the_loop_was_too_slow_for_leave_index_gaps() -> None:
    mod = FakePicamera2Module(drop={3, 4, 7})
    c = PiCamera(CFG, picamera2_module=mod)
    c.start()
    frames = [c.read() for _ in range(6)]
    c.stop()
    assert [f.index for f in frames if f is not None] == [0, 1, 2, 5, 6, 8] and c.dropped == 3


def test_recording_holds_the_pre_event_buffer_and_loses_no_frame_at_segment_cuts(
        module: Any, tmp_path: Path) -> None:
    cfg = CameraConfig(main_size=(320, 240), lores_size=(160, 96), framerate=30.0, iperiod=15)
    c = cam(module, cfg, segment_s=1.0, pre_event_s=2.0)
    c.start()
    for _ in range(100):  # 3.3 s: the 2 s buffer is full
        c.read()
    c.start_recording(lambda k: tmp_path / f"rec/segment-{k:05d}.mp4")
    for _ in range(110):
        c.read()
    c.stop_recording()
    assert not c.recording
    files = [tmp_path / f"rec/segment-{k:05d}.mp4" for k in range(len(c.segments))]
    assert c.segments == files and len(files) >= 3
    per_file = [read_video(str(p)) for p in files]
    for frames in per_file:
        assert frames and frames[0] == (0, True)  # every segment starts at a keyframe, at 0
        assert frame_numbers(frames) == list(range(len(frames)))  # no gaps inside
    total = sum(len(f) for f in per_file)
    # from a keyframe at least 2 s (60 frames) before the trigger, every frame up to the last one
    # read, none lost at the segment cuts
    assert 60 <= total - 110 <= 60 + 15
    # after stopping, the pre-event buffer starts again and a new recording works
    for _ in range(10):
        c.read()
    c.start_recording(lambda k: tmp_path / f"rec2/segment-{k:05d}.mp4", include_buffer=False)
    for _ in range(40):
        c.read()
    c.stop()
    second = read_video(str(tmp_path / "rec2/segment-00000.mp4"))
    assert second and second[0][1] and 40 - 15 <= len(second) <= 40


def test_a_write_error_is_reported_at_the_next_frame(module: Any, tiny_disk: Path) -> None:
    cfg = CameraConfig(main_size=(320, 240), lores_size=(160, 96), framerate=30.0, iperiod=15)
    c = cam(module, cfg, pre_event_s=1.0)
    c.start()
    fill(tiny_disk)
    c.start_recording(lambda k: tiny_disk / f"segment-{k:05d}.mp4")
    for n in itertools.count():
        c.read()
        if c.footage_error() is not None or n > 3000:
            break
    c.stop()
    err = c.footage_error()
    assert err is not None and "segment-00000.mp4" in err and ("full" in err or "write failed" in err)


def _in_thread(fn: Any, limit_s: float) -> tuple[str, Any, float]:
    """Run ``fn`` on a daemon thread for at most ``limit_s``: ("ok", result) / ("raised", exc) /
    ("blocked", None), and the seconds it took (a hang must fail the test, not stall the suite)."""
    import threading
    import time

    out: dict[str, Any] = {}

    def go() -> None:
        try:
            out["ok"] = fn()
        except BaseException as exc:  # handed to the test
            out["raised"] = exc

    t0 = time.monotonic()
    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(limit_s)
    took = time.monotonic() - t0
    if t.is_alive():
        return "blocked", None, took
    key = next(iter(out))
    return key, out[key], took


def test_fake_capture_request_blocks_when_no_frame_comes_as_picamera2_does() -> None:
    """picamera2 waits for ever (libcamera only logs the frontend timeout and cancels the requests);
    ``wait=<s>`` raises TimeoutError and leaves the job queued; cancel_all_and_flush() cancels it."""
    import concurrent.futures

    mod = FakePicamera2Module(frames=1)
    cam = mod.Picamera2(0)
    cam.configure(cam.create_video_configuration(main={"size": (640, 480), "format": "YUV420"},
                                                 lores={"size": (160, 96), "format": "YUV420"}))
    kind, _, _ = _in_thread(cam.capture_request, 0.3)  # not started: no frame, no error either
    assert kind == "blocked"
    cam.cancel_all_and_flush()
    cam.start()
    cam.capture_request().release()  # the one frame the sensor gives
    kind, _, _ = _in_thread(cam.capture_request, 0.3)
    assert kind == "blocked"  # a dead sensor: no RuntimeError, no return
    cam.cancel_all_and_flush()
    kind, exc, took = _in_thread(lambda: cam.capture_request(wait=0.2), 5.0)
    assert kind == "raised" and isinstance(exc, TimeoutError) and not isinstance(exc, RuntimeError)
    assert isinstance(exc, concurrent.futures.TimeoutError) and 0.15 < took < 2.0
    assert len(cam._job_list) == 1  # the timed-out job stays queued ...
    waiter = cam.capture_request(wait=False)
    kind, exc, _ = _in_thread(lambda: cam.wait(waiter), 5.0)
    assert kind == "blocked"
    cam.cancel_all_and_flush()  # ... until cancelled: a waiter gets CancelledError
    assert isinstance(_in_thread(lambda: cam.wait(waiter), 5.0)[1], concurrent.futures.CancelledError)
    assert cam._job_list == []
    cam.close()


def test_fake_a_timed_out_job_takes_the_next_frame_and_holds_its_buffer() -> None:
    """picamera2 serves queued jobs oldest first: one abandoned after a timeout takes the next frame."""
    mod = FakePicamera2Module()
    cam = mod.Picamera2(0)
    cam.configure(cam.create_video_configuration(main={"size": (640, 480), "format": "YUV420"},
                                                 lores={"size": (160, 96), "format": "YUV420"}, buffer_count=3))
    cam.start()
    held = [cam.capture_request(), cam.capture_request()]  # buffer_count - 1: the camera has none left
    with pytest.raises(TimeoutError):
        cam.capture_request(wait=0.1)
    held[0].release()  # a buffer comes back: the abandoned job gets the frame, not the next caller
    assert cam.outstanding == 2 and cam._job_list == []
    held[1].release()
    req = cam.capture_request(wait=1.0)
    assert req.index == 3  # frame 2 went to the abandoned job
    req.release()
    cam.close()


def test_camera_timeout_is_a_hardware_error() -> None:
    """A dead camera (picamera2 blocks for ever) is a HardwareError within capture_timeout_s, well
    inside the 10 s systemd watchdog; the abandoned job is cancelled so it takes no later frame."""
    mod = FakePicamera2Module(frames=3)
    c = PiCamera(CFG, picamera2_module=mod)
    c.start()
    for _ in range(3):
        assert c.read() is not None
    kind, exc, took = _in_thread(c.read, 8.0)
    assert kind != "blocked", "read() hung on a dead camera (the watchdog would kill the firmware)"
    assert 1.0 <= c.capture_timeout_s <= 6.0
    assert kind == "raised" and isinstance(exc, HardwareError), exc
    assert "no frame for 1.5 s" in str(exc) and "sensor cable" in str(exc)
    assert c.capture_timeout_s - 0.1 < took < c.capture_timeout_s + 2.0
    assert mod.instances[0]._job_list == []  # cancel_all_and_flush(): nothing left to steal a frame
    c.stop()
    assert mod.instances[0].closed


@pytest.mark.parametrize(("fps", "timeout_s"), [(30.0, 1.5), (5.0, 1.5), (2.0, 3.0), (1.0, 5.5)])
def test_the_capture_timeout_follows_libcameras_own(fps: float, timeout_s: float) -> None:
    """libcamera declares the sensor dead after max(1 s, 5 frames); the adapter waits 0.5 s longer, < 10 s."""
    c = PiCamera(CameraConfig(main_size=(640, 480), lores_size=(160, 96), framerate=fps),
                 picamera2_module=FakePicamera2Module())
    assert c.capture_timeout_s == pytest.approx(timeout_s)
    c.stop()


def _busy() -> OSError:
    import errno

    return OSError(errno.EBUSY, "Device or resource busy", "/dev/video11")  # open('/dev/video11', 'rb+')


def test_fake_encoder_device_errors_are_oserror_after_the_outputs_started() -> None:
    """picamera2's Encoder.start sets _running and starts the outputs before V4L2Encoder._start opens
    /dev/video11; the OSError is not wrapped, and start_encoder does not keep the encoder."""
    mod = FakePicamera2Module(encoder_error=_busy())
    cam = mod.Picamera2(0)
    cam.configure(cam.create_video_configuration(main={"size": (320, 240), "format": "YUV420"}))
    enc = mod.encoders.H264Encoder(bitrate=1_000_000, repeat=True, iperiod=15)
    circ = mod.outputs.CircularOutput2(buffer_duration_ms=1000)
    with pytest.raises(OSError, match="video11") as info:
        cam.start_encoder(enc, circ, name="main")
    assert not isinstance(info.value, RuntimeError)
    assert enc.running and circ.recording and cam.encoders == []
    mod.encoder_error = None
    enc2 = mod.encoders.H264Encoder(bitrate=1_000_000, repeat=True, iperiod=15)
    cam.start_encoder(enc2, mod.outputs.CircularOutput2(buffer_duration_ms=1000), name="main")
    assert cam.encoders == [enc2]
    cam.close()


@pytest.mark.parametrize("error", [_busy(), FileNotFoundError(2, "No such file or directory", "/dev/video11"),
                                   PermissionError(13, "Permission denied", "/dev/video11")])
def test_an_encoder_device_error_at_start_is_a_hardware_error(error: OSError) -> None:
    """A BodycamError, so the firmware reports 'start-up failed' and exits 78 instead of crashing."""
    mod = FakePicamera2Module(encoder_error=error)
    c = PiCamera(CFG, picamera2_module=mod)
    with pytest.raises(HardwareError, match=r"camera: cannot start: .*/dev/video11"):
        c.start()
    c.stop()
    assert mod.instances[0].closed and not mod.instances[0].started


def test_an_encoder_that_cannot_restart_after_a_recording_is_a_hardware_error(tmp_path: Path) -> None:
    """stop_recording finishes the recording; the failed restart (no footage any more) is a camera
    failure at the next read(), and a new recording is refused with the same message."""
    mod = FakePicamera2Module()
    c = PiCamera(CFG, pre_event_s=1.0, picamera2_module=mod)
    c.start()
    for _ in range(20):
        c.read()
    c.start_recording(lambda k: tmp_path / f"segment-{k:05d}.mp4")
    for _ in range(30):
        c.read()
    mod.encoder_error = _busy()
    c.stop_recording()  # the old adapter: OSError escapes (the recorder takes it for a storage failure)
    assert c.segments == [tmp_path / "segment-00000.mp4"] and len(read_video(str(c.segments[0]))) >= 30
    with pytest.raises(HardwareError, match=r"encoder did not restart.*Device or resource busy"):
        c.read()
    with pytest.raises(HardwareError, match="encoder did not restart"):
        c.start_recording(lambda k: tmp_path / f"again-{k:05d}.mp4")
    c.stop()
    assert mod.instances[0].closed


def test_missing_camera_and_missing_picamera2(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HardwareError, match="camera 1: cannot open"):
        PiCamera(CameraConfig(camera_index=1, lores_size=(160, 96)), picamera2_module=FakePicamera2Module())
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(DependencyError, match="python3-picamera2"):
        PiCamera(CFG)


def test_import_does_not_load_picamera2() -> None:
    import bodycam.device.hw.picamera_adapter  # noqa: F401

    assert sys.modules.get("picamera2") is None


def test_example_config_starts_the_lores_stream_for_the_model_without_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The shipped example config must not warn about a size mismatch at every start (issue 10); the
    ISP cannot make the model's 160x90 in YUV420, so the lores stream is 160x92 (one INFO line, issue 9)."""
    import dataclasses

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
    # R ramps over columns, G over rows (cut from the centre of the 92-row stream)
    assert abs(int(frame.lores[45, 0, 0]) - 0) < 8 and abs(int(frame.lores[45, 159, 0]) - 255) < 8
    assert int(frame.lores[89, 80, 1]) > 240 and int(frame.lores[0, 80, 1]) < 12
    assert mod.instances[0].camera_config["lores"]["size"] == (160, 92)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "lores" in r.getMessage()]
    assert [r for r in caplog.records if r.levelno == logging.INFO and "160x92" in r.getMessage()]


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
    camera = firmware.real_parts(cfg, clock, Watchdog(clock, environ={})).camera
    camera.start()
    camera.stop()
    assert mod.instances[0].camera_config["lores"]["size"] == (160, 92)
    assert any(r.levelname == "WARNING" and "camera.lores_size 160x96 ignored" in r.getMessage()
               for r in caplog.records)


def test_a_camera_without_a_lores_size_is_refused() -> None:
    with pytest.raises(HardwareError, match="lores_size is not set"):
        PiCamera(CameraConfig(), picamera2_module=FakePicamera2Module(1))
