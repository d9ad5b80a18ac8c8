"""Fusion: one decision per shot from the video scores and the audio onsets.

Policies (``[fusion] policy``):

* ``video``: the video event tracker decides alone (the behaviour before audio existed);
* ``audio``: every audio onset the audio detector confirms (score >= its sidecar threshold) is a
  shot, placed on the frame containing the onset;
* ``fused`` (default): a shot needs to be **heard**. An audio onset is a shot when its score
  reaches ``audio_alone`` (the audio model's threshold), or when it reaches ``audio_support`` and
  the video saw a flash (a frame score >= ``video_support``) within ``window_frames`` frames of
  the onset. A flash nobody heard (a strobe, a photo flash) is no shot. While the audio path is
  not live (no microphone, a clip without sound, a failed microphone) ``fused`` falls back to
  ``video``.

Where a shot lands: on the flash frame when the video supports it (the best-scoring frame in the
window not already taken by a previous shot, so rapid fire keeps one marker per round), else on
the frame containing the audio onset. The marker's ``evidence`` carries each source's confidence;
its ``confidence`` is ``1 - (1 - audio)(1 - video)`` when both fired, else the one that did.

Timing: an onset is decided once the video has scored ``window_frames`` frames past it.
"""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass
from typing import Literal

from bodycam.device.detect.audio_detector import AudioOnset
from bodycam.device.detect.events import Detection
from bodycam.device.settings import require

Policy = Literal["fused", "video", "audio"]


@dataclass(frozen=True)
class FusionConfig:
    policy: Policy = "fused"
    audio_model: str = ""  # path to the audio .tflite with its sidecar; empty: the shipped model
    # the defaults are the operating point `bodycam-model tune-fusion` chose on in-domain validation
    # clips for the shipped models (the best recall with <= 1 false alarm per hour and precision >= 0.97
    # on those clips; on held-out families: 2.0 per hour, 0.956: docs/model.md)
    audio_alone: float = 0.0  # 0: the audio model's own threshold
    audio_support: float = 0.5  # an onset this strong counts when the video saw a flash near it
    video_support: float = 0.9  # a frame score that counts as a flash supporting an onset
    window_frames: int = 1  # how far (frames) a supporting flash may be from the onset's frame

    def __post_init__(self) -> None:
        require(self.policy in ("fused", "video", "audio"), "fusion.policy",
                f"{self.policy!r} is not 'fused', 'video' or 'audio'")
        require(0.0 <= self.audio_alone < 1.0, "fusion.audio_alone", f"{self.audio_alone} must be in [0, 1)")
        require(0.0 < self.audio_support < 1.0, "fusion.audio_support", f"{self.audio_support} must be in (0, 1)")
        require(0.0 < self.video_support < 1.0, "fusion.video_support", f"{self.video_support} must be in (0, 1)")
        require(0 <= self.window_frames <= 10, "fusion.window_frames", f"{self.window_frames} must be 0..10")


@dataclass(frozen=True, slots=True)
class ShotDecision:
    """A shot: the frame it lands on, that frame's time, and the evidence."""

    frame: int
    t_ns: int
    confidence: float
    evidence: dict[str, float]


class Fusion:
    """See the module docstring. Feed video per scored frame, audio onsets as they come; take decisions."""

    def __init__(self, cfg: FusionConfig, audio_alone: float, history: int = 120) -> None:
        self.cfg = cfg
        self.audio_alone = cfg.audio_alone or audio_alone
        self._frames: collections.deque[tuple[int, int, float]] = collections.deque(maxlen=history)
        self._times: collections.deque[int] = collections.deque(maxlen=history)  # t_ns of _frames, sorted
        self._pending: list[AudioOnset] = []
        self._video_dets: list[Detection] = []
        self._claimed: collections.deque[int] = collections.deque(maxlen=64)  # frames given to a shot
        self.suppressed_video = 0  # video detections nobody heard (fused with audio live)
        self.audio_rejected = 0  # onsets too weak on their own and without a flash

    # -- inputs --------------------------------------------------------------------------------
    def video(self, frame: int, t_ns: int, score: float, detection: Detection | None) -> None:
        """One scored frame (its index, time, score) and the video tracker's decision if any."""
        self._frames.append((frame, t_ns, score))
        self._times.append(t_ns)
        if detection is not None:
            self._video_dets.append(detection)

    def audio(self, onsets: list[AudioOnset]) -> None:
        self._pending.extend(onsets)

    # -- decisions -----------------------------------------------------------------------------
    def decide(self, audio_live: bool, *, final: bool = False) -> list[ShotDecision]:
        """Decisions that are ready (all of them when ``final``: the end of the stream)."""
        policy = self.cfg.policy
        if policy != "video" and not audio_live and not self._pending:
            policy = "video"
        out: list[ShotDecision] = []
        vids, self._video_dets = self._video_dets, []
        if policy == "video":
            out += [ShotDecision(d.frame, d.t_ns, d.confidence, {"video": round(d.confidence, 4)}) for d in vids]
            self._pending.clear()
            return out
        self.suppressed_video += len(vids)
        last_frame = self._frames[-1][0] if self._frames else -1
        keep: list[AudioOnset] = []
        for onset in sorted(self._pending, key=lambda o: o.t_ns):
            where = self._frame_of(onset.t_ns)
            if where is None:  # before any scored frame: wait unless the stream ended
                if final:
                    self.audio_rejected += 1
                else:
                    keep.append(onset)
                continue
            pos, frame, t_frame = where
            if not final and frame + self.cfg.window_frames > last_frame:
                keep.append(onset)
                continue
            d = self._decide(onset, pos, frame, t_frame, policy)
            if d is not None:
                out.append(d)
        self._pending = keep
        return out

    def _frame_of(self, t_ns: int) -> tuple[int, int, int] | None:
        """(position in history, frame index, frame time) of the frame containing ``t_ns``."""
        i = bisect.bisect_right(self._times, t_ns) - 1
        if i < 0:
            return None
        frame, t_frame, _ = self._frames[i]
        return i, frame, t_frame

    def _decide(self, onset: AudioOnset, pos: int, frame: int, t_frame: int, policy: str) -> ShotDecision | None:
        a = onset.confidence
        best: tuple[float, int, int] | None = None  # (score, frame, t) of the supporting flash
        if policy == "fused":
            lo, hi = max(0, pos - self.cfg.window_frames), min(len(self._frames) - 1, pos + self.cfg.window_frames)
            for j in range(lo, hi + 1):
                f, t, s = self._frames[j]
                if s >= self.cfg.video_support and f not in self._claimed and (best is None or s > best[0]):
                    best = (s, f, t)
        if a >= self.audio_alone or (best is not None and a >= self.cfg.audio_support):
            if best is not None:
                v, f, t = best
                self._claimed.append(f)
                conf = 1.0 - (1.0 - a) * (1.0 - v)
                return ShotDecision(f, t, round(conf, 4), {"video": round(v, 4), "audio": round(a, 4)})
            self._claimed.append(frame)
            return ShotDecision(frame, t_frame, round(a, 4), {"audio": round(a, 4)})
        self.audio_rejected += 1
        return None


__all__ = ["Fusion", "FusionConfig", "Policy", "ShotDecision"]
