"""The camera's recordings carry the microphone's sound (AAC), the pre-event buffer keeps it.

Runs the `PiCamera` adapter on the fake picamera2 (real H.264 through libx264, muxed by the same
`PyavOutput`/`CircularOutput2` code path picamera2 has) with the loop's `AudioPath` handing the
microphone's blocks to the footage, and reads the files back with PyAV: the AAC stream is there,
a tone burst played before the trigger is in the pre-event seconds, at the file time of the frame
with the same sensor time (within a frame), across segment cuts; a failing microphone ends the
sound but not the picture; a camera without a microphone records video only and says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from _atrest import install_base_key
from _clips import tone_clip

from bodycam.device.clock import SystemClock
from bodycam.device.config import AppConfig
from bodycam.device.detect.audio_path import AudioPath
from bodycam.device.footage.aac_track import AacTrack
from bodycam.device.footage.atrest import decrypt_file
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.hw.config import CameraConfig
from bodycam.device.hw.inputs import InputEvent
from bodycam.device.hw.microphone import AudioBlock, MicrophoneError
from bodycam.device.hw.picamera_adapter import PiCamera
from bodycam.hw_sim.fake_picamera2 import FakePicamera2Module, Picamera2
from bodycam.hw_sim.sim_microphone import ClipMicrophone

FPS = 30.0
FRAME_S = 1 / FPS
CFG = CameraConfig(main_size=(320, 240), lores_size=(160, 96), framerate=FPS, iperiod=15)
BOOT_S = Picamera2.boot_ns / 1e9


def read_sound(path: Path) -> tuple[list[float], float, np.ndarray[Any, Any], Any]:
    """(video frame times, time of the first sound sample, the sound, the audio stream's codec context)."""
    with av.open(str(path)) as c:
        video = [float(f.time) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        assert c.streams.audio, f"{path.name}: no audio stream"
        ctx = c.streams.audio[0].codec_context
        info = (ctx.name, ctx.sample_rate, len(ctx.layout.channels))
        frames = [(float(f.time), f.to_ndarray()[0]) for f in c.decode(audio=0)]
    # the decoded sound is contiguous (no hole, no overlap) from its first sample on
    for (t0, x0), (t1, _) in itertools.pairwise(frames):
        assert abs(t0 + len(x0) / 16000 - t1) < 1.5 / 16000, f"{path.name}: sound jumps at {t1:.4f} s"
    if not frames:
        return video, float("nan"), np.zeros(0, np.float32), info
    return video, frames[0][0], np.concatenate([x for _, x in frames]), info


def onsets(*parts: tuple[float, np.ndarray[Any, Any]], level: float = 0.1) -> list[float]:
    """Times where the sound (pieces placed at their start times) rises above ``level`` after 0.1 s below it."""
    loud = sorted(t + i / 16000 for t, x in parts for i in np.flatnonzero(np.abs(x) > level))
    out: list[float] = []
    last = -1e9
    for t in loud:
        if t - last > 0.1:
            out.append(t)
        last = t
    return out


class FailingMic:
    """A microphone that plays ``inner`` and then fails, like a USB microphone pulled out."""

    def __init__(self, inner: Any, fail_after_ns: int) -> None:
        self.inner, self.fail_after_ns = inner, fail_after_ns

    def start(self) -> bool:
        return bool(self.inner.start())

    def read(self, until_ns: int) -> list[AudioBlock]:
        if until_ns >= self.fail_after_ns:
            raise MicrophoneError("microphone 'default': capture failed (No such device)")
        return list(self.inner.read(until_ns))

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(params=["vc4", "pisp"])
def module(request: pytest.FixtureRequest) -> FakePicamera2Module:
    return FakePicamera2Module(platform=request.param)


def run(cam: PiCamera, audio: AudioPath, frames: int, start_at: int | None, rec: Path) -> Iterator[int]:
    """Read ``frames`` frames through the audio path; start recording at ``start_at``; yields indexes."""
    cam.start()
    audio.start()
    for _ in range(frames):
        f = cam.read()
        assert f is not None
        audio.poll(f.t_ns)
        if f.index == start_at:
            cam.start_recording(lambda k: rec / f"segment-{k:05d}.mp4")
        yield f.index


def test_the_pre_event_buffer_keeps_the_sound_from_before_the_trigger(module: FakePicamera2Module,
                                                                      tmp_path: Path) -> None:
    # a burst at 2.5 s, the trigger at frame 120 (4.0 s), 2 s of pre-event buffer
    mic = ClipMicrophone(tone_clip(tmp_path / "tone.m4a", 10.0, (2.5, 6.0)), origin_ns=Picamera2.boot_ns)
    cam = PiCamera(CFG, pre_event_s=2.0, picamera2_module=module)
    audio = AudioPath(mic, sound=cam)
    last = list(run(cam, audio, 240, 120, tmp_path / "rec"))[-1]
    cam.stop_recording()
    assert audio.sound_state == "aac" and "recordings with sound" in audio.summary()
    (path,) = cam.segments
    video, a0, x, info = read_sound(path)
    assert info == ("aac", 16000, 1)
    first = last - (len(video) - 1)  # the frames are contiguous up to the last one read
    assert first * FRAME_S <= 4.0 - 2.0  # the pre-event seconds are in the file
    # the sound starts with the picture (within one AAC packet) and goes on to its end
    assert 0 <= a0 < 0.064 + 1e-6
    assert a0 + len(x) / 16000 > video[-1] - 0.25
    # both bursts where the frames of the same sensor time are, within a frame
    expected = [b - first * FRAME_S for b in (2.5, 6.0)]
    found = onsets((a0, x))
    assert len(found) == 2 and all(abs(f - e) < FRAME_S for f, e in zip(found, expected, strict=True)), \
        (found, expected)
    assert found[0] < (120 - first) * FRAME_S  # the first one is before the trigger
    cam.stop()


def test_the_sound_keeps_its_place_across_segment_cuts(tmp_path: Path) -> None:
    bursts = (1.2, 2.52, 3.9, 5.05)
    mic = ClipMicrophone(tone_clip(tmp_path / "tone.m4a", 8.0, bursts), origin_ns=Picamera2.boot_ns)
    cam = PiCamera(CFG, segment_s=1.0, pre_event_s=1.0, picamera2_module=FakePicamera2Module())
    audio = AudioPath(mic, sound=cam)
    last = list(run(cam, audio, 200, 60, tmp_path / "rec"))[-1]
    cam.stop_recording()
    assert len(cam.segments) >= 4
    per_file = [read_sound(p) for p in cam.segments]
    first = last - (sum(len(v) for v, *_ in per_file) - 1)
    pieces = []
    t_file = first * FRAME_S  # sensor seconds (from boot) of each file's first frame
    end = first * FRAME_S + sum(len(v) for v, *_ in per_file) * FRAME_S  # the recording's end
    for video, a0, x, _ in per_file:
        file_end = t_file + len(video) * FRAME_S
        if len(x):  # each file's sound starts with its picture and lasts to its end, except the
            # recording's last ~0.2 s (in the AAC encoder when the recording stopped)
            assert 0 <= a0 < 0.064 + 1e-6
            assert t_file + a0 + len(x) / 16000 >= min(file_end, end - 0.25)
            pieces.append((t_file + a0, x))
        else:
            assert file_end - t_file < 0.3
        t_file = file_end
    found = onsets(*pieces)
    want = [b for b in bursts if b >= first * FRAME_S]
    assert len(found) == len(want) and all(abs(f - w) < FRAME_S for f, w in zip(found, want, strict=True)), \
        (found, want)
    out = cam._output
    assert out is not None and out.late_audio == 0
    cam.stop()


def test_a_microphone_failing_mid_recording_ends_the_sound_not_the_picture(tmp_path: Path) -> None:
    fail_at = Picamera2.boot_ns + 3_000_000_000
    mic = FailingMic(ClipMicrophone(tone_clip(tmp_path / "tone.m4a", 12.0, ()), origin_ns=Picamera2.boot_ns),
                     fail_at)
    alarms: list[str] = []
    cam = PiCamera(CFG, pre_event_s=1.0, picamera2_module=FakePicamera2Module())
    audio = AudioPath(mic, sound=cam, on_alarm=alarms.append)
    path = tmp_path / "rec" / "segment-00000.mp4"
    for index in run(cam, audio, 300, 30, tmp_path / "rec"):
        if index == 299:
            # still recording: the picture after the failure (frame 90) is on disk already: the muxer
            # waits at most 1 s (30 frames) for sound that no longer comes, plus the open fragment (15)
            with av.open(str(path)) as c:
                on_disk = sum(1 for _ in c.decode(video=0))
            assert on_disk >= (299 - 30) - 30 - 15 - 2
    assert audio.state == "failed" and len(alarms) == 1 and "ALARM microphone" in alarms[0]
    assert audio.telemetry()["alarm"] is True and "video-only" in audio.summary()
    cam.stop_recording()
    video, a0, x, _ = read_sound(path)
    assert len(video) >= 300 - 30  # every frame from the trigger on
    first = 299 - (len(video) - 1)
    sound_end = (first * FRAME_S) + a0 + len(x) / 16000
    assert 3.0 - 0.5 < sound_end <= 3.0 + 0.1  # the sound stops where the microphone did
    cam.stop()


def test_a_camera_without_a_microphone_records_video_only_and_says_so(tmp_path: Path) -> None:
    cam = PiCamera(CFG, pre_event_s=1.0, picamera2_module=FakePicamera2Module())
    audio = AudioPath(None, sound=cam)
    list(run(cam, audio, 90, 45, tmp_path / "rec"))
    cam.stop_recording()
    with av.open(str(cam.segments[0])) as c:
        assert [s.type for s in c.streams] == ["video"]
    assert audio.sound_state == "none" and audio.summary() == \
        "audio: video-only (no microphone); recordings without sound"
    assert audio.telemetry()["footage_sound"] == "none"
    cam.stop()


def test_the_fake_pyav_output_refuses_what_picamera2_refuses(tmp_path: Path) -> None:
    module = FakePicamera2Module()
    track = AacTrack()
    packets = track.encode(AudioBlock(0, np.zeros(4096, np.float32)))
    assert packets and all(p.time_base == Fraction(1, 1_000_000) and p.duration == 64_000 for p in packets)
    out = module.outputs.PyavOutput(str(tmp_path / "a.mp4"), format="mp4")
    out.start()
    out._add_stream("video", "h264", width=320, height=240)
    with pytest.raises(RuntimeError, match="Stream not found in PyavOutput"):
        out.outputframe(None, True, 0, packets[0], True)  # a stream the output was never told about
    out.stop()
    enc = module.encoders.H264Encoder()
    enc.audio = True  # picamera2's own audio input: a second open of the microphone
    enc.output = module.outputs.Output()
    with pytest.raises(NotImplementedError, match=r"Encoder\.audio"):
        enc.start()
    track.close()


def test_the_aac_track_fills_short_gaps_and_jumps_long_ones() -> None:
    track = AacTrack()
    t0 = 1_000_000_000
    blocks = [AudioBlock(t0, np.zeros(16000, np.float32)),
              AudioBlock(t0 + 1_010_000_000, np.zeros(16000, np.float32)),  # an overrun: 10 ms lost
              AudioBlock(t0 + 5_000_000_000, np.zeros(16000, np.float32)),  # 3 s gap: a new span
              AudioBlock(t0 + 5_990_000_000, np.zeros(1600, np.float32))]  # 10 ms overlap: dropped
    packets = [p for b in blocks for p in track.encode(b)] + track.flush()
    assert track.filled == 160 and track.dropped == 160
    times = [int(p.pts) for p in packets]
    assert times == sorted(times) and len(set(times)) == len(times)
    # before the jump the packets follow the first span; after it, the second
    assert times[0] == (t0 - 64_000_000) // 1000  # AAC priming: the first packet starts a frame early
    assert any(t >= (t0 + 5_000_000_000) // 1000 for t in times)
    assert not any((t0 + 2_100_000_000) // 1000 < t < (t0 + 4_900_000_000) // 1000 for t in times)
    track.close()


class RecordPress:
    """Inputs: one press of the record button after frame ``at_frame`` (the loop polls once a frame)."""

    def __init__(self, at_frame: int) -> None:
        self.at_frame, self.polls = at_frame, 0

    def poll(self) -> list[InputEvent]:
        self.polls += 1
        if self.polls == self.at_frame + 1:
            return [InputEvent("record", Picamera2.boot_ns + round(self.at_frame * FRAME_S * 1e9))]
        return []


@pytest.mark.integration
def test_the_camera_path_through_the_assembly_records_sound_and_verifies(tmp_path: Path) -> None:
    from bodycam.device.assemble import HardwareParts, assemble, model_spec
    from bodycam.device.identity import Signer
    from bodycam.device.verify import verify_path

    mic = ClipMicrophone(tone_clip(tmp_path / "tone.m4a", 12.0, (2.5,)), origin_ns=Picamera2.boot_ns)
    base = AppConfig()
    cfg = replace(base, device=replace(base.device, data_dir=str(tmp_path / "data")),
                  mqtt=replace(base.mqtt, enabled=False),
                  recording=RecordingConfig(pre_event_s=2.0, segment_s=2.0))
    spec = model_spec(cfg).input
    cam = PiCamera(replace(CFG, lores_size=(spec.width, spec.height)), segment_s=2.0, pre_event_s=2.0,
                   picamera2_module=FakePicamera2Module())
    signer = Signer.generate()
    base_key = install_base_key(tmp_path / "data")  # footage encrypted at rest (the default), sound included
    parts = HardwareParts(camera=cam, clock=SystemClock(), footage=cam, footage_sound=cam, microphone=mic,
                          inputs=RecordPress(120))
    with assemble(cfg, parts, signer=signer) as fw:
        fw.app.run(max_frames=270)
        assert fw.app.audio.summary() == "audio: microphone live, recordings with sound"
        assert fw.app.stats.audio_encode_ns > 0
    (rec,) = (tmp_path / "data" / "recordings").iterdir()
    report = verify_path(tmp_path / "data", signer.public, "test", base_key)
    assert report.ok, report.to_json()
    assert not list(rec.glob("segment-*.mp4")), "only encrypted segments on the card"
    for enc in sorted(rec.glob("segment-*.mp4.age")):
        decrypt_file(enc, base_key)  # base's side: segment-NNNNN.mp4 beside it
    segments = sorted(rec.glob("segment-*.mp4"))
    assert len(segments) >= 2
    _, a0, x, info = read_sound(segments[0])
    assert info == ("aac", 16000, 1)
    first = 269 - (sum(len(read_sound(s)[0]) for s in segments) - 1)
    found = onsets((a0, x))
    assert found and abs(found[0] - (2.5 - first * FRAME_S)) < FRAME_S  # the pre-event burst, in place
    assert "recording_start" in (rec / "chapters.vtt").read_text()
    # the segment's hash covers its sound: one byte changed inside an AAC packet does not verify
    with av.open(str(segments[0])) as c:
        pos = next(p.pos for p in c.demux(audio=0) if p.size > 8 and p.pos is not None and p.pos > 0)
    data = bytearray(segments[0].read_bytes())
    data[pos + 4] ^= 0x55
    segments[0].write_bytes(bytes(data))
    tampered = verify_path(tmp_path / "data", signer.public, "test")
    assert not tampered.ok
    assert [(f.code, f.where) for r in tampered.recordings for f in r.findings if f.level == "fail"] == \
        [("segment_hash", segments[0].name)]
