"""Bad input to bodycam-model: one clear line naming the file and the fix, no traceback."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bodycam.device.errors import DependencyError
from bodycam.model_compile.cli import main
from bodycam.model_compile.deps import import_tf


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    return rc, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_empty_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(capsys, "build", "--data", str(tmp_path), "--out", str(tmp_path / "m"))
    line = _one_line(err)
    assert rc == 2
    assert str(tmp_path) in line and "no clips" in line and "make-dataset" in line


def test_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(capsys, "build", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m"))
    assert rc == 2 and "not found" in _one_line(err)


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory: pytest.TempPathFactory, clip_maker: Callable[..., Path]) -> Path:
    return clip_maker(tmp_path_factory.mktemp("one") / "ok.mp4", seconds=1, shots=1, seed=5)


@pytest.mark.integration
def test_clip_without_truth(tmp_path: Path, one_clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(one_clip, tmp_path / "lonely.mp4")
    rc, err = _run(capsys, "build", "--data", str(tmp_path), "--out", str(tmp_path / "m"))
    line = _one_line(err)
    assert rc == 1
    assert "lonely.mp4" in line and "lonely.truth.json" in line and "fix:" in line


@pytest.mark.integration
def test_corrupt_clip(tmp_path: Path, one_clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    shutil.copy(one_clip.with_name("ok.truth.json"), tmp_path / "broken.truth.json")
    rc, err = _run(capsys, "evaluate", str(tmp_path / "m.tflite"), "--data", str(tmp_path), "--split", "all")
    assert rc == 1 and "m.tflite" in _one_line(err)  # no model: named
    shotnet = Path(__file__).resolve().parents[2] / "device" / "models" / "shotnet.tflite"
    if not shotnet.is_file():
        pytest.skip("no shipped model yet")
    rc, err = _run(capsys, "evaluate", str(shotnet), "--data", str(tmp_path), "--split", "all")
    line = _one_line(err)
    assert rc == 1 and "broken.mp4" in line


@pytest.mark.integration
def test_truth_of_another_clip(
    tmp_path: Path, one_clip: Path, clip_maker: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    other = clip_maker(tmp_path / "other" / "two.mp4", seconds=2, shots=1, seed=6)
    shutil.copy(one_clip, tmp_path / "x.mp4")
    shutil.copy(other.with_name("two.truth.json"), tmp_path / "x.truth.json")
    assert json.loads((tmp_path / "x.truth.json").read_text())["video"]["frames"] == 60
    rc, err = _run(capsys, "build", "--data", str(tmp_path), "--out", str(tmp_path / "m"))
    line = _one_line(err)
    assert rc == 1
    assert "x.truth.json" in line and "decodes to" in line and "fix:" in line


def test_missing_tensorflow_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import now raises ImportError
    with pytest.raises(DependencyError, match=r"pip install 'bodycam\[compile\]'"):
        import_tf()


@pytest.mark.integration
def test_build_without_tensorflow_is_one_line(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    rc, err = _run(capsys, "build", "--data", str(tiny_dataset), "--out", str(tmp_path / "m"))
    assert rc == 1 and "bodycam[compile]" in _one_line(err)


def test_bad_size_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(capsys, "build", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--size", "big")
    assert rc == 2 and "WxH" in _one_line(err)
