"""A real build on a tiny generated data set: valid int8 model whose sidecar matches it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bodycam.device.detect.model_spec import load_model_spec
from bodycam.model_compile.cli import main
from bodycam.model_compile.deps import load_interpreter
from bodycam.model_compile.edgetpu import EDGETPU_OPS
from bodycam.model_compile.tflite_info import io_tensors, ops

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "smoke"
    rc = main(["build", "--data", str(tiny_dataset), "--out", str(out), "--epochs", "1", "--steps", "6",
               "--batch", "16", "--size", "96x54", "--frames", "4", "--target-offset", "1", "--seed", "3"])  # fmt: skip
    assert rc == 0
    return out.with_suffix(".tflite")


def test_sidecar_loads_and_matches_the_interpreter(built: Path) -> None:
    spec = load_model_spec(built)  # checks SHA-256 and every contract field
    it = load_interpreter(built, analysis=True)
    (inp,), (out,) = io_tensors(it)
    assert inp.shape == spec.input.shape == (1, 54, 96, 12)
    assert inp.dtype == "int8" and out.dtype == "int8"
    assert inp.scale == pytest.approx(1 / 255, abs=1e-9) and inp.zero_point == -128
    assert spec.input.scale == pytest.approx(inp.scale, abs=1e-9) and spec.input.zero_point == inp.zero_point
    assert list(out.shape) == list(spec.output.shape)
    assert spec.output.scale == pytest.approx(out.scale) and spec.output.zero_point == out.zero_point
    assert all(d >= 0 for d in inp.shape_signature)  # static shapes, batch 1


def test_only_edge_tpu_operators_and_contract_fields(built: Path) -> None:
    it = load_interpreter(built, analysis=True)
    names = {op.name for op in ops(it)}
    assert names <= EDGETPU_OPS, names - EDGETPU_OPS
    side = json.loads(built.with_suffix(".json").read_text())
    assert side["edgetpu"]["compiled"] is False and "not on PATH" in side["edgetpu"]["reason"]
    assert side["edgetpu"]["op_report"]["fully_mappable"] is True
    assert 0 < side["macs_per_frame"] < 20_000_000
    prov = side["provenance"]
    assert len(prov["dataset_sha256"]) == 64 and prov["clips"] == {"train": 2, "val": 1, "test": 0}
    assert prov["seed"] == 3 and prov["tensorflow"]
    assert 0.0 <= side["metrics"]["int8_float_agreement"] <= 1.0
    assert built.with_name("smoke.report.json").is_file()
    assert built.with_name("smoke.report.png").stat().st_size > 1000


def test_model_runs_on_firmware_windows(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bodycam.device.detect.preprocess import FrameWindow

    spec = load_model_spec(built)
    it = load_interpreter(built)
    win = FrameWindow(spec.input)
    rng = np.random.default_rng(0)
    for _ in range(spec.input.frames):
        win.push(rng.integers(0, 256, size=(54, 96, 3), dtype=np.uint8))
    it.set_tensor(it.get_input_details()[0]["index"], win.tensor)
    it.invoke()
    assert it.get_tensor(it.get_output_details()[0]["index"]).dtype == np.int8
    assert main(["inspect", str(built)]) == 0
    shown = capsys.readouterr().out
    assert "CONV_2D" in shown and "MACs per frame" in shown


def test_same_seed_same_model(built: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    from bodycam.device.detect.model_spec import sha256_file

    again = tmp_path / "again"
    rc = main(["build", "--data", str(tiny_dataset), "--out", str(again), "--epochs", "1", "--steps", "6",
               "--batch", "16", "--size", "96x54", "--frames", "4", "--target-offset", "1", "--seed", "3"])  # fmt: skip
    assert rc == 0
    assert sha256_file(again.with_suffix(".tflite")) == sha256_file(built)


def test_a_build_on_two_folders_mixed_records_both_and_the_mix(
        tiny_dataset: Path, clip_maker: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Synthetic footage and a second folder (standing for a force's exported range footage, flat)
    mixed 1:3; the sidecar's provenance names both folders and the mix; a mix that does not match
    the folders is a one-line error."""
    other = tmp_path / "range"
    clip_maker(other / "r1.mp4", seconds=3, shots=2, seed=81)
    clip_maker(other / "r2.mp4", seconds=3, shots=2, seed=82)
    out = tmp_path / "mixed"
    args = ["build", "--data", str(tiny_dataset), "--data", str(other), "--out", str(out), "--epochs", "1",
            "--steps", "4", "--batch", "16", "--size", "96x54", "--frames", "4", "--target-offset", "1", "--seed", "3"]
    assert main([*args, "--mix", "1,3"]) == 0
    assert "75 % of the training windows" in capsys.readouterr().out
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["provenance"]["dataset"] == [str(tiny_dataset), str(other)]
    assert side["provenance"]["mix"] == [1.0, 3.0]
    assert main([*args, "--mix", "1"]) == 2
    assert "--mix needs one weight > 0 per --data folder (2)" in capsys.readouterr().err
