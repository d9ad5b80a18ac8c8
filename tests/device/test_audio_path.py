"""The loop's audio stage: a missing, silent or failing microphone never stops the camera."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytest

from bodycam.device.detect.audio_detector import AudioOnset
from bodycam.device.detect.audio_path import AudioPath
from bodycam.device.footage.aac_track import AacError
from bodycam.device.hw.microphone import AudioBlock, MicrophoneError


class ScriptedMic:
    def __init__(self, *, has_audio: bool = True, fail_open: bool = False, fail_at: int | None = None) -> None:
        self.has_audio, self.fail_open, self.fail_at = has_audio, fail_open, fail_at
        self.reads = 0
        self.closed = False

    def start(self) -> bool:
        if self.fail_open:
            raise MicrophoneError("microphone 'default': cannot open for capture (No such device)")
        return self.has_audio

    def read(self, until_ns: int) -> list[AudioBlock]:
        self.reads += 1
        if self.fail_at is not None and self.reads >= self.fail_at:
            raise MicrophoneError("microphone 'default': capture failed (Input/output error)")
        return [AudioBlock(until_ns - 10_000_000, np.zeros(160, np.float32))]

    def close(self) -> None:
        self.closed = True


class RecordingDetector:
    def __init__(self) -> None:
        self.blocks: list[AudioBlock] = []

    def feed(self, block: AudioBlock) -> list[AudioOnset]:
        self.blocks.append(block)
        return [AudioOnset(block.t_ns, 0.9)] if len(self.blocks) == 2 else []

    def flush(self) -> list[AudioOnset]:
        return [AudioOnset(1, 0.5)]


def test_blocks_go_to_the_detector_up_to_the_frame_time() -> None:
    det = RecordingDetector()
    path = AudioPath(ScriptedMic(), det)
    path.start()
    onsets = [path.poll(t) for t in (33_000_000, 66_000_000)]
    assert path.live and [b.t_ns for b in det.blocks] == [23_000_000, 56_000_000]
    assert onsets == [[], [AudioOnset(56_000_000, 0.9)]]
    assert path.flush() == [AudioOnset(1, 0.5)]
    assert path.telemetry() == {"state": "ok", "alarm": False, "footage_sound": "none"}


def test_failure_mid_run_raises_one_alarm_and_goes_video_only(caplog: pytest.LogCaptureFixture) -> None:
    alarms: list[str] = []
    mic = ScriptedMic(fail_at=3)
    path = AudioPath(mic, RecordingDetector(), on_alarm=alarms.append)
    path.start()
    with caplog.at_level(logging.ERROR):
        for i in range(10):
            path.poll(i * 33_000_000)
    assert not path.live and mic.reads == 3  # not asked again after the fault
    assert path.flush() == []
    assert len(alarms) == 1 and "video-only" in alarms[0] and "Input/output error" in alarms[0]
    tel = path.telemetry()
    assert tel["alarm"] is True and tel["state"] == "failed" and "capture failed" in str(tel["error"])
    assert sum("ALARM" in r.getMessage() for r in caplog.records) == 1


def test_missing_microphone_at_start_is_an_alarm_not_a_crash() -> None:
    alarms: list[str] = []
    path = AudioPath(ScriptedMic(fail_open=True), on_alarm=alarms.append)
    path.start()
    path.poll(10**9)
    assert path.state == "failed" and len(alarms) == 1


def test_no_audio_track_is_said_once_without_alarm(caplog: pytest.LogCaptureFixture) -> None:
    path = AudioPath(ScriptedMic(has_audio=False))
    with caplog.at_level(logging.WARNING):
        path.start()
        for i in range(5):
            path.poll(i)
    assert path.state == "no_audio_track" and path.telemetry()["alarm"] is False
    assert sum("video-only" in r.getMessage() for r in caplog.records) == 1


class BrokenSound:
    """Footage whose AAC encoder fails at the second write."""

    def __init__(self) -> None:
        self.writes = 0
        self.started = False

    def start_sound(self) -> None:
        self.started = True

    def write_sound(self, blocks: Sequence[AudioBlock]) -> None:
        self.writes += 1
        if self.writes == 2:
            raise AacError("AAC encoder: encode failed (Invalid argument)")


def test_a_failing_sound_encoder_is_an_alarm_and_detection_goes_on() -> None:
    alarms: list[str] = []
    det, sound = RecordingDetector(), BrokenSound()
    path = AudioPath(ScriptedMic(), det, on_alarm=alarms.append, sound=sound)
    path.start()
    assert sound.started and path.sound_state == "aac"
    for i in range(1, 6):
        path.poll(i * 33_000_000)
    assert sound.writes == 2 and len(det.blocks) == 5 and path.live  # the detector still hears
    assert len(alarms) == 1 and "ALARM footage sound" in alarms[0]
    tel = path.telemetry()
    assert tel["alarm"] is True and tel["footage_sound"] == "failed" and "encode failed" in str(tel["footage_sound_error"])
    assert "recordings WITHOUT sound (ALARM)" in path.summary()
