"""The Raspberry Pi camera through picamera2: frames for inference, H.264 footage in hardware.

One video configuration with two streams: ``main`` (full size, YUV420) goes to the
H.264 encoder, whose output is a ``CircularOutput2`` pre-event buffer of
``recording.pre_event_s``; ``lores`` is read per frame with ``capture_request()`` and
turned into the model's RGB input. Frame times are the request's ``SensorTimestamp``
(ns); the frame index is counted from them, so frames the loop was too slow to take
(the sensor does not wait) leave a gap instead of shifting every later index.

Lores, as the ISP delivers it (see ``hw_sim/fake_picamera2.py`` for the rules):

* a Pi 4 (VC4) gives only YUV420 lores; a Pi 5 (PiSP) also ``RGB888``/``BGR888``;
* YUV420 rows are padded to the ISP's stride (a 160-wide stream is 192 bytes wide on a
  Pi 4): the stride is taken from the array, the U and V planes from their offsets;
* the ISP cannot produce every size (YUV420 needs chroma planes of even size): the
  model's input size is rounded up to one it can (160x90 -> 160x92), the size libcamera
  actually configured is read back, and the model input is cut from its centre (or
  resampled, if libcamera shrank it), with one log line.

Footage (this camera is the recorder's footage path, see ``device/footage/recorder.py``):
``start_recording(path_for)`` opens a :class:`~bodycam.device.hw.picamera_output.SegmentedOutput`
(fragmented MP4 through picamera2's ``PyavOutput``, segments cut at keyframes inside the
output so none is lost, write errors surfaced) under the circular buffer and shrinks the
buffer to 1 ms: the whole pre-event buffer is written at once and live footage follows
about one frame behind, instead of ``pre_event_s`` behind in RAM (``CircularOutput2`` is
a delay line). ``stop_recording()`` stops the encoder, which flushes the last frame, and
starts a fresh pre-event buffer.

Sound (``start_sound`` / ``write_sound``, see ``device/footage/aac_track.py``): the loop hands
over the microphone's blocks after reading them; they are encoded to AAC here and put into the
same ``CircularOutput2`` as the picture with ``outputframe(None, True, t_us, packet, audio=True)``,
exactly as picamera2's own audio thread does, stamped ``sensor time - encoder.firsttimestamp``
(the H.264 encoder's times are ``SensorTimestamp``/1000 minus its first frame's), so the
pre-event buffer keeps the sound with the picture and the files carry both on one timeline. The
AAC stream is declared to each new buffer before a recording opens it; a recording already open
when sound starts gets it from its next restart (``PyavOutput`` refuses packets of a stream it was
not told about). The last ~130 ms of sound of a recording (the AAC encoder's delay) stay in the
encoder when it stops. picamera2 is imported only in the constructor;
``picamera2_module`` replaces it (tests use ``bodycam.hw_sim.fake_picamera2``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import DependencyError, HardwareError
from bodycam.device.footage.aac_track import AacError, AacTrack
from bodycam.device.hw.config import CameraConfig
from bodycam.device.hw.frames import Frame, StreamInfo
from bodycam.device.hw.microphone import AudioBlock
from bodycam.device.hw.picamera_output import SegmentedOutput

log = logging.getLogger(__name__)

PathFactory = Callable[[int], Path]
YUV_FORMATS = ("YUV420", "YVU420")


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


def _device_errors() -> tuple[type[BaseException], ...]:
    """What picamera2 lets through from libcamera and the encoder's device: ``RuntimeError`` (its own
    checks), ``OSError`` (VC4: ``V4L2Encoder._start`` opens ``/dev/video11`` and runs ``ioctl``s: a
    missing node, no permission, a busy codec), ``ValueError`` and PyAV's errors (Pi 5:
    ``LibavH264Encoder``)."""
    errors: tuple[type[BaseException], ...] = (RuntimeError, OSError, ValueError)
    try:
        import av.error
    except ImportError:
        return errors
    return (*errors, av.error.FFmpegError)


#: luma weights (Kr, Kb) of libcamera's YCbCr encodings (ITU-R BT.601, BT.709, BT.2020)
YCBCR_KR_KB = {"Rec601": (0.299, 0.114), "Rec709": (0.2126, 0.0722), "Rec2020": (0.2627, 0.0593)}


def ycbcr_of(colour_space: Any) -> tuple[str, bool]:
    """(YCbCr encoding name, full range) of a ``libcamera.ColorSpace`` (its ``ycbcrEncoding`` and
    ``range`` are enums with ``.name``: ``src/py/libcamera/py_color_space.cpp``); ``HardwareError``
    when the camera reports none the lores picture can be decoded with."""
    encoding = getattr(getattr(colour_space, "ycbcrEncoding", None), "name", None)
    rng = getattr(getattr(colour_space, "range", None), "name", None)
    if encoding not in YCBCR_KR_KB or rng not in ("Limited", "Full"):
        raise HardwareError(f"camera: the YUV lores stream's colour space {colour_space} has no YCbCr matrix "
                            f"this firmware decodes ({', '.join(YCBCR_KR_KB)}; limited or full range)")
    return str(encoding), rng == "Full"


def yuv420_to_rgb(yuv: npt.NDArray[np.uint8], width: int, height: int, swap_uv: bool = False,
                  encoding: str = "Rec709", full_range: bool = False) -> npt.NDArray[np.uint8]:
    """picamera2's YUV420 array ``(H*3/2, stride)`` (rows padded to any stride) to RGB.

    ``encoding``/``full_range``: the stream's colour space as libcamera reports it. picamera2 picks
    ``Smpte170m`` (BT.601, limited) for a main stream under 1280x720 and ``Rec709`` otherwise, and the
    lores stream shares it (``picamera2.py`` ``create_video_configuration``, ``configure``).
    """
    rows, stride = yuv.shape
    if rows != height * 3 // 2 or stride < width:
        raise HardwareError(f"camera: YUV420 array {yuv.shape} does not hold a {width}x{height} image")
    kr, kb = YCBCR_KR_KB[encoding]
    kg = 1.0 - kr - kb
    flat = yuv.reshape(-1)
    half = stride // 2
    plane = (height // 2) * half
    u0 = height * stride
    y = yuv[:height, :width].astype(np.float32)
    u = flat[u0 : u0 + plane].reshape(height // 2, half)[:, : width // 2].astype(np.float32) - 128.0
    v = flat[u0 + plane : u0 + 2 * plane].reshape(height // 2, half)[:, : width // 2].astype(np.float32) - 128.0
    if swap_uv:
        u, v = v, u
    u = u.repeat(2, axis=0).repeat(2, axis=1)
    v = v.repeat(2, axis=0).repeat(2, axis=1)
    if not full_range:
        y = (y - 16.0) * np.float32(255 / 219)
        u *= np.float32(255 / 224)
        v *= np.float32(255 / 224)
    rgb = np.stack((y + 2 * (1 - kr) * v,
                    y - (2 * kb * (1 - kb) / kg) * u - (2 * kr * (1 - kr) / kg) * v,
                    y + 2 * (1 - kb) * u), axis=-1)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def to_rgb(array: npt.NDArray[np.uint8], fmt: str, width: int, height: int,
           ycbcr: tuple[str, bool] = ("Rec709", False)) -> npt.NDArray[np.uint8]:
    """A picamera2 ``make_array`` result in ``fmt`` as (H, W, 3) RGB.

    picamera2 names formats by libcamera/DRM convention: "RGB888" arrays hold B,G,R per
    pixel, "BGR888" hold R,G,B; X-formats carry a 4th byte. ``ycbcr``: (encoding, full range)
    of a YUV stream (:func:`ycbcr_of` of the configured colour space).
    """
    if fmt in YUV_FORMATS:
        rgb = yuv420_to_rgb(array, width, height, swap_uv=fmt == "YVU420", encoding=ycbcr[0], full_range=ycbcr[1])
    elif fmt in ("RGB888", "XRGB8888"):
        rgb = array[:height, :width, 2::-1]
    elif fmt in ("BGR888", "XBGR8888"):
        rgb = array[:height, :width, :3]
    else:
        raise HardwareError(f"camera: unsupported lores format {fmt}")
    return np.ascontiguousarray(rgb)


def isp_lores_size(model: tuple[int, int], fmt: str, main: tuple[int, int]) -> tuple[int, int]:
    """The smallest size >= ``model`` the ISP produces in ``fmt`` (YUV420: multiples of 4; RGB: even)."""
    a = 4 if fmt in YUV_FORMATS else 2
    w = min(-(-model[0] // a) * a, main[0] - main[0] % a)
    h = min(-(-model[1] // a) * a, main[1] - main[1] % a)
    return w, h


def fit_to_model(rgb: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """The model input (W, H) from a lores picture of another size: centre crop, resampled if smaller."""
    w, h = size
    ih, iw = rgb.shape[:2]
    if (iw, ih) == (w, h):
        return rgb
    if iw >= w and ih >= h:
        x0, y0 = (iw - w) // 2, (ih - h) // 2
        return np.ascontiguousarray(rgb[y0 : y0 + h, x0 : x0 + w])
    rows = (np.arange(h) * ih // h).clip(0, ih - 1)
    cols = (np.arange(w) * iw // w).clip(0, iw - 1)
    return np.ascontiguousarray(rgb[rows][:, cols])


class PiCamera:
    """The firmware's Camera over picamera2 (``start`` / ``read`` / ``stop``), and its footage path."""

    def __init__(self, config: CameraConfig, segment_s: float | None = None, pre_event_s: float = 30.0,
                 picamera2_module: Any | None = None, fsync_s: float = 1.0) -> None:
        if config.lores_size is None:  # the firmware fills it in from the model's sidecar
            raise HardwareError("camera: camera.lores_size is not set (the firmware sets it to the model's input size)")
        self._cfg = config
        self._segment_s = segment_s
        # CircularOutput2 keeps frames younger than its duration and a recording starts at the
        # oldest keyframe in it: one keyframe interval more guarantees >= pre_event_s of footage
        self._pre_event_ms = round(pre_event_s * 1000 + 1000 * config.iperiod / config.framerate)
        self._fsync_s = fsync_s
        self._pc2 = picamera2_module if picamera2_module is not None else _import_picamera2()
        try:
            self._cam = self._pc2.Picamera2(config.camera_index)
        except (RuntimeError, IndexError, OSError) as exc:
            raise HardwareError(f"camera {config.camera_index}: cannot open: {exc}") from exc
        self._lock = threading.Lock()
        self._encoder: Any = None
        self._circular: Any = None
        self._output: SegmentedOutput | None = None
        self._started = False
        self._closed = False
        self._t0_ns: int | None = None
        self._frame_ns = round(1e9 / config.framerate)
        #: how long ``read`` waits for a frame: libcamera gives up on the sensor after max(1 s, 5 frame
        #: durations) (``pipeline/rpi/vc4/vc4.cpp``, ``pisp.cpp``: ``setDequeueTimeout``), plus 0.5 s so that
        #: its log line comes first; at most 6 s, well inside systemd's 10 s watchdog
        self.capture_timeout_s = min(6.0, max(1.0, 5.0 / config.framerate) + 0.5)
        self._last_index = -1
        self.dropped = 0
        self.model_size: tuple[int, int] = (config.lores_size[0], config.lores_size[1])
        self.lores_size = self.model_size
        self.lores_format: str = config.lores_format
        #: (YCbCr encoding, full range) of a YUV lores stream, from the configured colour space
        self.lores_ycbcr: tuple[str, bool] = ("Rec709", False)
        self._path_factory: PathFactory | None = None
        self._open_pending = False
        self.segments: list[Path] = []
        self._aac: AacTrack | None = None
        self._circular_has_sound = False  # the AAC stream was declared before the buffer's output opened
        #: the H.264 encoder could not be restarted after a recording: no footage any more (read raises it)
        self._encoder_error: str | None = None
        self.sound_packets = 0

    # -- Camera protocol ----------------------------------------------------------
    def start(self) -> StreamInfo:
        c = self._cfg
        frame_us = round(1e6 / c.framerate)
        kwargs: dict[str, Any] = {}
        if c.hflip or c.vflip:
            import importlib

            libcamera = importlib.import_module("libcamera")  # ships with picamera2 on Raspberry Pi OS
            kwargs["transform"] = libcamera.Transform(hflip=int(c.hflip), vflip=int(c.vflip))
        want = isp_lores_size(self.model_size, c.lores_format, c.main_size)
        try:
            video = self._cam.create_video_configuration(
                main={"size": tuple(c.main_size), "format": "YUV420"},
                lores={"size": want, "format": c.lores_format},
                controls={"FrameDurationLimits": (frame_us, frame_us)},
                encode="main",
                **kwargs,
            )
            self._cam.configure(video)
            lores = self._cam.camera_config["lores"]
            self.lores_size = (int(lores["size"][0]), int(lores["size"][1]))
            self.lores_format = str(lores["format"])
            if self.lores_format in YUV_FORMATS:  # decode with the matrix the camera reports, not a guess
                self.lores_ycbcr = ycbcr_of(self._cam.camera_config.get("colour_space"))
                log.info("camera: lores %s in %s (YCbCr %s, %s range)", self.lores_format,
                         self._cam.camera_config.get("colour_space"), self.lores_ycbcr[0],
                         "full" if self.lores_ycbcr[1] else "limited")
            if self.lores_size != self.model_size:
                bigger = all(a >= b for a, b in zip(self.lores_size, self.model_size, strict=True))
                log.info("camera: lores stream %s %dx%d (the ISP cannot produce the model's %dx%d); the model "
                         "input is %s", self.lores_format, *self.lores_size, *self.model_size,
                         "cut from its centre" if bigger else "resampled from it")
            self._cam.start()
            self._start_encoder()
        except _device_errors() as exc:
            raise HardwareError(f"camera: cannot start: {exc}") from exc
        self._started = True
        return StreamInfo(width=c.main_size[0], height=c.main_size[1], fps=c.framerate, has_audio=False)

    def _start_encoder(self) -> None:
        c = self._cfg
        self._encoder = self._pc2.encoders.H264Encoder(bitrate=c.bitrate, repeat=True, iperiod=c.iperiod)
        self._circular = self._pc2.outputs.CircularOutput2(buffer_duration_ms=self._pre_event_ms)
        self._cam.start_encoder(self._encoder, self._circular, name="main")
        self._circular_has_sound = False
        if self._aac is not None:
            self._circular._add_stream(*self._aac.output_stream[:2], **self._aac.output_stream[2])
            self._circular_has_sound = True

    def read(self) -> Frame | None:
        """The next frame; ``HardwareError`` when none comes within ``capture_timeout_s`` (a dead camera).

        picamera2's ``capture_request()`` waits for ever when the sensor stops: libcamera only logs
        "Camera frontend has timed out!" and cancels the requests, which picamera2 drops. So the wait
        is bounded here, and the job left queued by the timeout is cancelled
        (``cancel_all_and_flush()``, picamera2's tidy-up for a dislodged cable) so that it cannot take
        a later frame and hold its buffer for ever.
        """
        if not self._started:
            return None
        if self._encoder_error is not None:
            raise HardwareError(self._encoder_error)
        try:
            request = self._cam.capture_request(wait=self.capture_timeout_s)
        except (TimeoutError, concurrent.futures.TimeoutError) as exc:
            with contextlib.suppress(Exception):
                self._cam.cancel_all_and_flush()
            raise HardwareError(f"camera: no frame for {self.capture_timeout_s:.1f} s (the camera stopped "
                                "delivering frames: check the sensor cable)") from exc
        except RuntimeError as exc:
            raise HardwareError(f"camera: capture failed: {exc}") from exc
        try:
            t_ns = int(request.get_metadata()["SensorTimestamp"])
            w, h = self.lores_size
            lores = fit_to_model(to_rgb(request.make_array("lores"), self.lores_format, w, h, self.lores_ycbcr),
                                 self.model_size)
        finally:
            request.release()
        if self._t0_ns is None:
            self._t0_ns = t_ns
        index = max(self._last_index + 1, round((t_ns - self._t0_ns) / self._frame_ns))
        if index > self._last_index + 1:
            self.dropped += index - self._last_index - 1
            log.debug("camera: %d frame(s) not taken by the loop before frame %d", index - self._last_index - 1, index)
        self._last_index = index
        self._maybe_open(t_ns)
        return Frame(index=index, t_ns=t_ns, lores=lores)

    def stop(self) -> None:
        """Stop capturing and release the camera (safe to call more than once)."""
        if self._closed:
            return
        self._closed = True
        started, self._started = self._started, False
        try:
            if started:
                self._cam.stop_encoder()  # flushes an open recording
                self._cam.stop()
        finally:
            self._cam.close()
            self._path_factory = None
            aac, self._aac = self._aac, None
            if aac is not None:
                aac.close()

    # -- footage ------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self._path_factory is not None

    def start_recording(self, path_factory: PathFactory, include_buffer: bool = True,
                        open_file: Callable[[Path], Any] | None = None) -> None:
        """Write footage to ``path_factory(0)``, ``path_factory(1)``, ... (segments cut at keyframes),
        through ``open_file(path)``'s file object when given (encrypted at rest)."""
        with self._lock:
            if self._path_factory is not None:
                raise HardwareError("camera: already recording")
            if not self._started:
                raise HardwareError("camera: not started")
            if self._encoder_error is not None:
                raise HardwareError(self._encoder_error)
            self._path_factory = path_factory
            self.segments = []
            self._output = SegmentedOutput(self._pc2.outputs.PyavOutput, path_factory, self._segment_s,
                                           fsync_s=self._fsync_s, open_file=open_file)
            if include_buffer:
                self._circular.open_output(self._output)
            else:
                self._open_pending = True  # the next frame empties the buffer, then the output opens
            # 1 ms: what is buffered goes out at the next frame, live frames follow one frame behind
            self._circular.buffer_duration_ms = 1

    def start_sound(self) -> None:
        """From now on recordings carry the microphone's sound as AAC (``write_sound`` feeds it)."""
        with self._lock:
            if self._aac is not None:
                return
            self._aac = AacTrack()
            if self._circular is not None and self._path_factory is None:
                self._circular._add_stream(*self._aac.output_stream[:2], **self._aac.output_stream[2])
                self._circular_has_sound = True

    def write_sound(self, blocks: Sequence[AudioBlock]) -> None:
        """Encode the loop's latest microphone blocks into the buffer; AacError if encoding fails."""
        with self._lock:
            aac = self._aac
            if aac is None or not blocks:
                return
            packets = []
            for b in blocks:
                packets += aac.encode(b)
            encoder, circular = self._encoder, self._circular
            if encoder is None or encoder.firsttimestamp is None or not self._circular_has_sound:
                return  # no picture yet to place the sound against (or a buffer that was not told)
            first_us = int(encoder.firsttimestamp)
            for p in packets:
                ts = int(p.pts) - first_us
                if ts < 0:
                    continue
                try:
                    circular.outputframe(None, True, ts, p, True)
                except Exception as exc:  # PyavOutput: RuntimeError for an undeclared stream
                    raise AacError(f"camera: sound could not be written ({exc})") from exc
                self.sound_packets += 1

    def _maybe_open(self, t_ns: int) -> None:
        with self._lock:
            if self._open_pending and self._output is not None:
                self._open_pending = False
                self._circular.open_output(self._output)

    def footage_error(self) -> str | None:
        """The first write error of the current (or just stopped) recording, e.g. a full card; else None."""
        out = self._output
        return None if out is None else out.error

    def footage_segments(self) -> list[tuple[int, int, int]]:
        """Per file of the current (or just stopped) recording: first and last encoder time (us), frames."""
        out = self._output
        return [] if out is None else [(s.first_us, s.last_us, s.frames) for s in out.segments]

    def stop_recording(self) -> None:
        """Finish the recording, including the last frames; then restart the pre-event buffer.

        The recording is complete when this returns, even if the encoder cannot be started again
        (its device busy or gone: ``OSError``): that is a camera failure, not the recording's, so it
        is logged and the next ``read()`` raises it as a ``HardwareError`` (the loop ends, the
        recording already stopped cleanly, systemd restarts the firmware); ``start_recording``
        refuses until then.
        """
        with self._lock:
            if self._path_factory is None:
                return
            self._path_factory = None
            out = self._output  # kept until the next recording: footage_error() still reports it
            if self._open_pending:  # stopped before the first frame: nothing to write
                self._open_pending = False
                self._circular.buffer_duration_ms = self._pre_event_ms
                return
            self._cam.stop_encoder()  # CircularOutput2.stop() flushes the delay line into the file
            if out is not None:
                self.segments = [s.path for s in out.segments]
            try:
                self._start_encoder()
            except _device_errors() as exc:
                self._encoder_error = f"camera: the H.264 encoder did not restart after a recording: {exc}"
                log.error("%s", self._encoder_error)
