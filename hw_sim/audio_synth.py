"""The clip's sound track: ambient bed, gunshots (sample-accurate onsets), and audio
distractors (door slams, claps, dropped objects, sirens, shouting, babble).

Everything is synthesised into one float32 mono array (-1..1, hard-clipped, so loud
shots clip like a real small microphone). Each gunshot starts with its full-scale
attack exactly at ``Shot.audio_sample``: nothing of the shot precedes that sample.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from bodycam.hw_sim.timeline import EventPlan, Plan, ShotPlan

F32 = npt.NDArray[np.float32]


def _db(x: float) -> float:
    return float(10 ** (x / 20.0))


def _coloured_noise(rng: np.random.Generator, n: int, sr: int, tilt: float, lo_hz: float = 20.0) -> F32:
    """Noise with a spectral slope of ``tilt`` dB/octave (0 white, -3 pink, -6 brown), RMS 1."""
    spec = np.fft.rfft(rng.normal(0, 1, n))
    f = np.fft.rfftfreq(n, 1 / sr)
    f[0] = f[1] if n > 1 else 1.0
    shape = (f / 1000.0) ** (tilt / 6.0206)
    shape[f < lo_hz] *= (f[f < lo_hz] / lo_hz) ** 2
    x = np.fft.irfft(spec * shape, n)
    res: F32 = (x / (np.std(x) + 1e-12)).astype(np.float32)
    return res


def _lowpass(x: F32, k: int) -> F32:
    if k <= 1:
        return x
    c = np.cumsum(np.concatenate([np.zeros(k, np.float32), x]))
    res: F32 = ((c[k:] - c[:-k]) / k).astype(np.float32)
    return res


def _place(out: F32, start: int, sig: F32) -> None:
    if start >= len(out):
        return
    n = min(len(sig), len(out) - start)
    out[start : start + n] += sig[:n]


def _gunshot(rng: np.random.Generator, sr: int, s: ShotPlan, indoor: bool) -> F32:
    """Blast (instant attack, ms decay) + body + reverb/echo tail. Peak at sample 0."""
    dur = int(sr * (1.2 if indoor else 0.9))
    t = np.arange(dur, dtype=np.float32) / sr
    amp = _db(s.loudness_db) * (0.9 if s.shooter == "wearer" else 0.8)
    tau = rng.uniform(0.0015, 0.004)
    blast = rng.normal(0, 1, dur).astype(np.float32) * np.exp(-t / tau)
    blast[0] = 3.0  # full-scale first sample: the sharp onset is exactly here
    f0 = rng.uniform(60, 160)
    body = np.sin(2 * math.pi * f0 * t) * np.exp(-t / rng.uniform(0.01, 0.03)) * 1.5
    sig = (blast / 3.0 + 0.4 * body).astype(np.float32)
    tail = np.zeros(dur, np.float32)
    if indoor:
        rt = rng.uniform(0.25, 0.7)
        ir = rng.normal(0, 1, dur).astype(np.float32) * np.exp(-6.9 * t / rt).astype(np.float32)
        ir[: int(0.004 * sr)] = 0  # pre-delay: reverb builds after the direct sound
        n = 1 << math.ceil(math.log2(2 * dur))
        rev = np.fft.irfft(np.fft.rfft(sig, n) * np.fft.rfft(ir, n), n)[:dur].astype(np.float32)
        rev /= np.max(np.abs(rev)) + 1e-9
        tail += rev * rng.uniform(0.15, 0.35)
    else:
        for _ in range(int(rng.integers(2, 5))):
            d = int(rng.uniform(0.06, 0.6) * sr)
            g = rng.uniform(0.05, 0.2)
            if d < dur:
                tail[d:] += _lowpass(sig, int(rng.integers(2, 8)))[: dur - d] * g
        tail += rng.normal(0, 1, dur).astype(np.float32) * np.exp(-t / 0.25).astype(np.float32) * 0.02
    return ((sig + tail) * amp).astype(np.float32)


def _event_sound(rng: np.random.Generator, sr: int, ev: EventPlan, fps: float) -> tuple[int, F32] | None:
    P = ev.params
    start = ev.audio_sample if ev.audio_sample is not None else round(ev.start / fps * sr)
    n = max(1, round((ev.end - ev.start + 1) / fps * sr))
    t = np.arange(n, dtype=np.float32) / sr
    lvl = _db(P.get("level_db", -20.0))
    if ev.kind == "door_slam":
        f0 = rng.uniform(50, 110)
        thud = np.sin(2 * math.pi * f0 * t) * np.exp(-t / 0.05)
        click = rng.normal(0, 1, n) * np.exp(-t / 0.003)
        rattle = rng.normal(0, 1, n) * np.exp(-t / 0.08) * 0.15
        return start, (lvl * (0.8 * thud + 0.5 * click + rattle)).astype(np.float32)
    if ev.kind == "clap":
        x = rng.normal(0, 1, n) * np.exp(-t / rng.uniform(0.002, 0.006))
        return start, (lvl * 0.6 * _lowpass(x.astype(np.float32), 2)).astype(np.float32)
    if ev.kind == "dropped_object":
        out = np.zeros(n, np.float32)
        k = 0
        for j in range(int(rng.integers(2, 6))):
            if k >= n:
                break
            f = rng.uniform(1500, 6000)
            m = n - k
            tt = np.arange(m, dtype=np.float32) / sr
            ping = np.sin(2 * math.pi * f * tt) * np.exp(-tt / rng.uniform(0.01, 0.06))
            ping += rng.normal(0, 1, m) * np.exp(-tt / 0.002) * 0.7
            out[k:] += (ping * (0.8**j)).astype(np.float32)
            k += int(rng.uniform(0.04, 0.2) * sr)
        return start, (lvl * out).astype(np.float32)
    env = np.minimum(1.0, np.minimum(t / 0.15, (t[-1] - t) / 0.3 + 1e-3)).astype(np.float32)
    if ev.kind == "siren":
        if P.get("yelp", 0.0) > 0.5:
            fr = 900 + 450 * np.sin(2 * math.pi * 3.0 * t)
        else:
            fr = 900 + 450 * np.sin(2 * math.pi * t / P.get("wail", 4.0))
        ph = 2 * math.pi * np.cumsum(fr) / sr
        x = np.sin(ph) + 0.3 * np.sin(2 * ph) + 0.15 * np.sin(3 * ph)
        return start, (lvl * env * x).astype(np.float32)
    if ev.kind in ("shouting", "babble"):
        voices = 1 if ev.kind == "shouting" else int(P.get("voices", 4))
        out = np.zeros(n, np.float32)
        for _v in range(voices):
            f0 = P.get("f0", 160.0) if ev.kind == "shouting" else rng.uniform(90, 260)
            vib = f0 * (1 + 0.06 * np.sin(2 * math.pi * rng.uniform(3, 6) * t) + 0.1 * np.sin(2 * math.pi * 0.7 * t))
            ph = 2 * math.pi * np.cumsum(vib) / sr
            formants = rng.uniform([500, 1200, 2500], [900, 2000, 3200])
            x = np.zeros(n)
            for h in range(1, 18):
                fh = f0 * h
                w = sum(math.exp(-((fh - F) ** 2) / (2 * 150.0**2)) for F in formants) + 0.05
                x += w * np.sin(h * ph) / h**0.5
            syll = np.clip(np.sin(2 * math.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, 1) ** 0.5
            out += (x * syll / (np.std(x) + 1e-9)).astype(np.float32)
        out /= math.sqrt(voices)
        return start, (lvl * env * out).astype(np.float32)
    return None


def synthesise(plan: Plan, rng: np.random.Generator) -> F32:
    """The whole clip's audio at ``plan.spec.sample_rate`` (length frames/fps*sr)."""
    sr = plan.spec.sample_rate
    n = round(plan.frames / plan.fps * sr)
    indoor = plan.scene == "indoor"
    bed_level = {"range": 0.012, "street": 0.02, "indoor": 0.006, "night": 0.008}[plan.scene]
    bed = _coloured_noise(rng, n, sr, -4.5 if plan.scene != "indoor" else -3.0) * bed_level
    if indoor:
        t = np.arange(n, dtype=np.float32) / sr
        mains = float(rng.choice([50.0, 60.0]))
        bed += (0.004 * np.sin(2 * math.pi * mains * t) + 0.002 * np.sin(4 * math.pi * mains * t)).astype(np.float32)
    else:
        gust = _coloured_noise(rng, n, sr, -9.0, 5.0) * bed_level * 0.8
        bed += gust
    out = bed.astype(np.float32)
    for ev in plan.events:
        r = _event_sound(rng, sr, ev, plan.fps)
        if r is not None:
            _place(out, r[0], r[1])
    for s in plan.shots:
        _place(out, round(s.frame / plan.fps * sr), _gunshot(rng, sr, s, indoor))
    np.clip(out, -1.0, 1.0, out=out)
    return out
