"""`bodycam verify` on real recordings made by the firmware loop, and every tamper named.

Two simulator runs on the example clip write two signed recordings into one data directory (the
second links the first's manifest); each test copies them and tampers with one thing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bodycam.device.config import AppConfig
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.seal import seal
from bodycam.device.footage.segment_writer import sha256_of
from bodycam.device.identity import Signer, load_public, load_signer
from bodycam.device.uplink.markers import Marker
from bodycam.device.verify import Report, verify_path
from bodycam.hw_sim.sim_run import SimOptions, run_clip

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "range_demo.mp4"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "data"
    cfg = AppConfig(recording=RecordingConfig(segment_s=2.0, pre_event_s=5.0))
    cfg = replace(cfg, device=replace(cfg.device, id="cam-v1"))
    for start in ("2026-03-01T10:00:00.000Z", "2026-03-01T11:00:00.000Z"):
        run_clip(SimOptions(clip=EXAMPLE, out=out, config=cfg, broker=None, start_time=start, gnss=False))
    return out


@pytest.fixture
def data(made: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(made, copy)
    return copy


def recs(data: Path) -> list[Path]:
    return sorted(p for p in (data / "recordings").iterdir() if p.is_dir())


KEY = Path("state") / "identity"  # the simulator's key lives with its state


def check(data: Path, path: Path | None = None) -> Report:
    return verify_path(path or data, load_public(data / KEY / "device.pub"), "test")


def fails(report: Report) -> set[tuple[str, str]]:
    return {(r.recording, f.code) for r in report.recordings for f in r.findings if f.level == "fail"}


def codes(report: Report) -> set[str]:
    return {code for _, code in fails(report)}


def markers_of(rec: Path) -> list[bytes]:
    return (rec / "markers.jsonl").read_bytes().splitlines()


def test_untouched_recordings_verify(data: Path) -> None:
    report = check(data)
    assert report.ok, fails(report)
    first, second = recs(data)
    assert [r.recording for r in report.recordings] == [first.name, second.name]
    for r in report.recordings:
        assert r.segments >= 3 and r.markers >= 3  # several segments; start, gunshots, stop
    m1 = json.loads((first / "manifest.json").read_text())
    m2 = json.loads((second / "manifest.json").read_text())
    assert m1["previous"] is None
    assert m2["previous"] == {"recording": first.name, "manifest_sha256": sha256_of(first / "manifest.json")}
    assert m2["key"] == load_signer(data / KEY / "device.key").key_id
    # one recording alone verifies too; its predecessor is checked when it is beside it
    assert check(data, second).ok


def test_a_flipped_byte_in_a_segment_is_named(data: Path) -> None:
    seg = recs(data)[0] / "segment-00001.mp4"
    blob = bytearray(seg.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    seg.write_bytes(bytes(blob))
    report = check(data)
    assert not report.ok
    assert fails(report) == {(recs(data)[0].name, "segment_hash")}
    (finding,) = report.recordings[0].findings
    assert finding.where == "segment-00001.mp4"


def test_a_dropped_segment_is_named(data: Path) -> None:
    (recs(data)[1] / "segment-00002.mp4").unlink()
    report = check(data)
    assert fails(report) == {(recs(data)[1].name, "segment_missing")}
    assert report.recordings[1].findings[0].where == "segment-00002.mp4"


def test_a_segment_dropped_from_the_manifest_too_breaks_its_signature(data: Path) -> None:
    rec = recs(data)[0]
    manifest = json.loads((rec / "manifest.json").read_text())
    dropped = manifest["segments"].pop()
    (rec / dropped["file"]).unlink()
    (rec / "manifest.json").write_text(json.dumps(manifest, indent=2))
    assert codes(check(data)) >= {"manifest_signature", "previous"}  # and the next one's link breaks


def test_an_inserted_segment_file_is_named(data: Path) -> None:
    rec = recs(data)[0]
    n = len(list(rec.glob("segment-*.mp4")))
    shutil.copy(rec / "segment-00000.mp4", rec / f"segment-{n:05d}.mp4")
    assert fails(check(data)) == {(rec.name, "segment_unlisted")}


def test_reordered_markers_are_named(data: Path) -> None:
    rec = recs(data)[0]
    lines = markers_of(rec)
    lines[1], lines[2] = lines[2], lines[1]
    (rec / "markers.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    report = check(data)
    assert codes(report) == {"markers_file_hash", "marker_order"}
    order = next(f for f in report.recordings[0].findings if f.code == "marker_order")
    assert order.where.startswith("markers.jsonl:3 ")


def test_a_deleted_marker_is_named(data: Path) -> None:
    rec = recs(data)[0]
    lines = markers_of(rec)
    seq = Marker.from_json(lines[1]).seq
    del lines[1]
    (rec / "markers.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    report = check(data)
    assert codes(report) == {"markers_file_hash", "marker_count", "marker_gap", "chapters"}
    gap = next(f for f in report.recordings[0].findings if f.code == "marker_gap")
    assert f"seq {seq} missing" in gap.message


def test_an_inserted_forged_marker_is_named(data: Path) -> None:
    """A forged gunshot with a correct seq and prev (computable from the public stream), signed by
    an outsider's key, as the issue's attack: its signature is what gives it away."""
    rec = recs(data)[0]
    lines = markers_of(rec)
    last = Marker.from_json(lines[-1])
    outsider = Signer.generate()
    forged = replace(last, id=last.id[:-4] + "ffff", seq=last.seq + 1, prev=last.digest(), kind="manual",
                     key=outsider.key_id, sig=None)
    forged = replace(forged, sig=outsider.sign(forged.canonical_bytes()))
    (rec / "markers.jsonl").write_bytes(b"\n".join([*lines, forged.to_json()]) + b"\n")
    report = check(data)
    assert codes(report) >= {"markers_file_hash", "marker_count", "marker_signature"}
    sig = next(f for f in report.recordings[0].findings if f.code == "marker_signature")
    assert outsider.key_id in sig.message and f"seq {forged.seq}" in sig.where
    # the same forgery claiming the device's key id does not verify either
    claimed = replace(forged, key=load_signer(data / KEY / "device.key").key_id)
    (rec / "markers.jsonl").write_bytes(b"\n".join([*lines, claimed.to_json()]) + b"\n")
    sig = next(f for f in check(data).recordings[0].findings if f.code == "marker_signature")
    assert "does not verify" in sig.message


def test_a_replaced_or_edited_manifest_is_named(data: Path) -> None:
    first, second = recs(data)
    shutil.copy(second / "manifest.json", first / "manifest.json")
    report = check(data)
    assert (first.name, "manifest_recording") in fails(report)
    assert (second.name, "previous") in fails(report)  # the chain across recordings breaks too


def test_an_edited_manifest_field_breaks_the_signature(data: Path) -> None:
    rec = recs(data)[0]
    manifest = json.loads((rec / "manifest.json").read_text())
    manifest["protected"] = False
    (rec / "manifest.json").write_text(json.dumps(manifest, indent=2))
    assert (rec.name, "manifest_signature") in fails(check(data))


def test_a_recording_re_signed_with_another_key_is_named(data: Path) -> None:
    """The attacker changes footage, recomputes every hash and re-signs manifest and markers
    consistently with a key of their own: nothing verifies against the device's key."""
    rec = recs(data)[1]
    seg = rec / "segment-00000.mp4"
    seg.write_bytes(seg.read_bytes()[:-100])
    other = Signer.generate()
    lines = []
    prev = None
    for line in markers_of(rec):
        m = Marker.from_json(line)
        m = replace(m, key=other.key_id, sig=None, prev=m.prev if prev is None else prev.digest())
        m = replace(m, sig=other.sign(m.canonical_bytes()))
        lines.append(m.to_json())
        prev = m
    (rec / "markers.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    manifest = json.loads((rec / "manifest.json").read_text())
    manifest["segments"][0].update(sha256=sha256_of(seg), bytes=seg.stat().st_size)
    manifest["markers_sha256"] = sha256_of(rec / "markers.jsonl")
    (rec / "manifest.json").write_text(json.dumps(seal(manifest, other), indent=2))
    report = check(data)
    assert codes(report) == {"manifest_signature", "marker_signature"}
    msg = next(f for f in report.recordings[1].findings if f.code == "manifest_signature").message
    assert other.key_id in msg and "not the trusted key" in msg
    # with the attacker's key as the trusted one it would verify: the trusted key must come from base
    assert verify_path(data, other.public, "attacker").recordings[1].ok


def test_edited_chapters_are_named(data: Path) -> None:
    rec = recs(data)[0]
    text = (rec / "chapters.vtt").read_text().replace("gunshot", "manual", 1)
    (rec / "chapters.vtt").write_text(text)
    assert fails(check(data)) == {(rec.name, "chapters")}


def test_a_missing_previous_recording_is_a_note_not_a_failure(data: Path) -> None:
    shutil.rmtree(recs(data)[0])  # retention deleted it
    report = check(data)
    assert report.ok
    assert [f.code for f in report.recordings[0].findings] == ["previous_absent"]


def test_the_command_line_json_and_exit_codes(data: Path) -> None:
    pub = data / KEY / "device.pub"
    cmd = [sys.executable, "-m", "bodycam.device.cli", "verify"]
    ok = subprocess.run([*cmd, str(data / "recordings"), "--key", str(pub), "--json"], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["ok"] is True and len(doc["recordings"]) == 2 and doc["key"]["source"] == f"--key {pub}"
    human = subprocess.run([*cmd, str(data)], capture_output=True, text=True, timeout=120)
    assert human.returncode == 0 and "everything verifies" in human.stdout
    assert "found beside the footage" in human.stdout  # the key was not given independently
    seg = recs(data)[0] / "segment-00000.mp4"
    seg.write_bytes(bytes([seg.read_bytes()[0] ^ 0xFF]) + seg.read_bytes()[1:])
    bad = subprocess.run([*cmd, str(data), "--key", str(pub)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "segment_hash" in bad.stdout and "DOES NOT VERIFY" in bad.stdout
    other = data.parent / "other.pub"
    other.write_bytes(Signer.generate().public_pem())
    wrong = subprocess.run([*cmd, str(recs(data)[1]), "--key", str(other)], capture_output=True, text=True,
                           timeout=120)
    assert wrong.returncode == 1 and "not the trusted key" in wrong.stdout
    shutil.rmtree(data / KEY)
    nokey = subprocess.run([*cmd, str(data / "recordings")], capture_output=True, text=True, timeout=120)
    assert nokey.returncode == 2 and "--key" in nokey.stderr and "Traceback" not in nokey.stderr


def test_a_recording_recovered_after_a_crash_is_re_sealed_and_verifies(data: Path) -> None:
    """A power cut leaves the last manifest incomplete and the last segment cut short; recovery at
    the next start hashes what is on disk and signs the manifest again (it says ``recovered``)."""
    from bodycam.device.footage.recorder import recover_interrupted

    rec = recs(data)[1]
    manifest = json.loads((rec / "manifest.json").read_text())
    manifest["complete"] = False
    (rec / "manifest.json").write_text(json.dumps(seal(manifest, load_signer(data / KEY / "device.key"))))
    last = sorted(rec.glob("segment-*.mp4"))[-1]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert codes(check(data)) == {"incomplete", "segment_size", "segment_hash"}
    assert recover_interrupted(data / "recordings", load_signer(data / KEY / "device.key")) == [rec.name]
    report = check(data)
    assert report.ok, fails(report)
    assert [f.code for f in report.recordings[1].findings] == ["recovered"]


def test_a_recording_recovered_without_the_key_is_plainly_unsigned(data: Path) -> None:
    from bodycam.device.footage.recorder import recover_interrupted

    rec = recs(data)[0]
    manifest = json.loads((rec / "manifest.json").read_text())
    manifest["complete"] = False
    (rec / "manifest.json").write_text(json.dumps(manifest))
    recover_interrupted(data / "recordings")
    assert "sig" not in json.loads((rec / "manifest.json").read_text())
    sig = next(f for f in check(data).recordings[0].findings if f.code == "manifest_signature")
    assert "not signed" in sig.message


# -- a gap in a chain is not a tamper; an insertion or a reordering is ------------------------------------
@pytest.fixture(scope="module")
def chain3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three chained recordings (10:00, 11:00, 12:00), and in another data directory one recording of the
    same device (same key) made at 11:30 on another card: it is not in the chain."""
    root = tmp_path_factory.mktemp("chain3")
    cfg = AppConfig(recording=RecordingConfig(segment_s=2.0, pre_event_s=5.0))
    cfg = replace(cfg, device=replace(cfg.device, id="cam-v1"))
    out = root / "data"
    for start in ("2026-03-01T10:00:00.000Z", "2026-03-01T11:00:00.000Z", "2026-03-01T12:00:00.000Z"):
        run_clip(SimOptions(clip=EXAMPLE, out=out, config=cfg, broker=None, start_time=start, gnss=False))
    other = root / "other"
    shutil.copytree(out / KEY, other / KEY)
    run_clip(SimOptions(clip=EXAMPLE, out=other, config=cfg, broker=None, start_time="2026-03-01T11:30:00.000Z",
                        gnss=False))
    return out, other


def _folder(tmp_path: Path, *recordings: Path) -> Path:
    d = tmp_path / "bundle"
    d.mkdir(parents=True)
    for r in recordings:
        shutil.copytree(r, d / r.name)
    return d


def _findings(report: Report, level: str) -> set[tuple[str, str]]:
    return {(r.recording, f.code) for r in report.recordings for f in r.findings if f.level == level}


def test_a_gap_in_the_chain_is_a_note_and_the_folder_verifies(chain3: tuple[Path, Path], tmp_path: Path) -> None:
    """An export of recordings 1 and 3 (the operator left 2 out, or the camera deleted it when the card was
    full): untouched evidence, so it verifies; the gap is named."""
    data, _ = chain3
    r1, r2, r3 = recs(data)
    folder = _folder(tmp_path, r1, r3)
    report = verify_path(folder, load_public(data / KEY / "device.pub"), "test")
    assert report.ok, fails(report)
    assert _findings(report, "note") >= {(r3.name, "previous_absent")}
    note = next(f for f in report.recordings[1].findings if f.code == "previous_absent")
    assert r2.name in note.message and "gap" in note.message
    # the whole chain still verifies, and a gap does not hide a replaced previous manifest
    assert verify_path(_folder(tmp_path / "all", r1, r2, r3), load_public(data / KEY / "device.pub"), "test").ok


def test_an_inserted_recording_still_fails_the_chain(chain3: tuple[Path, Path], tmp_path: Path) -> None:
    """A recording of the same device (signed by its key, so it verifies on its own) that is not in the
    chain, put between 2 and 3: 3's previous (2) is here but is not the one before it; the inserted one
    names no previous recording while 2 is before it."""
    data, other = chain3
    r1, r2, r3 = recs(data)
    (x,) = recs(other)
    assert r2.name < x.name < r3.name
    pub = load_public(data / KEY / "device.pub")
    assert verify_path(_folder(tmp_path / "base", r1, r3), pub, "test").ok  # the gap alone verifies
    report = verify_path(_folder(tmp_path, r1, r2, x, r3), pub, "test")
    assert not report.ok
    assert fails(report) == {(x.name, "previous"), (r3.name, "previous")}
    # with 2 left out, 3's absent previous (2) is older than the inserted one before it: still a failure
    report = verify_path(_folder(tmp_path / "gap", r1, x, r3), pub, "test")
    assert not report.ok and (r3.name, "previous") in fails(report)


def test_a_chain_whose_order_changed_still_fails(chain3: tuple[Path, Path], tmp_path: Path) -> None:
    """Recording 2 renamed so that it sorts after 3 (its manifest re-signed with the device key to match
    its new name, as a thief of the key could): it follows 1, which is here but not the one before it."""
    data, _ = chain3
    r1, r2, r3 = recs(data)
    pub = load_public(data / KEY / "device.pub")
    assert verify_path(_folder(tmp_path / "base", r1, r3), pub, "test").ok  # 2 left out: a gap, it verifies
    folder = _folder(tmp_path, r1, r2, r3)
    later = "20260301T130003100Z"
    assert later > r3.name
    moved = folder / later
    (folder / r2.name).rename(moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["recording"] = later
    (moved / "manifest.json").write_text(json.dumps(seal(manifest, load_signer(data / KEY / "device.key")),
                                                    indent=2))
    report = verify_path(folder, pub, "test")
    assert not report.ok and (later, "previous") in fails(report)  # it follows 1, which is here, but 3 is before it
    msg = next(f.message for f in report.recordings[-1].findings if f.code == "previous")
    assert r1.name in msg and r3.name in msg
