"""Event-level scoring of detected shot markers against the truth.

A marker counts as a true positive when it lies within ``tolerance`` frames of a true
shot; each shot takes at most one marker and each marker at most one shot. Matching is
greedy one-to-one in time order: each shot, earliest first, takes the nearest marker not
yet taken within the tolerance (ties: the earlier marker). Every marker left over is a
false positive, every shot left without one a miss.

Used by ``bodycam-model evaluate`` and by the simulator's own run scoring.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EventScore:
    """Counts and timing of one scoring pass.

    ``timing_errors``: ``marker - shot`` in frames for every matched pair, in shot order.
    ``matched``: the ``(shot_frame, marker_frame)`` pairs; ``unmatched_markers``: the false
    positives' frames; ``missed``: the shots without a marker.
    """

    tp: int
    fp: int
    fn: int
    timing_errors: tuple[int, ...]
    matched: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    unmatched_markers: tuple[int, ...] = field(default=(), repr=False)
    missed: tuple[int, ...] = field(default=(), repr=False)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 1.0 when there are no markers at all."""
        n = self.tp + self.fp
        return self.tp / n if n else 1.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 1.0 when there are no shots at all."""
        n = self.tp + self.fn
        return self.tp / n if n else 1.0

    def __add__(self, other: EventScore) -> EventScore:
        return EventScore(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.timing_errors + other.timing_errors,
            self.matched + other.matched,
            self.unmatched_markers + other.unmatched_markers,
            self.missed + other.missed,
        )


EMPTY_SCORE = EventScore(0, 0, 0, ())


def score_events(truth_frames: list[int], marker_frames: list[int], tolerance: int = 2) -> EventScore:
    """Match markers to true shots (greedy one-to-one within ``tolerance`` frames)."""
    if tolerance < 0:
        raise ValueError(f"tolerance {tolerance} must be >= 0")
    shot_used: dict[int, int] = {}
    marker_used: set[int] = set()
    for i in sorted(range(len(truth_frames)), key=lambda k: truth_frames[k]):
        t = truth_frames[i]
        free = [(abs(m - t), m, j) for j, m in enumerate(marker_frames) if j not in marker_used and abs(m - t) <= tolerance]
        if free:
            _, _, j = min(free)
            shot_used[i] = j
            marker_used.add(j)
    matched = tuple((truth_frames[i], marker_frames[shot_used[i]]) for i in sorted(shot_used))
    return EventScore(
        tp=len(matched),
        fp=len(marker_frames) - len(marker_used),
        fn=len(truth_frames) - len(shot_used),
        timing_errors=tuple(m - t for t, m in matched),
        matched=matched,
        unmatched_markers=tuple(m for j, m in enumerate(marker_frames) if j not in marker_used),
        missed=tuple(t for i, t in enumerate(truth_frames) if i not in shot_used),
    )
