"""Training targets of every window of a clip.

Window ``k`` ends at frame ``k + N - 1`` and speaks for frame
``t = k + N - 1 - target_offset`` (see :func:`bodycam.device.detect.preprocess.stack_windows`).
Its label is 1 exactly when ``t`` is a shot's first flash frame. A shot whose flash fell between
exposures (``flash_frames`` 0: nothing to see) is no positive and its frame is ignored (weight 0):
the video cannot know, the audio detector must. Windows whose target
is one frame off a shot are negatives with a lower weight (``near_weight``): they look
almost the same and only blur the timing. Windows that overlap a visible distractor, or that
lie just after a shot (the flash's tail, the recoil), are *hard* negatives, drawn more
often during training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bodycam.device.detect.preprocess import InputSpec
from bodycam.hw_sim.truth import Truth

HARD_MARGIN = 2  # frames around a distractor that still count as hard negatives
AUDIO_ONLY = frozenset({"siren", "shouting", "babble", "clap"})  # nothing to see: not hard for a visual model
RECOIL_FRAMES = 8  # frames after a shot whose windows are hard negatives


@dataclass(frozen=True)
class WindowLabels:
    """Per-window arrays (length ``T - N + 1``)."""

    target_frame: npt.NDArray[np.int64]
    y: npt.NDArray[np.float32]
    weight: npt.NDArray[np.float32]
    hard: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.y.shape[0])


def target_frames(n_frames: int, spec: InputSpec) -> npt.NDArray[np.int64]:
    """The frame each window of an ``n_frames`` clip is labelled for."""
    count = max(0, n_frames - spec.frames + 1)
    return np.arange(count, dtype=np.int64) + (spec.frames - 1 - spec.target_offset)


def window_labels(truth: Truth, spec: InputSpec, near_weight: float = 0.3) -> WindowLabels:
    n = truth.video.frames
    tf = target_frames(n, spec)
    per_frame_y = np.zeros(n, dtype=np.float32)
    per_frame_w = np.ones(n, dtype=np.float32)
    per_frame_hard = np.zeros(n, dtype=np.bool_)
    for s in truth.shots:
        for d in (-1, 1):
            if 0 <= s.frame + d < n:
                per_frame_w[s.frame + d] = min(per_frame_w[s.frame + d], near_weight)
        per_frame_hard[s.frame + 1 : min(n, s.frame + RECOIL_FRAMES)] = True
    for s in truth.shots:  # positives win over "near" marks of a neighbouring shot
        if s.flash_frames == 0:
            per_frame_w[s.frame] = 0.0
            continue
        per_frame_y[s.frame] = 1.0
        per_frame_w[s.frame] = 1.0
    for dis in truth.distractors:
        if dis.kind in AUDIO_ONLY:
            continue
        lo = max(0, dis.start_frame - HARD_MARGIN)
        hi = min(n, dis.end_frame + HARD_MARGIN + spec.frames)
        per_frame_hard[lo:hi] = True
    return WindowLabels(tf, per_frame_y[tf], per_frame_w[tf], per_frame_hard[tf] & (per_frame_y[tf] == 0))
