"""Test scenes mixed from a sound library (:mod:`bodycam.model_compile.sound_library`): other people's
gunshots, distractors and backgrounds, for the audio detector's evaluation only.

The mixing adds as little of the project's own modelling as it can: no synthetic room, no synthetic
gun, no generated noise. A scene is one or two of the library's beds (looped), its gunshots and
non-shot impulses placed at random times, each at a random peak level, summed at the camera
microphone's 48 kHz, hard-clipped at full scale (a MEMS microphone's ADC clips; gunshots within tens
of metres do), and brought to the features' rate through the firmware's own resampler, as the camera
does. The one physical assumption is in the levels: a gunshot's peak is drawn from
:data:`SHOT_PEAK_DBFS` (a distant shot to a clipped near one), a distractor's from
:data:`IMPULSE_PEAK_DBFS`, a bed's RMS from :data:`BED_RMS_DBFS`. The sound files carry their own
reverb and character; nothing is added to them but level.

Truth: a shot's onset is its file's onset (:func:`~bodycam.model_compile.sound_library.onset`) at its
placed time; sounds are placed at least :data:`SPACING_S` apart, so one shot's sound has died down
before the next starts, and each sound is cut to :data:`MAX_SOUND_S`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bodycam.device.detect.audio_features import FEATURES
from bodycam.hw_sim.audio_randomise import firmware_resample
from bodycam.model_compile.audio_data import Scene
from bodycam.model_compile.sound_library import Decoded, onset

F32 = npt.NDArray[np.float32]

MIC_RATE = 48_000
SHOT_PEAK_DBFS = (-24.0, 6.0)
IMPULSE_PEAK_DBFS = (-30.0, 0.0)
BED_RMS_DBFS = (-50.0, -26.0)
SPACING_S = 1.2
MAX_SOUND_S = 1.5


class Prepared:
    """A library's sounds at the microphone's rate, peak-normalised, onsets found, by label."""

    def __init__(self, decoded: Sequence[Decoded]) -> None:
        self.shots: list[tuple[F32, str]] = []  # (the sound from its onset, peak 1; "source:kind")
        self.impulses: list[tuple[F32, str]] = []
        self.beds: list[F32] = []
        for d in decoded:
            x = firmware_resample(d.audio, d.rate, MIC_RATE) if d.rate != MIC_RATE else d.audio.astype(np.float32)
            peak = float(np.abs(x).max(initial=0.0))
            if peak <= 0:
                continue
            if d.sound.label == "bed":
                rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
                self.beds.append((x / rms).astype(np.float32))
                continue
            o = onset(x, MIC_RATE)
            cut = (x[o : o + int(MAX_SOUND_S * MIC_RATE)] / peak).astype(np.float32)
            entry = (cut, f"{d.sound.source}:{d.sound.kind}")
            (self.shots if d.sound.label == "shot" else self.impulses).append(entry)


def db_gain(x: float) -> float:
    return float(10 ** (x / 20.0))


def bed_loop(rng: np.random.Generator, bed: F32, n: int) -> F32:
    """``n`` samples of a bed, looped, from a random point."""
    start = int(rng.integers(0, len(bed)))
    reps = -(-(n + start) // len(bed))
    out: F32 = np.tile(bed, reps)[start : start + n]
    return out


def beds(rng: np.random.Generator, lib: Prepared, n: int) -> F32:
    """``n`` samples of one or two of the library's beds (looped) at RMS levels from :data:`BED_RMS_DBFS`
    (silence when it has none)."""
    out = np.zeros(n, np.float32)
    for _ in range(int(rng.integers(1, 3)) if lib.beds else 0):
        out += bed_loop(rng, lib.beds[int(rng.integers(len(lib.beds)))], n) * db_gain(rng.uniform(*BED_RMS_DBFS))
    return out


@dataclass(frozen=True)
class LibraryScene:
    scene: Scene
    #: each true shot's drawn peak level (dBFS before the microphone's clipping), in shot order
    shot_peaks_db: tuple[float, ...]


def library_scene(rng: np.random.Generator, lib: Prepared, seconds: float, shots: int,
                  impulse_rate: float) -> LibraryScene:
    """One scene (see the module docstring): ``shots`` gunshots and about ``impulse_rate``
    distractors a second, on a bed; truths at the features' rate."""
    n = int(seconds * MIC_RATE)
    out = beds(rng, lib, n)
    want = [("shot", k) for k in range(shots if lib.shots else 0)]
    want += [("impulse", k) for k in range(int(rng.poisson(impulse_rate * seconds)) if lib.impulses else 0)]
    order = rng.permutation(len(want)) if want else np.zeros(0, np.int64)
    taken: list[int] = []
    space = int(SPACING_S * MIC_RATE)
    shot_at: list[tuple[int, str, float]] = []
    imp_at: list[tuple[int, str]] = []
    for k in order:
        label = want[int(k)][0]
        pool = lib.shots if label == "shot" else lib.impulses
        snd, name = pool[int(rng.integers(len(pool)))]
        for _try in range(20):
            s = int(rng.integers(int(0.1 * MIC_RATE), max(int(0.1 * MIC_RATE) + 1, n - int(0.3 * MIC_RATE))))
            if all(abs(s - t) >= space for t in taken):
                break
        else:
            continue
        lo, hi = SHOT_PEAK_DBFS if label == "shot" else IMPULSE_PEAK_DBFS
        peak = float(rng.uniform(lo, hi))
        seg = snd[: n - s] * db_gain(peak)
        out[s : s + len(seg)] += seg
        taken.append(s)
        if label == "shot":
            shot_at.append((s, name, peak))
        else:
            imp_at.append((s, name))
    mic = np.clip(out, -1.0, 1.0).astype(np.float32)
    x = firmware_resample(mic, MIC_RATE, FEATURES.sample_rate)
    sr = FEATURES.sample_rate

    def at(s: int) -> int:
        return s * sr // MIC_RATE

    shot_at.sort()
    scene = Scene(x, tuple((at(s), f) for s, f, _p in shot_at), tuple((at(s), f) for s, f in sorted(imp_at)),
                  len(x) / sr)
    return LibraryScene(scene, tuple(round(p, 2) for _s, _f, p in shot_at))


def library_scenes(lib: Prepared, count: int, seed: int, seconds: float = 10.0, *, shot_free: bool = False,
                   impulse_rate: float = 0.4) -> list[LibraryScene]:
    """``count`` scenes from one seed: 1-4 shots each (none if ``shot_free``)."""
    rng = np.random.default_rng(seed)
    return [library_scene(rng, lib, seconds, 0 if shot_free else int(rng.integers(1, 5)), impulse_rate)
            for _ in range(count)]


__all__ = ["BED_RMS_DBFS", "IMPULSE_PEAK_DBFS", "MIC_RATE", "SHOT_PEAK_DBFS", "LibraryScene", "Prepared", "bed_loop", "beds", "db_gain", "library_scene", "library_scenes"]
