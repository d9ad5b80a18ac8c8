"""A fake ``picamera2`` module, at least as strict as the real one, for testing off a Pi.

Written from picamera2's source (``picamera2.py`` configuration checks and
``align_stream``, ``request.py`` ``_make_array_shared``, ``encoders/encoder.py``,
``outputs/circularoutput2.py``, ``outputs/pyavoutput.py``) and libcamera's behaviour:

* **configuration**: ``create_video_configuration`` fills defaults and rounds sizes down to
  even (``align_stream(optimal=False)``); ``configure`` raises ``RuntimeError`` like
  ``check_camera_config`` (odd sizes, unknown formats, lores larger than main, and on a
  **Pi 4 (VC4) a lores stream that is not YUV**; a Pi 5 (PiSP) allows RGB/BGR lores).
  libcamera then *adjusts* what the ISP cannot produce: a YUV420 stream's chroma planes
  need even dimensions, so width and height are rounded down to multiples of 4 (160x90
  becomes 160x88); the adjusted size, ``stride`` and ``framesize`` are written back into
  ``camera_config`` as picamera2 does.
* **colour space**: ``create_video_configuration(colour_space=None)`` picks
  ``libcamera.ColorSpace.Smpte170m()`` (BT.601 matrix, limited range) when the main stream is
  narrower than 1280 or lower than 720, else ``Rec709()`` (``picamera2.py``
  ``create_video_configuration``); the lores stream gets the same one (``configure``:
  "Must be YUV, so no need for colour_space_to_libcamera"); ``configure`` refuses anything that
  is not a :class:`ColorSpace` ("Colour space has incorrect type") and writes back the standard
  one libcamera reports (``utils.colour_space_from_libcamera``: matched by primaries and
  transfer function). YUV arrays are encoded with that matrix and range (libcamera
  ``color_space.cpp``: Smpte170m = Rec601/Limited, Rec709 = Rec709/Limited, Sycc =
  Rec601/Full). ``camera_configuration()`` returns the configuration, as in picamera2.
* **strides**: every plane row is padded to the ISP's alignment (32 bytes on VC4, 64 on
  PiSP; picamera2's ``align_stream`` comments); YUV420 luma rows are twice that so the
  half-width chroma rows stay aligned: a 160-wide YUV420 stream has stride 192 on a Pi 4.
  ``make_array`` returns YUV420 as ``(h*3/2, stride)`` *with* the padding and the U and
  V planes at flat offsets ``h*stride`` and ``h*stride + (h/2)*(stride/2)``; RGB formats
  as ``(h, w, 3|4)`` with the padding sliced off, like picamera2.
* **requests**: ``buffer_count`` buffers; a released request's arrays are gone. ``drop``
  (a set of frame numbers) models an application too slow for the sensor: those frames
  still reach the encoder (it runs on its own thread on the Pi) but are never returned by
  ``capture_request``; ``SensorTimestamp`` jumps over them.
* **no frame** (the sensor delivered its ``frames``, i.e. died; the camera is not started;
  the application holds every buffer): ``capture_request`` **blocks**, it never raises.
  libcamera's ``CameraData::cameraTimeout()`` (``pipeline/rpi/common/pipeline_base.cpp``,
  after max(1 s, 5 frame durations): ``vc4.cpp``/``pisp.cpp`` ``setDequeueTimeout``) only logs
  "Camera frontend has timed out!" and returns the outstanding requests cancelled;
  picamera2's ``CameraManager.handle_request`` keeps only ``Request.Status.Complete`` ones.
  ``capture_request(wait=None, signal_function=None, flush=None)`` queues a :class:`Job` and
  ``dispatch_functions`` returns ``job.get_result(timeout)``: ``wait=None``/``True`` waits for
  ever, ``wait=<seconds>`` raises ``concurrent.futures.TimeoutError`` (the built-in
  ``TimeoutError`` since Python 3.11) and **leaves the job queued** (it takes the next frame
  and that request is never released), ``wait=False`` (or a ``signal_function``) returns the
  job. ``cancel_all_and_flush()`` cancels every queued job (a waiter gets
  ``concurrent.futures.CancelledError``), as picamera2 documents for a dislodged cable.
* **encoder**: ``H264Encoder`` encodes the main stream for real (libx264 via PyAV, no
  B-frames, SPS/PPS repeated, a keyframe every ``iperiod``), hands ``outputframe`` raw
  Annex-B bytes with microsecond timestamps relative to its first frame (like the VC4
  hardware encoder), refuses to start twice or stop twice. Its device can fail:
  ``FakePicamera2Module.encoder_error`` (an ``OSError``, settable at any time) is raised by
  the next ``start()`` *after* ``_running`` is set and the outputs are started, as picamera2's
  ``Encoder.start`` does before ``V4L2Encoder._start`` runs ``open('/dev/video11', 'rb+')`` and
  its ``ioctl``s (``encoders/encoder.py``, ``encoders/v4l2_encoder.py``): a missing node, no
  permission (group ``video``) or a busy codec is an ``OSError``, not wrapped by picamera2; the
  half-started encoder is not added to the camera's encoders (``start_encoder`` raised first).
* **outputs**: ``CircularOutput2`` is the same delay line as picamera2's (frames leave it
  only when older than ``buffer_duration_ms``; a new output starts at a keyframe with
  timestamps rebased to it; ``stop()`` flushes everything); ``PyavOutput`` muxes with PyAV,
  takes ``options`` (e.g. fragmented MP4), and on a write error closes its container,
  calls ``error_callback`` if one is set and silently drops every later frame (the error
  is lost without the callback, exactly as in picamera2).
* **audio** (picamera2's ``Encoder`` audio thread and ``PyavOutput``'s packet path): encoded
  packets arrive as ``outputframe(None, True, timestamp_us, packet, audio=True)`` and pass
  through ``CircularOutput2`` like video (rebased to the same keyframe; audio before it, or
  at a negative time, is dropped); ``PyavOutput`` copies the packet onto the stream it created
  with ``add_stream(codec_name, **kwargs)`` for that packet's ``packet.stream`` (an unknown
  stream is ``RuntimeError("Stream not found in PyavOutput")``), replaces only pts/dts/
  time_base/keyframe (the copy keeps the packet's duration as is), and skips a stream's
  packets until that stream's first keyframe. ``Encoder.audio = True`` (the encoder opening
  a second audio input itself) is refused: the firmware does not use it.

Use: ``FakePicamera2Module(frames=300, platform="vc4")`` as ``picamera2_module``; ``scene=`` sets what
the sensor sees (``(index, w, h) -> (h, w, 3)`` RGB; default: :meth:`Picamera2.ramp`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import enum
import threading
import types
from collections.abc import Callable, Collection
from fractions import Fraction
from typing import Any

import numpy as np

YUV_FORMATS = ("YUV420", "YVU420")
RGB_FORMATS = ("RGB888", "BGR888", "XRGB8888", "XBGR8888")
PLATFORMS = ("vc4", "pisp")
#: bytes a plane row is aligned to by the ISP (picamera2 align_stream: "multiple of 32/64 bytes wide")
ROW_ALIGN = {"vc4": 32, "pisp": 64}
#: what the sensor sees: (frame index, width, height) -> (height, width, 3) uint8 RGB
Scene = Callable[[int, int, int], "np.ndarray[Any, Any]"]


def _align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def stride_for(fmt: str, width: int, platform: str) -> int:
    """Bytes per row of the first plane, as the ISP lays the buffer out."""
    a = ROW_ALIGN[platform]
    if fmt in YUV_FORMATS:
        return _align_up(width, 2 * a)  # the U/V rows (half as wide) must be aligned too
    if fmt in ("RGB888", "BGR888"):
        return _align_up(3 * width, a)
    if fmt in ("XRGB8888", "XBGR8888"):
        return _align_up(4 * width, a)
    raise RuntimeError(f"Bad format {fmt}")


def isp_size(fmt: str, size: tuple[int, int]) -> tuple[int, int]:
    """What libcamera's validate() turns a requested output size into (Status.Adjusted)."""
    w, h = size
    if fmt in YUV_FORMATS:
        return w - w % 4, h - h % 4  # chroma planes of even size
    return w, h


# -- libcamera.ColorSpace ---------------------------------------------------------------------
class ColorSpace:
    """libcamera's ``ColorSpace`` as its Python binding has it (``src/py/libcamera/py_color_space.cpp``):
    four read-write fields whose values are enums with ``.name``, the preset constructors, ``==``."""

    class Primaries(enum.Enum):
        Raw = 0
        Smpte170m = 1
        Rec709 = 2
        Rec2020 = 3

    class TransferFunction(enum.Enum):
        Linear = 0
        Srgb = 1
        Rec709 = 2

    class YcbcrEncoding(enum.Enum):
        Null = 0
        Rec601 = 1
        Rec709 = 2
        Rec2020 = 3

    class Range(enum.Enum):
        Full = 0
        Limited = 1

    def __init__(self, primaries: ColorSpace | ColorSpace.Primaries,
                 transferFunction: ColorSpace.TransferFunction | None = None,
                 ycbcrEncoding: ColorSpace.YcbcrEncoding | None = None, range: ColorSpace.Range | None = None) -> None:
        if isinstance(primaries, ColorSpace):  # ColorSpace(other): a copy
            other = primaries
            self.primaries: ColorSpace.Primaries = other.primaries
            self.transferFunction: ColorSpace.TransferFunction = other.transferFunction
            self.ycbcrEncoding: ColorSpace.YcbcrEncoding = other.ycbcrEncoding
            self.range: ColorSpace.Range = other.range
            return
        if transferFunction is None or ycbcrEncoding is None or range is None:
            raise TypeError("ColorSpace(primaries, transferFunction, ycbcrEncoding, range) or ColorSpace(other)")
        self.primaries = primaries
        self.transferFunction = transferFunction
        self.ycbcrEncoding = ycbcrEncoding
        self.range = range

    def _key(self) -> tuple[Any, ...]:
        return self.primaries, self.transferFunction, self.ycbcrEncoding, self.range

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ColorSpace) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        for name in ("Raw", "Srgb", "Sycc", "Smpte170m", "Rec709", "Rec2020"):
            if getattr(ColorSpace, name)() == self:
                return f"<libcamera.ColorSpace '{name}'>"
        return (f"<libcamera.ColorSpace '{self.primaries.name}/{self.transferFunction.name}/"
                f"{self.ycbcrEncoding.name}/{self.range.name}'>")

    __repr__ = __str__

    @staticmethod
    def Raw() -> ColorSpace:
        c = ColorSpace
        return c(c.Primaries.Raw, c.TransferFunction.Linear, c.YcbcrEncoding.Null, c.Range.Full)

    @staticmethod
    def Srgb() -> ColorSpace:
        c = ColorSpace
        return c(c.Primaries.Rec709, c.TransferFunction.Srgb, c.YcbcrEncoding.Null, c.Range.Full)

    @staticmethod
    def Sycc() -> ColorSpace:
        c = ColorSpace
        return c(c.Primaries.Rec709, c.TransferFunction.Srgb, c.YcbcrEncoding.Rec601, c.Range.Full)

    @staticmethod
    def Smpte170m() -> ColorSpace:
        c = ColorSpace
        return c(c.Primaries.Smpte170m, c.TransferFunction.Rec709, c.YcbcrEncoding.Rec601, c.Range.Limited)

    @staticmethod
    def Rec709() -> ColorSpace:
        c = ColorSpace
        return c(c.Primaries.Rec709, c.TransferFunction.Rec709, c.YcbcrEncoding.Rec709, c.Range.Limited)

    @staticmethod
    def Rec2020() -> ColorSpace:
        c = ColorSpace
        return c(c.Primaries.Rec2020, c.TransferFunction.Rec709, c.YcbcrEncoding.Rec2020, c.Range.Limited)


#: luma weights (Kr, Kb) of each YCbCr matrix (ITU-R BT.601, BT.709, BT.2020)
KR_KB = {"Rec601": (0.299, 0.114), "Rec709": (0.2126, 0.0722), "Rec2020": (0.2627, 0.0593)}


def colour_space_from_libcamera(cs: ColorSpace | None) -> ColorSpace | None:
    """picamera2 ``utils.colour_space_from_libcamera``: the standard space with the same primaries and
    transfer function (libcamera may hand one back without its YCbCr matrix or range)."""
    if cs is None:
        return None
    for std in (ColorSpace.Sycc(), ColorSpace.Smpte170m(), ColorSpace.Rec709()):
        if cs.primaries == std.primaries and cs.transferFunction == std.transferFunction:
            return std
    return cs


def rgb_to_yuv(rgb: np.ndarray[Any, Any], cs: ColorSpace) -> tuple[np.ndarray[Any, Any], ...]:
    """Y, Cb, Cr (float, 0..255 scale) of an RGB picture in ``cs``'s matrix and range."""
    kr, kb = KR_KB[cs.ycbcrEncoding.name]
    kg = 1.0 - kr - kb
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = kr * r + kg * g + kb * b
    u = (b - y) / (2 * (1 - kb))
    v = (r - y) / (2 * (1 - kr))
    if cs.range == ColorSpace.Range.Limited:
        return 16 + y * 219 / 255, 128 + u * 224 / 255, 128 + v * 224 / 255
    return y, 128 + u, 128 + v


# -- outputs ------------------------------------------------------------------------------
class Output:
    """picamera2.outputs.Output: ``recording`` flag, ``start``/``stop``, ``outputframe``."""

    def __init__(self, pts: Any = None) -> None:
        self.recording = False
        self.needs_add_stream = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(self, frame: bytes | None, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        pass

    def outputtimestamp(self, timestamp: int | None) -> None:
        pass

    def _add_stream(self, encoder_stream: Any, *args: Any, **kwargs: Any) -> None:
        pass


class FileOutput(Output):
    def __init__(self, file: Any = None, pts: Any = None, split: Any = None) -> None:
        super().__init__(pts)
        self.frames: list[bytes] = []

    def outputframe(self, frame: bytes | None, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        if self.recording and frame is not None:
            self.frames.append(frame)


class PyavOutput(Output):
    """Muxes encoded frames with PyAV; write errors go to ``error_callback`` (or nowhere)."""

    def __init__(self, output_name: str, format: str | None = None, pts: Any = None,
                 options: dict[str, str] | None = None) -> None:
        import av  # noqa: F401  (picamera2 imports it here too)

        super().__init__(pts)
        self._output_name = output_name
        self._format = format
        self._options = options
        self._streams: dict[Any, Any] = {}
        self._container: Any = None
        self.error_callback: Callable[[BaseException], None] | None = None
        self.needs_add_stream = True
        self._seen_keyframe: dict[Any, bool] = {}

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
        if self._container is None:
            raise AttributeError("'NoneType' object has no attribute 'add_stream'")  # what picamera2 hits
        self._streams[encoder_stream] = self._container.add_stream(codec_name, **kwargs)

    def start(self) -> None:
        import av

        self._container = av.open(self._output_name, "w", format=self._format, options=self._options)
        super().start()

    def stop(self) -> None:
        super().stop()
        if self._container is not None:
            with contextlib.suppress(Exception):  # picamera2 swallows errors on close, too
                self._container.close()
            self._container = None
            self._streams = {}
            self._seen_keyframe = {}

    def outputframe(self, frame: bytes | None, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        import av

        if not (self.recording and self._container is not None):
            return
        if not packet:
            # raw bytes from an encoder that is not libav (the VC4 hardware encoder): make a packet up
            pkt = av.Packet(frame)
            pkt.dts = pkt.pts = timestamp
            pkt.time_base = Fraction(1, 1_000_000)
            pkt.is_keyframe = keyframe
            pkt.stream = self._streams["video"]
        else:
            # a libav packet (audio, or the Pi 5's software H.264): a copy moved to this file's stream,
            # with only pts/dts/time_base/keyframe replaced (its duration is copied as it is)
            pkt = av.Packet(packet)
            if packet.stream not in self._streams:
                raise RuntimeError("Stream not found in PyavOutput")
            pkt.stream = self._streams[packet.stream]
            pkt.dts = pkt.pts = timestamp
            pkt.time_base = Fraction(1, 1_000_000)
            pkt.is_keyframe = keyframe
            seen = self._seen_keyframe.get(pkt.stream, False) or keyframe
            self._seen_keyframe[pkt.stream] = seen
            if not seen:
                return
        try:
            self._container.mux(pkt)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
            if self.error_callback is not None:
                self.error_callback(exc)
        self.outputtimestamp(timestamp)


class CircularOutput2(Output):
    """picamera2's delay line: frames are passed on once older than ``buffer_duration_ms``."""

    def __init__(self, pts: Any = None, buffer_duration_ms: int = 5000) -> None:
        super().__init__(pts)
        if buffer_duration_ms < 0:
            raise RuntimeError("buffer_duration_ms may not be negative")
        self._lock = threading.Lock()
        self._buffer_duration_ms = buffer_duration_ms
        self._circular: collections.deque[tuple[bytes | None, bool, int, Any, bool]] = collections.deque()
        self._output: Output | None = None
        self._streams: list[tuple[Any, str, dict[str, Any]]] = []
        self._first_frame = True
        self._time_offset = 0

    @property
    def buffer_duration_ms(self) -> int:
        return self._buffer_duration_ms

    @buffer_duration_ms.setter
    def buffer_duration_ms(self, value: int) -> None:
        with self._lock:
            self._buffer_duration_ms = value

    def open_output(self, output: Output) -> None:
        if self._output:
            raise RuntimeError("Underlying output must be closed first")
        output.start()
        for encoder_stream, codec, kwargs in self._streams:
            output._add_stream(encoder_stream, codec, **kwargs)
        with self._lock:
            self._output = output
            self._first_frame = True

    def close_output(self) -> None:
        if not self._output:
            raise RuntimeError("No underlying output has been opened")
        output = self._output
        with self._lock:
            self._output = None
        output.stop()

    def _flush(self, now: int | None, output: Output | None) -> None:
        while self._circular:
            frame, keyframe, timestamp, packet, audio = self._circular[0]
            if now and now - timestamp < self._buffer_duration_ms * 1000:
                break
            self._circular.popleft()
            if keyframe and not audio:
                if self._first_frame:
                    self._time_offset = timestamp
                self._first_frame = False
            if not self._first_frame and output:
                ts = timestamp - self._time_offset
                if ts >= 0:
                    output.outputframe(frame, keyframe, ts, packet, audio)

    def outputframe(self, frame: bytes | None, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        with self._lock:
            if self._buffer_duration_ms == 0 or not self.recording:
                return
            self._circular.append((frame, keyframe, int(timestamp or 0), packet, audio))
            self._flush(timestamp, self._output)

    def start(self) -> None:
        with self._lock:
            if self.recording:
                raise RuntimeError("Circular output is running")
            self.recording = True

    def stop(self) -> None:
        output = self._output
        with self._lock:
            if not self.recording:
                raise RuntimeError("Circular output was not started")
            self.recording = False
            self._output = None
        if output:
            self._flush(None, output)
            output.stop()

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
        self._streams.append((encoder_stream, codec_name, kwargs))


# -- encoder ------------------------------------------------------------------------------
class H264Encoder:
    """Encodes the main stream with libx264 (no B-frames, SPS/PPS on every keyframe)."""

    def __init__(self, bitrate: int | None = None, repeat: bool = True, iperiod: int | None = None,
                 framerate: float | None = None, enable_sps_framerate: bool = False, qp: int | None = None,
                 profile: str | None = None) -> None:
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod or 60
        self.output: Output | None = None
        self.width = 0
        self.height = 0
        self._running = False
        self._ctx: Any = None
        self.firsttimestamp: int | None = None
        self.frames_encoded = 0
        #: picamera2's Encoder.audio: the encoder opens its own audio input (``av.open(**audio_input)``) and
        #: muxes AAC it stamps from its first packet; not modelled: the firmware never sets it
        self.audio = False

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        import av

        if self._running:
            raise RuntimeError("Encoder already running")
        if self.output is None:
            raise RuntimeError("No output specified")
        if self.audio:
            raise NotImplementedError("the fake encoder does not open an audio input (Encoder.audio); the firmware "
                                      "muxes the microphone's own AAC (device/footage/aac_track.py)")
        # picamera2 Encoder.start: frames_encoded, _setup, _running = True, firsttimestamp, the outputs
        # started, then _start() (V4L2Encoder: open('/dev/video11') and ioctls, which may raise OSError)
        self.frames_encoded = 0
        self._running = True
        self.firsttimestamp = None
        self.output.start()
        self._open_device()
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        ctx.time_base = Fraction(1, 1_000_000)
        ctx.gop_size = self.iperiod
        ctx.max_b_frames = 0
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "repeat-headers": "1",
                       "keyint": str(self.iperiod), "min-keyint": str(self.iperiod), "scenecut": "0"}
        ctx.open()
        self._ctx = ctx
        self.output._add_stream("video", "h264", width=self.width, height=self.height)

    def _open_device(self) -> None:
        """V4L2Encoder._start's ``open('/dev/video11', 'rb+')``: the module's ``encoder_error`` if set."""
        err = self._device_error()
        if err is not None:
            raise err

    @staticmethod
    def _device_error() -> OSError | None:
        return None

    def stop(self) -> None:
        if not self._running:
            raise RuntimeError("Encoder already stopped")
        self._running = False
        for p in self._ctx.encode(None):
            self._emit(p)
        self._ctx = None
        assert self.output is not None
        self.output.stop()

    def encode(self, image: np.ndarray[Any, Any], sensor_ns: int) -> None:
        import av

        if not self._running:
            return
        ts = sensor_ns // 1000
        if self.firsttimestamp is None:
            self.firsttimestamp = ts
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = ts - self.firsttimestamp
        for p in self._ctx.encode(frame):
            self._emit(p)
        self.frames_encoded += 1

    def _emit(self, p: Any) -> None:
        assert self.output is not None
        self.output.outputframe(bytes(p), bool(p.is_keyframe), int(p.pts))


# -- camera -------------------------------------------------------------------------------
class Job:
    """picamera2's ``job.Job``: a ``concurrent.futures.Future`` the camera thread completes."""

    def __init__(self, signal_function: Callable[[Job], None] | None = None) -> None:
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._future.set_running_or_notify_cancel()
        self._signal_function = signal_function
        self._result: Any = None

    def signal(self) -> None:
        if not self._future.done():
            self._future.set_result(self._result)
        if self._signal_function:
            self._signal_function(self)

    def get_result(self, timeout: float | None = None) -> Any:
        return self._future.result(timeout=timeout)

    def cancel(self) -> None:
        self._future.set_exception(concurrent.futures.CancelledError())


class CompletedRequest:
    def __init__(self, cam: Picamera2, index: int, t_ns: int) -> None:
        self._cam = cam
        self.index = index
        self._t_ns = t_ns
        self._released = False

    def _check(self) -> None:
        if self._released:
            raise RuntimeError("request already released")  # the buffer went back to the camera

    def get_metadata(self) -> dict[str, Any]:
        self._check()
        return {"SensorTimestamp": self._t_ns, "FrameDuration": self._cam.frame_us, "ExposureTime": 10000}

    def make_array(self, name: str) -> np.ndarray[Any, Any]:
        self._check()
        camera_config = self._cam.camera_config or {}
        config = camera_config.get(name)
        if config is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        return self._cam.image(config["format"], config["size"], config["stride"], self.index,
                               camera_config["colour_space"], self._cam.scene)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._cam.outstanding -= 1
            self._cam._serve()  # the buffer goes back to libcamera: a queued job may get a frame now


class Picamera2:
    """One fake camera producing ``frames`` frames at the configured frame duration."""

    boot_ns: int = 12_345_000_000

    def __init__(self, camera_num: int = 0, *, frames: int = 10**9, platform: str = "vc4",
                 drop: Collection[int] = (), scene: Scene | None = None) -> None:
        if camera_num != 0:
            raise IndexError("list index out of range")  # what picamera2 raises for a missing camera
        if platform not in PLATFORMS:
            raise ValueError(f"platform must be one of {PLATFORMS}")
        self.platform = platform
        self.frames = frames
        self.drop = frozenset(drop)
        self.scene = scene
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        self.frame_us = 33_333
        self.outstanding = 0
        self.adjusted = False
        self._index = 0
        self.encoders: list[H264Encoder] = []
        self._jobs_lock = threading.RLock()
        self._job_list: list[Job] = []
        self._noise: np.ndarray[Any, Any] | None = None

    # configuration
    @staticmethod
    def _even(stream: dict[str, Any]) -> None:
        w, h = stream["size"]
        stream["size"] = (w - w % 2, h - h % 2)

    def create_video_configuration(self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
                                   raw: Any = None, transform: Any = None, colour_space: Any = None,
                                   buffer_count: int = 6, controls: dict[str, Any] | None = None,
                                   display: str | None = "main", encode: str | None = "main",
                                   queue: bool = True, sensor: Any = None, use_case: str = "video") -> dict[str, Any]:
        main = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True, **(main or {})}
        self._even(main)
        if lores is not None:
            lores = {"format": "YUV420", "size": main["size"], "preserve_ar": False, **lores}
            self._even(lores)
        if colour_space is None:  # picamera2: "Choose default colour space according to the video resolution"
            if main["size"][0] < 1280 or main["size"][1] < 720:
                colour_space = ColorSpace.Smpte170m()
            else:
                colour_space = ColorSpace.Rec709()
        return {"use_case": use_case, "transform": transform, "colour_space": colour_space,
                "buffer_count": buffer_count, "queue": queue, "main": main, "lores": lores, "raw": raw,
                "controls": {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333), **(controls or {})},
                "sensor": sensor or {}, "display": display, "encode": encode}

    @staticmethod
    def _check_stream(stream: Any, name: str) -> None:
        if not isinstance(stream, dict):
            raise RuntimeError(name + " stream should be a dictionary")
        for key in ("format", "size"):
            if key not in stream:
                raise RuntimeError(f"{key} not found in {name} stream")
        fmt = stream["format"]
        if not isinstance(fmt, str):
            raise RuntimeError("format in " + name + " stream should be a string")
        if fmt not in YUV_FORMATS + RGB_FORMATS:
            raise RuntimeError("Bad format " + fmt + " in stream " + name)
        size = stream["size"]
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in " + name + " stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")

    def configure(self, config: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
        if not isinstance(config.get("colour_space"), ColorSpace):  # check_camera_config
            raise RuntimeError("Colour space has incorrect type")
        main, lores = config["main"], config.get("lores")
        self._check_stream(main, "main")
        if lores is not None:
            self._check_stream(lores, "lores")
            if lores["size"][0] > main["size"][0] or lores["size"][1] > main["size"][1]:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if self.platform == "vc4" and lores["format"] not in YUV_FORMATS:
                raise RuntimeError("lores stream must be YUV")
        self.adjusted = False
        for stream in (main, lores):
            if stream is None:
                continue
            size = isp_size(stream["format"], stream["size"])
            self.adjusted |= size != stream["size"]
            stream["size"] = size
            stream["stride"] = stride_for(stream["format"], size[0], self.platform)
            rows = size[1] * 3 // 2 if stream["format"] in YUV_FORMATS else size[1]
            stream["framesize"] = stream["stride"] * rows
        self.frame_us = int(config["controls"]["FrameDurationLimits"][0])
        # the YUV streams share the configured space; picamera2 reads back stream 0's (main), normalised
        config["colour_space"] = colour_space_from_libcamera(ColorSpace(config["colour_space"]))
        self.camera_config = config

    def camera_configuration(self) -> dict[str, Any] | None:
        return self.camera_config

    def start(self) -> None:
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True
        self._serve()

    def start_encoder(self, encoder: H264Encoder | None = None, output: Any = None, pts: Any = None,
                      quality: Any = None, name: str | None = None) -> None:
        if encoder is None:
            raise RuntimeError("No encoder specified")
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        stream = self.camera_config[name or self.camera_config.get("encode") or "main"]
        if stream is None:
            raise RuntimeError(f"Encode stream {name!r} is not configured")
        if stream["format"] not in YUV_FORMATS:
            raise RuntimeError("the fake encoder takes a YUV420 stream")
        if output is not None:
            encoder.output = output
        encoder.width, encoder.height = stream["size"]
        encoder.start()
        self.encoders.append(encoder)

    def stop_encoder(self, encoders: Any = None) -> None:
        for e in list(self.encoders):
            e.stop()
        self.encoders = []

    def _next_frame(self) -> tuple[int, int] | None:
        """The next frame the application gets (index, SensorTimestamp), or None: no frame comes."""
        if not self.started or self.camera_config is None:
            return None
        if self.outstanding >= self.camera_config["buffer_count"] - 1:
            return None  # every buffer is held by the application: libcamera has none to fill
        while True:
            if self._index >= self.frames:
                return None  # the sensor died: libcamera logs a timeout, cancels, nothing completes
            index = self._index
            t_ns = self.boot_ns + index * self.frame_us * 1000
            self._index += 1
            if self.encoders:
                main = self.camera_config["main"]
                w, h = main["size"]
                picture = self.image("YUV420", (w, h), w, index, self.camera_config["colour_space"], self.scene)
                # sensor noise: real footage is never a still picture (and compresses like footage)
                if self._noise is None or self._noise.shape[1:] != (h, w):
                    self._noise = np.random.default_rng(0).integers(0, 24, (7, h, w), dtype=np.uint8)
                picture[:h] += self._noise[index % 7]
                for e in self.encoders:
                    e.encode(picture, t_ns)
            if index not in self.drop:
                return index, t_ns

    def _serve(self) -> None:
        """Give frames to queued jobs, oldest first (picamera2's ``process_requests``)."""
        done: list[Job] = []
        with self._jobs_lock:
            while self._job_list:
                nxt = self._next_frame()
                if nxt is None:
                    break
                self.outstanding += 1
                job = self._job_list.pop(0)
                job._result = CompletedRequest(self, *nxt)
                done.append(job)
        for job in done:
            job.signal()

    def capture_request(self, wait: Any = None, signal_function: Callable[[Job], None] | None = None,
                        flush: Any = None) -> Any:
        """picamera2's ``capture_request``: a :class:`CompletedRequest`, or the :class:`Job` when not
        waiting; blocks while no frame comes (``wait=<seconds>``: ``TimeoutError`` after them)."""
        if wait is None:
            wait = signal_function is None
        timeout = None if wait is True else wait
        job = Job(signal_function)
        with self._jobs_lock:
            self._job_list.append(job)
        self._serve()
        return job.get_result(timeout=timeout) if wait else job

    def wait(self, job: Job, timeout: float | None = None) -> Any:
        return job.get_result(timeout=timeout)

    def cancel_all_and_flush(self) -> None:
        """Cancel every queued job (picamera2: "tidying up after an operation has unexpectedly timed
        out (for example, the camera cable has become dislodged) so that the camera can be closed")."""
        with self._jobs_lock:
            for job in self._job_list:
                job.cancel()
            self._job_list = []

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        if self.encoders:
            self.stop_encoder()
        self.stop()
        self.closed = True

    @staticmethod
    def ramp(index: int, w: int, h: int) -> np.ndarray[Any, Any]:
        """The default scene: R = column ramp, G = row ramp, B = frame index; (h, w, 3) uint8."""
        r = np.broadcast_to((np.arange(w) * 255 // max(1, w - 1)).astype(np.uint8), (h, w))
        g = np.broadcast_to((np.arange(h) * 255 // max(1, h - 1)).astype(np.uint8)[:, None], (h, w))
        b = np.full((h, w), index % 256, np.uint8)
        return np.stack([r, g, b], -1)

    @staticmethod
    def image(fmt: str, size: tuple[int, int], stride: int, index: int, colour_space: ColorSpace | None = None,
              scene: Scene | None = None) -> np.ndarray[Any, Any]:
        """Frame ``index`` of ``scene`` (default :meth:`ramp`) as ``make_array`` returns it in ``fmt``;
        YUV in ``colour_space``'s matrix and range (default: Rec709)."""
        w, h = size
        pic = (scene or Picamera2.ramp)(index, w, h)
        if pic.shape != (h, w, 3) or pic.dtype != np.uint8:
            raise ValueError(f"a scene must give ({h}, {w}, 3) uint8 RGB, not {pic.shape} {pic.dtype}")
        r, g, b = pic[..., 0], pic[..., 1], pic[..., 2]
        if fmt in RGB_FORMATS:
            planes = [b, g, r] if fmt in ("RGB888", "XRGB8888") else [r, g, b]  # DRM naming: RGB888 = B,G,R
            if fmt.startswith("X"):
                planes.append(np.full((h, w), 255, np.uint8))
            return np.ascontiguousarray(np.stack(planes, -1))  # picamera2 slices the row padding off
        # YUV420 (I420) in the stream's colour space, rows padded to the stride (chroma rows to stride/2)
        y, u, v = rgb_to_yuv(pic.astype(np.float32), colour_space or ColorSpace.Rec709())
        u2 = u.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        v2 = v.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        if fmt == "YVU420":
            u2, v2 = v2, u2
        buf = np.full(stride * h * 3 // 2, 0xAA, np.uint8)  # padding bytes are garbage, not zeros
        ys = buf[: h * stride].reshape(h, stride)
        ys[:, :w] = np.clip(y + 0.5, 0, 255)
        half = stride // 2
        cs = (h // 2) * half
        buf[h * stride: h * stride + cs].reshape(h // 2, half)[:, : w // 2] = np.clip(u2 + 0.5, 0, 255)
        buf[h * stride + cs: h * stride + 2 * cs].reshape(h // 2, half)[:, : w // 2] = np.clip(v2 + 0.5, 0, 255)
        return buf.reshape(h * 3 // 2, stride)


class FakePicamera2Module(types.SimpleNamespace):
    """Stands in for ``import picamera2`` (with ``.encoders`` and ``.outputs``)."""

    def __init__(self, frames: int = 10**9, platform: str = "vc4", drop: Collection[int] = (),
                 encoder_error: OSError | None = None, scene: Scene | None = None) -> None:
        self.instances: list[Picamera2] = []
        self.fake_platform = platform
        #: raised by the next encoder start (the codec device busy, missing, not permitted); None: works
        self.encoder_error: OSError | None = encoder_error
        instances = self.instances
        module = self

        class ModuleH264Encoder(H264Encoder):
            @staticmethod
            def _device_error() -> OSError | None:
                return module.encoder_error

        def factory(camera_num: int = 0) -> Picamera2:
            cam = Picamera2(camera_num, frames=frames, platform=platform, drop=drop, scene=scene)
            instances.append(cam)
            return cam

        super().__init__(
            Picamera2=factory,
            encoders=types.SimpleNamespace(H264Encoder=ModuleH264Encoder),
            outputs=types.SimpleNamespace(CircularOutput2=CircularOutput2, PyavOutput=PyavOutput,
                                          FileOutput=FileOutput, Output=Output),
        )


def read_video(path: str) -> list[tuple[int, bool]]:
    """(pts in microseconds, keyframe) of every video frame that decodes in ``path``, up to the
    first undecodable one (a file cut short by a crash plays up to there)."""
    import av

    out: list[tuple[int, bool]] = []
    try:
        with av.open(path) as c:
            s = c.streams.video[0]
            for pkt in c.demux(s):
                for f in pkt.decode():
                    if f.pts is not None and f.time_base is not None:
                        out.append((round(float(f.pts * f.time_base) * 1e6), bool(f.key_frame)))
    except av.error.FFmpegError:
        pass
    return out
