"""The microphone as the firmware sees it: timestamped blocks of mono samples.

A :class:`Microphone` hands the loop :class:`AudioBlock` objects: float32 mono samples at the
rate the audio detector wants (:data:`AUDIO_RATE`), each stamped with the **sensor-clock time of
its first sample** (the same monotonic timeline as the frames' ``SensorTimestamp``), so an audio
onset can be placed on a video frame. The loop asks for everything captured before a frame's time
(:meth:`Microphone.read`) and never blocks on audio.

Implementations: :class:`AlsaMicrophone` (here; ``pyalsaaudio``, imported when it is built, never
at import) on the camera, and ``bodycam.hw_sim.sim_microphone.ClipMicrophone`` (the clip's audio
track played by its PTS) in the simulator.

Timestamps on the camera (:class:`AlsaMicrophone`): the capture PCM is put in ALSA timestamp mode
``SND_PCM_TSTAMP_ENABLE`` with type ``SND_PCM_TSTAMP_TYPE_MONOTONIC`` (the clock V4L2, hence
libcamera's ``SensorTimestamp``, uses). After each ``read()`` of *n* frames,
``snd_pcm_htimestamp()`` gives ``(T, avail)``: *T* is when the newest captured sample reached the
ring buffer, *avail* how many frames are still buffered behind the ones just read. So the last
sample read was captured at ``T - avail/rate`` and the first at ``T - (avail + n - 1)/rate``. A
driver that does not timestamp (T = 0) falls back to ``CLOCK_MONOTONIC`` right after the read
minus the same buffered count (a period's jitter, logged once).

Conversion: whatever rate and channel count the device (or the clip) delivers is mixed down to
mono and resampled to :data:`AUDIO_RATE` by :class:`AudioConverter` (libswresample through PyAV,
a runtime dependency already), which keeps the stream's time: the first output sample of a
continuous stream is the first input sample, and output sample *k* lies *k / AUDIO_RATE* later.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import HardwareError
from bodycam.device.settings import require

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

#: the sample rate every consumer of audio in the firmware works at
AUDIO_RATE = 16000


class MicrophoneError(HardwareError):
    """The microphone is absent, cannot be opened, or failed while capturing."""


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """Consecutive mono samples at ``rate``; ``t_ns`` is the sensor time of ``samples[0]``."""

    t_ns: int
    samples: F32 = field(repr=False)
    rate: int = AUDIO_RATE

    @property
    def end_ns(self) -> int:
        """Sensor time just after the last sample."""
        return self.t_ns + len(self.samples) * 1_000_000_000 // self.rate


class Microphone(Protocol):
    """A source of timestamped mono audio at :data:`AUDIO_RATE`."""

    def start(self) -> bool:
        """Open the source; False when there is no audio to capture (said once, by the caller)."""
        ...

    def read(self, until_ns: int) -> list[AudioBlock]:
        """Every block captured since the last call whose first sample is before ``until_ns``.

        Never blocks for long; raises :class:`MicrophoneError` when capture has failed.
        """
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class MicrophoneConfig:
    """``[microphone]``: the ALSA capture device on the camera."""

    enabled: bool = True
    device: str = "default"  # ALSA PCM name, e.g. "default", "plughw:1,0", "dsnoop:CARD=mic"
    rate: int = 48000  # requested capture rate; what the device grants is resampled to 16 kHz
    channels: int = 1  # requested channel count; what the device grants is mixed to mono
    period_frames: int = 1024

    def __post_init__(self) -> None:
        require(8000 <= self.rate <= 192000, "microphone.rate", f"{self.rate} must be 8000..192000 Hz")
        require(1 <= self.channels <= 8, "microphone.channels", f"{self.channels} must be 1..8")
        require(32 <= self.period_frames <= 16384, "microphone.period_frames",
                f"{self.period_frames} must be 32..16384")
        # the loop (detector and footage) gets sound a period late: the footage's segment cuts wait
        # 0.5 s for it (device/hw/picamera_output.py), so a period must be well under that
        require(self.period_frames <= self.rate // 10, "microphone.period_frames",
                f"{self.period_frames} frames at {self.rate} Hz is more than 100 ms: use <= {self.rate // 10}")


#: Timestamps of consecutive blocks that differ from the stream's sample count by at most this much are
#: jitter, not a gap: ALSA period timestamps (the interrupt or USB URB that moved the hardware pointer)
#: wander by tens to hundreds of microseconds, and USB microphones move the pointer in 1 ms steps. Below
#: it the samples stay one continuous stream whose time follows the timestamps slowly; above it (a real
#: gap or overlap: lost samples, an overrun, a clock step) the stream restarts at the block's own time.
#: 4 ms is an eighth of a video frame at 30 fps and under the audio detector's half hop (5 ms), so an
#: absorbed deviation never moves an onset by more than that.
MAX_JITTER_NS = 4_000_000
#: each block moves the stream's time this fraction of the way towards its timestamp: random jitter of
#: +-0.5 ms averages out to ~50 us, the drift between the sound card's and the monotonic clock (tens of
#: ppm, microseconds per period) is followed with a lag of tens of microseconds
CLOCK_GAIN = 1.0 / 16


class AudioConverter:
    """Mix to mono and resample to :data:`AUDIO_RATE`, keeping the stream's sensor time.

    Feed interleaved ``(n, channels)`` float32 blocks with their first sample's time. The samples of a
    stream are kept continuous and timed by their count from the stream's first block; each block's
    timestamp pulls that timeline by :data:`CLOCK_GAIN` of its deviation (timestamp jitter averages
    out, clock drift is followed). A block whose timestamp is more than ``max_jitter_ns``
    (:data:`MAX_JITTER_NS`) off the timeline (a real gap or overlap), or the first block after
    :meth:`discontinuity` (an overrun), restarts the stream at its own time.
    """

    def __init__(self, in_rate: int, channels: int, out_rate: int = AUDIO_RATE,
                 max_jitter_ns: int = MAX_JITTER_NS) -> None:
        if in_rate <= 0 or channels <= 0:
            raise MicrophoneError(f"audio format {in_rate} Hz x {channels} channels is not usable")
        self.in_rate = in_rate
        self.channels = channels
        self.out_rate = out_rate
        self.max_jitter_ns = max_jitter_ns
        self._resampler: Any = None
        self._t0_ns = 0  # sensor time of the first input sample of the current continuous stream
        self._in_count = 0  # input samples fed since _t0_ns
        self._out_count = 0  # output samples produced since _t0_ns
        self._corr_ns = 0.0  # how far the timestamps have pulled the timeline since _t0_ns
        self.restarts = 0  # streams started (the first one included)

    def _expected_ns(self) -> float:
        return self._t0_ns + self._corr_ns + self._in_count * 1_000_000_000 / self.in_rate

    def discontinuity(self) -> None:
        """Samples were lost (an overrun): the next block starts a new stream at its own time."""
        self._resampler = None

    def feed(self, t_ns: int, interleaved: F32) -> AudioBlock | None:
        x = np.asarray(interleaved, dtype=np.float32)
        if x.ndim == 1:
            x = x.reshape(-1, self.channels)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise MicrophoneError(f"audio block of shape {x.shape} does not have {self.channels} channel(s)")
        if len(x) == 0:
            return None
        if self._resampler is None:
            self._restart(t_ns)
        else:
            deviation = t_ns - self._expected_ns()
            if abs(deviation) > self.max_jitter_ns:
                self._restart(t_ns)
            else:
                self._corr_ns += deviation * CLOCK_GAIN
        mono = x.mean(axis=1, dtype=np.float32) if self.channels > 1 else x[:, 0]
        self._in_count += len(mono)
        if self.in_rate == self.out_rate:
            out = np.ascontiguousarray(mono, dtype=np.float32)
        else:
            out = self._resample(mono)
        if len(out) == 0:
            return None
        t_out = self._t0_ns + round(self._corr_ns) + self._out_count * 1_000_000_000 // self.out_rate
        self._out_count += len(out)
        return AudioBlock(t_out, out, self.out_rate)

    def _restart(self, t_ns: int) -> None:
        self.restarts += 1
        self._t0_ns = t_ns
        self._in_count = 0
        self._out_count = 0
        self._corr_ns = 0.0
        if self.in_rate != self.out_rate:
            import av  # deferred: PyAV only when audio really needs resampling

            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.out_rate)
        else:
            self._resampler = True

    def _resample(self, mono: F32) -> F32:
        import av

        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono.reshape(1, -1)), format="flt", layout="mono")
        frame.sample_rate = self.in_rate
        frame.pts = None
        parts = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


#: bytes per sample of the sample formats :func:`decode_samples` reads (ALSA ``snd_pcm_format_name`` names)
SAMPLE_BYTES = {"S16_LE": 2, "S32_LE": 4, "S24_LE": 4, "S24_3LE": 3, "FLOAT_LE": 4}


def decode_samples(data: bytes, fmt: str) -> F32:
    """Interleaved samples in ALSA format ``fmt`` as float32 in [-1, 1).

    S24_LE is 24 bits in the low three bytes of a 32-bit word (sign-extended here); S24_3LE is
    three packed bytes; S32_LE is what I2S MEMS microphones deliver on ``hw:``/``dsnoop:``.
    """
    if fmt == "S16_LE":
        return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)
    if fmt == "S32_LE":
        return (np.frombuffer(data, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    if fmt == "S24_LE":
        words = np.frombuffer(data, dtype="<i4")
        return (((words << 8) >> 8).astype(np.float64) / 8388608.0).astype(np.float32)
    if fmt == "S24_3LE":
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        words = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return (((words << 8) >> 8).astype(np.float64) / 8388608.0).astype(np.float32)
    if fmt == "FLOAT_LE":
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    raise MicrophoneError(f"sample format {fmt} is not supported")


class AlsaMicrophone:
    """An ALSA capture device through ``pyalsaaudio``, read on its own thread.

    S16_LE is asked for, but pyalsaaudio's ``alsapcm_setup`` ignores a failed
    ``snd_pcm_hw_params_set_format`` and reads back what the device granted (``src/alsaaudio.c``):
    ``hw:`` and ``dsnoop:`` devices do not convert, an I2S MEMS microphone grants S32_LE. The granted
    format (``info()["format_name"]``) is decoded (:data:`SAMPLE_BYTES`); another one is a
    :class:`MicrophoneError` at :meth:`start` that names it.

    ``alsaaudio`` is imported in :meth:`start`; its absence, a device that cannot be opened, or a
    read error later raises :class:`MicrophoneError` (from :meth:`start`, or from :meth:`read`
    after capture stopped). Overruns (``read()`` returning ``-EPIPE``) are counted; the stream
    restarts with fresh timestamps. Period timestamps are not used raw: :class:`AudioConverter` keeps
    the samples continuous and lets the timestamps steer their time (jitter below
    :data:`MAX_JITTER_NS` is not a gap).
    """

    def __init__(self, cfg: MicrophoneConfig, *, module: Any = None,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.cfg = cfg
        self._module = module  # the alsaaudio module (tests hand in a fake with its API)
        self._monotonic_ns = monotonic_ns
        self._pcm: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards _blocks, _error and overruns between the thread and the loop
        self._blocks: collections.deque[AudioBlock] = collections.deque(maxlen=4096)
        self._error: str | None = None
        self.overruns = 0
        self.rate = 0
        self.channels = 0
        self.sample_format = "S16_LE"  # what the device granted (info()["format_name"])
        self._converter: AudioConverter | None = None
        self._warned_no_tstamp = False

    def start(self) -> bool:
        self._stop.clear()  # startable again after close() (bodycam doctor opens it twice)
        alsa = self._module
        if alsa is None:
            try:
                import alsaaudio as alsa  # type: ignore[import-not-found, no-redef, unused-ignore]
            except ImportError as exc:
                raise MicrophoneError("pyalsaaudio is not installed (pip install pyalsaaudio)") from exc
            self._module = alsa
        try:
            self._pcm = alsa.PCM(type=alsa.PCM_CAPTURE, mode=alsa.PCM_NORMAL, device=self.cfg.device,
                                 rate=self.cfg.rate, channels=self.cfg.channels, format=alsa.PCM_FORMAT_S16_LE,
                                 periodsize=self.cfg.period_frames, periods=4)
            self._pcm.set_tstamp_mode(alsa.PCM_TSTAMP_ENABLE)
            self._pcm.set_tstamp_type(alsa.PCM_TSTAMP_TYPE_MONOTONIC)
            info = self._pcm.info()
        except (alsa.ALSAAudioError, RuntimeError, OSError) as exc:
            self.close()
            raise MicrophoneError(f"microphone {self.cfg.device!r}: cannot open for capture ({exc})") from exc
        self.rate = int(info.get("rate", self.cfg.rate))
        self.channels = int(info.get("channels", self.cfg.channels))
        # pyalsaaudio before 0.10 has no format in info(): then what was asked (each read checks its size)
        self.sample_format = str(info.get("format_name", "S16_LE"))
        if self.sample_format not in SAMPLE_BYTES:
            self.close()
            raise MicrophoneError(f"microphone {self.cfg.device!r}: the device grants sample format "
                                  f"{self.sample_format} (asked S16_LE; this firmware reads "
                                  f"{', '.join(SAMPLE_BYTES)}): use a plughw: or default device, which converts")
        if self.sample_format != "S16_LE":
            log.info("microphone %s: device gave %s samples (asked S16_LE); converting", self.cfg.device,
                     self.sample_format)
        self._converter = AudioConverter(self.rate, self.channels)
        if (self.rate, self.channels) != (self.cfg.rate, self.cfg.channels):
            log.info("microphone %s: device gave %d Hz x %d ch (asked %d x %d); converting", self.cfg.device,
                     self.rate, self.channels, self.cfg.rate, self.cfg.channels)
        self._thread = threading.Thread(target=self._run, name="bodycam-mic", daemon=True)
        self._thread.start()
        return True

    def _block_time(self, n: int) -> int:
        sec, nsec, avail = self._pcm.htimestamp()  # same thread as read(); close() joins first
        t_newest = int(sec) * 1_000_000_000 + int(nsec)
        if t_newest == 0:
            if not self._warned_no_tstamp:
                log.warning("microphone %s: the driver gives no timestamps; using the read time", self.cfg.device)
                self._warned_no_tstamp = True
                if self._converter is not None:  # read times wander by up to a period: jitter, not gaps
                    period_ns = self.cfg.period_frames * 1_000_000_000 // self.rate
                    self._converter.max_jitter_ns = max(MAX_JITTER_NS, 2 * period_ns)
            t_newest = self._monotonic_ns()
        return t_newest - (int(avail) + n - 1) * 1_000_000_000 // self.rate

    def _run(self) -> None:
        assert self._converter is not None
        pcm = self._pcm
        try:
            while not self._stop.is_set():
                n, data = pcm.read()
                if n < 0:  # -EPIPE: overrun, pyalsaaudio re-prepares on the next read
                    with self._lock:
                        self.overruns += 1
                    self._converter.discontinuity()  # samples were lost: restart at the next block's time
                    continue
                if n == 0:
                    continue
                t_first = self._block_time(n)
                want = n * self.channels * SAMPLE_BYTES[self.sample_format]
                if len(data) != want:
                    raise MicrophoneError(f"{len(data)} bytes for {n} frames of {self.channels} x "
                                          f"{self.sample_format} (expected {want})")
                samples = decode_samples(data, self.sample_format)
                block = self._converter.feed(t_first, samples.reshape(n, self.channels))
                if block is not None:
                    with self._lock:
                        self._blocks.append(block)
        except Exception as exc:  # any failure of the device ends capture; the loop sees it in read()
            if not self._stop.is_set():
                with self._lock:
                    self._error = f"microphone {self.cfg.device!r}: capture failed ({exc})"

    def read(self, until_ns: int) -> list[AudioBlock]:
        with self._lock:
            if self._error is not None and not self._blocks:
                raise MicrophoneError(self._error)
            out: list[AudioBlock] = []
            while self._blocks and self._blocks[0].t_ns < until_ns:
                out.append(self._blocks.popleft())
            return out

    def close(self) -> None:
        """Stop the reader (it returns within one period), then close the PCM."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():
                log.warning("microphone %s: the reader did not stop within 2 s", self.cfg.device)
            self._thread = None
        pcm, self._pcm = self._pcm, None
        if pcm is not None:
            try:
                pcm.close()
            except Exception:
                log.debug("microphone close failed", exc_info=True)

__all__ = ["AUDIO_RATE", "MAX_JITTER_NS", "AlsaMicrophone", "AudioBlock", "AudioConverter", "Microphone",
           "MicrophoneConfig", "MicrophoneError"]
