"""The shipped audio model through the firmware's detector: contract checks and detection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bodycam.device.detect.audio_detector import AudioDetector, AudioOnset, OnsetPicker
from bodycam.device.detect.audio_model_spec import default_audio_model_path, load_audio_model_spec
from bodycam.device.detect.model_spec import sha256_file
from bodycam.device.errors import ModelError
from bodycam.device.hw.microphone import AudioBlock
from bodycam.hw_sim import audio_synth as synth

MODEL = default_audio_model_path()


def _copy(tmp: Path, edit: Any = None, *, rehash: bool = True) -> Path:
    m = tmp / MODEL.name
    shutil.copy(MODEL, m)
    side = json.loads(MODEL.with_suffix(".json").read_text())
    if edit is not None:
        edit(side)
    if rehash:
        side["sha256"] = sha256_file(m)
    m.with_suffix(".json").write_text(json.dumps(side))
    return m


def test_shipped_model_meets_its_contract() -> None:
    spec = load_audio_model_spec(MODEL)
    assert spec.raw["task"] == "gunshot-audio" and MODEL.stat().st_size <= 300_000
    assert spec.raw["macs_per_hop"] > 0 and spec.shape == (1, spec.frames, 40, 1)
    assert spec.raw["edgetpu"]["op_report"]["fully_mappable"] is True


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s["input"]["features"].update(hop=80), "features"),
    (lambda s: s["input"].update(shape=[1, 32, 40, 1]), "shape"),
    (lambda s: s["input"].update(scale=s["input"]["scale"] * 2), "quantisation"),
    (lambda s: s.update(task="gunshot-visual"), "not an audio model"),
    (lambda s: s["input"].update(stride=3), "stride"),
])
def test_runtime_refuses_a_sidecar_that_does_not_match(tmp_path: Path, edit: Any, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        AudioDetector(_copy(tmp_path, edit))


def test_runtime_refuses_a_model_from_another_build(tmp_path: Path) -> None:
    m = _copy(tmp_path, lambda s: s.update(sha256="0" * 64), rehash=False)
    with pytest.raises(ModelError, match="different builds"):
        AudioDetector(m)


def _feed(det: AudioDetector, x: np.ndarray, block: int = 1024) -> list[AudioOnset]:
    out: list[AudioOnset] = []
    for k in range(0, len(x), block):
        out += det.feed(AudioBlock(k * 62_500, x[k : k + block]))
    return out + det.flush()


def test_close_pistol_shots_are_found_at_their_onsets_and_silence_is_not() -> None:
    rng = np.random.default_rng(42)
    sr = 16000
    x = (rng.normal(0, 0.003, sr * 4)).astype(np.float32)
    onsets = [int(0.8 * sr), int(2.1 * sr), int(3.0 * sr)]
    for s in onsets:
        shot = synth.room_path(synth.gun_sound("pistol", rng, sr), "open_field", rng, sr, 10.0) * 8
        n = min(len(shot), len(x) - s)
        x[s : s + n] += shot[:n]
    x = np.clip(x, -1, 1)
    det = AudioDetector(MODEL)
    found = _feed(det, x)
    assert len(found) == len(onsets)
    for f, s in zip(found, onsets, strict=True):
        assert abs(f.t_ns / 1e9 - s / sr) < 0.02  # within a hop of the true onset
    det.reset()
    assert _feed(det, (rng.normal(0, 0.003, sr * 4)).astype(np.float32)) == []
    assert det.invokes > 0
    det.close()


def test_picker_places_onsets_at_the_level_jump_and_gates_echoes() -> None:
    p = OnsetPicker(0.5)
    # hops every 20 ms: (score, level, jump) where something happens, (0.1, -1, 0) elsewhere
    events = {20: (0.8, -2, 0), 40: (0.9, -2, 0.1), 60: (0.7, 1.6, 3.5), 80: (0.6, 1.5, 2.0),  # a shot at 60 ms:
              100: (0.2, 1.0, 0.4),  # the model fires from 2 hops early; the level jumps at 60
              300: (0.8, 0.3, 1.2),  # 13 dB quieter 0.24 s later: an echo
              460: (0.95, 1.55, 2.9), 480: (0.3, 1.5, 1.8),  # as loud: the next round
              540: (0.7, 1.5, 0.6),  # 80 ms later, a jump again: rapid fire
              720: (0.2, 1.0, 2.5),  # a jump the model does not call a shot
              980: (0.6, 1.6, 3.0)}  # the last hop: decided by flush()
    out = []
    for ms in range(0, 1000, 20):
        sc, lv, j = events.get(ms, (0.1, -1.0, 0.0))
        if (o := p.update(ms * 1_000_000, sc, lv, j)) is not None:
            out.append(o)
    last = p.flush()
    assert [(o.t_ns // 1_000_000, o.confidence) for o in out] == [(60, 0.9), (460, 0.95), (540, 0.7)]
    assert last is not None and (last.t_ns // 1_000_000, last.confidence) == (980, 0.6)
    assert p.echoes == 1
