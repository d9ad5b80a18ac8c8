"""Evaluate's bookkeeping on hand-made truth and markers (no model)."""

from __future__ import annotations

from bodycam.hw_sim.truth import AudioInfo, Distractor, GeneratorInfo, Shot, Truth, VideoInfo
from bodycam.model_compile.evaluate import attribute, pick_threshold, score_clip, summarise

FPS = 30.0


def _truth(frames: int, shots: list[tuple[int, str]], distractors: list[tuple[str, int, int]]) -> Truth:
    return Truth(
        clip="c.mp4",
        generator=GeneratorInfo("bodycam-sim", "0", 1, "street"),
        video=VideoInfo(640, 360, FPS, frames, frames / FPS),
        audio=AudioInfo(48000, int(frames / FPS * 48000)),
        shots=tuple(
            Shot(frame=f, t_s=f / FPS, audio_sample=round(f / FPS * 48000), muzzle_xy=(1.0, 1.0), shooter=who,
                 flash_frames=1, intensity=1.0, occluded=False)
            for f, who in shots
        ),
        distractors=tuple(Distractor(k, a, b, a / FPS, (b + 1) / FPS) for k, a, b in distractors),
    )


def test_attribution_prefers_a_visible_distractor_and_uses_the_margin() -> None:
    t = _truth(600, [], [("siren", 0, 500), ("lightbar_strobe", 100, 150), ("photo_flash", 300, 300)])
    assert attribute(120, t) == "lightbar_strobe"  # under a siren too
    assert attribute(302, t) == "photo_flash"  # 2 frames after: still attributed
    assert attribute(303, t) == "siren"  # only the siren left
    assert attribute(550, t) == "none"


def test_summary_counts_false_alarms_per_hour_on_shot_free_clips_only() -> None:
    with_shots = _truth(900, [(100, "wearer"), (400, "other")], [("fast_pan", 600, 640)])
    free = _truth(1800, [], [("lightbar_strobe", 50, 90), ("sun_glint", 1000, 1001)])  # 60 s
    results = [
        score_clip("a.mp4", with_shots, [101, 620]),  # one hit (+1 frame), one miss, one false
        score_clip("b.mp4", free, [60, 1003, 1500]),
    ]
    s = summarise(results)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 4, 1)
    assert s["recall"] == 0.5 and s["precision"] == 0.2
    assert s["timing_error_frames"] == {"median": 1.0, "max": 1, "mean_signed": 1.0}
    assert s["recall_by_shooter"]["wearer"]["found"] == 1 and s["recall_by_shooter"]["other"]["found"] == 0
    fa = s["false_alarms_shot_free"]
    assert fa["clips"] == 1 and fa["count"] == 3
    assert fa["per_hour"] == 180.0 and fa["per_10_min"] == 30.0
    assert fa["by_kind"] == {"lightbar_strobe": 1, "none": 1, "sun_glint": 1}
    assert s["false_markers_all_clips"]["by_kind"]["fast_pan"] == 1


def test_threshold_pick_minimises_errors_and_takes_the_middle_of_ties() -> None:
    sweep = [
        {"threshold": 0.5, "fp": 5.0, "fn": 0.0},
        {"threshold": 0.6, "fp": 1.0, "fn": 0.0},
        {"threshold": 0.7, "fp": 0.0, "fn": 1.0},
        {"threshold": 0.8, "fp": 0.0, "fn": 1.0},
        {"threshold": 0.9, "fp": 0.0, "fn": 4.0},
    ]
    assert pick_threshold(sweep) == 0.7
