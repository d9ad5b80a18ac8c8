"""The simulated camera: any MP4/MKV/MOV read with PyAV, frames stamped from PTS.

It implements the firmware's :class:`~bodycam.device.hw.frames.Camera` protocol.
One demux pass reads video and audio: video packets are decoded and scaled
straight to the model's low resolution (libswscale, area filter, so a flash of a
few pixels is averaged in, not skipped), and every packet is also handed on,
still encoded, for the pre-event buffer and the footage writer (no re-encode).

Frame times are the clip's own timeline: ``t_ns`` is the frame's PTS in
nanoseconds from the first video frame (DESIGN.md section 3).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import ClipError
from bodycam.device.hw.frames import EncodedPacket, Frame, StreamInfo


def _ns(pts: int, time_base: Fraction) -> int:
    return int(pts * time_base.numerator * 1_000_000_000 // time_base.denominator)


class ClipCamera:
    """Frames of a clip file, as if from a camera."""

    def __init__(self, path: str | os.PathLike[str], lores_size: tuple[int, int], *, with_packets: bool = True) -> None:
        self.path = Path(path)
        self.lores_size = lores_size
        self.with_packets = with_packets
        self._container: Any = None
        self._demux: Iterator[Any] | None = None
        self._pending: collections.deque[Frame] = collections.deque()
        self._packets: list[EncodedPacket] = []
        self._index = 0
        self._t0_ns = 0
        self._eof = False
        self._video: Any = None
        self._reformatter: Any = None
        self._audio: Any = None
        self.last_offset = 0  # byte offset of the last packet read (for error messages)
        self.info: StreamInfo | None = None
        self._damage: str | None = None  # raised once every readable frame has been delivered

    # -- Camera protocol -------------------------------------------------------------
    def start(self) -> StreamInfo:
        import av  # deferred: importing PyAV costs time and is only needed here

        if not self.path.is_file():
            raise ClipError(f"{self.path}: no such clip")
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            hint = " (a truncated MP4 whose index was never written?)" if self.path.suffix.lower() in (".mp4", ".mov") else ""
            raise ClipError(f"{self.path}: not a readable video file{hint} ({exc})") from exc
        if not self._container.streams.video:
            self._container.close()
            raise ClipError(f"{self.path}: the file has no video stream")
        from av.video.reformatter import VideoReformatter

        # one reformatter for the whole clip: it keeps its libswscale context, which a fresh
        # frame.to_ndarray(width=..., height=...) would set up again for every frame (~2 ms at 720p)
        self._reformatter = VideoReformatter()
        self._video = self._container.streams.video[0]
        self._video.thread_type = "AUTO"
        self._audio = self._container.streams.audio[0] if self._container.streams.audio else None
        start = self._video.start_time
        self._t0_ns = _ns(int(start), self._video.time_base) if start is not None else 0
        streams = [self._video] + ([self._audio] if self._audio is not None else [])
        self._demux = self._container.demux(*streams)
        rate = self._video.average_rate or self._video.guessed_rate or 30
        cc = self._video.codec_context
        self.info = StreamInfo(
            width=int(cc.width),
            height=int(cc.height),
            fps=float(rate),
            has_audio=self._audio is not None,
            template={"video": self._video, "audio": self._audio},
        )
        return self.info

    def read(self) -> Frame | None:
        while not self._pending and not self._eof:
            self._pump()
        if self._pending:
            return self._pending.popleft()
        if self._damage is not None:
            damage, self._damage = self._damage, None
            raise ClipError(damage)
        return None

    def stop(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._demux = None

    def __enter__(self) -> ClipCamera:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------
    def _pump(self) -> None:
        import av

        assert self._demux is not None
        try:
            packet = next(self._demux)
        except StopIteration:
            self._flush_decoder()
            self._eof = True
            declared = int(self._video.frames or 0)
            if declared > self._index:
                # the index promised more frames than the file holds: a truncated clip
                self._damage = (
                    f"{self.path}: truncated or damaged after byte offset {self.last_offset}: "
                    f"{self._index} of {declared} frames readable"
                )
            return
        except av.error.FFmpegError as exc:
            self._eof = True
            raise ClipError(
                f"{self.path}: damaged at byte offset {self.last_offset} after frame {self._index}: {exc}"
            ) from exc
        if packet.pos is not None and packet.pos >= 0:
            self.last_offset = int(packet.pos)
        if packet.size == 0:  # a flush packet at end of stream
            if packet.stream.type == "video":
                self._flush_decoder()
            return
        is_video = packet.stream.type == "video"
        if self.with_packets and packet.pts is not None:
            t_ns = self._packet_time_ns(packet, is_video)
            self._packets.append(
                EncodedPacket("video" if is_video else "audio", t_ns, bool(packet.is_keyframe), packet.size, packet)
            )
        if is_video:
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                self._eof = True
                raise ClipError(
                    f"{self.path}: undecodable video at byte offset {self.last_offset} after frame "
                    f"{self._index}: {exc}"
                ) from exc
            for vf in frames:
                self._emit(vf)

    def _flush_decoder(self) -> None:
        import av

        if self._video is None:
            return
        try:
            for vf in self._video.codec_context.decode(None):
                self._emit(vf)
        except av.error.FFmpegError:
            pass

    def _packet_time_ns(self, packet: Any, is_video: bool) -> int:
        return _ns(int(packet.pts), packet.time_base) - self._t0_ns

    def _emit(self, vf: Any) -> None:
        if vf.pts is None:
            return
        t_ns = _ns(int(vf.pts), self._video.time_base) - self._t0_ns
        w, h = self.lores_size
        lores = self._reformatter.reformat(vf, width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
        packets = tuple(self._packets)
        self._packets.clear()
        self._pending.append(Frame(self._index, t_ns, lores, packets))
        self._index += 1


def read_lores(path: str | os.PathLike[str], lores_size: tuple[int, int]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """All frames of a clip at ``lores_size`` (W, H): ``(t_ns[T], frames[T, H, W, 3])``.

    Uses the same decode and scaling as :class:`ClipCamera`, so training sees
    exactly what the firmware sees in the simulator.
    """
    times: list[int] = []
    frames: list[npt.NDArray[np.uint8]] = []
    cam = ClipCamera(path, lores_size, with_packets=False)
    cam.start()
    try:
        while (frame := cam.read()) is not None:
            times.append(frame.t_ns)
            frames.append(frame.lores)
    finally:
        cam.stop()
    w, h = lores_size
    stacked = np.stack(frames) if frames else np.zeros((0, h, w, 3), dtype=np.uint8)
    return np.asarray(times, dtype=np.int64), stacked
