"""Recorder, pre-event buffer, segments, manifest, chapters and retention on real H.264 clips."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import av
import pytest
from _clips import make_plain_clip

from bodycam.device.footage.footage_path import PacketFootage
from bodycam.device.footage.prebuffer import PreEventBuffer
from bodycam.device.footage.recorder import Recorder
from bodycam.device.footage.recording import Recording
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.retention import DiskUsage, Retention, RetentionConfig
from bodycam.device.footage.segment_writer import sha256_of
from bodycam.device.hw.frames import EncodedPacket
from bodycam.hw_sim.clip_camera import ClipCamera

S = 1_000_000_000
EPOCH = 1_800_000_000 * S


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_plain_clip(tmp_path_factory.mktemp("clips") / "plain.mp4", seconds=12, fps=30)


def decode_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def run_recorder(clip: Path, out: Path, start_s: float, stop_s: float, **cfg: float) -> Recorder:
    rec = Recorder(out, "cam-1", RecordingConfig(**cfg), lambda t: EPOCH + t)  # type: ignore[arg-type]
    with ClipCamera(clip, (64, 36)) as cam:
        assert cam.info is not None
        rec.begin(cam.info)
        while (frame := cam.read()) is not None:
            rec.feed(frame.packets)
            if rec.active is None and abs(frame.t_ns - start_s * S) < S // 60 and not rec.finished:
                rec.start("detection", frame.t_ns, include_buffer=True)
            if rec.active is not None and frame.t_ns >= stop_s * S:
                rec.stop()
    rec.close()  # stops any recording and waits for the segment hashes
    return rec


def test_detection_recording_contains_the_pre_event_seconds(clip: Path, tmp_path: Path) -> None:
    rec = run_recorder(clip, tmp_path, start_s=8.0, stop_s=10.0, pre_event_s=3, segment_s=60)
    (r,) = rec.finished
    seg = r.path / "segment-00000.mp4"
    times = decode_times(seg)
    # the buffer starts at a keyframe (every 1 s) at least 3 s before the trigger at 8 s
    first_src = r.segments[0].start_mono_ns / S
    assert 4.0 <= first_src <= 5.0 + 1e-6
    assert times[0] == pytest.approx(0.0, abs=1e-3)
    assert r.segments[0].end_mono_ns / S >= 10.0
    assert len(times) == r.segments[0].frames
    # the pre-event part really is there: >= 3 s of frames before the trigger
    assert (8.0 - first_src) * 30 <= len(times)
    with av.open(str(seg)) as c:
        assert c.streams.audio, "audio is kept"


def test_segments_rotate_at_keyframes_and_manifest_hashes_verify(clip: Path, tmp_path: Path) -> None:
    rec = run_recorder(clip, tmp_path, start_s=1.0, stop_s=11.5, pre_event_s=1, segment_s=3)
    (r,) = rec.finished
    manifest = json.loads((r.path / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["protected"] is False
    segs = manifest["segments"]
    assert len(segs) >= 3
    for s in segs:
        p = r.path / s["file"]
        assert sha256_of(p) == s["sha256"]
        assert p.stat().st_size == s["bytes"]
        assert decode_times(p)[0] == pytest.approx(0.0, abs=1e-3)
    for a, b in itertools.pairwise(segs):
        assert a["end_mono_ns"] == b["start_mono_ns"], "segments are contiguous"
        assert a["end_utc"] <= b["start_utc"]
    total = sum(len(decode_times(r.path / s["file"])) for s in segs)
    assert total == sum(s["frames"] for s in segs)


def test_markers_make_chapters_and_protect(clip: Path, tmp_path: Path) -> None:
    rec = run_recorder(clip, tmp_path, start_s=2.0, stop_s=4.0, pre_event_s=1)
    (r,) = rec.finished
    r.complete = False
    r.add_marker("gunshot", 3 * S, b'{"kind":"gunshot"}', "gunshot (0.91)")
    r.add_marker("manual", int(3.5 * S), b'{"kind":"manual"}', "manual")
    lines = (r.path / "markers.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["gunshot", "manual"]
    vtt = (r.path / "chapters.vtt").read_text()
    assert vtt.startswith("WEBVTT")
    start = r.segments[0].start_mono_ns
    assert f"{(3 * S - start) / S:.3f}"[:3] in vtt
    assert "gunshot (0.91)" in vtt
    manifest = json.loads((r.path / "manifest.json").read_text())
    assert manifest["protected"] is True and manifest["marker_count"] == 2
    seg, offset, frame = r.media_for(3 * S) or (None, None, None)
    assert seg == 0 and offset == pytest.approx((3 * S - start) / S) and frame == round(offset * 30)


def test_prebuffer_keeps_duration_from_a_keyframe() -> None:
    buf = PreEventBuffer(2.0)
    for i in range(300):
        buf.push(EncodedPacket("video", i * S // 30, i % 30 == 0, 100, None))
    packets = buf.drain()
    assert packets[0].keyframe
    span = (packets[-1].t_ns - packets[0].t_ns) / S
    assert 2.0 <= span < 3.0 + 1e-9
    assert len(buf) == 0


def _fake_recording(root: Path, name: str, protected: bool, complete: bool = True, size: int = 1000) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "segment-00000.mp4").write_bytes(b"x" * size)
    (d / "manifest.json").write_text(json.dumps({"protected": protected, "complete": complete}))


def test_retention_deletes_oldest_unprotected_only(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    _fake_recording(root, "20260101T000000000Z", protected=True)
    _fake_recording(root, "20260101T010000000Z", protected=False)
    _fake_recording(root, "20260101T020000000Z", protected=False)
    _fake_recording(root, "20260101T030000000Z", protected=False, complete=False)  # being written
    (root / "20260101T040000000Z").mkdir()  # no manifest: treated as protected
    free = {"v": 0}

    def usage(_: Path) -> DiskUsage:
        return DiskUsage(10**9, 10**9 - free["v"], free["v"])

    ret = Retention(root, RetentionConfig(min_free_mb=1, max_total_mb=0), disk_usage=usage)
    result = ret.enforce()
    names = sorted(p.name for p in root.iterdir())
    assert result.deleted == ["20260101T010000000Z", "20260101T020000000Z"]
    assert "20260101T000000000Z" in names and "20260101T040000000Z" in names and "20260101T030000000Z" in names
    assert result.alarm is True  # still short, only protected/unfinished left
    free["v"] = 10**9
    assert ret.enforce().alarm is False


def test_retention_by_total_size_cap(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    for i in range(4):
        _fake_recording(root, f"2026010{i}T000000000Z", protected=(i == 1), size=400_000)
    ret = Retention(root, RetentionConfig(min_free_mb=0, max_total_mb=1.0),
                    disk_usage=lambda p: DiskUsage(10**12, 0, 10**12))
    result = ret.enforce(active="20260103T000000000Z")
    assert result.deleted == ["20260100T000000000Z", "20260102T000000000Z"]
    assert not result.alarm


def test_recording_write_failure_is_reported_not_raised(clip: Path, tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "cam-1", RecordingConfig(pre_event_s=1), lambda t: EPOCH + t)
    with ClipCamera(clip, (64, 36)) as cam:
        assert cam.info is not None
        rec.begin(cam.info)
        frame = cam.read()
        assert frame is not None
        started = rec.start("button", frame.t_ns)
        assert isinstance(started, Recording)
        seg_dir = started.path
        for _ in range(40):
            f = cam.read()
            assert f is not None
            rec.feed(f.packets)
        # the directory vanishes under the recorder (e.g. the card is pulled): the next segment fails
        import shutil

        shutil.rmtree(seg_dir)
        assert isinstance(rec.footage, PacketFootage)
        rec.footage.segment_ns = 1  # force a rotation on the next keyframe
        for _ in range(60):
            f = cam.read()
            assert f is not None
            rec.feed(f.packets)
    rec.close()
    assert rec.active is None and rec.errors and rec.storage_alarm
    assert "segment" in rec.errors[0] or "cannot" in rec.errors[0]


def test_camera_written_footage_gets_a_verifiable_manifest(tmp_path: Path) -> None:
    """picamera2 writes the files itself: the recorder names them, then hashes and describes them."""
    from bodycam.device.hw.config import CameraConfig
    from bodycam.device.hw.picamera_adapter import PiCamera
    from bodycam.hw_sim.fake_picamera2 import FakePicamera2Module

    cfg = CameraConfig(main_size=(320, 240), lores_size=(160, 96), framerate=30.0, iperiod=15)
    cam = PiCamera(cfg, pre_event_s=2.0, picamera2_module=FakePicamera2Module(10**9))
    rec = Recorder(tmp_path, "cam-1", RecordingConfig(pre_event_s=2.0), lambda t: EPOCH + t, camera_footage=cam)
    rec.begin(cam.start())
    for i in range(150):
        frame = cam.read()
        assert frame is not None and frame.packets == ()
        rec.feed(frame.packets, frame.t_ns)
        if i == 90:
            started = rec.start("detection", frame.t_ns, include_buffer=True)
            assert started is not None and not started.exact_timing
            t_start = frame.t_ns
    r = rec.stop()
    rec.close()
    cam.stop()
    assert r is not None and r.complete and r.error is None
    manifest = json.loads((r.path / "manifest.json").read_text())
    assert manifest["timing"] == "approximate"
    (seg,) = manifest["segments"]
    path = r.path / seg["file"]
    assert path.is_file() and sha256_of(path) == seg["sha256"] and seg["bytes"] == path.stat().st_size
    # the file starts at a keyframe at least pre_event_s (2 s) before the trigger; its time comes
    # from the encoder's own timestamps, anchored at the last frame: here it lands exactly on the
    # fake camera's keyframe (every 15th frame from its boot time)
    frame_ns = 33_333_000
    start = seg["start_mono_ns"]
    assert t_start - 2 * S - 15 * frame_ns <= start <= t_start - 2 * S
    assert (start - 12_345_000_000) % (15 * frame_ns) == 0
    assert seg["end_mono_ns"] > t_start and seg["frames"] == (seg["end_mono_ns"] - start) // frame_ns + 1


def test_segments_keep_their_audio_across_boundaries_with_b_frames(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "b.mp4", seconds=8, fps=30, audio=True, bframes=3)
    with av.open(str(clip)) as c:
        pkts = [p for p in c.demux(video=0) if p.dts is not None]
        assert any(p.dts < p.pts for p in pkts), "the clip really has reordered (B) frames"
    rec = run_recorder(clip, tmp_path / "o", start_s=1.0, stop_s=7.9, pre_event_s=1, segment_s=2)
    (r,) = rec.finished
    segs = json.loads((r.path / "manifest.json").read_text())["segments"]
    assert len(segs) >= 3
    for s in segs[:-1]:
        with av.open(str(r.path / s["file"])) as c:
            audio_end = max(float(f.time) + f.samples / f.sample_rate for f in c.decode(audio=0))
        video_s = (s["end_mono_ns"] - s["start_mono_ns"]) / S
        assert audio_end >= video_s - 0.03, f"{s['file']}: audio ends at {audio_end:.3f} s of {video_s:.3f} s"


def test_a_recording_interrupted_by_a_crash_is_recovered_at_start_up(clip: Path, tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "cam-1", RecordingConfig(pre_event_s=1, segment_s=2), lambda t: EPOCH + t)
    with ClipCamera(clip, (64, 36)) as cam:
        assert cam.info is not None
        rec.begin(cam.info)
        for i in range(200):
            f = cam.read()
            assert f is not None
            rec.feed(f.packets, f.t_ns)
            if i == 40:
                r = rec.start("detection", f.t_ns)
                assert r is not None
                r.protect()
    # the process dies here: no stop(), the open segment is never closed (its hashing thread
    # dies with it: let this in-process stand-in finish what it already had, so it cannot
    # rewrite the manifest under the recovery below)
    assert r is not None
    rec._hasher.shutdown(wait=True)
    crashed = json.loads((r.path / "manifest.json").read_text())
    assert crashed["complete"] is False
    later = Recorder(tmp_path, "cam-1", RecordingConfig(), lambda t: EPOCH + t)
    later.begin(cam.info)
    later.close()
    assert later.recovered == [r.recording_id]
    manifest = json.loads((r.path / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["recovered"] is True and manifest["protected"] is True
    files = sorted(r.path.glob("segment-*.mp4"))
    assert [s["file"] for s in manifest["segments"]] == [f.name for f in files]
    for s in manifest["segments"]:
        assert s["sha256"] == sha256_of(r.path / s["file"])
    # the segments closed before the crash play in full (the one being written loses at most
    # the fragment in progress: fragments are cut at keyframes, ~1 s here)
    for s in manifest["segments"][:-1]:
        with av.open(str(r.path / s["file"])) as c:
            assert sum(1 for _ in c.decode(video=0)) == s["frames"]


def test_prebuffer_memory_is_bounded_without_keyframes() -> None:
    buf = PreEventBuffer(30.0, max_bytes=10_000)
    buf.push(EncodedPacket("video", 0, True, 100, None))
    for i in range(1, 500):  # an encoder that never sends another keyframe
        buf.push(EncodedPacket("video", i * S // 30, False, 100, None))
    assert len(buf) * 100 <= 10_000 and buf.overflows > 0


def test_retention_frees_unprotected_footage_for_the_outbox_reserve_first(tmp_path: Path) -> None:
    """The outbox took its reserve on a full card: retention owes that space before anything else."""
    from bodycam.device.uplink.reserve import SpaceReserve

    root = tmp_path / "recordings"
    _fake_recording(root, "20260101T000000000Z", protected=True)
    _fake_recording(root, "20260101T010000000Z", protected=False)
    _fake_recording(root, "20260101T020000000Z", protected=False)
    reserve = SpaceReserve(tmp_path / "outbox.sqlite.reserve", 2 << 20)
    assert reserve.deficit == 0
    reserve.release(2 << 20)  # given to the outbox
    assert reserve.deficit == 2 << 20
    free = {"v": 10**9}  # the disk looks roomy, but not for min_free + what the reserve is owed

    def usage(_: Path) -> DiskUsage:
        return DiskUsage(10**10, 10**10 - free["v"], free["v"])

    ret = Retention(root, RetentionConfig(min_free_mb=953, max_total_mb=0), disk_usage=usage,
                    reserve=_NoRoomUntilDeleted(reserve, root))
    result = ret.enforce()
    assert result.deleted == ["20260101T010000000Z"]  # the oldest unprotected one bought the room
    assert reserve.deficit == 0 and reserve.size == 2 << 20  # refilled before footage could take it
    assert not result.alarm


class _NoRoomUntilDeleted:
    """The real reserve, except that refilling fails while the first unprotected recording exists
    (as on a full card: only deleting footage makes room)."""

    def __init__(self, reserve: Any, root: Path) -> None:
        self.reserve, self.root = reserve, root

    @property
    def deficit(self) -> int:
        return int(self.reserve.deficit)

    def refill(self) -> int:
        if (self.root / "20260101T010000000Z").exists():
            return 0
        return int(self.reserve.refill())


def test_retention_goes_on_past_a_recording_it_cannot_delete(tmp_path: Path) -> None:
    """One undeletable entry (here a symlink to a recording elsewhere: rmtree refuses symlinks) must not
    stop the pass: the recordings after it are still freed, and the error is reported."""
    root = tmp_path / "recordings"
    elsewhere = tmp_path / "elsewhere"
    _fake_recording(elsewhere, "20260101T000000000Z", protected=False)
    root.mkdir()
    (root / "20260101T000000000Z").symlink_to(elsewhere / "20260101T000000000Z", target_is_directory=True)
    _fake_recording(root, "20260101T010000000Z", protected=False)
    free = {"v": 0}

    def usage(_: Path) -> DiskUsage:
        return DiskUsage(10**9, 10**9 - free["v"], free["v"])

    result = Retention(root, RetentionConfig(min_free_mb=1, max_total_mb=0), disk_usage=usage).enforce()
    assert result.deleted == ["20260101T010000000Z"]
    assert len(result.errors) == 1 and result.errors[0].startswith("20260101T000000000Z")
    assert (elsewhere / "20260101T000000000Z" / "manifest.json").exists()
