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


def run(video: dict[int, float], onsets: list[tuple[float, float]] | list[tuple[float, float, float]], *,
        frames: int = 90, audio_live: bool = True, policy: str = "fused",
        cfg: FusionConfig = RULES) -> tuple[list[ShotDecision], Fusion]:
    """Frames 0..frames-1 with the given scores (0.02 elsewhere); onsets (time s, confidence[, level
    in log10 power]) arrive ~150 ms late, as from the audio detector."""
    fusion = Fusion(replace(cfg, policy=policy), audio_alone=0.6)  # type: ignore[arg-type]
    tracker = ShotTracker(threshold=0.9)
    out: list[ShotDecision] = []
    queue = sorted(onsets)
    for f in range(frames):
        det = tracker.update(f, t_of(f), video.get(f, 0.02))
        fusion.video(f, t_of(f), video.get(f, 0.02), det)
        ready = [o for o in queue if o[0] + 0.15 <= f / FPS]
        queue = [o for o in queue if o not in ready]
        fusion.audio([onset(*o) for o in ready])
        out += fusion.decide(audio_live)
    fusion.audio([onset(*o) for o in queue])
    out += fusion.decide(audio_live, final=True)
    return out, fusion


def onset(t: float, confidence: float, level: float = 0.0) -> AudioOnset:
    return AudioOnset(int(t * S), confidence, level)


def test_strobe_without_sound_is_no_shot() -> None:
    out, fusion = run({30: 0.99, 45: 0.98, 60: 0.99}, [])
    assert out == [] and fusion.suppressed_video == 3


def test_sound_without_a_visible_flash_lands_on_the_onset_frame() -> None:
    out, _ = run({}, [(1.01, 0.93)])  # 1.01 s is inside frame 30 (1.000-1.033 s)
    assert out == [ShotDecision(30, t_of(30), 0.93, {"audio": 0.93}, "heard")]


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
    # the incident rule is off by default; incident_s = 8 turns on the setting tune-fusion chose: within
    # 8 s of a confirmed shot a sound from 0.7 counts, unless 6 dB quieter than that shot
    sounds = [(1.01, 0.95), (3.01, 0.75, -0.5), (8.51, 0.75)]
    assert [d.frame for d in run({}, sounds, frames=300, cfg=replace(shipped, audio_alone=0.9))[0]] == [30]
    chosen = replace(shipped, audio_alone=0.9, incident_s=8.0)
    assert chosen.incident_audio == 0.7 and chosen.incident_drop_db == 6.0
    out, _ = run({}, [(1.01, 0.95), (3.01, 0.5, 0.0), (3.51, 0.4, 0.0), (4.01, 0.5, -0.8)], frames=150, cfg=chosen)
    assert [(d.frame, d.rule) for d in out] == [(30, "heard")]  # under 0.7, or too quiet
    out, _ = run({}, sounds, frames=300, cfg=chosen)
    assert [(d.frame, d.rule) for d in out] == [(30, "heard"), (90, "incident"), (255, "incident")]


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"fusion\.policy"):
        FusionConfig(policy="both")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"fusion\.incident_s"):
        FusionConfig(incident_s=-1)
    with pytest.raises(ConfigError, match=r"fusion\.incident_audio"):
        FusionConfig(incident_audio=1.0)
    with pytest.raises(ConfigError, match=r"fusion\.incident_drop_db"):
        FusionConfig(incident_drop_db=-3)


#: the incident rule on the rules above: within 4 s of a confirmed shot, a sound from 0.4 counts
INCIDENT = replace(RULES, incident_s=4.0, incident_audio=0.4, incident_drop_db=6.0)


def test_a_weaker_sound_after_a_confirmed_shot_counts_within_the_incident() -> None:
    shots = [(1.01, 0.93), (2.51, 0.5), (3.51, 0.45)]  # heard clearly, then two weaker bangs
    out, fusion = run({}, shots, frames=150, cfg=INCIDENT)
    assert [(d.frame, d.rule, d.evidence) for d in out] == [
        (30, "heard", {"audio": 0.93}), (75, "incident", {"audio": 0.5}), (105, "incident", {"audio": 0.45})]
    assert fusion.incident_shots == 2 and fusion.audio_rejected == 0
    out, fusion = run({}, shots, frames=150)  # the rule off: only the clear one
    assert [d.frame for d in out] == [30] and fusion.audio_rejected == 2


def test_weaker_sounds_before_a_confirmed_shot_are_marked_when_it_is_confirmed() -> None:
    fusion = Fusion(INCIDENT, audio_alone=0.6)
    out: list[ShotDecision] = []
    decided_at: dict[int, int] = {}
    queue = [onset(0.51, 0.5), onset(1.01, 0.45), onset(2.51, 0.95)]
    for f in range(120):
        fusion.video(f, t_of(f), 0.02, None)
        ready = [o for o in queue if o.t_ns + 0.15 * S <= t_of(f)]
        queue = [o for o in queue if o not in ready]
        fusion.audio(ready)
        for d in fusion.decide(True):
            out.append(d)
            decided_at[d.frame] = f
    # in time order, each on its own onset frame; the earlier two decided with the confirmed shot
    assert [(d.frame, d.rule) for d in out] == [(15, "incident"), (30, "incident"), (75, "heard")]
    assert decided_at[15] == decided_at[30] == decided_at[75]
    assert fusion.incident_shots == 2 and fusion.audio_rejected == 0


def test_the_incident_has_limits_in_time_score_and_level() -> None:
    out, _ = run({}, [(1.01, 0.93), (5.51, 0.55)], frames=200, cfg=INCIDENT)
    assert [d.frame for d in out] == [30]  # 4.5 s later: outside the incident
    out, _ = run({}, [(1.01, 0.93), (2.01, 0.35)], cfg=INCIDENT)
    assert [d.frame for d in out] == [30]  # under incident_audio
    out, fusion = run({}, [(1.01, 0.93, 0.0), (1.41, 0.5, -0.7)], cfg=INCIDENT)
    assert [d.frame for d in out] == [30] and fusion.audio_rejected == 1  # 7 dB quieter: an echo, not a shot
    out, _ = run({}, [(1.01, 0.93, 0.0), (1.41, 0.5, -0.5)], cfg=INCIDENT)
    assert [d.frame for d in out] == [30, 42]  # 5 dB quieter: a shot


def test_weak_sounds_never_confirm_each_other() -> None:
    """Only a shot confirmed by the other rules opens an incident: a run of door slams is no shooting."""
    out, fusion = run({}, [(t + 0.01, 0.55) for t in (0.5, 1.0, 1.5, 2.0, 2.5)], cfg=INCIDENT)
    assert out == [] and fusion.audio_rejected == 5 and fusion.incident_shots == 0


def test_a_supported_shot_opens_an_incident_too() -> None:
    out, _ = run({30: 0.97}, [(1.01, 0.4), (2.01, 0.45)], cfg=INCIDENT)
    assert [(d.frame, d.rule) for d in out] == [(30, "flash"), (60, "incident")]


def test_the_picker_keeps_onsets_from_the_lowest_score_a_rule_accepts() -> None:
    assert FusionConfig(audio_support=0.5).pick_threshold(0.9) == 0.5
    assert FusionConfig(audio_support=0.5, incident_s=4, incident_audio=0.3).pick_threshold(0.9) == 0.3
    assert FusionConfig(audio_alone=0.4, audio_support=0.5).pick_threshold(0.9) == 0.4
    assert FusionConfig(policy="audio", incident_s=4, incident_audio=0.3).pick_threshold(0.9) == 0.9


def test_an_echo_of_a_confirmed_shot_stays_out_when_a_later_shot_is_confirmed() -> None:
    """An onset in a confirmed shot's window that failed its level test is that shot's echo: a later,
    quieter confirmed shot does not bring it back (nor put it out of time order)."""
    out, fusion = run({}, [(1.01, 0.93, 0.0), (1.31, 0.5, -0.8), (2.01, 0.93, -0.3)], cfg=INCIDENT)
    assert [(d.frame, d.rule) for d in out] == [(30, "heard"), (60, "heard")]
    assert fusion.incident_shots == 0 and fusion.audio_rejected == 1


def test_a_held_onset_never_shares_a_frame_with_the_shot_that_confirms_it() -> None:
    low = replace(INCIDENT, incident_audio=0.2)  # under audio_support: a weak sound on the flash frame is held
    out, _ = run({30: 0.97}, [(1.002, 0.25), (1.03, 0.4)], cfg=low)
    assert [(d.frame, d.rule) for d in out] == [(30, "flash")]
    out, _ = run({}, [(0.51, 0.25), (1.01, 0.95)], cfg=low)  # on frames of their own: both
    assert [(d.frame, d.rule) for d in out] == [(15, "incident"), (30, "heard")]
