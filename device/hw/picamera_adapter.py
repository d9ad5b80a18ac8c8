"""The Raspberry Pi camera through picamera2: frames for inference, H.264 footage in hardware.

One video configuration with two streams: ``main`` (full size) goes to the H.264
encoder, whose output is a ``CircularOutput2`` pre-event buffer (by duration;
playback starts at a keyframe); ``lores`` (the model's input size) is read per frame
with ``capture_request()`` and converted to RGB. Frame times are the request's
``SensorTimestamp`` (ns). Footage: ``start_recording(path_factory)`` opens a
``PyavOutput`` under the circular buffer (with the buffered seconds when
``include_buffer``), optionally rotating segments every ``segment_s`` (default: one
file per recording); ``stop_recording()`` flushes the buffer into the file.

picamera2 behaviour to know (see its ``CircularOutput2``): the buffer is a delay line,
so closing an output leaves the last ``buffer_s`` unwritten. ``stop_recording()``
therefore stops the encoder (which flushes) and starts a fresh buffer (the pre-event
buffer is empty right after a recording). A new output starts at a keyframe, so
segment rotation loses up to ``iperiod - 1`` frames per boundary: that is why it is
off by default. picamera2 is imported only in the constructor;
``picamera2_module`` replaces it (tests use ``bodycam.hw_sim.fake_picamera2``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import DependencyError, HardwareError
from bodycam.device.hw.config import CameraConfig
from bodycam.device.hw.frames import Frame, StreamInfo

PathFactory = Callable[[int], Path]


def _import_picamera2() -> Any:
    try:
        import picamera2
        import picamera2.encoders
        import picamera2.outputs
    except ImportError as exc:
        raise DependencyError(
            "picamera2 is not available: on Raspberry Pi OS `apt install python3-picamera2` and create "
            "the venv with --system-site-packages"
        ) from exc
    return picamera2


def yuv420_to_rgb(yuv: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """I420 (picamera2's YUV420 array: (H*3/2, stride)) to RGB, BT.709 limited range.

    The chroma planes start at flat offsets ``H*stride`` and ``H*stride + (H/2)*(stride/2)``;
    they do not fall on row boundaries of the array when H/2 is odd (e.g. 160x90).
    """
    stride = yuv.shape[1]
    flat = yuv.reshape(-1)
    cw, ch, cs = width // 2, height // 2, stride // 2
    u0 = height * stride
    v0 = u0 + ch * cs
    y = yuv[:height, :width].astype(np.float32) - 16.0
    u = flat[u0 : u0 + ch * cs].reshape(ch, cs)[:, :cw].astype(np.float32) - 128.0
    v = flat[v0 : v0 + ch * cs].reshape(ch, cs)[:, :cw].astype(np.float32) - 128.0
    u = u.repeat(2, axis=0).repeat(2, axis=1)
    v = v.repeat(2, axis=0).repeat(2, axis=1)
    y *= 1.164
    rgb = np.stack((y + 1.793 * v, y - 0.213 * u - 0.533 * v, y + 2.112 * u), axis=-1)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def to_rgb(array: npt.NDArray[np.uint8], fmt: str, width: int, height: int) -> npt.NDArray[np.uint8]:
    """A picamera2 ``make_array`` result in ``fmt`` as (H, W, 3) RGB.

    picamera2 names formats by libcamera/DRM convention: "RGB888" arrays hold B,G,R per
    pixel, "BGR888" hold R,G,B; X-formats carry a 4th byte.
    """
    if fmt == "YUV420":
        rgb = yuv420_to_rgb(array, width, height)
    elif fmt in ("RGB888", "XRGB8888"):
        rgb = array[:height, :width, 2::-1]
    elif fmt in ("BGR888", "XBGR8888"):
        rgb = array[:height, :width, :3]
    else:
        raise HardwareError(f"camera: unsupported lores format {fmt}")
    return np.ascontiguousarray(rgb)


class PiCamera:
    """The firmware's Camera over picamera2 (``start`` / ``read`` / ``stop`` + footage)."""

    def __init__(
        self,
        config: CameraConfig,
        segment_s: float | None = None,
        picamera2_module: Any | None = None,
    ) -> None:
        if config.lores_size is None:  # the firmware fills it in from the model's sidecar
            raise HardwareError("camera: camera.lores_size is not set (the firmware sets it to the model's input size)")
        self._cfg = config
        self._lores: tuple[int, int] = config.lores_size
        self._segment_ns = None if segment_s is None else round(segment_s * 1e9)
        self._pc2 = picamera2_module if picamera2_module is not None else _import_picamera2()
        try:
            self._cam = self._pc2.Picamera2(config.camera_index)
        except (RuntimeError, IndexError, OSError) as exc:
            raise HardwareError(f"camera {config.camera_index}: cannot open: {exc}") from exc
        self._lock = threading.Lock()
        self._encoder: Any = None
        self._circular: Any = None
        self._index = 0
        self._started = False
        self._path_factory: PathFactory | None = None
        self._segment = 0
        self._segment_start_ns: int | None = None
        self._last_t_ns: int | None = None
        self._open_pending = False
        self.segments: list[Path] = []

    # -- Camera protocol ----------------------------------------------------------
    def start(self) -> StreamInfo:
        c = self._cfg
        frame_us = round(1e6 / c.framerate)
        kwargs: dict[str, Any] = {}
        if c.hflip or c.vflip:
            import importlib

            libcamera = importlib.import_module("libcamera")  # ships with picamera2 on Raspberry Pi OS
            kwargs["transform"] = libcamera.Transform(hflip=int(c.hflip), vflip=int(c.vflip))
        video = self._cam.create_video_configuration(
            main={"size": tuple(c.main_size), "format": "YUV420"},
            lores={"size": self._lores, "format": c.lores_format},
            controls={"FrameDurationLimits": (frame_us, frame_us)},
            encode="main",
            **kwargs,
        )
        try:
            self._cam.configure(video)
            self._cam.start()
            self._start_encoder()
        except RuntimeError as exc:
            raise HardwareError(f"camera: cannot start: {exc}") from exc
        self._started = True
        return StreamInfo(width=c.main_size[0], height=c.main_size[1], fps=c.framerate, has_audio=False)

    def _start_encoder(self) -> None:
        c = self._cfg
        self._encoder = self._pc2.encoders.H264Encoder(bitrate=c.bitrate, repeat=True, iperiod=c.iperiod)
        self._circular = self._pc2.outputs.CircularOutput2(buffer_duration_ms=round(c.buffer_s * 1000))
        self._cam.start_encoder(self._encoder, self._circular, name="main")

    def read(self) -> Frame | None:
        if not self._started:
            return None
        try:
            request = self._cam.capture_request()
        except RuntimeError as exc:  # e.g. "Camera frontend has timed out!"
            raise HardwareError(f"camera: capture failed: {exc}") from exc
        try:
            t_ns = int(request.get_metadata()["SensorTimestamp"])
            w, h = self._lores
            lores = to_rgb(request.make_array("lores"), self._cfg.lores_format, w, h)
        finally:
            request.release()
        frame = Frame(index=self._index, t_ns=t_ns, lores=lores)
        self._index += 1
        self._last_t_ns = t_ns
        self._maybe_rotate(t_ns)
        return frame

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            self._cam.stop_encoder()  # flushes an open recording
            self._cam.stop()
        finally:
            self._cam.close()
            self._path_factory = None

    # -- footage ------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self._path_factory is not None

    def start_recording(self, path_factory: PathFactory, include_buffer: bool = True) -> None:
        """Write footage to ``path_factory(0)``, ``path_factory(1)``, ... (one file per segment)."""
        with self._lock:
            if self._path_factory is not None:
                raise HardwareError("camera: already recording")
            self._path_factory = path_factory
            self._segment = 0
            self._segment_start_ns = self._last_t_ns
            if include_buffer:
                self._open_segment()
            else:
                # Trim the buffer to the newest frame; open once the next frame has arrived.
                self._circular.buffer_duration_ms = 1
                self._open_pending = True

    def _open_segment(self) -> None:
        assert self._path_factory is not None
        path = Path(self._path_factory(self._segment))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._circular.open_output(self._pc2.outputs.PyavOutput(str(path), format="mp4"))
        self.segments.append(path)

    def _maybe_rotate(self, t_ns: int) -> None:
        with self._lock:
            if self._path_factory is None:
                return
            if self._open_pending:
                self._open_pending = False
                self._open_segment()
                self._circular.buffer_duration_ms = round(self._cfg.buffer_s * 1000)
                return
            if self._segment_start_ns is None:
                self._segment_start_ns = t_ns
            if self._segment_ns is not None and t_ns - self._segment_start_ns >= self._segment_ns:
                self._circular.close_output()
                self._segment += 1
                self._segment_start_ns = t_ns
                self._open_segment()

    def stop_recording(self) -> None:
        """Finish the recording, including the buffered tail; then restart the pre-event buffer."""
        with self._lock:
            if self._path_factory is None:
                return
            self._path_factory = None
            if self._open_pending:  # stopped before the first frame: nothing to write
                self._open_pending = False
                self._circular.buffer_duration_ms = round(self._cfg.buffer_s * 1000)
                return
            self._cam.stop_encoder()  # CircularOutput2.stop() flushes the delay line into the file
            self._start_encoder()
