"""Shot event tracking: per-frame scores in, one detection per shot out.

The detector scores every frame (the window's target frame, see
``InputSpec.target_offset``). :class:`ShotTracker` turns that score stream into
discrete shots:

* **threshold**: a frame can only be a shot if its score reaches ``threshold``;
* **peak**: it must be a local maximum (>= the previous frame, > the next), so
  the marker lands on the frame of the flash, not where the score first rises
  (this costs one frame of look-ahead);
* **hysteresis**: after a shot, the score must fall below ``rearm`` before the
  next one counts, so a 2-frame flash is one shot, while rapid fire, whose
  score dips between shots, gives one marker per shot;
* **refractory**: no two shots closer than ``refractory_s`` (shots in a burst
  are >= ~100 ms apart; a flash is <= 2 frames).

A score that is not a finite number (NaN, inf: a float-output model gone wrong) is ignored as if the
frame had not been scored (counted in ``non_finite``); NaN fails every comparison and would otherwise
pass as a peak. Sensor time that goes backwards (a camera or clip whose timestamps reset) ends the
refractory period (counted in ``time_went_back``, logged): it would otherwise suppress every shot until
time caught up with the last one.

The same class is used by the firmware loop and by ``bodycam-model evaluate``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from bodycam.device.settings import require

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventConfig:
    threshold: float | None = None  # None: the model sidecar's default threshold
    rearm: float = 0.35
    refractory_s: float = 0.06

    def __post_init__(self) -> None:
        if self.threshold is not None:
            require(0.0 < self.threshold < 1.0, "events.threshold", f"{self.threshold} must be in (0, 1)")
        require(0.0 <= self.rearm < 1.0, "events.rearm", f"{self.rearm} must be in [0, 1)")
        require(0.0 <= self.refractory_s <= 5.0, "events.refractory_s", f"{self.refractory_s} must be in [0, 5]")


@dataclass(frozen=True, slots=True)
class Detection:
    """A detected shot at one frame."""

    frame: int
    t_ns: int
    confidence: float


class ShotTracker:
    """Turns an in-order stream of (frame, t_ns, score) into shot detections."""

    def __init__(self, threshold: float, rearm: float = 0.35, refractory_s: float = 0.06) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold {threshold} must be in (0, 1)")
        self.threshold = threshold
        self.rearm = min(rearm, threshold)
        self.refractory_ns = int(refractory_s * 1e9)
        self._prev: tuple[int, int, float] | None = None  # the frame before the candidate
        self._cand: tuple[int, int, float] | None = None  # the frame whose peak-ness is pending
        self._armed = True
        self._last_shot_ns: int | None = None
        self.non_finite = 0  # scores ignored because they were NaN or infinite
        self.time_went_back = 0  # times the sensor time went backwards

    @classmethod
    def from_config(cls, cfg: EventConfig, default_threshold: float) -> ShotTracker:
        threshold = cfg.threshold if cfg.threshold is not None else default_threshold
        return cls(threshold, cfg.rearm, cfg.refractory_s)

    def update(self, frame: int, t_ns: int, score: float) -> Detection | None:
        """Feed the next frame's score; returns a detection for the *previous* frame, if any."""
        score = float(score)
        if not math.isfinite(score):
            if not self.non_finite:
                log.warning("shot tracker: frame %d scored %r: ignored (and every such score after it, counted)",
                            frame, score)
            self.non_finite += 1
            return None
        last_t = self._cand[1] if self._cand is not None else self._last_shot_ns
        went_back = last_t is not None and t_ns < last_t
        nxt = (frame, t_ns, score)
        found = self._decide(nxt)  # the frame before the jump, on its own timeline
        if went_back:  # a new timeline: no shot on it yet (the refractory period cannot span the jump)
            log.warning("shot tracker: sensor time went back %.3f s (frame %d): the refractory period ends",
                        ((last_t or 0) - t_ns) / 1e9, frame)
            self.time_went_back += 1
            self._last_shot_ns = None
        self._prev, self._cand = self._cand, nxt
        return found

    def flush(self) -> Detection | None:
        """End of stream: decide the last pending frame (as if followed by a score of 0)."""
        if self._cand is None:
            return None
        found = self._decide(None)
        self._prev, self._cand = self._cand, None
        return found

    def reset(self) -> None:
        self._prev = self._cand = None
        self._armed = True
        self._last_shot_ns = None

    def _decide(self, nxt: tuple[int, int, float] | None) -> Detection | None:
        cand = self._cand
        if cand is None:
            return None
        frame, t_ns, s = cand
        prev_s = self._prev[2] if self._prev is not None else 0.0
        next_s = nxt[2] if nxt is not None else 0.0
        if s < self.rearm:
            self._armed = True
        if not self._armed or s < self.threshold or s <= prev_s or s < next_s:
            return None
        if self._last_shot_ns is not None and 0 <= t_ns - self._last_shot_ns < self.refractory_ns:
            return None
        self._armed = False
        self._last_shot_ns = t_ns
        return Detection(frame, t_ns, s)


def track_scores(
    frames: list[int] | range, times_ns: list[int], scores: list[float], tracker: ShotTracker
) -> list[Detection]:
    """Run ``tracker`` over a whole score sequence (offline evaluation helper)."""
    out: list[Detection] = []
    for f, t, s in zip(frames, times_ns, scores, strict=True):
        d = tracker.update(f, t, s)
        if d is not None:
            out.append(d)
    d = tracker.flush()
    if d is not None:
        out.append(d)
    return out
