"""The footage's sound: the microphone's blocks encoded to AAC, each packet on the sensor clock.

On the camera the microphone is opened once, by the loop (:class:`~bodycam.device.detect.audio_path.
AudioPath`): the audio detector and the footage share its blocks. picamera2's own audio support
(``Encoder.audio = True``) is not used, because it opens a *second* capture of the device
(``av.open(**audio_input)``, PulseAudio by default) and stamps its packets from the first audio
packet seen after the first video frame, shifted by a fixed ``audio_sync`` of -100 ms, not from the
sensor clock. Here each packet is stamped from the sample times the microphone already gives
(``AudioBlock.t_ns``, the clock of ``SensorTimestamp``), so sound and picture line up to the sample.

:class:`AacTrack` is built like picamera2's audio path so its packets go through picamera2's own
outputs unchanged: the encoder is a stream of a ``null`` container (``packet.stream`` is then the key
``PyavOutput`` looks the output stream up by), and :attr:`AacTrack.output_stream` is what an output
is told with ``_add_stream`` (``codec_name`` plus ``rate``/``layout``: ``PyavOutput`` creates the
file's stream with ``add_stream(codec_name, **kwargs)``, so they must describe the same AAC).

Continuity: AAC is a continuous stream of 1024-sample frames. A block that starts after where the
previous one ended (an ALSA overrun) is joined with silence when the gap is at most
``max_fill_s``; a longer gap starts a new *span* (the encoder's sample clock goes on, the mapping to
sensor time jumps), so no packet is ever stamped more than one packet away from its sound. A block
that overlaps what was already encoded loses the overlapping samples.

Packets come out with ``time_base`` 1/1,000,000 and pts, dts and **duration** in microseconds of
sensor time: picamera2's ``PyavOutput`` copies a packet and overwrites only pts/dts/time_base, so a
duration left in 1/16000 units would be read as microseconds (a fragment's last sample would be
63 ms short).
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Protocol, cast

import numpy as np

from bodycam.device.errors import HardwareError
from bodycam.device.hw.microphone import AUDIO_RATE, AudioBlock

US = Fraction(1, 1_000_000)


class AacError(HardwareError):
    """The AAC encoder failed (the footage goes on without sound)."""


class FootageSound(Protocol):
    """Footage that records the microphone's sound (the camera: picamera2 writes the files).

    The simulator's remuxing path has none: it records the clip's own sound track, the same
    track its simulated microphone plays.
    """

    def start_sound(self) -> None:
        """The microphone is live: recordings from now on carry an AAC track."""
        ...

    def write_sound(self, blocks: Sequence[AudioBlock]) -> None:
        """The blocks the loop just read (in order); raises :class:`AacError` when encoding fails."""
        ...


class AacTrack:
    """16 kHz mono :class:`AudioBlock` s in, AAC-LC packets stamped in sensor microseconds out."""

    codec_name = "aac"

    def __init__(self, rate: int = AUDIO_RATE, bit_rate: int = 48_000, max_fill_s: float = 2.0) -> None:
        import av

        self.rate = rate
        self.max_fill = round(max_fill_s * rate)
        try:
            self._container: Any = av.open(os.devnull, "w", format="null")
            self.stream: Any = cast(Any, self._container.add_stream(self.codec_name, rate=rate))
            self.stream.layout = "mono"
            self.stream.bit_rate = bit_rate
            self.stream.codec_context.open()
        except (av.error.FFmpegError, ValueError) as exc:
            raise AacError(f"AAC encoder: cannot open ({exc})") from exc
        self.frame_size = int(self.stream.codec_context.frame_size or 1024)
        self._pending = np.zeros(0, np.float32)
        self._next_pts = 0  # encoder samples handed to the codec (frames of frame_size)
        self._fed = 0  # encoder samples accepted (pending included)
        self._end_ns: int | None = None  # sensor time just after the last accepted sample
        #: spans of the encoder's sample clock: (first encoder sample, its sensor time in ns)
        self._spans_pts: list[int] = []
        self._spans_ns: list[int] = []
        self.samples = 0
        self.packets = 0
        self.filled = 0  # samples of silence put in gaps
        self.dropped = 0  # overlapping samples dropped

    @property
    def output_stream(self) -> tuple[Any, str, dict[str, Any]]:
        """``(key, codec_name, kwargs)`` for an output's ``_add_stream``."""
        return self.stream, self.codec_name, {"rate": self.rate, "layout": "mono"}

    def encode(self, block: AudioBlock) -> list[Any]:
        """Encode one block; the AAC packets that are complete (pts/dts/duration in sensor us)."""
        if block.rate != self.rate:
            raise AacError(f"AAC track: a block at {block.rate} Hz (the track is {self.rate} Hz)")
        x = np.asarray(block.samples, np.float32)
        t = block.t_ns
        if self._end_ns is None:
            self._new_span(t)
        else:
            gap = round((t - self._end_ns) * self.rate / 1e9)
            if gap > self.max_fill:
                self._new_span(t)
            elif gap > 1:
                x = np.concatenate((np.zeros(gap, np.float32), x))
                self.filled += gap
            elif gap < -1:
                self.dropped += min(-gap, len(x))
                x = x[-gap:]
        if len(x) == 0:
            return []
        self._fed += len(x)
        self.samples += len(x)
        self._end_ns = self._span_ns(self._fed)
        self._pending = np.concatenate((self._pending, x)) if len(self._pending) else x
        out: list[Any] = []
        while len(self._pending) >= self.frame_size:
            chunk, self._pending = self._pending[: self.frame_size], self._pending[self.frame_size :]
            out += self._encode_frame(chunk)
        return out

    def flush(self) -> list[Any]:
        """The end: what is pending (padded to a frame) and what the encoder holds."""
        out: list[Any] = []
        if len(self._pending):
            out += self._encode_frame(self._pending)
            self._pending = np.zeros(0, np.float32)
        try:
            packets = self.stream.encode(None)
        except Exception as exc:
            raise AacError(f"AAC encoder: flush failed ({exc})") from exc
        return out + [self._stamp(p) for p in packets]

    def close(self) -> None:
        c, self._container = self._container, None
        if c is not None:
            with contextlib.suppress(Exception):  # nothing was written to /dev/null that could be lost
                c.close()

    # -- internals -------------------------------------------------------------------------
    def _new_span(self, t_ns: int) -> None:
        pts = self._fed
        self._spans_pts.append(pts)
        self._spans_ns.append(t_ns)
        if len(self._spans_pts) > 64:  # packets older than the encoder's delay never look this far back
            del self._spans_pts[0], self._spans_ns[0]
        self._end_ns = t_ns

    def _span_ns(self, pts: int) -> int:
        i = max(0, bisect.bisect_right(self._spans_pts, pts) - 1)
        return self._spans_ns[i] + (pts - self._spans_pts[i]) * 1_000_000_000 // self.rate

    def _encode_frame(self, chunk: np.ndarray[Any, np.dtype[np.float32]]) -> list[Any]:
        import av

        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.reshape(1, -1)), format="fltp", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._next_pts
        frame.time_base = Fraction(1, self.rate)
        self._next_pts += len(chunk)
        try:
            packets = self.stream.encode(frame)
        except Exception as exc:  # av.error.FFmpegError and friends
            raise AacError(f"AAC encoder: encode failed ({exc})") from exc
        return [self._stamp(p) for p in packets]

    def _stamp(self, p: Any) -> Any:
        tb = p.time_base
        pts = int(p.pts) * self.rate * tb.numerator // tb.denominator  # in samples of the encoder's clock
        dur = int(p.duration) * self.rate * tb.numerator // tb.denominator if p.duration else self.frame_size
        t_ns = self._span_ns(pts)
        p.time_base = US
        p.pts = p.dts = t_ns // 1000
        p.duration = dur * 1_000_000 // self.rate
        self.packets += 1
        return p


__all__ = ["AacError", "AacTrack", "FootageSound"]
