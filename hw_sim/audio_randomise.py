"""Independent randomisation of gun-sound physics and of the recording path (audio training data).

The named families of :mod:`bodycam.hw_sim.audio_synth` are a handful of recipes; a model trained on
them learns the recipes. Here every physical quantity is drawn on its own, so that no combination is
special:

* :func:`physics_gun`: one shot from independently drawn parts: a supersonic bullet's N-wave
  (present or not, 0.15-1.5 ms long), the muzzle blast as a Friedlander pulse (positive phase
  0.3-6 ms, rise time 0-1 ms) with turbulent noise (decay 1-40 ms), a low resonance (30-300 Hz),
  the mechanical action (a click 15-150 ms later, or none), then a random spectral tilt, peaking
  bands and band limits.
* :func:`random_eq`: a smooth random frequency response (tilt, 0-3 peaks or notches, high-pass,
  optional low-pass) for any sound or a whole recording.
* :func:`recording_path`: the camera's side: gain and hard, soft or asymmetric clipping, an automatic
  gain control, a MEMS high-pass and colour, an optional lower sample-rate path, and an optional AAC
  round trip at 48 kHz (the codec the camera records with; its pre-echo smears an onset forward)
  back through the firmware's own resampler.

Every sound keeps its onset at sample 0: nothing of it precedes that sample (zero-phase shaping is
applied on a padded copy whose wrapped-around pre-ring is dropped). Deterministic for an rng.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
AnyArr = npt.NDArray[Any]

#: AAC bit rates of the codec round trip (mono)
AAC_BITRATES = (32_000, 48_000, 64_000, 96_000, 128_000)
#: the AAC encoder's priming delay at 48 kHz (samples before the first real sample in a raw stream)
AAC_DELAY = 1024
CODEC_RATE = 48_000


def _db(x: float) -> float:
    return float(10 ** (x / 20.0))


def response(rng: np.random.Generator, f: AnyArr, *, tilt_db_oct: tuple[float, float] = (-6.0, 3.0),
             peaks: int = 3, lowpass: float = 0.4, highpass: float = 0.6) -> AnyArr:
    """A random magnitude response over frequencies ``f`` (Hz): tilt about 1 kHz, peaks, band limits."""
    fs = np.maximum(f, 1.0)
    g_db = rng.uniform(*tilt_db_oct) * np.log2(fs / 1000.0)
    for _ in range(int(rng.integers(0, peaks + 1))):
        fc = math.exp(rng.uniform(math.log(100.0), math.log(7000.0)))
        q = rng.uniform(0.5, 4.0)
        g_db = g_db + rng.uniform(-12.0, 10.0) * np.exp(-0.5 * (np.log2(fs / fc) * q) ** 2)
    g = 10 ** (np.clip(g_db, -40.0, 20.0) / 20.0)
    if rng.random() < highpass:
        fh = math.exp(rng.uniform(math.log(20.0), math.log(400.0)))
        g = g * (fs / fh) ** 2 / (1 + (fs / fh) ** 2)
    if rng.random() < lowpass:
        fl = math.exp(rng.uniform(math.log(1500.0), math.log(8000.0)))
        order = float(rng.uniform(1.0, 4.0))
        g = g / np.sqrt(1 + (fs / fl) ** (2 * order))
    res: AnyArr = g
    return res


def shape(x: F32, sr: int, gain: AnyArr | None = None, rng: np.random.Generator | None = None, pad_s: float = 0.03,
          **kw: Any) -> F32:
    """``x`` through a zero-phase magnitude response (``gain`` or a random one); onset kept at 0."""
    pad = int(pad_s * sr)
    n = len(x) + pad
    f = np.fft.rfftfreq(n, 1 / sr)
    if gain is None:
        assert rng is not None
        gain = response(rng, f, **kw)
    y = np.fft.irfft(np.fft.rfft(x, n) * gain, n)[: len(x)]  # the pre-ring wrapped into the pad is dropped
    res: F32 = y.astype(np.float32)
    return res


def _friedlander(t: AnyArr, t_pos: float, b: float, rise: float) -> AnyArr:
    """The blast wave: a rise over ``rise`` s, then (1 - t/T) exp(-b t/T) (a positive then negative phase)."""
    tt = np.maximum(t - rise, 0.0)
    w = (1 - tt / t_pos) * np.exp(-b * tt / t_pos)
    if rise > 0:
        w = np.where(t < rise, t / rise, w)
    res: AnyArr = w
    return res


def physics_gun(rng: np.random.Generator, sr: int) -> F32:
    """One dry shot at the muzzle, every part drawn independently (module docstring); peak 1, onset 0."""
    dur = int(sr * 0.5)
    t: AnyArr = np.arange(dur, dtype=np.float64) / sr
    x: AnyArr = np.zeros(dur)
    delay = 0
    if rng.random() < 0.5:  # supersonic: the crack arrives first
        nw = np.linspace(1.0, -1.0, max(3, int(rng.uniform(0.00015, 0.0015) * sr)))
        x[: len(nw)] += nw * rng.uniform(0.2, 1.5)
        delay = int(rng.uniform(0.0, 0.04) * sr)
    tb = t[: dur - delay]
    rise = rng.uniform(0.0, 0.001) if rng.random() < 0.6 else 0.0
    blast = _friedlander(tb, rng.uniform(0.0003, 0.006), rng.uniform(0.5, 4.0), rise)
    turb = rng.normal(0, 1, len(tb)) * np.minimum(1.0, tb / max(rise, 1e-4)) * np.exp(-tb / rng.uniform(0.001, 0.04))
    mix = rng.uniform(0.0, 1.0)
    body = np.sin(2 * math.pi * rng.uniform(30, 300) * tb) * np.minimum(1.0, tb / 0.001) \
        * np.exp(-tb / rng.uniform(0.005, 0.08)) * rng.uniform(0.0, 1.2)
    x[delay:] += (1 - mix) * blast + mix * turb / 2.5 + body
    if rng.random() < 0.5:  # the action cycling: a mechanical click
        k = int(rng.uniform(0.015, 0.15) * sr)
        m = dur - k
        tc = t[:m]
        click = rng.normal(0, 1, m) * np.exp(-tc / rng.uniform(0.0005, 0.002))
        click += np.sin(2 * math.pi * rng.uniform(1000, 5000) * tc) * np.exp(-tc / rng.uniform(0.002, 0.01))
        x[k:] += click * _db(rng.uniform(-30, -10))
    y = shape(x.astype(np.float32), sr, rng=rng)
    y[0] = np.sign(y[0] or 1.0) * max(abs(float(y[0])), 0.05 * float(np.max(np.abs(y))))  # the onset is sample 0
    res: F32 = (y / (np.max(np.abs(y)) + 1e-9)).astype(np.float32)
    return res


def physics_impulse(rng: np.random.Generator, sr: int) -> F32:
    """One non-gun impulsive sound (a slam, knock, pop, crack, bang, clatter) from independently drawn
    parts: a pressure pulse (positive phase 0.3-10 ms, rise 0-3 ms), a noise burst (decay 0.5-20 ms),
    a resonant body (20-250 Hz), ringing modes (300-6000 Hz), bounces, then a random response. Each
    part is present or not on its own, so these overlap the guns' space: what separates them must be
    learnt from the sound, not from a recipe. Peak 1, onset at sample 0."""
    dur = int(sr * 0.6)
    t: AnyArr = np.arange(dur, dtype=np.float64) / sr
    x: AnyArr = np.zeros(dur)
    rise = rng.uniform(0.0, 0.003) if rng.random() < 0.7 else 0.0
    ramp = np.minimum(1.0, t / max(rise, 1e-4))
    parts = 0
    while parts == 0:
        if rng.random() < 0.5:
            x += _friedlander(t, rng.uniform(0.0003, 0.01), rng.uniform(0.5, 4.0), rise) * rng.uniform(0.3, 1.0)
            parts += 1
        if rng.random() < 0.6:
            x += rng.normal(0, 1, dur) * ramp * np.exp(-t / rng.uniform(0.0005, 0.02)) * rng.uniform(0.2, 1.0)
            parts += 1
        if rng.random() < 0.5:
            x += np.sin(2 * math.pi * rng.uniform(20, 250) * t) * ramp * np.exp(-t / rng.uniform(0.01, 0.15)) \
                * rng.uniform(0.3, 1.2)
            parts += 1
        if rng.random() < 0.4:
            for _ in range(int(rng.integers(1, 5))):
                x += np.sin(2 * math.pi * rng.uniform(300, 6000) * t) * ramp * np.exp(-t / rng.uniform(0.005, 0.2)) \
                    * rng.uniform(0.1, 0.6)
            parts += 1
    if rng.random() < 0.3:  # bounces / clatter: decaying repeats
        dry = x.copy()
        k = 0
        for j in range(int(rng.integers(1, 5))):
            k += int(rng.uniform(0.02, 0.2) * sr)
            if k >= dur:
                break
            x[k:] += dry[: dur - k] * rng.uniform(0.2, 0.7) ** (j + 1)
    y = shape(x.astype(np.float32), sr, rng=rng)
    y[0] = np.sign(y[0] or 1.0) * max(abs(float(y[0])), 0.05 * float(np.max(np.abs(y))))
    res: F32 = (y / (np.max(np.abs(y)) + 1e-9)).astype(np.float32)
    return res


def _agc(x: AnyArr, rng: np.random.Generator, sr: int) -> AnyArr:
    """An automatic gain control: gain follows the level (1 ms blocks, fast attack, slow release)."""
    blk = sr // 1000
    nb = len(x) // blk + 1
    pad = np.zeros(nb * blk)
    pad[: len(x)] = np.abs(x)
    env = pad.reshape(nb, blk).max(axis=1)
    target = _db(rng.uniform(-24, -6))
    max_gain = _db(rng.uniform(6, 30))
    a_att = math.exp(-1.0 / rng.uniform(1, 20))  # per 1 ms block
    a_rel = math.exp(-1.0 / rng.uniform(100, 1500))
    g = np.empty(nb)
    level = target
    for i, e in enumerate(env):
        a = a_att if e > level else a_rel
        level = a * level + (1 - a) * e
        g[i] = min(max_gain, target / max(level, 1e-6))
    gains = np.repeat(g, blk)[: len(x)]
    res: AnyArr = x * gains
    return res


def _clip(y: AnyArr, rng: np.random.Generator) -> AnyArr:
    kind = rng.random()
    if kind < 0.4:
        return np.clip(y, -1.0, 1.0)
    if kind < 0.8:
        drive = rng.uniform(0.8, 3.0)
        return np.tanh(y * drive) / math.tanh(drive)
    lo, hi = -rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)  # asymmetric: a biased preamp
    res: AnyArr = np.clip(y, lo, hi) / max(-lo, hi)
    return res


def _resample_fft(x: AnyArr, n_out: int) -> AnyArr:
    spec = np.fft.rfft(x)
    m = n_out // 2 + 1
    out = np.zeros(m, complex)
    k = min(m, len(spec))
    out[:k] = spec[:k]
    res: AnyArr = np.fft.irfft(out, n_out) * (n_out / len(x))
    return res


def firmware_resample(x: F32, in_rate: int, out_rate: int) -> F32:
    """Mono ``x`` from ``in_rate`` to ``out_rate`` through the firmware's own resampler (what the
    camera's microphone path and the simulated microphone do to a clip's track)."""
    from bodycam.device.hw.microphone import AudioConverter

    conv = AudioConverter(in_rate, 1, out_rate)
    blocks = [b.samples for k in range(0, len(x), 4096)
              if (b := conv.feed(k * 1_000_000_000 // in_rate, x[k : k + 4096, None])) is not None]
    y: F32 = np.concatenate(blocks).astype(np.float32) if blocks else np.zeros(0, np.float32)
    return y


def encode_mono(container: Any, stream: Any, x: F32, rate: int) -> None:
    """All of mono ``x`` (float32 at ``rate``) through the audio ``stream`` of an open output ``container``,
    timed by sample count from 0, and the encoder flushed."""
    from fractions import Fraction

    import av

    tb = Fraction(1, rate)
    for k in range(0, len(x), 1024):
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, k : k + 1024]), format="fltp", layout="mono")
        f.sample_rate = rate
        f.pts = k
        f.time_base = tb
        for p in stream.encode(f):
            container.mux(p)
    for p in stream.encode(None):
        container.mux(p)


def aac_round_trip(x: F32, sr: int, bitrate: int) -> F32:
    """``x`` (at ``sr``) up to 48 kHz, through AAC at ``bitrate`` and back through the firmware's resampler."""
    import av

    up = _resample_fft(x.astype(np.float64), round(len(x) * CODEC_RATE / sr)).astype(np.float32)
    up = np.clip(up, -1.0, 1.0)
    buf = io.BytesIO()
    c = av.open(buf, mode="w", format="adts")
    s: Any = c.add_stream("aac", rate=CODEC_RATE)
    s.layout = "mono"
    s.bit_rate = bitrate
    encode_mono(c, s, up, CODEC_RATE)
    c.close()
    buf.seek(0)
    d: Any = av.open(buf)
    dec = np.concatenate([fr.to_ndarray().reshape(-1) for fr in d.decode(audio=0)]).astype(np.float32)
    d.close()
    y = firmware_resample(dec[AAC_DELAY : AAC_DELAY + len(up)], CODEC_RATE, sr)
    out = np.zeros(len(x), np.float32)
    out[: min(len(x), len(y))] = y[: len(x)]
    return out


def recording_path(x: F32, rng: np.random.Generator, sr: int, *, codec: float = 0.35) -> F32:
    """The scene at the camera: gain, clipping, AGC, MEMS response, sample-rate path, AAC (module docstring)."""
    y: AnyArr = x.astype(np.float64) * _db(rng.uniform(-12.0, 14.0))
    if rng.random() < 0.4:
        y = _agc(y, rng, sr)
    y = _clip(y, rng)
    y = shape(y.astype(np.float32), sr, rng=rng, tilt_db_oct=(-3.0, 3.0), peaks=2, lowpass=0.25, highpass=0.7)
    if rng.random() < 0.2:  # recorded at a lower rate somewhere on the way: band-limited
        low = int(rng.choice([8000, 11025, 12000]))
        y = _resample_fft(_resample_fft(y, round(len(y) * low / sr)), len(y))
    y = y + rng.normal(0, _db(rng.uniform(-80, -55)), len(y))
    out: F32 = np.clip(y, -1.0, 1.0).astype(np.float32)
    if rng.random() < codec:
        out = np.clip(aac_round_trip(out, sr, int(rng.choice(AAC_BITRATES))), -1.0, 1.0).astype(np.float32)
    return out


__all__ = ["AAC_BITRATES", "aac_round_trip", "firmware_resample", "physics_gun", "physics_impulse", "recording_path", "response", "shape"]
