"""The simulator hands the clip's audio to the firmware through the one assembly (integration tier)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from _clips import make_plain_clip

from bodycam.device.assemble import assemble
from bodycam.device.clock import VirtualClock
from bodycam.device.config import AppConfig
from bodycam.device.hw.microphone import MicrophoneConfig
from bodycam.device.identity import Signer
from bodycam.hw_sim.sim_run import SimOptions, run_clip, sim_parts

pytestmark = pytest.mark.integration


def test_clip_audio_reaches_the_loop(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "a.mp4", seconds=1.0, audio=True)
    cfg = replace(AppConfig(), device=replace(AppConfig().device, data_dir=str(tmp_path / "out")))
    opts = SimOptions(clip=clip, out=tmp_path / "out", config=cfg, broker=None, gnss=False)
    from bodycam.device.assemble import model_spec

    clock = VirtualClock()
    with assemble(cfg, sim_parts(opts, cfg, clock, model_spec(cfg)), signer=Signer.generate()) as fw:
        fw.run()
        audio = fw.app.audio
        assert audio.live and audio.telemetry() == {"state": "ok", "alarm": False}
        assert abs(audio.samples - 16000 * (29 / 30)) < 1100  # audio up to the last frame's time, at 16 kHz


def test_clip_without_audio_runs_video_only_and_says_so_once(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    clip = make_plain_clip(tmp_path / "v.mp4", seconds=1.0, audio=False)
    with caplog.at_level(logging.INFO):
        report = run_clip(SimOptions(clip=clip, out=tmp_path / "out", config=AppConfig(), broker=None, gnss=False))
    assert report.stats.frames == 30 and report.error is None
    assert sum("no audio track" in r.getMessage() for r in caplog.records) == 1


def test_microphone_disabled_in_config_is_video_only(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "a.mp4", seconds=0.5, audio=True)
    cfg = replace(AppConfig(), microphone=MicrophoneConfig(enabled=False))
    report = run_clip(SimOptions(clip=clip, out=tmp_path / "out", config=cfg, broker=None, gnss=False))
    assert report.stats.frames == 15


def test_a_mismatched_audio_model_is_a_clear_start_up_error(tmp_path: Path) -> None:
    import json
    import shutil

    from bodycam.device.detect.audio_model_spec import default_audio_model_path
    from bodycam.device.errors import ModelError

    model = tmp_path / "shotnet_audio.tflite"
    shutil.copy(default_audio_model_path(), model)
    side = json.loads(default_audio_model_path().with_suffix(".json").read_text())
    side["input"]["features"]["mels"] = 64  # trained on other features than the firmware computes
    model.with_suffix(".json").write_text(json.dumps(side))
    clip = make_plain_clip(tmp_path / "a.mp4", seconds=0.5, audio=True)
    cfg = replace(AppConfig(), fusion=replace(AppConfig().fusion, audio_model=str(model)))
    with pytest.raises(ModelError, match="features"):
        run_clip(SimOptions(clip=clip, out=tmp_path / "out", config=cfg, broker=None, gnss=False))
    # a video-only policy does not need the audio model at all
    cfg = replace(cfg, fusion=replace(cfg.fusion, policy="video"))
    assert run_clip(SimOptions(clip=clip, out=tmp_path / "out2", config=cfg, broker=None, gnss=False)).stats.frames == 15
