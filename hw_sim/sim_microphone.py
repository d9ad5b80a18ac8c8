"""The simulated microphone: a clip's audio track, played by its PTS.

:class:`ClipMicrophone` implements the firmware's
:class:`~bodycam.device.hw.microphone.Microphone`. It opens the clip a second time (audio stream
only), decodes it as the loop's clock passes, and stamps every decoded frame from its own PTS on
the clip's timeline, the same origin as :class:`~bodycam.hw_sim.clip_camera.ClipCamera` uses for
frames (the first video frame is 0): AAC encoder priming (frames before 0) is respected, never a
sample count from the start. Any rate and channel count is mixed to mono and resampled to 16 kHz by
the firmware's own :class:`~bodycam.device.hw.microphone.AudioConverter`.

``origin_ns`` places the clip on another sensor clock (the fake picamera2's ``SensorTimestamp``
starts at its boot time): the clip's time 0 plays at ``origin_ns``.

A clip without an audio track: :meth:`start` returns False (the firmware runs video-only and says
so once).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from bodycam.device.errors import ClipError
from bodycam.device.hw.microphone import AudioBlock, AudioConverter, MicrophoneError


def _ns(pts: int, time_base: Fraction) -> int:
    return int(pts * time_base.numerator * 1_000_000_000 // time_base.denominator)


def frame_to_interleaved(frame: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A decoded PyAV audio frame as float32 ``(samples, channels)`` in -1..1."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    x = arr.T if frame.format.is_planar else arr.reshape(-1, channels)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    return np.ascontiguousarray(x, dtype=np.float32)


class ClipMicrophone:
    """The audio track of ``path`` as a microphone on the clip's timeline."""

    def __init__(self, path: str | os.PathLike[str], origin_ns: int = 0) -> None:
        self.path = Path(path)
        self.origin_ns = origin_ns
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._blocks: collections.deque[AudioBlock] = collections.deque()
        self._converter: AudioConverter | None = None
        self._t0_ns = 0
        self._eof = False
        self.rate = 0
        self.channels = 0

    def start(self) -> bool:
        import av

        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise ClipError(f"{self.path}: not a readable media file ({exc})") from exc
        if not self._container.streams.audio:
            self.close()
            return False
        audio = self._container.streams.audio[0]
        video = self._container.streams.video[0] if self._container.streams.video else None
        if video is not None and video.start_time is not None:
            self._t0_ns = _ns(int(video.start_time), video.time_base)  # ClipCamera's origin
        self.rate = int(audio.codec_context.sample_rate or audio.rate or 0)
        self.channels = int(audio.codec_context.channels or 0) or len(audio.codec_context.layout.channels)
        self._converter = AudioConverter(self.rate, self.channels)
        self._frames = self._container.decode(audio)
        return True

    def _decode_until(self, until_ns: int) -> None:
        import av

        assert self._frames is not None and self._converter is not None
        while not self._eof and (not self._blocks or self._blocks[-1].t_ns < until_ns):
            try:
                frame = next(self._frames)
            except StopIteration:
                self._eof = True
                return
            except av.error.FFmpegError as exc:
                self._eof = True
                raise MicrophoneError(f"{self.path}: undecodable audio ({exc})") from exc
            if frame.pts is None:
                continue
            t_ns = _ns(int(frame.pts), frame.time_base) - self._t0_ns + self.origin_ns
            block = self._converter.feed(t_ns, frame_to_interleaved(frame))
            if block is not None:
                self._blocks.append(block)

    def read(self, until_ns: int) -> list[AudioBlock]:
        if self._frames is None:
            return []
        self._decode_until(until_ns)
        out: list[AudioBlock] = []
        while self._blocks and self._blocks[0].t_ns < until_ns:
            out.append(self._blocks.popleft())
        return out

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._frames = None


__all__ = ["ClipMicrophone", "frame_to_interleaved"]
