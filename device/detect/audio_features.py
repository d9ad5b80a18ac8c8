"""Audio features shared by training and firmware: log-mel frames in numpy.

:func:`log_mel` is the one feature function: ``bodycam-model`` trains the audio detector on its
output and the firmware's :class:`LogMelStream` computes the same frames, with the same
function, from the microphone's blocks as they arrive (tested equal, bit for bit).

Parameters (:class:`FeatureSpec`, recorded in the audio model's sidecar and checked at load):
16 kHz mono, 25 ms Hann window (400 samples) in a 512-point FFT, 10 ms hop (160 samples),
40 HTK-mel bands from 50 Hz to 7.6 kHz, ``log10(power + 1e-7)`` per band. Frame *i* of a stream
starting at sample 0 covers samples ``[i*hop, i*hop + win)``; its time is that of its first
sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.hw.microphone import MAX_JITTER_NS, AudioBlock

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FeatureSpec:
    kind: str = "log-mel"
    sample_rate: int = 16000
    n_fft: int = 512
    win: int = 400
    hop: int = 160
    mels: int = 40
    fmin: float = 50.0
    fmax: float = 7600.0
    floor: float = 1e-7

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def hop_ns(self) -> int:
        return self.hop * 1_000_000_000 // self.sample_rate


FEATURES = FeatureSpec()


def _hz_to_mel(f: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def _tables(spec: FeatureSpec) -> tuple[F32, F32]:
    """(Hann window [win], mel filterbank [n_fft//2+1, mels]) for ``spec``."""
    window = np.hanning(spec.win + 2)[1:-1].astype(np.float32)  # periodic-free symmetric Hann, no zero ends
    bins = np.fft.rfftfreq(spec.n_fft, 1.0 / spec.sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(spec.fmin)), _hz_to_mel(np.array(spec.fmax)), spec.mels + 2))
    fb = np.zeros((len(bins), spec.mels), np.float64)
    for m in range(spec.mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (bins - lo) / (mid - lo)
        down = (hi - bins) / (hi - mid)
        fb[:, m] = np.maximum(0.0, np.minimum(up, down))
    fb /= np.maximum(fb.sum(axis=0, keepdims=True), 1e-9)  # each band: mean power of its bins
    window.setflags(write=False)
    fbf = fb.astype(np.float32)
    fbf.setflags(write=False)
    return window, fbf


def n_frames(n_samples: int, spec: FeatureSpec = FEATURES) -> int:
    return 0 if n_samples < spec.win else 1 + (n_samples - spec.win) // spec.hop


def log_mel(samples: npt.ArrayLike, spec: FeatureSpec = FEATURES) -> F32:
    """Log-mel frames ``[n_frames, mels]`` (float32) of mono ``samples`` at ``spec.sample_rate``."""
    x = np.asarray(samples, dtype=np.float32)
    n = n_frames(len(x), spec)
    if n == 0:
        return np.zeros((0, spec.mels), np.float32)
    window, fb = _tables(spec)
    idx = np.arange(spec.win)[None, :] + spec.hop * np.arange(n)[:, None]
    frames = x[idx] * window
    power = np.abs(np.fft.rfft(frames, n=spec.n_fft, axis=1)).astype(np.float32) ** 2
    mel = np.einsum("fk,km->fm", power, fb, optimize=False)  # no BLAS: each frame alike in any batch
    out: F32 = np.log10(mel + np.float32(spec.floor)).astype(np.float32)
    return out


class LogMelStream:
    """:func:`log_mel` over a live stream of :class:`AudioBlock`: frames as soon as they are complete.

    :meth:`push` returns ``(t_ns of the first new frame, frames [k, mels])``; each frame is the
    same numbers :func:`log_mel` gives for the whole stream. A block that starts within
    :data:`~bodycam.device.hw.microphone.MAX_JITTER_NS` of where the previous one ended continues the
    stream (its samples are kept; the frames still to come take the block's time, so the stream follows
    the converter's clock correction); one further off (a capture gap) restarts the stream at its own
    time.
    """

    def __init__(self, spec: FeatureSpec = FEATURES) -> None:
        self.spec = spec
        self._buf = np.zeros(0, np.float32)
        self._t0_ns: int | None = None  # time of _buf[0]
        self._next_ns = 0  # expected time of the next block's first sample

    def push(self, block: AudioBlock) -> tuple[int, F32]:
        spec = self.spec
        if block.rate != spec.sample_rate:
            raise ValueError(f"audio block at {block.rate} Hz, features need {spec.sample_rate} Hz")
        if self._t0_ns is None or abs(block.t_ns - self._next_ns) > MAX_JITTER_NS:
            self._buf = np.zeros(0, np.float32)
            self._t0_ns = block.t_ns
        else:
            self._t0_ns += block.t_ns - self._next_ns
        self._buf = np.concatenate([self._buf, block.samples.astype(np.float32, copy=False)])
        self._next_ns = block.end_ns
        k = n_frames(len(self._buf), spec)
        t_first = self._t0_ns
        if k == 0:
            return t_first, np.zeros((0, spec.mels), np.float32)
        used = (k - 1) * spec.hop + spec.win
        frames = log_mel(self._buf[:used], spec)
        drop = k * spec.hop
        self._buf = self._buf[drop:]
        self._t0_ns = t_first + drop * 1_000_000_000 // spec.sample_rate
        return t_first, frames


__all__ = ["FEATURES", "FeatureSpec", "LogMelStream", "log_mel", "n_frames"]
