"""A fake ``picamera2`` module for testing the camera adapter off a Pi.

It follows the real API's shape and semantics (picamera2 >= 0.3.19): ``Picamera2``
with ``create_video_configuration`` / ``configure`` / ``start`` / ``capture_request``
(``make_array``, ``get_metadata`` with ``SensorTimestamp`` in ns, ``release``) /
``start_encoder`` / ``stop_encoder`` / ``stop`` / ``close``; ``encoders.H264Encoder``
(keyframe every ``iperiod`` frames); ``outputs.CircularOutput2`` (a delay line of
``buffer_duration_ms``, timestamps in microseconds, new outputs start at a keyframe,
``stop()`` flushes) and ``outputs.PyavOutput`` / ``outputs.FileOutput``. Instead of
H.264 the fake "encoder" emits, per frame, the bytes ``b"frame <index>"``; PyavOutput
writes one JSON line per packet (index, timestamp, keyframe), so tests can check
exactly which frames landed in which file.

Use: ``FakePicamera2Module(frames=300)`` and pass it as ``picamera2_module``.
"""

from __future__ import annotations

import collections
import json
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np


class FakeOutput:
    def __init__(self, pts: Any = None) -> None:
        self.recording = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(self, frame: bytes, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        raise NotImplementedError

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
        pass


class PyavOutput(FakeOutput):
    """Writes one JSON line per packet: {"frame", "timestamp_us", "keyframe"}."""

    def __init__(self, output_name: str, format: str | None = None, pts: Any = None) -> None:
        super().__init__(pts)
        self.output_name = output_name
        self.format = format
        self.streams: list[tuple[Any, str]] = []
        self._file: Any = None

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
        self.streams.append((encoder_stream, codec_name))

    def start(self) -> None:
        self._file = open(self.output_name, "w", encoding="utf-8")  # noqa: SIM115
        super().start()

    def outputframe(self, frame: bytes, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        if not self.streams:
            raise RuntimeError("PyavOutput: no stream added before output")
        index = int(frame.split()[1])
        self._file.write(json.dumps({"frame": index, "timestamp_us": timestamp, "keyframe": keyframe}) + "\n")

    def stop(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().stop()


class FileOutput(FakeOutput):
    def __init__(self, file: str | None = None, pts: Any = None, split: Any = None) -> None:
        super().__init__(pts)
        self.frames: list[bytes] = []

    def outputframe(self, frame: bytes, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        self.frames.append(frame)


class CircularOutput2(FakeOutput):
    """Same semantics as picamera2's CircularOutput2 (written from its documented behaviour)."""

    def __init__(self, pts: Any = None, buffer_duration_ms: int = 5000) -> None:
        super().__init__(pts)
        if buffer_duration_ms < 0:
            raise RuntimeError("buffer_duration_ms may not be negative")
        self._lock = threading.Lock()
        self.buffer_duration_ms = buffer_duration_ms
        self._circular: collections.deque[tuple[bytes, bool, int, Any, bool]] = collections.deque()
        self._output: FakeOutput | None = None
        self._available = False
        self._first = True
        self._streams: list[tuple[Any, str, dict[str, Any]]] = []

    def open_output(self, output: FakeOutput) -> None:
        if self._output is not None:
            raise RuntimeError("Underlying output must be closed first")
        self._output = output
        output.start()
        for stream, codec, kwargs in self._streams:
            output._add_stream(stream, codec, **kwargs)
        with self._lock:
            self._available = True
            self._first = True

    def close_output(self) -> None:
        if self._output is None:
            raise RuntimeError("No underlying output has been opened")
        with self._lock:
            self._available = False
        self._output.stop()
        self._output = None

    def _next(self) -> tuple[bytes, bool, int, Any, bool] | None:
        while self._circular:
            entry = self._circular.popleft()
            if not self._first:
                return entry
            if entry[1] and not entry[4]:
                self._first = False
                return entry
        return None

    def outputframe(self, frame: bytes, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        with self._lock:
            if self.buffer_duration_ms == 0 or not self.recording:
                return
            ts = int(timestamp or 0)
            self._circular.append((frame, keyframe, ts, packet, audio))
            while ts - self._circular[0][2] > self.buffer_duration_ms * 1000:
                self._circular.popleft()
            if self._available and self._output is not None:
                entry = self._next()
                if entry:
                    self._output.outputframe(*entry)

    def start(self) -> None:
        with self._lock:
            if self.recording:
                raise RuntimeError("Circular output is running")
            self.recording = True

    def stop(self) -> None:
        with self._lock:
            if not self.recording:
                raise RuntimeError("Circular output was not started")
            self.recording = False
            self._available = False
        if self._output is not None:
            while (entry := self._next()) is not None:
                self._output.outputframe(*entry)
            self._output.stop()
            self._output = None

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
        self._streams.append((encoder_stream, codec_name, kwargs))


class H264Encoder:
    def __init__(self, bitrate: int | None = None, repeat: bool = False, iperiod: int | None = None,
                 framerate: float | None = None, qp: int | None = None, profile: str | None = None) -> None:
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod or 60
        self.output: FakeOutput | None = None
        self.running = False
        self._count = 0
        self._t0_ns: int | None = None

    def start(self) -> None:
        if self.output is None:
            raise RuntimeError("No output specified")
        self.output._add_stream("video", "h264")
        self.output.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            assert self.output is not None
            self.output.stop()

    def encode(self, index: int, sensor_ns: int) -> None:
        if not self.running or self.output is None:
            return
        if self._t0_ns is None:
            self._t0_ns = sensor_ns
        keyframe = self._count % self.iperiod == 0
        self._count += 1
        self.output.outputframe(f"frame {index}".encode(), keyframe, (sensor_ns - self._t0_ns) // 1000)


class CompletedRequest:
    def __init__(self, cam: Picamera2, index: int, t_ns: int) -> None:
        self._cam = cam
        self.index = index
        self._t_ns = t_ns
        self._released = False

    def _check(self) -> None:
        if self._released:
            raise RuntimeError("request already released")

    def get_metadata(self) -> dict[str, Any]:
        self._check()
        return {"SensorTimestamp": self._t_ns, "FrameDuration": self._cam.frame_us, "ExposureTime": 10000}

    def make_array(self, name: str) -> np.ndarray[Any, Any]:
        self._check()
        stream = self._cam.camera_config[name] if self._cam.camera_config else None
        if stream is None:
            raise KeyError(f"stream {name} not configured")
        w, h = stream["size"]
        return self._cam.image(stream["format"], w, h, self.index)

    def release(self) -> None:
        self._released = True
        self._cam.outstanding -= 1


class Picamera2:
    """One fake camera producing ``frames`` frames at the configured frame duration."""

    frames: int = 10**9
    boot_ns: int = 12_345_000_000

    def __init__(self, camera_num: int = 0) -> None:
        if camera_num != 0:
            raise IndexError("list index out of range")  # what picamera2 raises for a missing camera
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        self.frame_us = 33_333
        self.outstanding = 0
        self._index = 0
        self.encoders: list[H264Encoder] = []

    def create_video_configuration(self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
                                   raw: Any = None, transform: Any = None, colour_space: Any = None,
                                   buffer_count: int = 6, controls: dict[str, Any] | None = None,
                                   display: str | None = "main", encode: str | None = "main",
                                   queue: bool = True, sensor: Any = None, use_case: str = "video") -> dict[str, Any]:
        main = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        if lores is not None:
            lores = {"format": "YUV420", "size": main["size"], **lores}
        return {"use_case": use_case, "transform": transform, "colour_space": colour_space,
                "buffer_count": buffer_count, "queue": queue, "main": main, "lores": lores, "raw": raw,
                "controls": {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333), **(controls or {})},
                "sensor": sensor or {}, "display": display, "encode": encode}

    def configure(self, config: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        lo, ma = config.get("lores"), config["main"]
        if lo is not None:
            if lo["size"][0] > ma["size"][0] or lo["size"][1] > ma["size"][1]:
                raise ValueError("lores stream dimensions may not exceed main stream")
            if lo["format"] not in ("YUV420", "YVU420", "RGB888", "BGR888", "XRGB8888", "XBGR8888"):
                raise ValueError(f"lores stream must be YUV or RGB, not {lo['format']}")
        self.frame_us = int(config["controls"]["FrameDurationLimits"][0])
        self.camera_config = config

    def start(self) -> None:
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def start_encoder(self, encoder: H264Encoder | None = None, output: Any = None, pts: Any = None,
                      quality: Any = None, name: str | None = None) -> None:
        if encoder is None:
            raise RuntimeError("No encoder specified")
        if output is not None:
            encoder.output = output
        encoder.start()
        self.encoders.append(encoder)

    def stop_encoder(self, encoders: Any = None) -> None:
        for e in list(self.encoders):
            e.stop()
        self.encoders = []

    def capture_request(self, wait: Any = None, flush: Any = None) -> CompletedRequest:
        if not self.started:
            raise RuntimeError("Camera is not running")
        if self._index >= self.frames:
            raise RuntimeError("Camera frontend has timed out!")
        t_ns = self.boot_ns + self._index * self.frame_us * 1000
        for e in self.encoders:
            e.encode(self._index, t_ns)
        req = CompletedRequest(self, self._index, t_ns)
        self._index += 1
        self.outstanding += 1
        return req

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.stop()
        self.closed = True

    @staticmethod
    def image(fmt: str, w: int, h: int, index: int) -> np.ndarray[Any, Any]:
        """A test picture: R = column ramp, G = row ramp, B = frame index (as uint8)."""
        r = np.broadcast_to((np.arange(w) * 255 // max(1, w - 1)).astype(np.uint8), (h, w))
        g = np.broadcast_to((np.arange(h) * 255 // max(1, h - 1)).astype(np.uint8)[:, None], (h, w))
        b = np.full((h, w), index % 256, np.uint8)
        if fmt in ("RGB888", "XRGB8888"):  # picamera2: B,G,R(,X) in memory
            planes = [b, g, r] + ([np.full((h, w), 255, np.uint8)] if fmt == "XRGB8888" else [])
        elif fmt in ("BGR888", "XBGR8888"):
            planes = [r, g, b] + ([np.full((h, w), 255, np.uint8)] if fmt == "XBGR8888" else [])
        else:  # YUV420 (I420) from the RGB picture, BT.709 limited range
            rgb = np.stack([r, g, b], -1).astype(np.float32)
            y = 16 + 0.183 * rgb[..., 0] + 0.614 * rgb[..., 1] + 0.062 * rgb[..., 2]
            u = 128 - 0.101 * rgb[..., 0] - 0.339 * rgb[..., 1] + 0.439 * rgb[..., 2]
            v = 128 + 0.439 * rgb[..., 0] - 0.399 * rgb[..., 1] - 0.040 * rgb[..., 2]
            u2 = u.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            v2 = v.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            out = np.concatenate([y.ravel(), u2.ravel(), v2.ravel()])
            return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)
        return np.ascontiguousarray(np.stack(planes, -1))


class FakePicamera2Module(types.SimpleNamespace):
    """Stands in for ``import picamera2`` (with ``.encoders`` and ``.outputs``)."""

    def __init__(self, frames: int = 10**9) -> None:
        self.instances: list[Picamera2] = []
        instances = self.instances

        def factory(camera_num: int = 0) -> Picamera2:
            cam = Picamera2(camera_num)
            cam.frames = frames
            instances.append(cam)
            return cam

        super().__init__(
            Picamera2=factory,
            encoders=types.SimpleNamespace(H264Encoder=H264Encoder),
            outputs=types.SimpleNamespace(CircularOutput2=CircularOutput2, PyavOutput=PyavOutput,
                                          FileOutput=FileOutput),
        )


def read_packets(path: str | Path) -> list[dict[str, Any]]:
    """The packets a fake PyavOutput wrote."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]
