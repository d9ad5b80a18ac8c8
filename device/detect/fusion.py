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

Incidents (``incident_s`` > 0): shots come in series, and a shot confirmed by the rules above makes
the next and the previous ones far more likely. Within ``incident_s`` seconds of a confirmed shot an
onset counts from ``incident_audio`` (it must still be an onset the audio model scored, with the
level jump and the echo gate of the picker) unless it is more than ``incident_drop_db`` quieter than
that shot (its echo). Onsets before the confirmed shot are decided when it is (their markers come
late, on their own frames, never on the confirmed shot's; decisions stay in time order); onsets after
it as usual; an onset in a confirmed shot's window that failed the level test is never brought back
by a later shot. Only shots confirmed by the rules above open or extend an incident, so a series of
weak sounds never confirms itself.

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
#: what made a decision a shot: the video tracker alone (``video``: the video policy, or ``fused`` while
#: the sound is not live), a sound alone (``heard``), a sound with a flash (``flash``), a sound near a
#: confirmed shot (``incident``)
Rule = Literal["video", "heard", "flash", "incident"]


@dataclass(frozen=True)
class FusionConfig:
    policy: Policy = "fused"
    audio_model: str = ""  # path to the audio .tflite with its sidecar; empty: the shipped model
    # the defaults are the operating point `bodycam-model tune-fusion` chose on in-domain validation
    # clips for the shipped models (the best recall with <= 1 false alarm per hour and precision >= 0.97
    # on those clips, 63.7 shot-free minutes; six validation hours put it at 2.64 false alarms per hour
    # and the tuner then picks a point that does worse on the original recipe's footage, not adopted:
    # docs/model.md; on held-out families: recall 0.591, precision 0.985 in the clips with shots, 3.3
    # false alarms per hour over 361 shot-free min: docs/model.md). The incident rule is off by default:
    # its precision does not hold on held-out families (with incident_s = 8 and the values below: recall
    # 0.709, precision 0.951, 4.5 false alarms per hour; docs/model.md).
    audio_alone: float = 0.0  # 0: the audio model's own threshold
    audio_support: float = 0.5  # an onset this strong counts when the video saw a flash near it
    video_support: float = 0.9  # a frame score that counts as a flash supporting an onset
    window_frames: int = 1  # how far (frames) a supporting flash may be from the onset's frame
    incident_s: float = 0.0  # around a confirmed shot, onsets this close (s) count from incident_audio; 0: off
    incident_audio: float = 0.7  # the audio score that counts within an incident
    incident_drop_db: float = 6.0  # ... from a sound at most this much quieter than the confirmed shot
    # the onset picker's echo gate: within 1 s after an onset, a new one more than this much quieter is
    # taken for its echo (audio_detector.py; rapid-fire rounds are about as loud as each other)
    echo_drop_db: float = 10.0

    def __post_init__(self) -> None:
        require(self.policy in ("fused", "video", "audio"), "fusion.policy",
                f"{self.policy!r} is not 'fused', 'video' or 'audio'")
        require(0.0 <= self.audio_alone < 1.0, "fusion.audio_alone", f"{self.audio_alone} must be in [0, 1)")
        require(0.0 < self.audio_support < 1.0, "fusion.audio_support", f"{self.audio_support} must be in (0, 1)")
        require(0.0 < self.video_support < 1.0, "fusion.video_support", f"{self.video_support} must be in (0, 1)")
        require(0 <= self.window_frames <= 10, "fusion.window_frames", f"{self.window_frames} must be 0..10")
        require(0.0 <= self.incident_s <= 60.0, "fusion.incident_s", f"{self.incident_s} must be 0..60 (0: off)")
        require(0.0 < self.incident_audio < 1.0, "fusion.incident_audio",
                f"{self.incident_audio} must be in (0, 1)")
        require(0.0 <= self.incident_drop_db <= 60.0, "fusion.incident_drop_db",
                f"{self.incident_drop_db} must be 0..60 dB")
        require(1.0 <= self.echo_drop_db <= 60.0, "fusion.echo_drop_db", f"{self.echo_drop_db} must be 1..60 dB")

    def alone(self, model_threshold: float) -> float:
        """The score at which a sound alone is a shot: ``audio_alone``, or the audio model's own threshold
        (``model_threshold``) when it is 0."""
        return self.audio_alone or model_threshold

    def pick_threshold(self, model_threshold: float) -> float:
        """The lowest audio score any rule of this setting accepts (the onset picker keeps onsets from
        it); ``model_threshold`` is the audio model's own, what ``audio_alone`` 0 stands for."""
        alone = self.alone(model_threshold)
        if self.policy == "audio":
            return alone
        low = min(alone, self.audio_support)
        return min(low, self.incident_audio) if self.incident_s > 0 else low


@dataclass(frozen=True, slots=True)
class ShotDecision:
    """A shot: the frame it lands on, that frame's time, and the evidence."""

    frame: int
    t_ns: int
    confidence: float
    evidence: dict[str, float]
    rule: Rule = "video"  # what made it a shot (module docstring)


class Fusion:
    """See the module docstring. Feed video per scored frame, audio onsets as they come; take decisions."""

    def __init__(self, cfg: FusionConfig, audio_alone: float, history: int = 120) -> None:
        """``audio_alone``: the audio model's threshold, what ``cfg.audio_alone`` 0 stands for."""
        self.cfg = cfg
        self.audio_alone = cfg.alone(audio_alone)
        self._frames: collections.deque[tuple[int, int, float]] = collections.deque(maxlen=history)
        self._times: collections.deque[int] = collections.deque(maxlen=history)  # t_ns of _frames, sorted
        self._pending: list[AudioOnset] = []
        self._video_dets: list[Detection] = []
        self._claimed: collections.deque[int] = collections.deque(maxlen=64)  # frames given to a shot
        self.suppressed_video = 0  # video detections nobody heard (fused with audio live)
        self.audio_rejected = 0  # onsets too weak on their own and without a flash
        self.incident_shots = 0  # shots that counted because they were near a confirmed shot
        self._incident_ns = int(cfg.incident_s * 1e9)
        self._last_confirmed: AudioOnset | None = None  # the newest shot confirmed by the rules
        self._drop = cfg.incident_drop_db / 10.0  # in log10 power, as the onsets' levels
        self._held: collections.deque[tuple[AudioOnset, int, int]] = collections.deque(maxlen=256)

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
            out += self._decide(onset, pos, frame, t_frame, policy)
        self._pending = keep
        return out

    def _frame_of(self, t_ns: int) -> tuple[int, int, int] | None:
        """(position in history, frame index, frame time) of the frame containing ``t_ns``."""
        i = bisect.bisect_right(self._times, t_ns) - 1
        if i < 0:
            return None
        frame, t_frame, _ = self._frames[i]
        return i, frame, t_frame

    def _decide(self, onset: AudioOnset, pos: int, frame: int, t_frame: int, policy: str) -> list[ShotDecision]:
        a = onset.confidence
        best: tuple[float, int, int] | None = None  # (score, frame, t) of the supporting flash
        if policy == "fused":
            lo, hi = max(0, pos - self.cfg.window_frames), min(len(self._frames) - 1, pos + self.cfg.window_frames)
            for j in range(lo, hi + 1):
                f, t, s = self._frames[j]
                if s >= self.cfg.video_support and f not in self._claimed and (best is None or s > best[0]):
                    best = (s, f, t)
        if a >= self.audio_alone or (best is not None and a >= self.cfg.audio_support):
            out = self._incident_before(onset, frame if best is None else best[1]) if self._held else []
            self._last_confirmed = onset
            return [*out, self._shot(onset, frame, t_frame, best, "flash" if best is not None else "heard")]
        if self._incident_ns and policy == "fused" and a >= self.cfg.incident_audio:
            last = self._last_confirmed
            if self._in_incident(onset, last):
                self.incident_shots += 1
                return [self._shot(onset, frame, t_frame, best, "incident")]
            if last is None or onset.t_ns - last.t_ns > self._incident_ns:
                # a confirmed shot soon after may still make it one; an onset in the last shot's window that
                # failed its level test is its echo, and no later shot brings it back
                self._held.append((onset, frame, t_frame))
        self.audio_rejected += 1
        return []

    def _shot(self, onset: AudioOnset, frame: int, t_frame: int, best: tuple[float, int, int] | None,
              rule: Rule) -> ShotDecision:
        a = onset.confidence
        if best is not None:
            v, f, t = best
            self._claimed.append(f)
            conf = 1.0 - (1.0 - a) * (1.0 - v)
            return ShotDecision(f, t, round(conf, 4), {"video": round(v, 4), "audio": round(a, 4)}, rule)
        self._claimed.append(frame)
        return ShotDecision(frame, t_frame, round(a, 4), {"audio": round(a, 4)}, rule)

    def _in_incident(self, onset: AudioOnset, shot: AudioOnset | None) -> bool:
        """Whether ``onset`` is near the confirmed ``shot`` in time and about as loud (an echo is quieter)."""
        return (shot is not None and abs(onset.t_ns - shot.t_ns) <= self._incident_ns
                and onset.level >= shot.level - self._drop)

    def _incident_before(self, shot: AudioOnset, shot_frame: int) -> list[ShotDecision]:
        """The held onsets within ``incident_s`` before the confirmed ``shot`` (which lands on
        ``shot_frame``), as shots, oldest first; one marker per frame."""
        out = []
        while self._held:
            onset, frame, t_frame = self._held.popleft()
            if self._in_incident(onset, shot) and frame != shot_frame and frame not in self._claimed:
                self.incident_shots += 1
                self.audio_rejected -= 1
                out.append(self._shot(onset, frame, t_frame, None, "incident"))
        return out


__all__ = ["Fusion", "FusionConfig", "Policy", "Rule", "ShotDecision"]
