"""Event-level evaluation of an audio model through the firmware's own :class:`AudioDetector`.

Each scene is streamed in microphone-sized blocks through the detector exactly as on the camera
(features, window, int8 model, onset picker). A detected onset matches a true shot within
``tolerance_ms`` (one detection per shot, greedy in time order); the rest are false alarms,
attributed to the non-shot impulse within 150 ms of them (by family), else to a shot's own sound when
within :data:`AFTER_SHOT_S` after a true shot ("after_shot"), else to the bed ("other").
Timing is reported in ms and in video frames at 30 fps (the frame containing the onset).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bodycam.device.detect.audio_detector import AudioDetector, AudioOnset, OnsetPicker
from bodycam.device.detect.audio_features import FEATURES
from bodycam.device.hw.microphone import AudioBlock
from bodycam.model_compile.audio_data import Scene

BLOCK = 1024  # samples per microphone block (64 ms at 16 kHz)
FPS = 30.0
#: a false alarm up to this long after a true shot is attributed to that shot's own sound ("after_shot":
#: its echoes, reverb, a recording's later layers) unless a non-shot impulse is nearer
AFTER_SHOT_S = 1.0


def detect_scene(det: AudioDetector, audio: np.ndarray[Any, Any], t0_ns: int = 0) -> list[AudioOnset]:
    """The onsets the detector finds in ``audio``, fed in microphone blocks (its per-hop scores kept
    in ``det.scores``)."""
    det.reset()
    det.scores = []
    sr = FEATURES.sample_rate
    out: list[AudioOnset] = []
    for k in range(0, len(audio), BLOCK):
        out += det.feed(AudioBlock(t0_ns + k * 1_000_000_000 // sr, audio[k : k + BLOCK].astype(np.float32), sr))
    return out + det.flush()


def replay(scores: list[tuple[int, float, float, float]], threshold: float) -> list[AudioOnset]:
    """What the detector's :class:`OnsetPicker` decides from the same per-hop scores at ``threshold``."""
    picker = OnsetPicker(threshold)
    out = [o for t, sc, lv, j in scores if (o := picker.update(t, sc, lv, j)) is not None]
    last = picker.flush()
    return out + ([last] if last is not None else [])


@dataclass
class Tally:
    shots: int = 0
    tp: int = 0
    fp: int = 0
    seconds: float = 0.0
    timing_ms: list[float] = field(default_factory=list)
    timing_frames: list[int] = field(default_factory=list)
    fp_by_family: Counter[str] = field(default_factory=Counter)
    missed_by_family: Counter[str] = field(default_factory=Counter)
    shots_by_family: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        recall = self.tp / self.shots if self.shots else None
        precision = self.tp / (self.tp + self.fp) if (self.tp + self.fp) else None
        ms = np.abs(np.asarray(self.timing_ms)) if self.timing_ms else np.zeros(0)
        fr = np.abs(np.asarray(self.timing_frames)) if self.timing_frames else np.zeros(0)
        return {
            "shots": self.shots, "tp": self.tp, "fp": self.fp, "fn": self.shots - self.tp,
            "recall": None if recall is None else round(recall, 4),
            "precision": None if precision is None else round(precision, 4),
            "minutes": round(self.seconds / 60, 2),
            "false_alarms_per_hour": round(self.fp / (self.seconds / 3600), 2) if self.seconds else None,
            "timing_ms": {"median": round(float(np.median(ms)), 2) if len(ms) else None,
                          "max": round(float(ms.max()), 2) if len(ms) else None},
            "timing_frames_30fps": {"median": float(np.median(fr)) if len(fr) else None,
                                    "max": int(fr.max()) if len(fr) else None},
            "false_alarms_by_family": dict(sorted(self.fp_by_family.items())),
            "recall_by_gun_family": {f: round(1 - self.missed_by_family[f] / n, 4)
                                     for f, n in sorted(self.shots_by_family.items())},
        }


def score_scene(t: Tally, scene: Scene, found: list[AudioOnset], tolerance_ms: float = 50.0) -> None:
    sr = FEATURES.sample_rate
    truth = [(s / sr, fam) for s, fam in scene.shots]
    used = [False] * len(truth)
    t.shots += len(truth)
    t.seconds += scene.seconds
    for _s, fam in truth:
        t.shots_by_family[fam] += 1
    for d in sorted(found, key=lambda o: o.t_ns):
        ts = d.t_ns / 1e9
        best = None
        for i, (s, _fam) in enumerate(truth):
            if not used[i] and abs(ts - s) * 1000 <= tolerance_ms and (best is None or abs(ts - s) < abs(ts - truth[best][0])):
                best = i
        if best is None:
            t.fp += 1
            near = [fam for s, fam in scene.impulses if abs(s / sr - ts) <= 0.15]
            after = any(0 < ts - s <= AFTER_SHOT_S for s, _fam in truth)
            t.fp_by_family[near[0] if near else "after_shot" if after else "other"] += 1
            continue
        used[best] = True
        t.tp += 1
        s = truth[best][0]
        t.timing_ms.append((ts - s) * 1000)
        t.timing_frames.append(int(np.floor(ts * FPS)) - int(np.floor(s * FPS)))
    for i, (_s, fam) in enumerate(truth):
        if not used[i]:
            t.missed_by_family[fam] += 1


def stream_scores(model: Path, scenes: list[Scene]) -> list[list[tuple[int, float, float, float]]]:
    """Per scene, the detector's per-hop scores (streamed exactly as on the camera)."""
    det = AudioDetector(model, threshold=0.999)
    try:
        out = []
        for sc in scenes:
            detect_scene(det, sc.audio)
            out.append(list(det.scores or []))
        return out
    finally:
        det.close()


def evaluate_sets(model: Path, sets: dict[str, list[Scene]], threshold: float | None = None,
                  scores: dict[str, list[list[tuple[int, float, float, float]]]] | None = None) -> dict[str, Any]:
    """Per set: recall, precision, false alarms per hour, timing, by family (``scores`` reused if given)."""
    if threshold is None:
        from bodycam.device.detect.audio_model_spec import load_audio_model_spec

        threshold = load_audio_model_spec(model).threshold
    out: dict[str, Any] = {"threshold": threshold}
    for name, scenes in sets.items():
        per_scene = scores[name] if scores is not None and name in scores else stream_scores(model, scenes)
        t = Tally()
        for sc, sco in zip(scenes, per_scene, strict=True):
            score_scene(t, sc, replay(sco, threshold))
        out[name] = t.summary()
    return out


__all__ = ["AFTER_SHOT_S", "Tally", "detect_scene", "evaluate_sets", "replay", "score_scene", "stream_scores"]
