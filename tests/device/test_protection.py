"""A shot's footage stays protected through what a camera meets: a full card that refuses the
manifest write that protects it, and a kill between journaling a marker and rewriting the manifest.
Real H.264 clips, a real tmpfs card (root), a real SIGKILL, ``bodycam verify``'s own checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from _clips import make_plain_clip

from bodycam.device.errors import StorageError
from bodycam.device.footage.recorder import Recorder
from bodycam.device.footage.recording import Recording, sentinels
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.retention import Retention, RetentionConfig
from bodycam.device.identity import load_signer, provision
from bodycam.device.verify import verify_path
from bodycam.hw_sim.clip_camera import ClipCamera

S = 1_000_000_000
EPOCH = 1_800_000_000 * S


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_plain_clip(tmp_path_factory.mktemp("clips") / "plain.mp4", seconds=6, fps=30)


@pytest.fixture
def card(small_card: Callable[[str], Path]) -> Path:
    return small_card("4m")


def fill_up(path: Path) -> None:
    """Write until the card refuses a single block more."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def feed_and_start(rec: Recorder, cam: ClipCamera, frames: int, start_at: int) -> Recording:
    """Feed ``frames`` frames of ``cam`` to ``rec``, starting a recording ("button") at frame ``start_at``."""
    r = None
    for i in range(frames):
        f = cam.read()
        assert f is not None
        rec.feed(f.packets, f.t_ns)
        if i == start_at:
            r = rec.start("button", f.t_ns)
    assert r is not None
    return r


def test_a_protection_the_full_card_refuses_in_the_manifest_survives_restart_and_retention(
    clip: Path, card: Path
) -> None:
    rec = Recorder(card, "cam-1", RecordingConfig(pre_event_s=1, segment_s=60), lambda t: EPOCH + t)
    with ClipCamera(clip, (64, 36)) as cam:
        assert cam.info is not None
        rec.begin(cam.info)
        r = feed_and_start(rec, cam, 120, 40)
        assert sentinels(r.path)[0].exists()
        fill_up(card / "filler")  # footage and everything else filled the card
        with pytest.raises(StorageError, match="No space left"):  # what App._emit meets for a shot
            r.protect()
        rec.fail(r, "card full")
        on_card = json.loads((r.path / "manifest.json").read_text())
        assert on_card["protected"] is False  # the manifest write was refused ...
        assert sentinels(r.path)[1].exists() and not sentinels(r.path)[0].exists()  # ... not this
    rec.close()
    os.remove(card / "filler")
    later = Recorder(card, "cam-1", RecordingConfig(), lambda t: EPOCH + t)  # restart: recovery
    later.begin(cam.info)
    later.close()
    assert later.recovered == [r.recording_id]
    assert json.loads((r.path / "manifest.json").read_text())["protected"] is True
    # and even a manifest that says otherwise (written by an older firmware, or edited) is overruled
    res = Retention(card / "recordings", RetentionConfig(min_free_mb=100)).enforce()
    assert res.deleted == [] and res.alarm
    assert r.path.exists()


def test_an_unprotected_recording_is_still_deletable(clip: Path, card: Path) -> None:
    """The sentinel protects only what was protected: ordinary footage still makes room."""
    rec = Recorder(card, "cam-1", RecordingConfig(pre_event_s=1, segment_s=60), lambda t: EPOCH + t)
    with ClipCamera(clip, (64, 36)) as cam:
        assert cam.info is not None
        rec.begin(cam.info)
        r = feed_and_start(rec, cam, 60, 10)
        rec.stop()
    rec.close()
    assert not sentinels(r.path)[1].exists()
    res = Retention(card / "recordings", RetentionConfig(min_free_mb=100)).enforce()
    assert res.deleted == [r.recording_id]
    assert not any(p.exists() for p in sentinels(r.path))  # its sentinel went with it


CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from bodycam.device.clock import VirtualClock
    from bodycam.device.footage.recorder import Recorder
    from bodycam.device.footage.recording import Recording, chapter_label
    from bodycam.device.footage.recording_state import RecordingConfig
    from bodycam.device.identity import load_signer
    from bodycam.device.uplink.markers import MarkerDraft, ModelRef
    from bodycam.device.uplink.outbox import Outbox
    from bodycam.hw_sim.clip_camera import ClipCamera
    work, clip, where = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    EPOCH = 1_800_000_000 * 10**9
    signer = load_signer(work / "device.key")
    ob = Outbox(work / "outbox.sqlite", "cam-1", VirtualClock(0, EPOCH), signer=signer)
    rec = Recorder(work, "cam-1", RecordingConfig(pre_event_s=1, segment_s=60), lambda t: EPOCH + t, signer=signer)
    with ClipCamera(clip, (64, 36)) as cam:
        rec.begin(cam.info)
        for i in range(90):
            f = cam.read()
            rec.feed(f.packets, f.t_ns)
            if i == 30:
                r = rec.start("button", f.t_ns)
                m = ob.record(MarkerDraft(kind="recording_start", t_mono_ns=f.t_ns, wall_ns=EPOCH + f.t_ns,
                                          extra={"reason": "button"}))
                r.add_marker(m.kind, m.t_mono_ns, m.to_json(), chapter_label(m.kind, m.confidence))
            if i == 60:  # a shot, as App._emit and _after_record do it: protect, journal, tag
                m = ob.record(MarkerDraft(kind="gunshot", t_mono_ns=f.t_ns, wall_ns=EPOCH + f.t_ns, confidence=0.97,
                                          model=ModelRef(name="shotnet", version="1.0.0", sha256="0" * 64)))
                if where == "after-append":  # the line is on the card, chapters and manifest are not
                    Recording.write_chapters = lambda self: os.kill(os.getpid(), signal.SIGKILL)
                else:  # torn: half of the line reached the card
                    line = m.to_json()
                    with open(r.path / "markers.jsonl", "ab") as fh:
                        fh.write(line[: len(line) // 2])
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
                r.add_marker(m.kind, m.t_mono_ns, m.to_json(), chapter_label(m.kind, m.confidence))
""")


@pytest.mark.parametrize("where", ["after-append", "torn-line"])
def test_a_kill_while_a_marker_is_journaled_leaves_a_recording_that_verifies(
    clip: Path, tmp_path: Path, where: str
) -> None:
    provision(tmp_path / "device.key", "cam-1")
    (tmp_path / "child.py").write_text(CHILD)
    p = subprocess.run([sys.executable, str(tmp_path / "child.py"), str(tmp_path), str(clip), where],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -9, p.stderr
    signer = load_signer(tmp_path / "device.key")
    later = Recorder(tmp_path, "cam-1", RecordingConfig(), lambda t: EPOCH + t, signer=signer)
    with ClipCamera(clip, (64, 36)) as cam:
        assert cam.info is not None
        later.begin(cam.info)
    later.close()
    (rd,) = (tmp_path / "recordings").iterdir()
    assert later.recovered == [rd.name]
    manifest = json.loads((rd / "manifest.json").read_text())
    lines = (rd / "markers.jsonl").read_bytes().splitlines()
    assert manifest["marker_count"] == len(lines) == (2 if where == "after-append" else 1)
    assert manifest["protected"] is (where == "after-append")  # the gunshot's line protects it
    report = verify_path(tmp_path / "recordings", signer.public, "test")
    assert report.ok, [(f.code, f.message) for r in report.recordings for f in r.findings]


def test_recordings_stay_in_order_when_the_wall_clock_steps_back(clip: Path, tmp_path: Path) -> None:
    """An RTC-less Pi boots on fake-hwclock and NTP/GNSS then steps its clock back: the recordings made
    after the step (and after a restart) still sort after the earlier ones, so the chain of manifests,
    retention's oldest-first and ``bodycam verify`` see them in the order they were made."""
    from bodycam.device.footage.recorder import next_recording_id

    provision(tmp_path / "device.key", "cam-1")
    signer = load_signer(tmp_path / "device.key")
    offset = [EPOCH]

    def record_one(rec: Recorder, cam: ClipCamera) -> str:
        r = feed_and_start(rec, cam, 30, 5)
        rec.stop()
        return r.recording_id

    made = []
    with ClipCamera(clip, (64, 36)) as cam:
        assert cam.info is not None
        rec = Recorder(tmp_path, "cam-1", RecordingConfig(pre_event_s=0.2), lambda t: offset[0] + t, signer=signer)
        rec.begin(cam.info)
        made.append(record_one(rec, cam))
        offset[0] -= 3600 * S  # the clock steps back an hour
        made.append(record_one(rec, cam))
        rec.close()
        rec = Recorder(tmp_path, "cam-1", RecordingConfig(pre_event_s=0.2), lambda t: offset[0] + t, signer=signer)
        rec.begin(cam.info)  # a restart, still behind
        made.append(record_one(rec, cam))
        rec.close()
    assert sorted(made) == made and len(set(made)) == 3
    assert made[1] == made[0] + "-0001" and made[2] == made[0] + "-0002"
    report = verify_path(tmp_path / "recordings", signer.public, "test")
    assert report.ok, [(f.code, f.message) for r in report.recordings for f in r.findings]
    assert next_recording_id("20270101T000000000Z", "20270101T000000000Z-0009") == "20270101T000000000Z-0010"
    assert next_recording_id("20270101T000000001Z", "20270101T000000000Z-0009") == "20270101T000000001Z"
    for old in ("20270101T000000000Z-2", "20270101T000000000Z-10"):  # an older firmware's same-ms suffixes
        assert next_recording_id("20270101T000000000Z", old) > old
