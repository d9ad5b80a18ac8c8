"""Event matching used by evaluate and by bodycam-sim run, on hand-made truth/marker pairs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bodycam.hw_sim.scoring import score_events


def test_exact_and_within_tolerance_markers_count() -> None:
    s = score_events([10, 50, 90], [10, 52, 88])
    assert (s.tp, s.fp, s.fn) == (3, 0, 0)
    assert s.timing_errors == (0, 2, -2)
    assert s.precision == 1.0 and s.recall == 1.0


def test_marker_three_frames_off_is_a_false_alarm_and_a_miss() -> None:
    s = score_events([10], [13])
    assert (s.tp, s.fp, s.fn) == (0, 1, 1)
    assert s.unmatched_markers == (13,) and s.missed == (10,)
    assert s.precision == 0.0 and s.recall == 0.0


def test_one_marker_per_shot_extra_markers_are_false() -> None:
    s = score_events([20], [19, 20, 21])
    assert (s.tp, s.fp, s.fn) == (1, 2, 0)
    assert s.matched == ((20, 20),)
    assert s.precision == pytest.approx(1 / 3)


def test_greedy_matching_in_time_order() -> None:
    # Shot 10 takes marker 12 (its only candidate), so 14 is left for shot 13.
    s = score_events([10, 13], [12, 14])
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    assert s.matched == ((10, 12), (13, 14))
    # A shot takes its nearest marker; ties go to the earlier marker.
    assert score_events([10], [8, 11]).matched == ((10, 11),)
    assert score_events([10], [9, 11]).matched == ((10, 9),)
    # Rapid fire 3 frames apart, each marker on its shot: both match.
    s2 = score_events([10, 13], [10, 13])
    assert (s2.tp, s2.fp, s2.fn) == (2, 0, 0)


def test_empty_inputs() -> None:
    assert score_events([], []).precision == 1.0
    s = score_events([], [5])
    assert (s.fp, s.precision) == (1, 0.0)
    s = score_events([5], [])
    assert (s.fn, s.recall) == (1, 0.0)


def test_scores_add_up() -> None:
    a = score_events([10], [10])
    b = score_events([30], [40])
    t = a + b
    assert (t.tp, t.fp, t.fn) == (1, 1, 1)
    assert t.precision == 0.5 and t.recall == 0.5


def test_negative_tolerance_is_rejected() -> None:
    with pytest.raises(ValueError):
        score_events([1], [1], tolerance=-1)


@given(
    st.lists(st.integers(0, 500), unique=True, max_size=20).map(sorted),
    st.lists(st.integers(0, 500), max_size=20),
)
def test_counts_are_consistent(truth: list[int], markers: list[int]) -> None:
    s = score_events(truth, markers)
    assert s.tp + s.fn == len(truth)
    assert s.tp + s.fp == len(markers)
    assert all(abs(e) <= 2 for e in s.timing_errors)
    assert len({m for _, m in s.matched}) <= s.tp
