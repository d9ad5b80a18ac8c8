"""The Edge TPU probe and `auto` fallback, against stand-ins for libedgetpu that really fail.

`fake_libedgetpu.c` is compiled here into one library per failure the real runtime shows: a
segfault while creating the delegate (google-coral/edgetpu#812), a hang, no device (the TFLite
runtime raises ValueError), a delegate that fails to prepare (RuntimeError), and a working one.
The missing library is a path that does not exist (OSError). The TFLite runtime is the real one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _edgetpu import build_fake_libedgetpu, model_with_edgetpu_build

from bodycam.device.detect import detector as detector_module
from bodycam.device.detect.detector import DetectorConfig, build_detector
from bodycam.device.detect.edgetpu_probe import ProbeResult, probe_edgetpu
from bodycam.device.detect.model_spec import default_model_path
from bodycam.device.errors import DetectorUnavailableError


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_fake_libedgetpu(tmp_path_factory.mktemp("libedgetpu"))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_with_edgetpu_build(tmp_path_factory.mktemp("model"))


def etpu(model: Path) -> Path:
    return model.with_name(f"{model.stem}_edgetpu.tflite")


@pytest.mark.parametrize(("mode", "kind", "words"), [
    ("CRASH", "crash", "SIGSEGV"),
    ("NODEVICE", "no_device", "no Edge TPU device"),
    ("PREPFAIL", "failed", "RuntimeError"),
    ("MISSING", "missing", "not installed"),
    ("OK", "ok", "ran once"),
])
def test_probe_reports_each_failure_of_the_child(libs: dict[str, str], model: Path, mode: str, kind: str,
                                                 words: str) -> None:
    result = probe_edgetpu(etpu(model), libs[mode], timeout_s=60)
    assert result.kind == kind and words in result.detail, result


def test_probe_of_a_hanging_delegate_times_out(libs: dict[str, str], model: Path) -> None:
    result = probe_edgetpu(etpu(model), libs["HANG"], timeout_s=4)
    assert result == ProbeResult("timeout", result.detail) and "4 s" in result.detail


def cfg(lib: str, model: Path, backend: str = "auto") -> DetectorConfig:
    return DetectorConfig(backend=backend, model=str(model), edgetpu_library=lib,  # type: ignore[arg-type]
                          edgetpu_probe_timeout_s=4)


@pytest.mark.parametrize(("mode", "alarm"), [("CRASH", "SIGSEGV"), ("HANG", "did not finish"),
                                             ("NODEVICE", "no Edge TPU device"), ("PREPFAIL", "RuntimeError"),
                                             ("MISSING", None)])
def test_auto_falls_back_to_the_cpu_on_every_failure(libs: dict[str, str], model: Path, mode: str,
                                                      alarm: str | None) -> None:
    det = build_detector(cfg(libs[mode], model), default_model_path())
    try:
        assert det.backend == "cpu"
        if alarm is None:  # no runtime installed: simply no Coral here, nothing to alarm about
            assert det.alarm is None
        else:
            assert det.alarm is not None and alarm in det.alarm
        window = np.zeros(det.spec.input.shape, np.int8)
        assert 0.0 <= det.score(window) <= 1.0  # the CPU detector works
    finally:
        det.close()


@pytest.mark.parametrize("mode", ["CRASH", "NODEVICE", "PREPFAIL", "MISSING"])
def test_edgetpu_backend_refuses_to_start_without_a_working_edge_tpu(libs: dict[str, str], model: Path,
                                                                      mode: str) -> None:
    with pytest.raises(DetectorUnavailableError, match=r"Edge TPU|libedgetpu"):
        build_detector(cfg(libs[mode], model, "edgetpu"), default_model_path())


def test_a_working_edge_tpu_is_used_and_scores_like_the_cpu(libs: dict[str, str], model: Path) -> None:
    det = build_detector(cfg(libs["OK"], model), default_model_path())
    cpu = build_detector(cfg(libs["OK"], model, "cpu"), default_model_path())
    try:
        assert det.backend == "edgetpu" and det.alarm is None and cpu.backend == "cpu"
        window = np.random.default_rng(0).integers(-128, 128, det.spec.input.shape, dtype=np.int8)
        assert det.score(window) == cpu.score(window)
    finally:
        det.close()
        cpu.close()


@pytest.mark.parametrize(("mode", "error"), [("NODEVICE", "ValueError"), ("PREPFAIL", "RuntimeError"),
                                             ("MISSING", "OSError")])
def test_auto_also_falls_back_when_the_delegate_fails_in_process(libs: dict[str, str], model: Path, mode: str,
                                                                  error: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe passed (say the Coral was unplugged right after it): the in-process load fails with the
    runtime's own exception types, and `auto` still comes up on the CPU."""
    monkeypatch.setattr(detector_module, "probe_edgetpu", lambda *a, **k: ProbeResult("ok", "stub: probe passed"))
    det = build_detector(cfg(libs[mode], model), default_model_path())
    try:
        assert det.backend == "cpu" and det.alarm is not None
    finally:
        det.close()


def test_no_edge_tpu_build_means_cpu_without_a_probe(libs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(detector_module, "probe_edgetpu", lambda *a, **k: calls.append(a) or ProbeResult("ok", ""))
    det = build_detector(replace(DetectorConfig(), edgetpu_library=libs["CRASH"]), default_model_path())
    try:
        assert det.backend == "cpu" and det.alarm is None and calls == []
    finally:
        det.close()


def test_an_edge_tpu_build_that_does_not_match_its_sidecar_is_not_loaded(libs: dict[str, str], model: Path,
                                                                          tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(model.parent, d)
    sidecar = json.loads((d / model.with_suffix(".json").name).read_text())
    sidecar["edgetpu"]["sha256"] = "0" * 64
    (d / model.with_suffix(".json").name).write_text(json.dumps(sidecar))
    det = build_detector(cfg(libs["OK"], d / model.name), default_model_path())
    try:
        assert det.backend == "cpu" and det.alarm is not None and "SHA-256" in det.alarm
    finally:
        det.close()
