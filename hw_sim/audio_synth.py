"""The clip's sound track: ambient bed, gunshots (sample-accurate onsets), and audio
distractors (door slams, claps, dropped objects, sirens, shouting, babble).

Everything is synthesised into one float32 mono array (-1..1, hard-clipped, so loud
shots clip like a real small microphone). Each gunshot starts with its full-scale
attack exactly at ``Shot.audio_sample``: nothing of the shot precedes that sample.
"""

from __future__ import annotations

import math
from typing import Any

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


# -- randomised sounds by named family (the audio detector's training and evaluation data) -------------
#
# Each family is one way of making a sound, with its own random ranges; every sound is then put
# through a randomised acoustic path (distance: level and air absorption; room: reverb or outdoor
# echoes; the microphone: gain, clipping, self-noise) over a randomised background bed. Whole families
# can be held out of training (model_compile.audio_data) so evaluation sees kinds of sound the
# model never heard. Onsets are sample-accurate: nothing of a sound precedes its onset sample.

#: gunshot families: how the blast is made
GUN_FAMILIES = ("pistol", "rifle", "shotgun", "revolver_far", "carbine_suppressed")
#: impulsive sounds that are not shots (hard negatives)
IMPULSE_FAMILIES = ("door_slam", "clap", "dropped_object", "nail_gun", "firework", "car_backfire",
                    "hammer", "balloon_pop")
#: continuous sounds that are not shots (beds and overlays)
CONTINUOUS_FAMILIES = ("siren", "music", "shouting", "radio_chatter", "wind", "crowd", "traffic")
#: acoustic settings
ROOM_FAMILIES = ("open_field", "street_canyon", "indoor_small", "indoor_hall", "vehicle")


AnyArr = npt.NDArray[Any]


def _env(t: AnyArr, attack_s: float, decay_s: float) -> AnyArr:
    a = np.minimum(1.0, t / max(attack_s, 1e-6))
    res: AnyArr = (a * np.exp(-np.maximum(0.0, t - attack_s) / decay_s)).astype(np.float32)
    return res


def _bandpass(x: AnyArr, sr: int, lo: float, hi: float) -> F32:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / sr)
    spec[(f < lo) | (f > hi)] = 0
    res: F32 = np.fft.irfft(spec, len(x)).astype(np.float32)
    return res


def _nwave(sr: int, length_s: float) -> AnyArr:
    """The supersonic bullet's N-wave: a sharp rise, linear fall through zero, sharp return."""
    n = max(4, int(length_s * sr))
    w = np.linspace(1.0, -1.0, n).astype(np.float32)
    return w


def gun_sound(family: str, rng: np.random.Generator, sr: int) -> F32:
    """One dry gunshot of ``family`` at the muzzle (peak about 1, onset at sample 0)."""
    dur = int(sr * 0.5)
    t: AnyArr = np.arange(dur, dtype=np.float32) / sr
    noise: AnyArr = rng.normal(0, 1, dur).astype(np.float32)
    x: AnyArr
    if family == "pistol":
        x = noise * _env(t, 0.0002, rng.uniform(0.002, 0.006))
        x += np.sin(2 * math.pi * rng.uniform(80, 200) * t) * _env(t, 0.0005, rng.uniform(0.01, 0.03)) * 0.8
    elif family == "rifle":  # bullet crack (N-wave) then the muzzle blast a few ms later
        x = np.zeros(dur, np.float32)
        nw = _nwave(sr, rng.uniform(0.0003, 0.0008))
        x[: len(nw)] += nw * 1.2
        d = int(rng.uniform(0.002, 0.03) * sr)
        blast = noise * _env(t, 0.0003, rng.uniform(0.004, 0.01))
        x[d:] += blast[: dur - d]
    elif family == "shotgun":
        x = noise * _env(t, 0.0004, rng.uniform(0.008, 0.02))
        x += np.sin(2 * math.pi * rng.uniform(40, 90) * t) * _env(t, 0.001, rng.uniform(0.03, 0.06)) * 1.2
        x = _lowpass(x.astype(np.float32), int(rng.integers(1, 4)))
    elif family == "revolver_far":
        x = _bandpass(noise * _env(t, 0.0005, rng.uniform(0.005, 0.015)), sr, 80, rng.uniform(1500, 3500))
        x += np.sin(2 * math.pi * rng.uniform(60, 140) * t) * _env(t, 0.001, 0.04) * 0.5
    elif family == "carbine_suppressed":
        x = _bandpass(noise * _env(t, 0.0003, rng.uniform(0.003, 0.008)), sr, 200, rng.uniform(3000, 6000))
        x += 0.6 * _bandpass(rng.normal(0, 1, dur).astype(np.float32) * _env(t, 0.001, 0.02), sr, 100, 800)
        nw = _nwave(sr, 0.0005)
        x[: len(nw)] += nw * 0.5
    else:
        raise ValueError(f"unknown gun family {family!r}")
    x = x.astype(np.float32)
    x[0] = max(abs(float(x[0])), 0.9)  # the onset is sample 0
    res: F32 = (x / (np.max(np.abs(x)) + 1e-9)).astype(np.float32)
    return res


def impulse_sound(family: str, rng: np.random.Generator, sr: int) -> F32:
    """One non-gunshot impulsive sound (peak about 1, onset at sample 0)."""
    dur = int(sr * 0.6)
    t: AnyArr = np.arange(dur, dtype=np.float32) / sr
    noise: AnyArr = rng.normal(0, 1, dur).astype(np.float32)
    x: AnyArr
    if family == "door_slam":
        x = np.sin(2 * math.pi * rng.uniform(45, 120) * t) * _env(t, 0.002, rng.uniform(0.03, 0.08))
        x += noise * _env(t, 0.0005, 0.003) * rng.uniform(0.3, 0.8) + noise * _env(t, 0.01, 0.08) * 0.15
    elif family == "clap":
        x = _bandpass(noise * _env(t, 0.0003, rng.uniform(0.002, 0.006)), sr, rng.uniform(500, 1200), 7000)
    elif family == "dropped_object":
        x = np.zeros(dur, np.float32)
        k = 0
        for j in range(int(rng.integers(2, 6))):
            m = dur - k
            if m <= 0:
                break
            tt = t[:m]
            ping = np.sin(2 * math.pi * rng.uniform(1200, 6500) * tt) * _env(tt, 0.0002, rng.uniform(0.01, 0.05))
            x[k:] += (ping + noise[:m] * _env(tt, 0.0002, 0.002) * 0.6) * 0.8**j
            k += int(rng.uniform(0.03, 0.15) * sr)
    elif family == "nail_gun":  # pneumatic: sharp click, air hiss
        x = noise * _env(t, 0.0002, rng.uniform(0.001, 0.003))
        x += _bandpass(rng.normal(0, 1, dur).astype(np.float32), sr, 2000, 7500) * _env(t, 0.005, 0.06) * 0.25
        x += np.sin(2 * math.pi * rng.uniform(300, 900) * t) * _env(t, 0.0005, 0.01) * 0.3
    elif family == "firework":  # bang with crackle after, or a whistle then a pop
        x = noise * _env(t, 0.0005, rng.uniform(0.01, 0.04))
        for _ in range(int(rng.integers(3, 15))):
            k = int(rng.uniform(0.05, 0.5) * sr)
            m = dur - k
            x[k:] += noise[:m] * _env(t[:m], 0.0001, 0.002) * rng.uniform(0.1, 0.4)
    elif family == "car_backfire":
        x = _bandpass(noise * _env(t, 0.001, rng.uniform(0.01, 0.03)), sr, 40, rng.uniform(800, 2500))
        x += np.sin(2 * math.pi * rng.uniform(30, 70) * t) * _env(t, 0.002, 0.05)
    elif family == "hammer":
        x = np.sin(2 * math.pi * rng.uniform(800, 3000) * t) * _env(t, 0.0002, rng.uniform(0.02, 0.1))
        x += noise * _env(t, 0.0002, 0.0015) * 0.7
    elif family == "balloon_pop":
        x = _bandpass(noise * _env(t, 0.0001, rng.uniform(0.002, 0.005)), sr, 300, 7800)
    else:
        raise ValueError(f"unknown impulse family {family!r}")
    res: F32 = (x / (np.max(np.abs(x)) + 1e-9)).astype(np.float32)
    return res


def continuous_sound(family: str, rng: np.random.Generator, sr: int, n: int) -> F32:
    """``n`` samples of a continuous non-shot sound, RMS about 1."""
    t: AnyArr = np.arange(n, dtype=np.float32) / sr
    x: AnyArr
    if family == "siren":
        rate = rng.uniform(2.0, 4.0) if rng.random() < 0.5 else 1.0 / rng.uniform(3.0, 6.0)
        fr = rng.uniform(700, 1000) + rng.uniform(300, 600) * np.sin(2 * math.pi * rate * t)
        ph = 2 * math.pi * np.cumsum(fr) / sr
        x = np.sin(ph) + 0.3 * np.sin(2 * ph) + 0.15 * np.sin(3 * ph)
    elif family == "music":  # notes with a beat (kick drum: a percussive distractor)
        x = np.zeros(n, np.float32)
        beat = 60.0 / rng.uniform(80, 150)
        step = int(beat / 2 * sr)
        for k in range(0, n, step):
            m = min(n - k, step)
            tt = t[:m]
            f = 110.0 * 2 ** (int(rng.integers(0, 24)) / 12)
            x[k : k + m] += (np.sin(2 * math.pi * f * tt) + 0.4 * np.sin(4 * math.pi * f * tt)) * _env(tt, 0.01, 0.3)
            if (k // step) % 2 == 0:
                x[k : k + m] += np.sin(2 * math.pi * 55 * tt * np.exp(-tt * 8)) * _env(tt, 0.001, 0.08) * 1.5
    elif family in ("shouting", "radio_chatter", "crowd"):
        voices = 1 if family != "crowd" else int(rng.integers(6, 20))
        x = np.zeros(n, np.float32)
        for _v in range(voices):
            f0 = rng.uniform(90, 280)
            vib = f0 * (1 + 0.08 * np.sin(2 * math.pi * rng.uniform(2, 6) * t + rng.uniform(0, 6)))
            ph = 2 * math.pi * np.cumsum(vib) / sr
            v = sum(np.sin(h * ph) / h for h in range(1, 12))
            syll = np.clip(np.sin(2 * math.pi * rng.uniform(2.5, 5) * t + rng.uniform(0, 6)), 0, 1) ** 0.5
            x += (v * syll).astype(np.float32)
        if family == "radio_chatter":  # band-limited, squelch bursts, keying clicks
            x = _bandpass(x.astype(np.float32), sr, 300, 3000)
            gate = np.repeat(rng.random(n // int(0.8 * sr) + 1) < 0.6, int(0.8 * sr))[:n]
            x = x * gate + rng.normal(0, 0.3, n) * np.abs(np.diff(gate.astype(np.float32), prepend=0))[:n]
            x = np.clip(x * rng.uniform(1, 4), -1, 1)
    elif family == "wind":
        x = _coloured_noise(rng, n, sr, -9.0, 5.0) * (1 + 0.8 * np.abs(_coloured_noise(rng, n, sr, -12.0, 1.0)))
    elif family == "traffic":
        x = _coloured_noise(rng, n, sr, -6.0) + 0.5 * np.sin(2 * math.pi * rng.uniform(30, 60) * t)
    else:
        raise ValueError(f"unknown continuous family {family!r}")
    res: F32 = (np.asarray(x, np.float32) / (np.std(x) + 1e-9)).astype(np.float32)
    return res


def room_path(x: F32, room: str, rng: np.random.Generator, sr: int, distance_m: float, *,
              randomise: bool = False) -> F32:
    """``x`` heard at ``distance_m`` in ``room``: level, air absorption, reverb or echoes (same onset).

    ``randomise``: the reverb time is drawn on its own (log-uniform 0.08-1.5 s indoors) and the
    outdoor reflections' count, delay and loss more widely, whatever the room's name.
    """
    n = len(x) + int(sr * (1.2 if randomise else 0.8))
    y: AnyArr = np.zeros(n, np.float32)
    y[: len(x)] = x
    k = max(1, int(distance_m / 40))  # high frequencies die with distance
    y = _lowpass(y, k) if k > 1 else y
    t: AnyArr = np.arange(n, dtype=np.float32) / sr
    if room in ("indoor_small", "indoor_hall", "vehicle"):
        rt = {"indoor_small": rng.uniform(0.2, 0.5), "indoor_hall": rng.uniform(0.6, 1.4),
              "vehicle": rng.uniform(0.05, 0.15)}[room]
        if randomise:
            rt = float(np.exp(rng.uniform(math.log(0.08), math.log(1.5))))
        ir = rng.normal(0, 1, n).astype(np.float32) * np.exp(-6.9 * t / rt).astype(np.float32)
        ir[: int(0.002 * sr)] = 0
        m = 1 << math.ceil(math.log2(2 * n))
        rev = np.fft.irfft(np.fft.rfft(y, m) * np.fft.rfft(ir, m), m)[:n].astype(np.float32)
        rev *= rng.uniform(0.2, 0.8) * np.max(np.abs(y)) / (np.max(np.abs(rev)) + 1e-9)
        y = y + rev
    else:
        # discrete reflections (buildings, vehicles, the ground): a reflection that arrives d seconds
        # late has travelled 343*d m further, so it is weaker by spreading (and by the wall's absorption)
        dry = y.copy()
        count = int(rng.integers(1 if room == "open_field" else 3, 4 if room == "open_field" else 8))
        if randomise:
            count = int(rng.integers(0, 10))
        for _ in range(count):
            delay_s = rng.uniform(0.005, 1.0) if randomise else rng.uniform(0.02, 0.7)
            d = int(delay_s * sr)
            gain = rng.uniform(0.3, 0.9) * distance_m / (distance_m + 343.0 * delay_s)
            if d < n:
                y[d:] += _lowpass(dry[: n - d].copy(), int(rng.integers(2, 8))) * gain
    gain = 1.0 / max(1.0, distance_m / 5.0)  # spherical spreading from 5 m
    res: F32 = (y * gain).astype(np.float32)
    return res


def microphone(x: F32, rng: np.random.Generator, gain_db: float) -> F32:
    """The camera's microphone: gain, soft or hard clipping at full scale, a little self-noise."""
    y: AnyArr = x * _db(gain_db)
    y = np.clip(y, -1.0, 1.0) if rng.random() < 0.5 else np.tanh(y * 1.2) / math.tanh(1.2)
    y = y + rng.normal(0, _db(rng.uniform(-75, -60)), len(y))
    res: F32 = np.clip(y, -1.0, 1.0).astype(np.float32)
    return res


def audio_scene(rng: np.random.Generator, seconds: float, sr: int, *, guns: tuple[str, ...],
                impulses: tuple[str, ...], continuous: tuple[str, ...], rooms: tuple[str, ...],
                shots: int, impulse_count: int, randomise: bool = False,
                physics_impulses: bool = False) -> tuple[F32, list[tuple[int, str]], list[tuple[int, str]]]:
    """A randomised stretch of sound: (samples, [(shot onset sample, family)], [(impulse onset, family)]).

    Shots come singly or in bursts (4-15 rounds/s); the room, distance and microphone gain are drawn
    per scene and per sound; 1-2 continuous beds play throughout. Onsets are at least 40 ms apart
    from any other onset so each is a separate event.

    ``randomise`` (training data; :mod:`bodycam.hw_sim.audio_randomise`): half the shots are
    :func:`~bodycam.hw_sim.audio_randomise.physics_gun` (family ``physics``) instead of a named gun
    family, every shot and impulse gets a random frequency response with probability 1/2, the room's
    reverb and reflections are drawn independently of its name, and the microphone is the randomised
    recording path (gain, clipping, AGC, MEMS response, sample-rate path, AAC). Without it, the draws
    are exactly those of the named families alone. ``physics_impulses`` (with ``randomise``): half the
    non-shot impulses are :func:`~bodycam.hw_sim.audio_randomise.physics_impulse` (family
    ``physics_impulse``, 0.3-8x at 1-30 m).
    """
    from bodycam.hw_sim import audio_randomise as rnd

    n = int(seconds * sr)
    room = str(rng.choice(rooms))
    out = _coloured_noise(rng, n, sr, float(rng.uniform(-6, -2))) * _db(rng.uniform(-70, -45))
    for fam in rng.choice(continuous, size=int(rng.integers(1, 3)), replace=False) if continuous else ():
        level = rng.uniform(-40, -14) if fam == "wind" else rng.uniform(-50, -20)
        out += continuous_sound(str(fam), rng, sr, n) * _db(level)
    taken: list[int] = []
    margin = int(0.04 * sr)

    def free(s: int) -> bool:
        return all(abs(s - o) >= margin for o in taken)

    shot_onsets: list[tuple[int, str]] = []
    left = shots
    while left > 0 and guns:
        fam = str(rng.choice(guns))
        if randomise and rng.random() < 0.5:
            fam = "physics"
        burst = int(min(left, rng.integers(1, 6) if rng.random() < 0.4 else 1))
        gap = int(sr / rng.uniform(4, 15))
        start = int(rng.integers(int(0.1 * sr), max(int(0.1 * sr) + 1, n - int(0.3 * sr) - burst * gap)))
        dist = float(np.exp(rng.uniform(math.log(2.0), math.log(300.0))))
        level = rng.uniform(4.0, 30.0)
        for j in range(burst):
            s = start + j * gap
            if s < n - int(0.25 * sr) and free(s):
                dry = rnd.physics_gun(rng, sr) if fam == "physics" else gun_sound(fam, rng, sr)
                if randomise and rng.random() < 0.5:
                    dry = rnd.shape(dry, sr, rng=rng)
                snd = room_path(dry, room, rng, sr, dist, randomise=randomise) * level
                _place(out, s, snd)
                taken.append(s)
                shot_onsets.append((s, fam))
        left -= burst
    impulse_onsets: list[tuple[int, str]] = []
    loud = {"firework": (4.0, 30.0, 20.0, 300.0), "car_backfire": (3.0, 20.0, 5.0, 80.0),
            "nail_gun": (0.5, 4.0, 1.0, 15.0), "door_slam": (0.5, 5.0, 1.0, 15.0),
            "balloon_pop": (0.5, 4.0, 1.0, 10.0), "hammer": (0.3, 3.0, 1.0, 15.0),
            "dropped_object": (0.2, 3.0, 0.5, 8.0), "clap": (0.2, 3.0, 0.5, 8.0)}
    for _ in range(impulse_count if impulses else 0):
        fam = str(rng.choice(impulses))
        if randomise and physics_impulses and rng.random() < 0.5:
            fam = "physics_impulse"
        s = int(rng.integers(int(0.05 * sr), n - int(0.25 * sr)))
        if not free(s):
            continue
        lo, hi, dlo, dhi = loud.get(fam, (0.3, 8.0, 1.0, 30.0))
        dist = float(np.exp(rng.uniform(math.log(dlo), math.log(dhi))))
        dry = rnd.physics_impulse(rng, sr) if fam == "physics_impulse" else impulse_sound(fam, rng, sr)
        if randomise and rng.random() < 0.5:
            dry = rnd.shape(dry, sr, rng=rng)
        _place(out, s, room_path(dry, room, rng, sr, dist, randomise=randomise) * rng.uniform(lo, hi))
        taken.append(s)
        impulse_onsets.append((s, fam))
    mic = rnd.recording_path(out, rng, sr) if randomise else microphone(out, rng, float(rng.uniform(-6.0, 6.0)))
    return mic, sorted(shot_onsets), sorted(impulse_onsets)
