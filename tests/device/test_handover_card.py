"""What a card the camera does not control can do to the key hand-over (review-handover R9, R2, R8): a
deeply nested JSON file is a logged problem for that file, never an error escaping recording, offload or
provisioning; a copied recording directory is no head; a hand-over planted with a leaked former key
counts for nothing."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_handover import DEVICE, EPOCH, recording

from bodycam.device.footage.handover import (
    HANDOVER_DIR,
    former_heads,
    linkable_recording,
    make_handover,
    read_handovers,
    rotate_key,
    write_handover,
)
from bodycam.device.footage.recorder import Recorder, recover_interrupted
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.retention import read_manifest
from bodycam.device.hw.frames import StreamInfo
from bodycam.device.identity import Signer, load_signer, provision
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


def test_a_hand_over_planted_with_a_leaked_former_key_counts_for_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "identity" / "device.key"
    k0 = load_signer(provision(key, DEVICE).key_file)
    a = recording(tmp_path, "20260301T100000000Z", k0)
    rotate_key(key, DEVICE, tmp_path, "2026-04-01T08:00:00.000Z")  # K0 -> K1
    k1 = load_signer(key)
    b = recording(tmp_path, "20260402T100000000Z", k1)
    # the thief holds retired K0 and the card: a directory P and a hand-over X -> K0 naming it
    x = Signer.generate()
    p = tmp_path / "recordings" / "20260430T000000000Z"
    p.mkdir()
    (p / "manifest.json").write_text(json.dumps({"recording": p.name, "device": DEVICE, "complete": True}))
    planted = (p.name, hashlib.sha256((p / "manifest.json").read_bytes()).hexdigest())
    elsewhere = tmp_path / "thief"
    write_handover(elsewhere, make_handover(DEVICE, x, k0, planted, "2026-04-30T00:00:00.000Z"))
    shutil.copy2(elsewhere / HANDOVER_DIR / f"{x.key_id}.json", tmp_path / HANDOVER_DIR / f"{x.key_id}.json")
    with caplog.at_level(logging.WARNING):
        assert former_heads(read_handovers(tmp_path), k1.key_id) == {k0.key_id: a}
    assert f"hand-over record {x.key_id} -> {k0.key_id} ignored" in caplog.text
    rotated = rotate_key(key, DEVICE, tmp_path, "2026-05-01T08:00:00.000Z")  # the genuine K1 -> K2
    assert rotated.head == b  # K1's last recording, not the planted directory
    k2 = load_signer(key)
    assert former_heads(read_handovers(tmp_path), k2.key_id) == {k1.key_id: b, k0.key_id: a}


def test_provision_force_twice_says_the_middle_key_must_be_registered_and_leaves_its_public_key(
        tmp_path: Path) -> None:
    """Review-handover R6: the first new key never reached base; its public key is beside the hand-over it
    made, and the second ``--force`` says what base needs."""
    data = tmp_path / "data"
    key = data / "identity" / "device.key"
    provision(key, DEVICE)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[device]\nid = "{DEVICE}"\ndata_dir = "{data}"\n')
    cmd = [sys.executable, "-m", "bodycam.device.cli", "provision", "--config", str(cfg), "--key-file", str(key),
           "--force"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and "earlier 'provision --force'" not in first.stderr
    middle = load_signer(key)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "earlier 'provision --force'" in second.stderr and f"{middle.key_id}.pub" in second.stderr
    assert (data / HANDOVER_DIR / f"{middle.key_id}.pub").read_bytes() == middle.public_pem()
