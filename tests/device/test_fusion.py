"""Fusion rules on hand-made score streams (30 fps video scores, audio onsets)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bodycam.device.detect.audio_detector import AudioOnset
from bodycam.device.detect.events import ShotTracker
from bodycam.device.detect.fusion import Fusion, FusionConfig, ShotDecision
from bodycam.device.errors import ConfigError

FPS = 30
S = 1_000_000_000
#: the rules below are checked with these parameters (the defaults before the tuned operating point)
RULES = FusionConfig(audio_support=0.3, video_support=0.5, window_frames=2)


def t_of(frame: int) -> int:
    return frame * S // FPS


def run(video: dict[int, float], onsets: list[tuple[float, float]], *, frames: int = 90, audio_live: bool = True,
        policy: str = "fused", cfg: FusionConfig = RULES) -> tuple[list[ShotDecision], Fusion]:
    """Frames 0..frames-1 with the given scores (0.02 elsewhere); onsets (time s, confidence) arrive
    ~150 ms late, as from the audio detector."""
    fusion = Fusion(replace(cfg, policy=policy), audio_alone=0.6)  # type: ignore[arg-type]
    tracker = ShotTracker(threshold=0.9)
    out: list[ShotDecision] = []
    queue = sorted(onsets)
    for f in range(frames):
        det = tracker.update(f, t_of(f), video.get(f, 0.02))
        fusion.video(f, t_of(f), video.get(f, 0.02), det)
        ready = [o for o in queue if o[0] + 0.15 <= f / FPS]
        queue = [o for o in queue if o not in ready]
        fusion.audio([AudioOnset(int(t * S), c) for t, c in ready])
        out += fusion.decide(audio_live)
    fusion.audio([AudioOnset(int(t * S), c) for t, c in queue])
    out += fusion.decide(audio_live, final=True)
    return out, fusion


def test_strobe_without_sound_is_no_shot() -> None:
    out, fusion = run({30: 0.99, 45: 0.98, 60: 0.99}, [])
    assert out == [] and fusion.suppressed_video == 3


def test_sound_without_a_visible_flash_lands_on_the_onset_frame() -> None:
    out, _ = run({}, [(1.01, 0.93)])  # 1.01 s is inside frame 30 (1.000-1.033 s)
    assert out == [ShotDecision(30, t_of(30), 0.93, {"audio": 0.93})]


def test_flash_and_sound_are_one_shot_on_the_flash_frame() -> None:
    out, fusion = run({31: 0.97}, [(1.01, 0.95)])  # flash one frame after the onset's frame
    assert len(out) == 1
    d = out[0]
    assert d.frame == 31 and d.t_ns == t_of(31)
    assert d.evidence == {"video": 0.97, "audio": 0.95}
    assert d.confidence == pytest.approx(1 - 0.03 * 0.05, abs=1e-4)
    assert fusion.suppressed_video == 1  # the tracker's own detection is not a second marker


def test_weak_sound_needs_a_flash() -> None:
    out, fusion = run({}, [(1.01, 0.45)])
    assert out == [] and fusion.audio_rejected == 1
    out, _ = run({30: 0.8}, [(1.01, 0.45)])
    assert [(d.frame, d.evidence) for d in out] == [(30, {"video": 0.8, "audio": 0.45})]


def test_a_flash_too_far_from_the_sound_does_not_support_it() -> None:
    out, _ = run({40: 0.99}, [(1.01, 0.45)])
    assert out == []


def test_rapid_fire_is_one_marker_per_round_on_distinct_frames() -> None:
    # 15 rounds/s: a flash every other frame, a bang 3 ms into each of those frames
    flashes = {f: 0.97 for f in (30, 32, 34, 36)}
    out, _ = run(flashes, [(f / FPS + 0.003, 0.9) for f in flashes])
    assert [d.frame for d in out] == [30, 32, 34, 36]
    # without visible flashes the rounds still land each on its own onset frame
    out, _ = run({}, [(f / FPS + 0.003, 0.9) for f in flashes])
    assert [d.frame for d in out] == [30, 32, 34, 36]


def test_without_live_audio_fused_falls_back_to_video() -> None:
    out, _ = run({30: 0.99, 60: 0.98}, [], audio_live=False)
    assert [(d.frame, d.evidence) for d in out] == [(30, {"video": 0.99}), (60, {"video": 0.98})]


def test_video_policy_ignores_sound_and_audio_policy_ignores_flashes() -> None:
    out, _ = run({30: 0.99}, [(2.01, 0.95)], policy="video")
    assert [d.frame for d in out] == [30]
    out, _ = run({30: 0.99}, [(2.01, 0.95), (2.5, 0.5)], policy="audio")
    assert [(d.frame, d.evidence) for d in out] == [(60, {"audio": 0.95})]


def test_an_onset_waits_until_the_video_has_seen_past_it() -> None:
    fusion = Fusion(RULES, audio_alone=0.6)
    for f in range(31):
        fusion.video(f, t_of(f), 0.02, None)
    fusion.audio([AudioOnset(int(1.01 * S), 0.9)])
    assert fusion.decide(True) == []  # frame 30 + 2 not scored yet
    for f in (31, 32):
        fusion.video(f, t_of(f), 0.9 if f == 32 else 0.02, None)
    assert [(d.frame, d.evidence) for d in fusion.decide(True)] == [(32, {"video": 0.9, "audio": 0.9})]


def test_the_shipped_operating_point_wants_a_strong_flash_close_to_a_clear_sound() -> None:
    """The defaults (chosen by tune-fusion on validation clips): support 0.5 / 0.9 within 1 frame."""
    shipped = FusionConfig()
    assert run({30: 0.99}, [(1.01, 0.55)], cfg=shipped)[0][0].evidence == {"video": 0.99, "audio": 0.55}
    assert run({30: 0.99}, [(1.01, 0.45)], cfg=shipped)[0] == []  # a weak sound, even with a flash
    assert run({30: 0.8}, [(1.01, 0.55)], cfg=shipped)[0] == []  # a weak flash does not support it
    assert run({32: 0.99}, [(1.01, 0.55)], cfg=shipped)[0] == []  # two frames away: too far
    assert [d.frame for d in run({}, [(1.01, 0.93)], cfg=shipped)[0]] == [30]  # heard clearly (>= 0.6 here): alone


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"fusion\.policy"):
        FusionConfig(policy="both")  # type: ignore[arg-type]
