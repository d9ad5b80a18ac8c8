"""Detector backends with the real TFLite runtime and the shipped model."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from bodycam.device.detect.detector import DetectorConfig, TFLiteDetector, build_detector
from bodycam.device.detect.model_spec import default_model_path, load_model_spec
from bodycam.device.errors import DetectorUnavailableError, ModelError

MODEL = default_model_path()


def copy_model(tmp_path: Path, edit: dict[str, object] | None = None, etpu_file: bool = False) -> Path:
    dst = tmp_path / "m.tflite"
    shutil.copy(MODEL, dst)
    side = json.loads(MODEL.with_suffix(".json").read_text())
    if etpu_file:
        side["edgetpu"] = {"compiled": True, "file": "m_edgetpu.tflite"}
        shutil.copy(MODEL, tmp_path / "m_edgetpu.tflite")  # stands in for the compiled file
    for path, value in (edit or {}).items():
        obj = side
        *parts, last = path.split(".")
        for p in parts:
            obj = obj[p]
        obj[last] = value
    dst.with_suffix(".json").write_text(json.dumps(side))
    return dst


def test_cpu_backend_scores_a_window() -> None:
    det = build_detector(DetectorConfig(backend="cpu", threads=1), MODEL)
    spec = det.spec
    assert det.backend == "cpu"
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 127, spec.input.shape, dtype=np.int8)
    s1 = det.score(x)
    assert 0.0 <= s1 <= 1.0
    assert det.score(x) == s1, "deterministic"
    det.close()


def test_edgetpu_required_but_missing_is_a_clear_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(DetectorUnavailableError, match="no Edge TPU build"):
        build_detector(DetectorConfig(backend="edgetpu", model=str(copy_model(tmp_path))), MODEL)
    # with an Edge TPU build named in the sidecar, the missing runtime library is the error
    (tmp_path / "e").mkdir()
    model = copy_model(tmp_path / "e", etpu_file=True)
    with pytest.raises(DetectorUnavailableError, match=r"libedgetpu\.so\.1"):
        build_detector(DetectorConfig(backend="edgetpu", model=str(model)), MODEL)


def test_auto_falls_back_to_cpu_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "e").mkdir()
    model = copy_model(tmp_path / "e", etpu_file=True)
    with caplog.at_level(logging.INFO, logger="bodycam.device.detect.detector"):
        det = build_detector(DetectorConfig(backend="auto", model=str(model)), MODEL)
    assert det.backend == "cpu"
    assert any("Edge TPU not used" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"output.scale": 0.5}, "output quantisation"),
        ({"output.shape": [1, 2]}, "output shape"),
        ({"input.zero_point": 0}, "not the supported"),
    ],
)
def test_sidecar_that_disagrees_with_the_tensors(tmp_path: Path, edit: dict[str, object], message: str) -> None:
    model = copy_model(tmp_path, edit)
    with pytest.raises(ModelError, match=message):
        build_detector(DetectorConfig(backend="cpu", model=str(model)), MODEL)


def test_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    model = copy_model(tmp_path)
    model.write_bytes(b"\x00" * 1000)
    side = json.loads(model.with_suffix(".json").read_text())
    import hashlib

    side["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(side))
    spec = load_model_spec(model)
    with pytest.raises(ModelError, match="cannot load this model"):
        TFLiteDetector(model, spec, backend="cpu")


def test_missing_sidecar_and_missing_model(tmp_path: Path) -> None:
    model = tmp_path / "lonely.tflite"
    shutil.copy(MODEL, model)
    with pytest.raises(ModelError, match=r"sidecar lonely\.json not found"):
        load_model_spec(model)
    with pytest.raises(ModelError, match="model file not found"):
        load_model_spec(tmp_path / "nope.tflite")
