"""``evaluate --domains``: the sets are kept apart, and the summary counts what it says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bodycam.device.errors import UsageError
from bodycam.hw_sim.truth import AudioInfo, Distractor, GeneratorInfo, Shot, Truth, VideoInfo
from bodycam.model_compile.domain_eval import collect, format_text, summarise_set, write_plots

FAM = {"scene": "indoor", "flash": "star_warm", "fps": "30", "camera": "global_shutter", "distractors": "flicker"}


def _truth(shots: list[tuple[int, int]], frames: int = 300, kinds: tuple[tuple[str, int, int], ...] = ()) -> Truth:
    fps = 30.0
    return Truth(
        clip="c.mp4",
        generator=GeneratorInfo("bodycam-sim", "1.0", 1, "indoor"),
        video=VideoInfo(320, 180, fps, frames, frames / fps),
        audio=AudioInfo(48000, int(frames / fps * 48000)),
        shots=tuple(Shot(frame=f, t_s=f / fps, audio_sample=round(f / fps * 48000), muzzle_xy=None, shooter="wearer",
                         flash_frames=ff, intensity=1.0, occluded=False) for f, ff in shots),
        distractors=tuple(Distractor(k, a, b, a / fps, (b + 1) / fps) for k, a, b in kinds),
    )


def test_summary_counts_recall_visible_flashes_timing_and_false_alarms_by_kind() -> None:
    shots = _truth([(30, 1), (90, 0), (150, 1), (210, 0)])
    free = _truth([], frames=3600, kinds=(("led_flicker", 0, 3599), ("photo_flash", 500, 500)))
    items = [
        (Path("a.mp4"), FAM, shots, [31, 90, 250]),  # 30 found (+1), 90 found, 150 and 210 missed, 250 false
        (Path("b.mp4"), {**FAM, "scene": "night"}, free, [500, 2000]),  # two false alarms in 2 shot-free minutes
    ]
    r = summarise_set(items, ("scene",))
    assert (r["shots"], r["tp"], r["fn"], r["fp"]) == (4, 2, 2, 3)
    assert r["recall"] == 0.5 and r["precision"] == 0.4
    assert r["precision_with_shots"] == round(2 / 3, 4)  # the shot-free clip's two are false alarms, counted apart
    assert r["visible_shots"] == 2 and r["recall_visible"] == 0.5
    assert r["timing_frames"] == {"median": 0.5, "max": 1}
    assert r["shot_free"] == {"clips": 1, "minutes": 2.0, "false_alarms": 2, "per_hour": 60.0}
    assert r["false_by_kind"] == {"led_flicker": 1, "none": 1, "photo_flash": 1}
    assert r["by_family"]["scene"]["indoor"] == {"shots": 4, "found": 2, "false": 1, "recall": 0.5}
    res = {"model": "m", "audio_model": "a", "hold_out": {}, "held_out": {"video": r}, "in_domain": {"video": r}}
    assert format_text(res).index("held-out") < format_text(res).index("in-domain")


def test_plots_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = summarise_set([(Path("a.mp4"), FAM, _truth([(30, 1)]), [30])], ("scene",))
    res = {"held_out": {"fused": r, "video": r}, "in_domain": {"fused": r, "video": r}}
    png = write_plots(res, tmp_path / "e.png")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"


def test_training_clips_never_count_and_held_out_rows_go_to_the_held_out_set(tmp_path: Path) -> None:
    rows = [{"path": f"{s}/clip-{i}.mp4", "split": s, "held_out": s == "heldout", "families": FAM}
            for i, s in enumerate(("train", "val", "test", "heldout", "heldout"))]
    (tmp_path / "index.json").write_text(json.dumps({"hold_out": {"scene": ["indoor"]}, "clips": rows}))
    sets = collect(tmp_path, None)
    assert [p.name for p, _ in sets["held_out"]] == ["clip-3.mp4", "clip-4.mp4"]
    assert [p.name for p, _ in sets["in_domain"]] == ["clip-2.mp4"]
    (tmp_path / "index.json").write_text(json.dumps({"clips": rows}))
    with pytest.raises(UsageError, match="not a family data set"):
        collect(tmp_path, None)


def test_a_clip_counts_as_an_incident_found_when_any_of_its_shots_is_marked() -> None:
    items = [
        (Path("a.mp4"), FAM, _truth([(30, 1), (90, 0)]), [90]),  # one of two shots: the incident is found
        (Path("b.mp4"), FAM, _truth([(40, 1)]), [200]),  # a false marker only: not found
        (Path("c.mp4"), FAM, _truth([], frames=900), [10]),  # shot-free: no incident
    ]
    r = summarise_set(items, ("scene",))
    assert (r["incidents"], r["incident_recall"]) == (2, 0.5)
    assert r["recall"] == round(1 / 3, 4)
