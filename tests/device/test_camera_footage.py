"""Footage written by the camera (picamera2 path): crash-safe, every frame kept, write errors raise the alarm.

Runs the firmware's `Recorder` over the `PiCamera` adapter on the fake picamera2, which encodes
real H.264 and muxes it with PyAV exactly as picamera2's `PyavOutput` does.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bodycam.device.footage.recorder import Recorder
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.segment_writer import sha256_of
from bodycam.device.hw.config import CameraConfig
from bodycam.device.hw.frames import StreamInfo
from bodycam.device.hw.picamera_adapter import PiCamera
from bodycam.hw_sim.fake_picamera2 import FakePicamera2Module, read_video

EPOCH = 1_780_000_000_000_000_000
FRAME_US = 33_333
CFG = CameraConfig(main_size=(320, 240), lores_size=(160, 96), framerate=30.0, iperiod=15)

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from bodycam.device.footage.recorder import Recorder
    from bodycam.device.footage.recording_state import RecordingConfig
    from bodycam.device.hw.config import CameraConfig
    from bodycam.device.hw.picamera_adapter import PiCamera
    from bodycam.hw_sim.fake_picamera2 import FakePicamera2Module

    cfg = CameraConfig(main_size=(320, 240), lores_size=(160, 96), framerate=30.0, iperiod=15)
    cam = PiCamera(cfg, segment_s=2.0, pre_event_s=1.0, picamera2_module=FakePicamera2Module())
    rec = Recorder(Path(sys.argv[1]), "cam-1", RecordingConfig(pre_event_s=1.0, segment_s=2.0),
                   lambda t: 1_780_000_000_000_000_000 + t, camera_footage=cam)
    rec.begin(cam.start())
    i = 0
    while True:
        f = cam.read()
        rec.feed(f.packets, f.t_ns)
        if f.index == 45:
            r = rec.start("detection", f.t_ns, include_buffer=False)
            r.protect()
        print(f.index, flush=True)
        i += 1
""")


def frame_numbers(frames: list[tuple[int, bool]]) -> list[int]:
    return [round(t / FRAME_US) for t, _ in frames]


@pytest.mark.integration
def test_sigkill_mid_recording_then_recovery_plays_and_verifies(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last >= 260:  # ~7 s into the recording, in its third segment
            break
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    (rec_dir,) = (tmp_path / "recordings").iterdir()
    assert json.loads((rec_dir / "manifest.json").read_text())["complete"] is False

    later = Recorder(tmp_path, "cam-1", RecordingConfig(), lambda t: EPOCH + t)
    later.begin(StreamInfo(320, 240, 30.0, False))  # start-up of the next run
    later.close()
    assert later.recovered == [rec_dir.name]
    manifest = json.loads((rec_dir / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["recovered"] is True and manifest["protected"] is True
    files = sorted(rec_dir.glob("segment-*.mp4"))
    assert [s["file"] for s in manifest["segments"]] == [f.name for f in files] and len(files) >= 3
    total = 0
    for s, f in zip(manifest["segments"], files, strict=True):
        assert s["sha256"] == sha256_of(f) and s["bytes"] == f.stat().st_size  # verifies against the manifest
        frames = read_video(str(f))
        assert frames and frames[0][1], f"{f.name} starts with a keyframe"
        assert frame_numbers(frames) == list(range(len(frames))), f"{f.name} plays without a gap"
        total += len(frames)
    # the recording starts at the first keyframe after the trigger (frame 60: keyframes every 15);
    # everything before the last keyframe the writer had passed on is on disk and plays
    first, last_key = 60, (last - 1) // 15 * 15
    assert last_key - first <= total <= last + 200, (total, last)


def fill(disk: Path, leave_kb: int = 48) -> None:
    st = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_kb * 1024))


def test_a_full_card_raises_the_storage_alarm_at_the_next_frame(tiny_disk: Path) -> None:
    cam = PiCamera(CFG, segment_s=2.0, pre_event_s=1.0, picamera2_module=FakePicamera2Module())
    rec = Recorder(tiny_disk, "cam-1", RecordingConfig(pre_event_s=1.0, segment_s=2.0), lambda t: EPOCH + t,
                   camera_footage=cam)
    rec.begin(cam.start())
    failed_at = alarm_at = None
    for n in itertools.count():
        f = cam.read()
        assert f is not None
        if failed_at is None and cam.footage_error() is not None:
            failed_at = f.t_ns  # the write failed while this frame was being encoded
        rec.feed(f.packets, f.t_ns)
        if n == 40:
            assert rec.start("detection", f.t_ns) is not None
            fill(tiny_disk)
        if rec.storage_alarm:
            alarm_at = f.t_ns
            break
        assert n < 3000, "the full card was never noticed"
    rec.close()
    assert failed_at is not None and alarm_at is not None
    assert alarm_at - failed_at <= 1_000_000_000  # within a second (here: the same frame)
    assert rec.errors and ("full" in rec.errors[0] or "write failed" in rec.errors[0])
    assert not cam.recording  # the camera went back to its pre-event buffer
    assert cam.read() is not None  # and the loop goes on
    cam.stop()
    # the card was too full for the manifest as well; once there is room again, start-up
    # recovery hashes what reached the disk and records that the recording was cut short
    (tiny_disk / "filler").unlink()
    (r,) = rec.finished
    later = Recorder(tiny_disk, "cam-1", RecordingConfig(), lambda t: EPOCH + t)
    later.begin(StreamInfo(320, 240, 30.0, False))
    later.close()
    manifest = json.loads((r.path / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["error"]
    for s in manifest["segments"]:
        assert s["sha256"] == sha256_of(r.path / s["file"])
        assert len(read_video(str(r.path / s["file"]))) > 0  # what was written before the card filled plays


@pytest.mark.integration
def test_the_camera_writes_segments_encrypted_at_rest(tmp_path: Path) -> None:
    """picamera2's PyavOutput muxes into the encrypting file object: every file on the card is an age
    file, the manifest signs both hashes, and base's decryption plays frame for frame."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from bodycam.device.footage.atrest import SegmentEncryption, decrypt_file

    base = X25519PrivateKey.generate()
    cam = PiCamera(CFG, segment_s=2.0, pre_event_s=1.0, picamera2_module=FakePicamera2Module())
    rec = Recorder(tmp_path, "cam-1", RecordingConfig(pre_event_s=1.0, segment_s=2.0), lambda t: EPOCH + t,
                   camera_footage=cam, encryption=SegmentEncryption(base.public_key()))
    rec.begin(cam.start())
    for n in range(200):
        f = cam.read()
        assert f is not None
        rec.feed(f.packets, f.t_ns)
        if n == 40:
            assert rec.start("detection", f.t_ns) is not None
    rec.stop()
    rec.close()
    cam.stop()
    (r,) = rec.finished
    manifest = json.loads((r.path / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["error"] is None and manifest["encryption"]
    files = sorted(p.name for p in r.path.iterdir() if p.name.startswith("segment-"))
    assert files == [s["file"] for s in manifest["segments"]] and len(files) >= 3
    total = 0
    for s in manifest["segments"]:
        enc = r.path / s["file"]
        assert s["file"].endswith(".mp4.age") and b"ftyp" not in enc.read_bytes()
        assert s["sha256"] == sha256_of(enc)
        got = decrypt_file(enc, base, tmp_path / "plain.mp4")
        assert (got.plain_sha256, got.plain_bytes) == (s["plain_sha256"], s["plain_bytes"])
        frames = read_video(str(tmp_path / "plain.mp4"))
        assert frames and frames[0][1] and frame_numbers(frames) == list(range(len(frames)))
        total += len(frames)
    assert total >= 200 - 40
