"""End-to-end evaluation of the fusion policies: the real firmware loop on clips with sound.

Every clip (with its ``.truth.json``) is run through ``bodycam-sim``'s engine
(:func:`bodycam.hw_sim.sim_run.run_clip`: the clip as camera, its audio track as microphone, the
one assembly, no broker) once per policy; the gunshot markers are scored against the truth with
the project's event scorer (one marker per shot within 2 frames; timing in frames). Shot-free
clips give the false alarms per hour.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bodycam.device.config import AppConfig
from bodycam.device.detect.fusion import FusionConfig
from bodycam.device.uplink.markers import Marker
from bodycam.hw_sim.scoring import score_events
from bodycam.hw_sim.sim_run import SimOptions, run_clip
from bodycam.hw_sim.truth import load_truth, truth_path_for


def run_policy(clip: Path, policy: str, audio_model: str = "", out: Path | None = None,
               video_model: str = "") -> list[int]:
    """The frames of the gunshot markers the firmware emits on ``clip`` under ``policy``
    (``video_model``: the video model to run; empty: the shipped one)."""
    cfg = replace(AppConfig(), fusion=FusionConfig(policy=policy, audio_model=audio_model))  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="fused-eval-") as tmp:
        rep = run_clip(SimOptions(clip=clip, out=out or Path(tmp), config=cfg, broker=None, gnss=False,
                                  model=Path(video_model) if video_model else None))
    return gunshot_frames(rep.stats.markers)


def gunshot_frames(markers: list[Marker]) -> list[int]:
    """The frame index of every gunshot marker (what the scorer compares with the truth)."""
    frames: list[int] = []
    for m in markers:
        where = m.extra.get("frame_index") if m.kind == "gunshot" and m.extra is not None else None
        if isinstance(where, int):
            frames.append(where)
    return frames


def evaluate_clips(clips: list[Path], policies: tuple[str, ...] = ("fused", "video", "audio"),
                   audio_model: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"clips": [c.name for c in clips]}
    for policy in policies:
        tp = fp = fn = 0
        seconds = free_seconds = 0.0
        free_fp = 0
        timing: list[int] = []
        per_clip = {}
        for clip in clips:
            truth = load_truth(truth_path_for(clip))
            frames = run_policy(clip, policy, audio_model)
            sc = score_events([s.frame for s in truth.shots], frames)
            dur = truth.video.frames / truth.video.fps
            seconds += dur
            if not truth.shots:
                free_seconds += dur
                free_fp += sc.fp
            tp += len(truth.shots) - sc.fn
            fp += sc.fp
            fn += sc.fn
            timing += [abs(e) for e in sc.timing_errors]
            per_clip[clip.name] = {"shots": len(truth.shots), "fn": sc.fn, "fp": sc.fp}
        out[policy] = {
            "shots": tp + fn, "tp": tp, "fp": fp, "fn": fn,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "minutes": round(seconds / 60, 2), "shot_free_minutes": round(free_seconds / 60, 2),
            "false_alarms_per_hour_shot_free": round(free_fp / (free_seconds / 3600), 1) if free_seconds else None,
            "timing_frames": {"median": float(np.median(timing)) if timing else None,
                              "max": int(max(timing)) if timing else None},
            "per_clip": per_clip,
        }
    return out


def clips_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.mp4") if truth_path_for(p).is_file())


__all__ = ["clips_in", "evaluate_clips", "gunshot_frames", "run_policy"]
