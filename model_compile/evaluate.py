"""Event-level evaluation of a model on clips with truth.

Per-frame int8 scores -> the firmware's own :class:`~bodycam.device.detect.events.ShotTracker`
-> markers, matched to the true shots by :func:`bodycam.hw_sim.scoring.score_events`
(within 2 frames, one marker per shot). False alarms on shot-free clips are counted
per hour and attributed to the distractor active within +-2 frames ("none" otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.detect.events import EventConfig, ShotTracker, track_scores
from bodycam.hw_sim.scoring import EMPTY_SCORE, EventScore, score_events
from bodycam.hw_sim.truth import Truth
from bodycam.model_compile.dataset import ClipData
from bodycam.model_compile.labels import AUDIO_ONLY

TOLERANCE = 2


@dataclass(frozen=True)
class ClipResult:
    name: str
    truth: Truth
    markers: tuple[int, ...]
    score: EventScore

    @property
    def duration_s(self) -> float:
        return self.truth.video.duration_s


def markers_for(scores: npt.NDArray[np.float32], clip: ClipData, cfg: EventConfig, threshold: float) -> list[int]:
    tracker = ShotTracker.from_config(cfg, threshold)
    dets = track_scores(range(len(scores)), [int(t) for t in clip.times_ns], [float(s) for s in scores], tracker)
    return [d.frame for d in dets]


def score_clip(name: str, truth: Truth, markers: list[int]) -> ClipResult:
    return ClipResult(name, truth, tuple(markers), score_events(truth.shot_frames(), markers, TOLERANCE))


def attribute(frame: int, truth: Truth, margin: int = TOLERANCE) -> str:
    """The distractor kind active within ``margin`` frames of ``frame``, else ``none``.

    When several are, a visual one wins over an audio-only one (a siren lasts for seconds and
    is often under a lightbar strobe), then one active at the frame itself, then the latest onset.
    """
    near = [d for d in truth.distractors if d.start_frame - margin <= frame <= d.end_frame + margin]
    if not near:
        return "none"
    return min(
        near,
        key=lambda d: (d.kind in AUDIO_ONLY, not d.start_frame <= frame <= d.end_frame, -d.start_frame),
    ).kind


def summarise(results: list[ClipResult]) -> dict[str, Any]:
    total = EMPTY_SCORE
    for r in results:
        total = total + r.score
    errs = np.abs(np.asarray(total.timing_errors, dtype=np.int64))
    by_shooter: dict[str, dict[str, int]] = {}
    for r in results:
        missed = set(r.score.missed)
        for s in r.truth.shots:
            d = by_shooter.setdefault(s.shooter, {"shots": 0, "found": 0})
            d["shots"] += 1
            d["found"] += 0 if s.frame in missed else 1
    free = [r for r in results if not r.truth.shots]
    free_hours = sum(r.duration_s for r in free) / 3600.0
    free_fa = sum(r.score.fp for r in free)
    by_kind: dict[str, int] = {}
    all_by_kind: dict[str, int] = {}
    for r in results:
        for f in r.score.unmatched_markers:
            k = attribute(f, r.truth)
            all_by_kind[k] = all_by_kind.get(k, 0) + 1
            if not r.truth.shots:
                by_kind[k] = by_kind.get(k, 0) + 1
    all_hours = sum(r.duration_s for r in results) / 3600.0
    return {
        "clips": len(results),
        "hours": round(all_hours, 4),
        "shots": total.tp + total.fn,
        "markers": total.tp + total.fp,
        "tp": total.tp,
        "fp": total.fp,
        "fn": total.fn,
        "precision": round(total.precision, 4),
        "recall": round(total.recall, 4),
        "timing_error_frames": {
            "median": float(np.median(errs)) if errs.size else None,
            "max": int(errs.max()) if errs.size else None,
            "mean_signed": round(float(np.mean(total.timing_errors)), 3) if errs.size else None,
        },
        "recall_by_shooter": {
            k: {**v, "recall": round(v["found"] / v["shots"], 4) if v["shots"] else None} for k, v in by_shooter.items()
        },
        "false_alarms_shot_free": {
            "clips": len(free),
            "hours": round(free_hours, 4),
            "count": free_fa,
            "per_hour": round(free_fa / free_hours, 2) if free_hours > 0 else None,
            "per_10_min": round(free_fa / free_hours / 6.0, 3) if free_hours > 0 else None,
            "by_kind": dict(sorted(by_kind.items())),
        },
        "false_markers_all_clips": {
            "count": total.fp,
            "per_hour": round(total.fp / all_hours, 2) if all_hours > 0 else None,
            "by_kind": dict(sorted(all_by_kind.items())),
        },
        "missed": [{"clip": r.name, "frame": f} for r in results for f in r.score.missed],
        "false": [{"clip": r.name, "frame": f, "kind": attribute(f, r.truth)} for r in results for f in r.score.unmatched_markers],
    }


def evaluate_scores(
    clips: list[ClipData], scores: list[npt.NDArray[np.float32]], cfg: EventConfig, threshold: float
) -> list[ClipResult]:
    return [
        score_clip(c.path.name, c.truth, markers_for(s, c, cfg, threshold)) for c, s in zip(clips, scores, strict=True)
    ]


def run_scores(
    clips: list[ClipData], frame_scores: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]
) -> list[npt.NDArray[np.float32]]:
    return [frame_scores(c.frames) for c in clips]


def sweep_thresholds(
    clips: list[ClipData], scores: list[npt.NDArray[np.float32]], cfg: EventConfig, grid: list[float]
) -> list[dict[str, float]]:
    """Event-level precision/recall for every threshold of ``grid``."""
    out = []
    for thr in grid:
        total = EMPTY_SCORE
        for r in evaluate_scores(clips, scores, cfg, thr):
            total = total + r.score
        out.append({"threshold": thr, "precision": total.precision, "recall": total.recall, "fp": total.fp, "fn": total.fn})
    return out


def pick_threshold(sweep: list[dict[str, float]]) -> float:
    """The threshold with the fewest errors (fp + fn); ties: the middle of the best run."""
    best = min(r["fp"] + r["fn"] for r in sweep)
    ok = [r["threshold"] for r in sweep if r["fp"] + r["fn"] == best]
    return float(ok[len(ok) // 2])
