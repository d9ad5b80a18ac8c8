from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bodycam.device.detect.events import EventConfig, ShotTracker, track_scores
from bodycam.device.errors import ConfigError

FRAME_NS = 33_333_333


def run(scores: list[float], **kw: float) -> list[int]:
    tracker = ShotTracker(kw.pop("threshold", 0.5), **kw)
    n = len(scores)
    return [d.frame for d in track_scores(range(n), [i * FRAME_NS for i in range(n)], scores, tracker)]


def test_single_flash_gives_one_marker_at_the_peak_frame() -> None:
    assert run([0.0, 0.1, 0.9, 0.7, 0.2, 0.0]) == [2]


def test_two_frame_flash_plateau_is_one_shot_at_its_first_frame() -> None:
    assert run([0.0, 0.8, 0.8, 0.1]) == [1]


def test_rapid_fire_every_three_frames_gives_one_marker_per_shot() -> None:
    scores = [0.0] * 20
    for f in (3, 6, 9, 12):
        scores[f] = 0.95
        scores[f + 1] = 0.6
    assert run(scores) == [3, 6, 9, 12]


def test_hysteresis_needs_a_dip_below_rearm() -> None:
    # second peak without a dip below rearm=0.35 is the same event
    assert run([0.0, 0.9, 0.5, 0.8, 0.5, 0.0]) == [1]
    assert run([0.0, 0.9, 0.2, 0.8, 0.2, 0.0]) == [1, 3]


def test_refractory_period_suppresses_close_peaks() -> None:
    assert run([0.0, 0.9, 0.1, 0.9, 0.0], refractory_s=0.1) == [1]
    assert run([0.0, 0.9, 0.1, 0.9, 0.0], refractory_s=0.05) == [1, 3]


def test_below_threshold_never_fires_and_peak_at_end_is_flushed() -> None:
    assert run([0.4, 0.45, 0.49]) == []
    assert run([0.0, 0.2, 0.9]) == [2]


def test_detection_carries_time_and_confidence() -> None:
    tracker = ShotTracker(0.5)
    dets = track_scores(range(3), [0, 10, 20], [0.1, 0.77, 0.1], tracker)
    assert len(dets) == 1 and dets[0].t_ns == 10 and dets[0].confidence == pytest.approx(0.77)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"events\.threshold"):
        EventConfig(threshold=1.5)
    assert ShotTracker.from_config(EventConfig(), 0.6).threshold == 0.6
    assert ShotTracker.from_config(EventConfig(threshold=0.7), 0.6).threshold == 0.7


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=60))
def test_markers_are_ordered_above_threshold_and_spaced(scores: list[float]) -> None:
    frames = run(scores, refractory_s=0.06)
    assert frames == sorted(set(frames))
    for f in frames:
        assert scores[f] >= 0.5
    for a, b in itertools.pairwise(frames):
        assert (b - a) * FRAME_NS >= 0.06e9


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_score_is_ignored_and_counted(bad: float) -> None:
    """NaN fails every comparison, so it passed as a peak (a Detection with confidence NaN, a marker that
    cannot be made); inf would be a shot of confidence inf. Ignored as if the frame were not scored."""
    tracker = ShotTracker(0.5)
    scores = [0.1, 0.1, bad, 0.1, 0.1]
    assert track_scores(range(5), [i * FRAME_NS for i in range(5)], scores, tracker) == []
    assert tracker.non_finite == 1
    # inside a flash it neither adds a shot nor loses the real one
    tracker = ShotTracker(0.5)
    scores = [0.1, 0.9, bad, 0.95, 0.2, bad, 0.1]
    found = track_scores(range(7), [i * FRAME_NS for i in range(7)], scores, tracker)
    assert [(d.frame, d.confidence) for d in found] == [(3, 0.95)] and tracker.non_finite == 2


def test_time_going_backwards_ends_the_refractory_period_instead_of_suppressing() -> None:
    tracker = ShotTracker(0.5, refractory_s=0.06)
    t = 10_000_000_000
    first = track_scores([0, 1, 2], [t, t + FRAME_NS, t + 2 * FRAME_NS], [0.1, 0.95, 0.1], tracker)
    assert [d.t_ns for d in first] == [t + FRAME_NS]
    back = t - 5_000_000_000  # the sensor clock reset 5 s back
    again = track_scores([3, 4, 5], [back, back + FRAME_NS, back + 2 * FRAME_NS], [0.1, 0.95, 0.1], tracker)
    assert [d.t_ns for d in again] == [back + FRAME_NS] and tracker.time_went_back == 1
    # from the new shot on, the refractory period holds as before: a peak 20 ms after it is suppressed
    s0 = back + FRAME_NS
    times = [s0 + 10_000_000, s0 + 20_000_000, s0 + 30_000_000]
    assert track_scores([6, 7, 8], times, [0.1, 0.95, 0.1], tracker) == []
