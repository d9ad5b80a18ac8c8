"""The simulator hands the clip's audio to the firmware through the one assembly (integration tier)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from _atrest import install_base_key
from _clips import make_plain_clip

from bodycam.device.assemble import assemble
from bodycam.device.clock import VirtualClock
from bodycam.device.config import AppConfig
from bodycam.device.detect.fusion import FusionConfig
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
    install_base_key(tmp_path / "out")  # a provisioned camera: footage encrypted at rest to base's key
    with assemble(cfg, sim_parts(opts, cfg, clock, model_spec(cfg)), signer=Signer.generate()) as fw:
        fw.run()
        audio = fw.app.audio
        assert audio.live and audio.telemetry() == {"state": "ok", "alarm": False, "footage_sound": "source"}
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


def test_the_simulators_recordings_keep_the_clips_sound_from_before_the_trigger(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    import json

    import av
    import numpy as np
    from _clips import tone_clip
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from bodycam.device.footage.recording_state import RecordingConfig
    from bodycam.device.verify import find_key, verify_path

    # a burst at 1.5 s, the record button at 3.0 s, 2 s of pre-event buffer
    clip = tone_clip(tmp_path / "t.mp4", 6.0, (1.5,), video_fps=30)
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"events": [{"t_s": 3.0, "event": "record"}]}))
    out = tmp_path / "out"
    cfg = replace(AppConfig(), recording=RecordingConfig(pre_event_s=2.0), fusion=FusionConfig(incident_s=8.0))
    with caplog.at_level(logging.WARNING, logger="bodycam"):
        report = run_clip(SimOptions(clip=clip, out=out, config=cfg, broker=None, gnss=False, scenario=scenario))
    assert report.error is None and len(report.recordings) == 1
    # the incident rule looks back 8 s, the buffer holds 2: said once at start-up
    assert sum("longer than recording.pre_event_s" in r.getMessage() for r in caplog.records) == 1
    (rec,) = (out / "recordings").iterdir()
    manifest = json.loads((rec / "manifest.json").read_text())
    start_s = manifest["segments"][0]["start_mono_ns"] / 1e9
    assert start_s <= 1.0
    with av.open(str(rec / "segment-00000.mp4")) as c:
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
        frames = [(float(f.time), f.to_ndarray().reshape(-1)) for f in c.decode(audio=0)]
    rate = 48000
    loud = [t + i / rate for t, x in frames for i in np.flatnonzero(np.abs(x) > 0.1)[:1]]
    assert loud and abs(loud[0] - (1.5 - start_s)) < 1 / 30, (loud[0], 1.5 - start_s)
    pub = find_key(out)  # the run's throwaway key, beside the footage (state/identity/device.pub)
    assert pub is not None
    public = load_pem_public_key(pub.read_bytes())
    assert isinstance(public, Ed25519PublicKey)
    assert verify_path(out, public, "beside").ok  # the segment hashes cover the sound too
