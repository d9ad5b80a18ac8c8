"""The bodycam.truth/1 file format: round trip, path convention, validation errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bodycam.device.errors import TruthError
from bodycam.hw_sim.truth import (
    SCHEMA,
    AudioInfo,
    Distractor,
    GeneratorInfo,
    Shot,
    Truth,
    VideoInfo,
    WeaponPhase,
    load_truth,
    save_truth,
    truth_from_dict,
    truth_path_for,
)


def _truth() -> Truth:
    return Truth(
        clip="a.mp4",
        generator=GeneratorInfo("bodycam-sim", "1.0", 7, "range"),
        video=VideoInfo(320, 180, 30.0, 90, 3.0),
        audio=AudioInfo(48000, 144000),
        shots=(
            Shot(40, 40 / 30, 64000, (160.0, 90.5), "wearer", 2, 0.8, False),
            Shot(43, 43 / 30, 68800, None, "other", 1, 0.5, True),
        ),
        distractors=(Distractor("photo_flash", 10, 10, 10 / 30, 11 / 30),
                     Distractor("clap", 70, 72, 70 / 30, 73 / 30, None, 112000, True)),
        weapon=(WeaponPhase("holstered", 0, 19), WeaponPhase("drawing", 20, 29), WeaponPhase("drawn", 30, 89)),
    )


def _dict() -> dict[str, Any]:
    return _truth().to_dict()


def test_round_trip(tmp_path: Path) -> None:
    t = _truth()
    p = save_truth(t, tmp_path / "a.truth.json")
    assert load_truth(p) == t
    raw = json.loads(p.read_text())
    assert raw["schema"] == SCHEMA
    assert raw["shots"][0]["muzzle_xy"] == [160.0, 90.5]
    assert raw["shots"][1]["muzzle_xy"] is None


def test_truth_path_for() -> None:
    assert truth_path_for("OUT.mp4") == Path("OUT.truth.json")
    assert truth_path_for("/x/y/clip-00001.mp4") == Path("/x/y/clip-00001.truth.json")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(schema="bodycam.truth/9"), "schema"),
        (lambda d: d.pop("video"), "missing field 'video'"),
        (lambda d: d["shots"][0].update(audio_sample=64001), "audio_sample"),
        (lambda d: d["shots"][0].update(frame=95), "shots[0].frame"),
        (lambda d: d["shots"][0].update(shooter="robot"), "shooter"),
        (lambda d: d["shots"][0].update(intensity=1.5), "intensity"),
        (lambda d: d["shots"][0].update(muzzle_xy=[1, 2, 3]), "muzzle_xy"),
        (lambda d: d["shots"].reverse(), "increasing"),
        (lambda d: d["distractors"][0].update(kind="meteor"), "kind"),
        (lambda d: d["distractors"][0].update(end_frame=5), "end_frame"),
        (lambda d: d["video"].update(duration_s=9.0), "duration_s"),
        (lambda d: d["weapon"][1].update(start_frame=21), "gap"),
        (lambda d: d["weapon"][2].update(state="holstered"), "not drawn"),
        (lambda d: d["generator"].update(seed=-1), "seed"),
    ],
)
def test_invalid_truth_names_the_problem(tmp_path: Path, mutate: Any, needle: str) -> None:
    d = _dict()
    mutate(d)
    p = tmp_path / "bad.truth.json"
    p.write_text(json.dumps(d))
    with pytest.raises(TruthError) as ei:
        load_truth(p)
    msg = str(ei.value)
    assert str(p) in msg
    assert needle in msg
    with pytest.raises(TruthError):
        truth_from_dict(d)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(TruthError, match="not found"):
        load_truth(tmp_path / "nope.truth.json")
    p = tmp_path / "x.truth.json"
    p.write_text("{not json")
    with pytest.raises(TruthError, match="not valid JSON"):
        load_truth(p)
    p.write_text(json.dumps(_dict()).replace("0.8", "NaN"))
    with pytest.raises(TruthError, match=str(p)):
        load_truth(p)
    p.write_text("[]")
    with pytest.raises(TruthError, match="expected an object"):
        load_truth(p)
