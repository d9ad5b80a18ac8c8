"""Fusion traces and ``tune-fusion``: a replay is the loop, and tuning never sees held-out families.

The central claim of :mod:`bodycam.model_compile.fusion_trace` is that a trace recorded with one
fusion setting, replayed with another, gives exactly the markers the firmware loop gives when it
runs with that other setting. Checked here on clips with shots, sound and distractors made by the
real generator, against real loop runs (the real video and audio models).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bodycam.device.detect.audio_model_spec import default_audio_model_path
from bodycam.device.detect.fusion import FusionConfig
from bodycam.device.errors import BodycamError, UsageError
from bodycam.hw_sim.truth import truth_path_for
from bodycam.model_compile.cli import _fusion_setting
from bodycam.model_compile.cli import main as model_main
from bodycam.model_compile.fusion_trace import Trace, record, replay, rescore_audio
from bodycam.model_compile.fusion_tune import (
    ECHO_GRID,
    Score,
    choose,
    incident_settings,
    settings,
    validation_clips,
)
from tests.model_compile.conftest import MakeClip

S = 1_000_000_000

#: settings far from the default in every direction (the picker keeps weak onsets, or only strong ones)
OTHER_SETTINGS = (
    FusionConfig(audio_alone=0.5, audio_support=0.1, video_support=0.3, window_frames=3),
    FusionConfig(audio_alone=0.95, audio_support=0.7, video_support=0.9, window_frames=1),
    # a tight echo gate: onsets 2 dB quieter than the last one within 1 s are echoes
    FusionConfig(audio_alone=0.5, audio_support=0.1, video_support=0.3, window_frames=3, echo_drop_db=2.0),
    FusionConfig(policy="audio", audio_alone=0.4),
    FusionConfig(policy="video"),
    # the incident rule wide open: weak onsets before and after a confirmed shot
    FusionConfig(audio_support=0.5, video_support=0.9, window_frames=1, incident_s=8.0, incident_audio=0.2,
                 incident_drop_db=20.0),
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, clip_maker: MakeClip) -> list[Path]:
    root = tmp_path_factory.mktemp("traced")
    return [clip_maker(root / f"c{seed}.mp4", seconds=4, shots=4, seed=seed) for seed in (8101, 8102)]


@pytest.mark.parametrize("other", OTHER_SETTINGS, ids=lambda c: f"{c.policy}-{c.audio_alone}-{c.audio_support}-{c.incident_s}")
def test_a_replay_with_another_setting_is_what_the_loop_does_with_it(clips: list[Path], other: FusionConfig) -> None:
    for clip in clips:
        trace = record(clip)  # recorded with the firmware's defaults
        assert replay(trace, FusionConfig()) == trace.markers
        loop = record(clip, fusion=other)  # the loop itself, run with the other setting
        assert replay(trace, other) == loop.markers, clip.name


def test_the_traced_clips_have_what_the_claim_needs(clips: list[Path]) -> None:
    # not a vacuous equality: shots are marked, and the settings disagree with each other
    traces = [record(c) for c in clips]
    assert sum(len(t.markers) for t in traces) >= 3
    assert all(t.hops and any(e[0] == "v" for e in t.events) for t in traces)
    results = {tuple(f for t in traces for f in replay(t, s)) for s in (FusionConfig(), *OTHER_SETTINGS)}
    assert len(results) >= 3
    incident = OTHER_SETTINGS[-1]  # the incident rule's replay is checked on clips where it changes markers
    assert any(replay(t, incident) != replay(t, replace(incident, incident_s=0.0)) for t in traces)


def test_a_trace_survives_its_file(tmp_path: Path, clips: list[Path]) -> None:
    trace = record(clips[0])
    trace.save(tmp_path / "t.json")
    back = Trace.load(tmp_path / "t.json")
    assert back == trace
    assert replay(back, OTHER_SETTINGS[0]) == replay(trace, OTHER_SETTINGS[0])
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(UsageError, match="not a fusion trace"):
        Trace.load(tmp_path / "bad.json")


def _index(root: Path, rows: list[tuple[str, bool]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = {"hold_out": {"scene": ["indoor"]},
            "clips": [{"path": p, "split": "heldout" if h else "train", "held_out": h, "families": {}} for p, h in rows]}
    (root / "index.json").write_text(json.dumps(data))
    return root


def test_tuning_never_takes_a_held_out_clip(tmp_path: Path) -> None:
    a = _index(tmp_path / "a", [("train/x.mp4", False), ("heldout/y.mp4", True)])
    b = _index(tmp_path / "b", [("heldout/z.mp4", True)])
    assert [p.name for p in validation_clips([a, b])] == ["x.mp4"]
    with pytest.raises(UsageError, match="no in-domain clips"):
        validation_clips([b])
    with pytest.raises(UsageError, match=r"no index\.json"):
        validation_clips([tmp_path / "nothing"])


def test_the_choice_is_the_best_recall_within_the_limits_else_the_fewest_false_alarms() -> None:
    a, b, c = (replace(FusionConfig(), audio_alone=x) for x in (0.5, 0.7, 0.9))
    rows = [(a, Score(100, 95, 10, 60.0, 5)),  # recall 0.95, 5 / h: over the limit
            (b, Score(100, 90, 2, 60.0, 1)),  # 0.90, precision in the shot clips 90/91, 1 / h: within
            (c, Score(100, 80, 0, 60.0, 0))]  # 0.80, within
    cfg, sc, met = choose(rows, 1.0, 0.97)
    assert (cfg, met) == (b, True) and sc.recall == 0.9
    # precision is over the clips with shots: shot-free false markers are the false-alarm rate's, counted once
    many_free = Score(100, 92, 5, 300.0, 5)  # 5 false alarms in 5 h, none in the shot clips
    assert many_free.precision < 0.97 and many_free.precision_with_shots == 1.0
    assert choose([*rows, (a, many_free)], 1.0, 0.97)[:2] == (a, many_free)
    in_shots = Score(100, 93, 4, 300.0, 1)  # 3 false markers among 96 in the shot clips: 0.969
    assert choose([*rows, (a, in_shots)], 1.0, 0.97)[0] == b
    cfg, sc, met = choose([*rows[:1], (c, Score(100, 80, 3, 60.0, 3))], 1.0, 0.97)
    assert (cfg, met) == (c, False)  # none within: the fewest false alarms per hour
    assert all(s.audio_support <= s.audio_alone for s in settings())


def test_the_fusion_option_takes_values_or_a_tune_result_and_says_what_is_wrong(tmp_path: Path) -> None:
    assert _fusion_setting("audio_alone=0.8,window_frames=3") == replace(FusionConfig(), audio_alone=0.8,
                                                                          window_frames=3)
    (tmp_path / "t.json").write_text(json.dumps({"chosen": {"audio_alone": 0.7, "audio_support": 0.2,
                                                            "video_support": 0.9, "window_frames": 1}}))
    assert _fusion_setting(str(tmp_path / "t.json")) == FusionConfig(audio_alone=0.7, audio_support=0.2,
                                                                     video_support=0.9, window_frames=1)
    with pytest.raises(UsageError, match="KEY=VALUE"):
        _fusion_setting("threshold=0.5")
    with pytest.raises(UsageError, match="audio_alone"):
        _fusion_setting("audio_alone=high")
    with pytest.raises(BodycamError, match=r"fusion\.audio_support"):
        _fusion_setting("audio_support=1.5")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(UsageError, match="no 'chosen' setting"):
        _fusion_setting(str(tmp_path / "x.json"))


def test_a_trace_without_the_audio_detector_is_not_replayed_as_fused(clips: list[Path]) -> None:
    video_only = record(clips[0], fusion=FusionConfig(policy="video"))
    assert replay(video_only, FusionConfig(policy="video")) == video_only.markers
    with pytest.raises(UsageError, match="without an audio detector"):
        replay(video_only, FusionConfig())


def test_tune_fusion_on_the_command_line(tmp_path: Path, clips: list[Path], clip_maker: MakeClip,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from bodycam.model_compile.fusion_tune import tune

    root = tmp_path / "val"
    (root / "train").mkdir(parents=True)
    free = clip_maker(tmp_path / "free.mp4", seconds=6, shots=0, seed=8109)
    for c in [*clips, free]:
        (root / "train" / c.name).symlink_to(c)
        truth_path_for(root / "train" / c.name).symlink_to(truth_path_for(c))
    _index(root, [(f"train/{c.name}", False) for c in clips])
    with pytest.raises(UsageError, match="no shot-free clips"):  # the false-alarm limit needs shot-free footage
        tune([root], workers=1)
    _index(root, [(f"train/{c.name}", False) for c in [*clips, free]])
    out = tmp_path / "tune.json"
    assert model_main(["tune-fusion", "--data", str(root), "--workers", "1", "--traces", str(tmp_path / "tr"),
                       "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    stage1 = FusionConfig(**res["stage1"])
    stage2 = FusionConfig(**res["stage2"])
    assert res["clips"] == 3 and len(res["sweep"]) == (len(settings()) + len(incident_settings(stage1))
                                                       + len([d for d in ECHO_GRID if d != stage2.echo_drop_db]))
    # stage three varies the echo gate only, at stage two's choice
    assert all(FusionConfig(**{k: r[k] for k in res["stage2"]}) == replace(stage2, echo_drop_db=r["echo_drop_db"])
               for r in res["sweep"][-(len(ECHO_GRID) - 1):])
    assert stage1.incident_s == 0 and all(r["incident_s"] == 0 for r in res["sweep"][:len(settings())])
    assert res["chosen_score"]["free_minutes"] == 0.1
    best = max(r["recall"] for r in res["sweep"] if r["fa_per_hour"] <= 1.0 and r["precision_with_shots"] >= 0.97)
    assert res["met"] and res["chosen_score"]["recall"] == best
    assert "chosen" in capsys.readouterr().out
    assert len(list((tmp_path / "tr").glob("*.json"))) == 3  # traces kept for the next run


def test_a_shot_confirmed_later_is_tagged_into_the_recording_on_its_own_frame(tmp_path: Path,
                                                                               clips: list[Path]) -> None:
    """The incident rule marks an earlier onset when a later shot confirms it: the camera has been
    recording since that later shot, with the pre-event buffer, so the earlier marker still lands in
    the recording, at its own time, and the chapters stay in time order."""
    from bodycam.device.config import AppConfig
    from bodycam.hw_sim.sim_run import SimOptions, run_clip

    incident = OTHER_SETTINGS[-1]
    rep = run_clip(SimOptions(clip=clips[0], out=tmp_path, config=replace(AppConfig(), fusion=incident), broker=None,
                              gnss=False))
    assert rep.error is None
    shots = [m for m in rep.stats.markers if m.kind == "gunshot"]
    rules = [str(m.extra["rule"]) if m.extra else "" for m in shots]
    first = min(m.t_mono_ns for m, r in zip(shots, rules, strict=True) if r in ("heard", "flash"))
    late = [m for m, r in zip(shots, rules, strict=True) if r == "incident" and m.t_mono_ns < first]
    assert late, "the clip gives an onset confirmed by a later shot (the claim needs one)"
    for m in late:
        # decided ~2 s after its time; on its own frame of the recording that the later shot started
        assert m.extra is not None and abs(m.t_mono_ns - int(m.extra["frame_index"]) * S / 30) < 1000
        assert m.media is not None and m.media.recording == rep.recordings[0]["recording"]
        assert m.media.frame == m.extra["frame_index"]
        lines = [json.loads(x) for x in (tmp_path / "recordings" / m.media.recording / "markers.jsonl")
                 .read_text().splitlines()]
        assert m.id in {x["id"] for x in lines}
    vtt = (tmp_path / "recordings" / rep.recordings[0]["recording"] / "chapters.vtt").read_text()
    starts = [line.split(" --> ")[0] for line in vtt.splitlines() if " --> " in line]
    assert starts == sorted(starts) and len(starts) >= len(shots)


def test_swapping_the_audio_models_scores_in_is_what_the_loop_traces(clips: list[Path]) -> None:
    # a trace whose audio model scored every hop 0 (another model), rescored with the shipped model,
    # is hop for hop the trace the loop records with the shipped model: scores, times, levels, calls
    for clip in clips:
        loop = record(clip)
        deaf = replace(loop, hops=[(t, 0.0, level, jump) for t, _s, level, jump in loop.hops], audio_threshold=0.5)
        swapped = rescore_audio(deaf, default_audio_model_path())
        assert swapped == loop, clip.name
        assert any(s > 0.5 for _t, s, _l, _j in swapped.hops)  # not a vacuous equality


def test_a_model_that_hops_elsewhere_is_not_swapped_in(clips: list[Path]) -> None:
    loop = record(clips[0])
    shifted = replace(loop, hops=[(t + 5_000_000, s, level, jump) for t, s, level, jump in loop.hops])
    with pytest.raises(UsageError, match="hops differently"):
        rescore_audio(shifted, default_audio_model_path())


def test_a_kept_trace_of_another_audio_model_is_rescored_not_rerun(tmp_path: Path, clips: list[Path],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from bodycam.model_compile import fusion_tune

    clip = str(clips[0])
    loop = record(clips[0])
    _, fresh = fusion_tune._trace_job((clip, "", "", str(tmp_path)))  # the loop, kept in the cache
    assert fresh == loop
    kept = next(tmp_path.glob("*.json"))
    data = json.loads(kept.read_text())
    # as if kept with another audio model: its id differs and its scores are that model's (here: all 0)
    data["key"] = data["key"].rsplit("|", 1)[0] + "|0123456789abcdef"
    data["hops"] = [[h[0], 0.0, h[2], h[3]] for h in data["hops"]]
    kept.write_text(json.dumps(data))

    def no_loop(*_a: object, **_k: object) -> Trace:
        raise AssertionError("the loop ran again")

    monkeypatch.setattr(fusion_tune, "record", no_loop)
    _, again = fusion_tune._trace_job((clip, "", "", str(tmp_path)))
    assert again == loop
    # and kept under the new key: the next call reads it as is
    assert json.loads(kept.read_text())["key"] == fusion_tune._trace_key(clip, "", "")
    # another video model is never swapped: that needs the loop
    data["key"] = "x" + data["key"]
    kept.write_text(json.dumps(data))
    with pytest.raises(AssertionError, match="the loop ran again"):
        fusion_tune._trace_job((clip, "", "", str(tmp_path)))
