"""The microphone protocol's conversion and the ALSA adapter against a fake with pyalsaaudio's API."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from bodycam.device.errors import ConfigError
from bodycam.device.hw.microphone import (
    AUDIO_RATE,
    AlsaMicrophone,
    AudioConverter,
    MicrophoneConfig,
    MicrophoneError,
)


def _concat(blocks: list[Any]) -> tuple[int, np.ndarray]:
    t0 = blocks[0].t_ns
    for a, b in itertools.pairwise(blocks):
        assert abs(b.t_ns - a.end_ns) <= 1_000_000_000 // AUDIO_RATE  # contiguous on the sensor clock
    return t0, np.concatenate([b.samples for b in blocks])


def test_converter_mixes_stereo_and_resamples_keeping_time() -> None:
    sr = 48000
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 1000 * t)
    right = np.zeros_like(left)
    right[24000] = 1.0  # a click at 0.5 s in one channel only
    x = np.stack([left, right], axis=1).astype(np.float32)
    conv = AudioConverter(sr, 2)
    t0 = 7_000_000_000
    blocks = [b for i in range(0, sr, 960) if (b := conv.feed(t0 + i * 1_000_000_000 // sr, x[i : i + 960]))]
    start, y = _concat(blocks)
    assert start == t0
    assert abs(len(y) - AUDIO_RATE) <= 64  # the resampler holds back at most its filter length
    spec = np.abs(np.fft.rfft(y[:8000] * np.hanning(8000)))
    assert abs(np.argmax(spec) * AUDIO_RATE / 8000 - 1000) <= 2  # tone kept, amplitude mixed to mono
    assert 0.2 < np.max(np.abs(y[:8000])) < 0.3
    residual = y - 0.25 * np.sin(2 * np.pi * 1000 * np.arange(len(y)) / AUDIO_RATE)
    k = int(np.argmax(np.abs(residual[1000:]))) + 1000
    assert abs(k / AUDIO_RATE - 0.5) < 0.0005  # the click is where it was, within a sample


def test_converter_restarts_after_a_gap() -> None:
    conv = AudioConverter(16000, 1)
    a = conv.feed(0, np.zeros((160, 1), np.float32))
    b = conv.feed(10_000_000, np.zeros((160, 1), np.float32))
    c = conv.feed(500_000_000, np.ones((160, 1), np.float32))  # an overrun lost 480 ms
    assert a is not None and b is not None and c is not None
    assert (a.t_ns, b.t_ns, c.t_ns) == (0, 10_000_000, 500_000_000)


ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "range_demo.mp4"


@functools.lru_cache(maxsize=1)
def _example_sound_48k() -> np.ndarray:
    """The example clip's sound (ten shot onsets) at 48 kHz mono, as an ALSA capture would deliver it."""
    import av

    with av.open(str(EXAMPLE)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=48000)
        return np.concatenate([f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in rs.resample(fr)])


def _capture(pcm: np.ndarray, jitter_us: float, seed: int = 3, period: int = 1024,
             lost: tuple[int, int] | None = None) -> tuple[list[Any], list[int]]:
    """``pcm`` in ALSA periods of ``period`` frames through the converter, each period stamped with its
    first frame's time plus uniform random jitter of +-``jitter_us``; ``lost=(k, n)``: the ``n`` frames
    before period ``k`` never arrive (an overrun). Returns the converter's blocks and the shipped audio
    detector's onset times (threshold 0.5, as the default ``fused`` policy picks)."""
    from bodycam.device.detect.audio_detector import build_audio_detector

    rng = np.random.default_rng(seed)
    conv = AudioConverter(48000, 1)
    det = build_audio_detector("", threshold=0.5)
    blocks: list[Any] = []
    onsets: list[int] = []
    skip = 0
    for k in range(len(pcm) // period):
        if lost is not None and k == lost[0]:
            skip = lost[1]
        start = k * period + skip
        chunk = pcm[start : start + period]
        if len(chunk) < period:
            break
        t = start * 1_000_000_000 // 48000 + round(rng.uniform(-jitter_us, jitter_us) * 1000)
        b = conv.feed(t, chunk.reshape(-1, 1))
        if b is not None:
            blocks.append(b)
            onsets += [o.t_ns for o in det.feed(b)]
    onsets += [o.t_ns for o in det.flush()]
    det.close()
    return blocks, onsets


@pytest.mark.parametrize("jitter_us", [100, 500])
def test_jittered_period_timestamps_give_the_same_onsets_as_exact_ones(jitter_us: int) -> None:
    """ALSA period timestamps (interrupt / USB URB time) wander by tens to hundreds of microseconds:
    that is jitter, not a gap. The samples must stay one stream (none lost) and the shipped audio model
    must find the same onsets at the same times as with exact timestamps."""
    pcm = _example_sound_48k()
    exact_blocks, exact = _capture(pcm, 0)
    blocks, onsets = _capture(pcm, jitter_us)
    assert len(exact) == 10, exact  # the clip's ten onsets
    assert len(onsets) == len(exact), (jitter_us, onsets, exact)
    for got, want in zip(onsets, exact, strict=True):
        assert abs(got - want) <= 1_000_000, (jitter_us, got, want)  # the same onset, within 1 ms
    n_exact = sum(len(b.samples) for b in exact_blocks)
    assert sum(len(b.samples) for b in blocks) == n_exact  # no sample lost to a restart
    for a, b in itertools.pairwise(blocks):  # one continuous stream, its time following the stamps
        assert abs(b.t_ns - a.end_ns) <= 100_000, (a.end_ns, b.t_ns)
    for i, (b, true) in enumerate(zip(blocks, exact_blocks, strict=True)):  # the same samples, near the true time
        assert len(b.samples) == len(true.samples)
        # the first block's stamp anchors the stream; later ones average the jitter out
        assert abs(b.t_ns - true.t_ns) <= jitter_us * 1000 // (1 if i < 100 else 2), (i, b.t_ns, true.t_ns)


def test_a_real_gap_in_a_jittered_stream_restarts_at_its_true_time() -> None:
    """Samples lost (20 ms before period 300: an overrun the driver did not report) are a gap, not
    jitter: the stream restarts at the true time of the first sample after it; elsewhere the jittered
    stream stays continuous, and the shots before and after the gap are heard at their times."""
    pcm = _example_sound_48k()
    # 20 ms = one model hop: the detector's hop grid keeps its phase, so the onsets can be compared
    blocks, onsets = _capture(pcm, 300, lost=(300, 960))
    true_restart = (300 * 1024 + 960) * 1_000_000_000 // 48000
    jumps = [(a, b) for a, b in itertools.pairwise(blocks) if abs(b.t_ns - a.end_ns) > 100_000]
    assert len(jumps) == 1, [(a.end_ns, b.t_ns) for a, b in jumps]
    after = jumps[0][1]
    assert abs(after.t_ns - true_restart) <= 300_000  # its own (jittered) timestamp: the true time
    assert after.t_ns - jumps[0][0].end_ns >= 19_000_000  # the 20 ms that are missing
    _, exact = _capture(pcm, 0)
    assert len(onsets) == len(exact) == 10  # the gap (at 6.4 s) is far from the shots: each still heard
    for got, want in zip(onsets, exact, strict=True):
        assert abs(got - want) <= 1_000_000, (got, want)  # and on its true time after the restart too


def test_converter_restarts_after_an_overrun_even_when_the_time_looks_continuous() -> None:
    conv = AudioConverter(16000, 1)
    assert conv.feed(0, np.zeros((160, 1), np.float32)) is not None
    conv.discontinuity()
    b = conv.feed(10_000_000 + 1_000_000, np.zeros((160, 1), np.float32))  # within MAX_JITTER_NS
    assert b is not None and b.t_ns == 11_000_000 and conv.restarts == 2


def test_converter_rejects_a_wrong_channel_count() -> None:
    with pytest.raises(MicrophoneError, match="channel"):
        AudioConverter(16000, 2).feed(0, np.zeros((10, 3), np.float32))


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"microphone\.rate"):
        MicrophoneConfig(rate=100)
    # a period longer than 100 ms would reach the footage after a segment cut's 0.5 s grace
    with pytest.raises(ConfigError, match=r"microphone\.period_frames.*more than 100 ms"):
        MicrophoneConfig(rate=8000, period_frames=1024)
    assert MicrophoneConfig(rate=8000, period_frames=800).period_frames == 800


class FakeAlsa:
    """pyalsaaudio's module surface (PCM, constants, ALSAAudioError), as strict as the C module."""

    PCM_CAPTURE = 1
    PCM_NORMAL = 0
    PCM_FORMAT_S16_LE = 2
    #: alsa/pcm.h snd_pcm_format_t values and snd_pcm_format_name() names
    FORMATS: ClassVar[dict[str, int]] = {"U8": 1, "S16_LE": 2, "S24_LE": 6, "S32_LE": 10, "FLOAT_LE": 14, "S24_3LE": 32}
    PCM_TSTAMP_ENABLE = 1
    PCM_TSTAMP_TYPE_MONOTONIC = 1

    class ALSAAudioError(Exception):
        pass

    def __init__(self, *, rate: int = 44100, channels: int = 2, fail_open: bool = False,
                 fail_after: int | None = None, overrun_at: int | None = None,
                 granted_format: str = "S16_LE", jitter_ns: int = 0) -> None:
        """``granted_format``: what the device gives whatever is asked, as pyalsaaudio's
        ``alsapcm_setup`` (``src/alsaaudio.c``) ignores a failed ``snd_pcm_hw_params_set_format`` and
        reads the granted format back (``info()["format"]``/``["format_name"]``): ``hw:``/``dsnoop:``
        do not convert, an I2S MEMS microphone gives S32_LE. ``jitter_ns``: each ``htimestamp()`` is off
        by up to that much either way (uniform, seeded), as interrupt and USB URB times are."""
        self.rate, self.channels = rate, channels
        self.jitter_ns = jitter_ns
        self.rng = np.random.default_rng(11)
        self.granted_format = granted_format
        self.fail_open, self.fail_after, self.overrun_at = fail_open, fail_after, overrun_at
        self.pcms: list[FakeAlsa.PCM] = []
        fake = self

        class PCM:
            def __init__(self, type: int = 0, mode: int = 0, rate: int = 44100, channels: int = 2,
                         format: int = 2, periodsize: int = 32, periods: int = 4, device: str = "default",
                         cardindex: int = -1) -> None:
                if fake.fail_open:
                    raise fake.ALSAAudioError(f"No such file or directory [{device}]")
                assert type == fake.PCM_CAPTURE and format == fake.PCM_FORMAT_S16_LE  # what the firmware asks
                self.period = periodsize
                self.open = True
                self.tstamp: tuple[int | None, int | None] = (None, None)
                self.reads = 0
                self.sample = 0  # frames captured so far
                self.t0 = 1_000_000_000_000
                fake.pcms.append(self)

            def _check(self) -> None:
                if not self.open:
                    raise fake.ALSAAudioError("PCM device is closed")

            def set_tstamp_mode(self, mode: int = 1) -> None:
                self._check()
                self.tstamp = (mode, self.tstamp[1])

            def set_tstamp_type(self, t: int = 0) -> None:
                self._check()
                self.tstamp = (self.tstamp[0], t)

            def info(self) -> dict[str, Any]:
                self._check()
                fmt = fake.granted_format
                return {"rate": fake.rate, "channels": fake.channels, "period_size": self.period,
                        "format": fake.FORMATS[fmt], "format_name": fmt, "format_description": fmt}

            def read(self) -> tuple[int, bytes]:
                self._check()
                self.reads += 1
                if fake.fail_after is not None and self.reads > fake.fail_after:
                    raise fake.ALSAAudioError("Input/output error [default]")
                if fake.overrun_at is not None and self.reads == fake.overrun_at:
                    self.sample += 4 * self.period  # frames lost while nobody read
                    return -32, b""
                time.sleep(0.001)
                n = self.period
                ramp = (np.arange(self.sample, self.sample + n) % 1000).astype(np.int16)
                data = fake.encode(np.repeat(ramp[:, None], fake.channels, axis=1))
                self.sample += n
                self.buffered = 3  # frames captured after the last one returned
                return n, data

            def htimestamp(self) -> tuple[int, int, int]:
                self._check()
                newest = self.sample + self.buffered - 1
                t = self.t0 + newest * 1_000_000_000 // fake.rate
                t += int(fake.rng.integers(-fake.jitter_ns, fake.jitter_ns + 1)) if fake.jitter_ns else 0
                return t // 1_000_000_000, t % 1_000_000_000, self.buffered

            def close(self) -> None:
                self.open = False

        self.PCM = PCM  # type: ignore[assignment]

    def encode(self, s16: np.ndarray) -> bytes:
        """16-bit sample values in the granted format, at the same level (S32: << 16, S24: << 8)."""
        v = s16.astype(np.int32).reshape(-1)
        fmt = self.granted_format
        if fmt == "S16_LE":
            return v.astype("<i2").tobytes()
        if fmt == "S32_LE":
            return (v << 16).astype("<i4").tobytes()
        if fmt == "S24_LE":  # low three bytes of a 32-bit word; the top byte is not sign (garbage-free here)
            return ((v << 8) & 0xFFFFFF).astype("<i4").tobytes()
        if fmt == "S24_3LE":
            return ((v << 8).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]).tobytes()
        if fmt == "FLOAT_LE":
            return (v / 32768.0).astype("<f4").tobytes()
        if fmt == "U8":
            return ((v >> 8) + 128).astype(np.uint8).tobytes()
        raise AssertionError(fmt)


def _drain(mic: AlsaMicrophone, want: int, timeout: float = 5.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += mic.read(until_ns=1 << 62)
        time.sleep(0.005)
    return got


@pytest.mark.parametrize("fmt", ["S16_LE", "S32_LE", "S24_LE", "S24_3LE", "FLOAT_LE"])
def test_the_sample_format_the_device_grants_is_decoded(fmt: str) -> None:
    """pyalsaaudio opens a device that cannot give S16_LE with the format it can (an I2S MEMS microphone
    on hw:/dsnoop: gives S32_LE); the samples must come out the same."""
    fake = FakeAlsa(rate=16000, channels=2, granted_format=fmt)
    mic = AlsaMicrophone(MicrophoneConfig(rate=16000, channels=2, period_frames=160), module=fake)
    assert mic.start()
    try:
        blocks = _drain(mic, 5)
        error = mic._error
    finally:
        mic.close()
    assert error is None and len(blocks) >= 5, error
    for i, b in enumerate(blocks[:5]):
        want = (np.arange(160 * i, 160 * (i + 1)) % 1000) / 32768.0
        assert np.allclose(b.samples, want, atol=1e-6), (fmt, b.samples[:4], want[:4])
    assert mic.sample_format == fmt


def test_a_sample_format_that_cannot_be_read_is_named_at_start() -> None:
    fake = FakeAlsa(rate=16000, channels=1, granted_format="U8")
    mic = AlsaMicrophone(MicrophoneConfig(rate=16000, channels=1, period_frames=160, device="hw:CARD=mic"),
                         module=fake)
    with pytest.raises(MicrophoneError, match=r"'hw:CARD=mic'.*grants sample format U8.*plughw"):
        mic.start()
    assert not fake.pcms[0].open


def test_alsa_blocks_are_stamped_from_htimestamp_minus_buffered_frames() -> None:
    fake = FakeAlsa(rate=16000, channels=1)
    mic = AlsaMicrophone(MicrophoneConfig(rate=16000, channels=1, period_frames=160), module=fake)
    assert mic.start()
    try:
        blocks = _drain(mic, 10)
    finally:
        mic.close()
    pcm = fake.pcms[0]
    assert pcm.tstamp == (fake.PCM_TSTAMP_ENABLE, fake.PCM_TSTAMP_TYPE_MONOTONIC)
    assert not pcm.open and len(blocks) >= 10
    for i, b in enumerate(blocks[:10]):  # block i starts with captured frame 160*i
        assert b.t_ns == pcm.t0 + i * 160 * 1_000_000_000 // 16000
        assert b.samples[0] == pytest.approx((160 * i % 1000) / 32768.0)


def test_alsa_jittered_htimestamps_keep_one_continuous_stream() -> None:
    fake = FakeAlsa(rate=16000, channels=1, jitter_ns=300_000)  # +-0.3 ms: ~5 samples either way
    mic = AlsaMicrophone(MicrophoneConfig(rate=16000, channels=1, period_frames=160), module=fake)
    assert mic.start()
    try:
        blocks = _drain(mic, 40)
    finally:
        mic.close()
    assert len(blocks) >= 40 and mic._converter is not None and mic._converter.restarts == 1
    pcm = fake.pcms[0]
    for a, b in itertools.pairwise(blocks[:40]):
        assert abs(b.t_ns - a.end_ns) <= 62_500  # continuous: within a sample, not the raw stamps
    for i, b in enumerate(blocks[:40]):
        assert abs(b.t_ns - (pcm.t0 + i * 10_000_000)) <= 300_000


def test_alsa_other_rate_and_channels_are_converted_and_overruns_counted() -> None:
    fake = FakeAlsa(rate=44100, channels=2, overrun_at=5)
    mic = AlsaMicrophone(MicrophoneConfig(rate=48000, channels=1, period_frames=441), module=fake)
    mic.start()
    try:
        blocks = _drain(mic, 12)
    finally:
        mic.close()
    assert mic.rate == 44100 and mic.channels == 2 and mic.overruns == 1
    assert all(b.rate == AUDIO_RATE for b in blocks)
    pcm = fake.pcms[0]
    # after the overrun the stream restarts at the true time of the first frame read again
    restart = [b for b in blocks if b.t_ns >= pcm.t0 + 8 * 441 * 1_000_000_000 // 44100]
    assert restart[0].t_ns == pcm.t0 + 8 * 441 * 1_000_000_000 // 44100


def test_alsa_open_failure_and_capture_failure_are_microphone_errors() -> None:
    with pytest.raises(MicrophoneError, match="cannot open"):
        AlsaMicrophone(MicrophoneConfig(), module=FakeAlsa(fail_open=True)).start()
    mic = AlsaMicrophone(MicrophoneConfig(period_frames=441), module=FakeAlsa(fail_after=3))
    mic.start()
    try:
        deadline = time.monotonic() + 5
        with pytest.raises(MicrophoneError, match="capture failed"):
            while time.monotonic() < deadline:
                mic.read(1 << 62)
                time.sleep(0.005)
    finally:
        mic.close()
    assert not any(t.name == "bodycam-mic" for t in threading.enumerate())


def test_alsa_without_pyalsaaudio_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_alsa(name: str, *a: Any, **k: Any) -> Any:
        if name == "alsaaudio":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_alsa)
    with pytest.raises(MicrophoneError, match="pip install pyalsaaudio"):
        AlsaMicrophone(MicrophoneConfig()).start()
