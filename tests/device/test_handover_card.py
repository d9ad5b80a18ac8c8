"""What a card the camera does not control can do to the key hand-over (review-handover R9, R2, R8): a
deeply nested JSON file is a logged problem for that file, never an error escaping recording, offload or
provisioning; a copied recording directory is no head; a hand-over planted with a leaked former key
counts for nothing."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from test_handover import DEVICE, EPOCH, recording

from bodycam.device.footage.handover import (
    HANDOVER_DIR,
    linkable_recording,
    read_handovers,
    rotate_key,
)
from bodycam.device.footage.recorder import Recorder, recover_interrupted
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.retention import read_manifest
from bodycam.device.hw.frames import StreamInfo
from bodycam.device.identity import load_signer, provision
from bodycam.device.uplink.offload import pending

BOMB = "[" * 1000


def test_nested_json_on_the_card_is_a_logged_problem_and_the_camera_records_offloads_and_rotates(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "identity" / "device.key"
    me = load_signer(provision(key, DEVICE).key_file)
    good = recording(tmp_path, "20260301T100000000Z", me)
    bombed = tmp_path / "recordings" / "20260301T110000000Z"
    bombed.mkdir()
    (bombed / "manifest.json").write_text(BOMB)
    (tmp_path / HANDOVER_DIR).mkdir()
    (tmp_path / HANDOVER_DIR / "x.json").write_text(BOMB)
    with caplog.at_level(logging.ERROR):
        assert read_handovers(tmp_path) == []
    assert "ALARM hand-over record left out" in caplog.text and "nested" in caplog.text
    assert recover_interrupted(tmp_path / "recordings", me) == []
    assert read_manifest(bombed) is None  # retention: unreadable, so protected
    assert [p.name for p in pending(tmp_path / "recordings", {}, me.key_id)] == [good[0]]
    rec = Recorder(tmp_path, DEVICE, RecordingConfig(pre_event_s=0.0, segment_s=2.0), lambda t: EPOCH + t, signer=me)
    rec.begin(StreamInfo(320, 240, 30.0, False))  # the camera records
    try:
        assert rec._last_dir == tmp_path / "recordings" / good[0]
        assert any(u.startswith(bombed.name) for u in rec.unlinked)
    finally:
        rec.close()
    rotated = rotate_key(key, DEVICE, tmp_path, "2026-06-01T08:00:00.000Z")  # provision --force works
    assert rotated.head == good and rotated.handover is not None


def test_a_recording_copied_under_another_name_is_no_head_and_is_reported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "identity" / "device.key"
    old = load_signer(provision(key, DEVICE).key_file)
    first = recording(tmp_path, "20260301T100000000Z", old)
    last = recording(tmp_path, "20260301T110000000Z", old)
    # card access, no key: the genuine first recording copied under a later name
    shutil.copytree(tmp_path / "recordings" / first[0], tmp_path / "recordings" / "20260301T235959999Z")
    found, passed = linkable_recording(tmp_path / "recordings", old.public, [])
    assert found == tmp_path / "recordings" / last[0]
    assert passed and passed[0].startswith("20260301T235959999Z") and "copied or renamed" in passed[0]
    with caplog.at_level(logging.WARNING):
        rotated = rotate_key(key, DEVICE, tmp_path, "2026-06-01T08:00:00.000Z")
    assert rotated.head == last  # the genuine last recording, not the copy
    assert "copied or renamed" in caplog.text
