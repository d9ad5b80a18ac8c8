"""A configured score threshold above what the model's int8 output can give disables detection without a
word (review-runtime #6): it is refused at start-up, naming the key and the model's maximum."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from _atrest import install_base_key
from _clips import make_plain_clip

from bodycam.device.assemble import _video_thresholds, model_spec
from bodycam.device.clock import SystemClock
from bodycam.device.config import config_from_dict
from bodycam.device.detect.audio_model_spec import default_audio_model_path, load_audio_model_spec
from bodycam.device.detect.model_spec import check_reachable, default_model_path, load_model_spec, max_score
from bodycam.device.errors import ConfigError, StartupError
from bodycam.device.identity import provision
from bodycam.device.model_select import ModelRejected

BASE: dict[str, Any] = {"mqtt": {"enabled": False}, "gnss": {"enabled": False}, "gpio": {"enabled": False}}


def _sim(tmp_path: Path, extra: dict[str, Any], audio: bool = True) -> None:
    from bodycam.hw_sim.sim_run import SimOptions, run_clip

    clip = make_plain_clip(tmp_path / "c.mp4", seconds=1, audio=audio)
    run_clip(SimOptions(clip=clip, out=tmp_path / "sim", config=config_from_dict({**BASE, **extra}), broker=None,
                        gnss=False))


def test_the_shipped_models_top_score_is_255_over_256() -> None:
    video = load_model_spec(default_model_path())
    audio = load_audio_model_spec(default_audio_model_path())
    assert max_score(video.output.scale, video.output.zero_point) == 255 / 256
    assert max_score(audio.out_scale, audio.out_zero_point) == 255 / 256
    assert check_reachable("k", 255 / 256, 1 / 256, -128, "m") is not None  # reachable, but only by the top code
    assert check_reachable("k", 0.99, 1 / 256, -128, "m") is None  # the shipped default: no warning
    with pytest.raises(ConfigError, match=r"^k: 0.9961 is above the largest score model m can give \(0.996094"):
        check_reachable("k", 0.9961, 1 / 256, -128, "m")


@pytest.mark.parametrize(("extra", "key"), [
    ({"events": {"threshold": 0.997}, "fusion": {"policy": "video"}}, "events.threshold"),
    ({"events": {"threshold": 0.997}}, "events.threshold"),
    ({"fusion": {"video_support": 0.999}}, "fusion.video_support"),
    ({"fusion": {"audio_alone": 0.9999}}, "fusion.audio_alone"),
    ({"fusion": {"policy": "audio", "audio_alone": 0.9999}}, "fusion.audio_alone"),
    ({"fusion": {"audio_support": 0.998}}, "fusion.audio_support"),
    ({"fusion": {"incident_s": 8.0, "incident_audio": 0.998}}, "fusion.incident_audio"),
])
def test_an_unreachable_threshold_is_refused_at_start_naming_key_and_maximum(
        tmp_path: Path, extra: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: .* is above the largest score model .* can give \(0\.996094"):
        _sim(tmp_path, extra)


def test_a_threshold_within_one_output_step_of_the_top_is_a_warning(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        _sim(tmp_path, {"events": {"threshold": 0.995}, "fusion": {"policy": "video"}}, audio=False)
    assert any("events.threshold: 0.995 is within one output step" in r.getMessage() for r in caplog.records)


def test_settings_the_policy_does_not_use_are_not_checked(tmp_path: Path) -> None:
    # video policy: no audio model is loaded, and a flash never needs to support an onset
    _sim(tmp_path, {"fusion": {"policy": "video", "video_support": 0.999, "audio_support": 0.999}}, audio=False)


def test_a_store_package_that_cannot_reach_the_threshold_is_rejected_not_fatal() -> None:
    """The service then falls back to the previous or the shipped model (device/firmware.py)."""
    cfg = config_from_dict({**BASE, "events": {"threshold": 0.997}})
    spec = model_spec(cfg)
    with pytest.raises(ModelRejected, match=r"model package pkg-1: events\.threshold: 0\.997 is above"):
        _video_thresholds(cfg, spec, "pkg-1")
    with pytest.raises(ConfigError, match=r"^events\.threshold"):
        _video_thresholds(cfg, spec, None)


def test_the_service_refuses_to_start_with_exit_78(tmp_path: Path) -> None:
    from bodycam.device.firmware import run_firmware
    from bodycam.hw_sim.live_camera import LiveClipCamera

    clip = make_plain_clip(tmp_path / "c.mp4", seconds=1, audio=False)
    cfg = config_from_dict({**BASE, "device": {"data_dir": str(tmp_path / "svc")}, "events": {"threshold": 0.997}})
    spec = model_spec(cfg)
    clock = SystemClock()
    cam = LiveClipCamera(clip, (spec.input.width, spec.input.height), clock)
    provision(tmp_path / "svc" / "identity" / "device.key", cfg.device.id)
    install_base_key(tmp_path / "svc")
    with pytest.raises(StartupError, match=r"events\.threshold: 0\.997 is above the largest score") as info:
        run_firmware(cfg, camera=cam, clock=clock, environ={}, install_signals=False)
    assert info.value.exit_code == 78
