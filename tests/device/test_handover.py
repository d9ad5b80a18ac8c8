"""The key hand-over on the camera (review-custody F1): ``bodycam provision --force`` writes a record signed
by the old and the new key naming the old key's last recording, and the recorder links as ``previous`` only
a manifest it can verify with its key or that is the head of a hand-over it made; a recording planted on
the card with a leaked old key (or a hand-over made by other keys) is not linked, and is reported."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from bodycam.device.footage.handover import (
    HANDOVER_DIR,
    former_heads,
    handover_problem,
    make_handover,
    parse_handover,
    read_handovers,
    write_handover,
)
from bodycam.device.footage.recorder import Recorder
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.seal import seal
from bodycam.device.hw.frames import StreamInfo
from bodycam.device.identity import Signer, load_signer, provision

EPOCH = 1_780_000_000_000_000_000
DEVICE = "cam-07"


def recording(data: Path, name: str, signer: Signer, *, complete: bool = True) -> tuple[str, str]:
    """A recording directory with a sealed manifest (no segments: the chain is about manifests)."""
    d = data / "recordings" / name
    d.mkdir(parents=True)
    doc = {"schema": "bodycam.recording/1", "recording": name, "device": DEVICE, "complete": complete,
           "segments": [], "previous": None}
    data_ = (json.dumps(seal(doc, signer), indent=2) + "\n").encode()
    (d / "manifest.json").write_bytes(data_)
    return name, hashlib.sha256(data_).hexdigest()


def test_provision_force_writes_a_hand_over_signed_by_both_keys_naming_the_old_key_s_last_recording(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = data / "identity" / "device.key"
    old = load_signer(provision(key, DEVICE).key_file)
    recording(data, "20260301T100000000Z", old)
    last = recording(data, "20260301T110000000Z", old)
    recording(data, "20260301T120000000Z", old, complete=False)  # cut by a power loss: re-sealed when recovered
    recording(data, "20260301T130000000Z", Signer.generate())  # planted: not the old key's
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[device]\nid = "{DEVICE}"\ndata_dir = "{data}"\n')
    res = subprocess.run([sys.executable, "-m", "bodycam.device.cli", "provision", "--config", str(cfg), "--key-file",
                          str(key), "--force", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    new = load_signer(key)
    assert out["key_id"] == new.key_id != old.key_id
    path = data / HANDOVER_DIR / f"{old.key_id}.json"
    assert out["handover_file"] == str(path) and out["handover_head"] == last[0]
    h = parse_handover(json.loads(path.read_text()), str(path))
    assert (h.old_key, h.new_key, h.head, h.device) == (old.key_id, new.key_id, last, DEVICE)
    assert handover_problem(h, old.public, new.public) is None
    assert handover_problem(h, old.public, Signer.generate().public) is not None
    moved = parse_handover({**h.doc, "head": {"recording": "20260301T130000000Z", "manifest_sha256": "0" * 64}}, "x")
    assert "does not verify" in str(handover_problem(moved, old.public, new.public))
    # the human-readable form says where the hand-over is and what comes next
    again = subprocess.run([sys.executable, "-m", "bodycam.device.cli", "provision", "--config", str(cfg),
                            "--key-file", str(key), "--force"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert f"hand-over  {data / HANDOVER_DIR / (new.key_id + '.json')}" in again.stdout
    assert "keys retire" in again.stdout
    # the second hand-over (new -> newest) names the first one's head: the new key signed nothing
    newest = load_signer(key)
    assert former_heads(read_handovers(data), newest.key_id) == {new.key_id: last, old.key_id: last}


def test_the_recorder_links_only_what_it_verifies_with_its_key_or_its_hand_over_and_reports_the_rest(
        tmp_path: Path) -> None:
    old, new, thief = Signer.generate(), Signer.generate(), Signer.generate()
    recording(tmp_path, "20260301T100000000Z", old)
    head = recording(tmp_path, "20260301T110000000Z", old)
    write_handover(tmp_path, make_handover(DEVICE, old, new, head, "2026-06-01T08:00:00.000Z"))
    # the thief holds the old key and writes to the card while the camera is off: a recording newer than
    # everything, and a hand-over of the old key to a key of his own naming it (it counts for nothing)
    planted = recording(tmp_path, "20260601T120000000Z", old)
    other = tmp_path / "elsewhere"
    write_handover(other, make_handover(DEVICE, old, thief, planted, "2026-06-01T09:00:00.000Z"))
    (other / HANDOVER_DIR / f"{old.key_id}.json").rename(tmp_path / HANDOVER_DIR / "zz-thief.json")
    assert former_heads(read_handovers(tmp_path), new.key_id) == {old.key_id: head}
    rec = Recorder(tmp_path, DEVICE, RecordingConfig(pre_event_s=0.0, segment_s=2.0), lambda t: EPOCH + t, signer=new)
    rec.begin(StreamInfo(320, 240, 30.0, False))
    try:
        assert rec._last_dir == tmp_path / "recordings" / head[0]
        assert len(rec.unlinked) == 1 and rec.unlinked[0].startswith(planted[0])
        made = rec.start("button", 0, include_buffer=False)
        assert made is not None
        rec.stop()
    finally:
        rec.close()
    link = json.loads((made.path / "manifest.json").read_text())["previous"]
    assert link == {"recording": head[0], "manifest_sha256": head[1]}
    # its own recording is linked by the next one, the planted one still not
    later = Recorder(tmp_path, DEVICE, RecordingConfig(), lambda t: EPOCH + t, signer=new)
    later.begin(StreamInfo(320, 240, 30.0, False))
    later.close()
    assert later._last_dir == made.path and [u.split(":")[0] for u in later.unlinked] == [planted[0]]
