"""`bodycam-sim make-clip / make-dataset / inspect`: outputs and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bodycam.hw_sim.cli import main
from bodycam.hw_sim.truth import load_truth


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_make_clip_and_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.mp4"
    assert main(["make-clip", str(out), "--seconds", "2", "--shots", "2", "--seed", "4", "--scene", "indoor",
                 "--size", "320x180", "--fps", "25"]) == 0
    assert "2 shots" in capsys.readouterr().out
    truth = load_truth(tmp_path / "c.truth.json")
    assert (truth.video.width, truth.video.height, truth.video.fps, truth.video.frames) == (320, 180, 25.0, 50)
    assert truth.generator.scene == "indoor"
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "h264 320x180 25.000 fps" in text and "aac 48000 Hz" in text and "shots: 2" in text
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 50
    assert info["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert len(info["truth"]["shots"]) == 2
    assert [s["type"] for s in info["streams"]] == ["video", "audio"]


def test_shot_free_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-clip", str(tmp_path / "f.mp4"), "--seconds", "1", "--shots", "0", "--size", "160x96", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert load_truth(tmp_path / "f.truth.json").shots == ()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--size", "641x360"], "even"),
        (["--size", "100x50"], "out of range"),
        (["--size", "big"], "WIDTHxHEIGHT"),
        (["--seed", "-1"], "seed"),
        (["--seed", str(2**32)], "seed"),
        (["--seed", "abc"], "seed"),
        (["--fps", "61"], "fps"),
        (["--fps", "x"], "fps"),
        (["--seconds", "0"], "seconds"),
        (["--seconds", "nan"], "seconds"),
        (["--shots", "-2"], "shots"),
        (["--shots", "500", "--seconds", "2"], "do not fit"),
        (["--scene", "moon"], "scene"),
    ],
)
def test_make_clip_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    line = _one_line_error(capsys, ["make-clip", str(tmp_path / "x.mp4"), *args])
    assert needle in line
    assert not (tmp_path / "x.mp4").exists()


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_error(capsys, ["make-clip", str(tmp_path / "nodir" / "x.mp4"), "--seconds", "1"])
    assert "does not exist" in line
    line = _one_line_error(capsys, ["make-clip", str(tmp_path), "--seconds", "1"])
    assert "directory" in line


def test_inspect_missing_or_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no such clip" in _one_line_error(capsys, ["inspect", str(tmp_path / "none.mp4")])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    assert "bad.mp4" in _one_line_error(capsys, ["inspect", str(bad)])


def test_make_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    assert main(["make-dataset", str(root), "--clips", "4", "--seed", "9", "--seconds", "1", "--size", "160x96"]) == 0
    index = json.loads((root / "index.json").read_text())
    assert len(index["clips"]) == 4
    assert {c["split"] for c in index["clips"]} <= {"train", "val", "test"}
    for c in index["clips"]:
        truth = load_truth(root / c["truth"])
        assert truth.generator.seed == c["seed"]
        assert len(truth.shots) == c["shots"]
        assert (root / c["path"]).is_file()
        if c["shot_free"]:
            assert c["shots"] == 0
    assert len({c["seed"] for c in index["clips"]}) == 4
    capsys.readouterr()
    assert "clips" in _one_line_error(capsys, ["make-dataset", str(root), "--clips", "0", "--seed", "1"])
