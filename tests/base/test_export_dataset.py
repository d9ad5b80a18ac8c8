"""``bodycam-base export-dataset``: reviewed range footage (recordings by the firmware, offloaded, plain and
encrypted at rest) -> clips + ``bodycam.truth/1`` files that the model's own reader loads, negatives from
shot-free spans, provenance, a split by recording; bad input refused with nothing written."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from _offload import DEVICE
from _review import ReviewBase, base_age_key, make_recordings, make_review_base, offload

from bodycam.base.cli import main as base_main
from bodycam.base.export_dataset import ExportRefused, export_dataset, split_of
from bodycam.base.review_labels import NewLabel
from bodycam.device.errors import UsageError
from bodycam.hw_sim.truth import load_truth
from bodycam.model_compile.dataset import SPLITS, find_splits, load_clips

pytestmark = pytest.mark.integration

TRUTH_SHOTS = [88, 91, 266, 448, 451, 456]  # examples/range_demo.truth.json
NOW = 1_764_072_000_000_000_000


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    return {"plain": make_recordings(root / "plain", ("2026-03-01T10:00:00.000Z", "2026-03-01T11:00:00.000Z")),
            "enc": make_recordings(root / "enc", ("2026-03-01T12:00:00.000Z",), encrypt=True)}


@pytest.fixture
def base(made: dict[str, Path], tmp_path: Path, db: str) -> Iterator[tuple[ReviewBase, list[str]]]:
    """Base on SQLite and on PostgreSQL (``db``), the three recordings offloaded."""
    b, recs = offloaded(made, tmp_path, db)
    yield b, recs
    b.close()


def offloaded(made: dict[str, Path], tmp_path: Path, db: str) -> tuple[ReviewBase, list[str]]:
    b = make_review_base(db, tmp_path / "evidence", made["plain"], (base_age_key(made["enc"]),))
    b.keys.add(DEVICE, (made["enc"] / "state" / "identity" / "device.pub").read_bytes(), NOW)
    return b, offload(b, made["plain"]) + offload(b, made["enc"])


def label(b: ReviewBase, rec: str, by: str = "ines", **kw: object) -> None:
    b.review.add_label(DEVICE, rec, NewLabel(**kw), by=by, t_ns=NOW)  # type: ignore[arg-type]


def detections(b: ReviewBase, rec: str) -> list[str]:
    return [d["marker"] for d in b.review.state(DEVICE, rec)["detections"]]


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = base_main(list(args))
    return rc, out.getvalue(), err.getvalue()


def test_export_dataset_writes_what_the_model_reads(base: tuple[ReviewBase, list[str]], tmp_path: Path,
                                                    made: dict[str, Path], db: str) -> None:
    b, (a, bb, e) = base
    ev, key = str(tmp_path / "evidence"), str(base_age_key(made["enc"]))
    common = ["--evidence", ev, "--db", db, "--age-key", key, "--actor", "ines"]
    out = tmp_path / "ds"
    # nothing reviewed yet: a clear error, nothing written
    rc, _, err = run_cli("export-dataset", str(out), *common)
    assert rc != 0 and "no reviewed labels in the selection (3 recording(s)" in err and not out.exists()

    da = detections(b, a)
    for m in da[:1] + da[3:]:
        label(b, a, kind="confirm", marker=m)
    label(b, a, kind="reject", marker=da[1], by="omar")
    label(b, a, kind="move", marker=da[2], frame=268)
    label(b, a, kind="add", frame=300)
    label(b, a, kind="shot_free", frame=500, end_frame=540)
    label(b, bb, kind="confirm", marker=detections(b, bb)[0])  # bb: one of six decided
    for m in detections(b, e):
        label(b, e, kind="confirm", marker=m, by="omar")

    rc, text, err = run_cli("export-dataset", str(out), *common, "--reviewed-only")
    assert rc == 0, err
    assert "2 recording(s)" in text and "3 clip(s)" in text and "1 shot-free span(s)" in text
    doc = json.loads((out / "dataset.json").read_text())
    assert [r["recording"] for r in doc["recordings"]] == [a, e]
    assert doc["reviewers"] == ["ines", "omar"] and doc["models"] == ["shotnet 1.0.0"]
    by_rec = {r["recording"]: r for r in doc["recordings"]}
    held = {r.recording: r for r in b.custody.stored()}
    for rec, row in by_rec.items():
        assert row["manifest_sha256"] == held[rec].manifest_sha256 and row["reviewed"] is True
        assert row["split"] == split_of(DEVICE, rec)
        assert {Path(c["clip"]).parts[0] for c in row["clips"]} == {row["split"]}  # one recording, one split
    assert by_rec[e]["encrypted"] is True and all(s["plain_sha256"] for s in by_rec[e]["segments"])
    assert by_rec[a]["reviewers"] == ["ines", "omar"] and by_rec[e]["reviewers"] == ["omar"]
    for name, sha in doc["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha, name

    # the model's own readers: truth files valid, clips decode to the frames the truth says
    truths = {p.name: load_truth(p) for p in out.rglob("*.truth.json")}
    assert truths[f"{DEVICE}_{a}.truth.json"].shot_frames() == [88, 268, 300, 448, 451, 456]
    assert truths[f"{DEVICE}_{e}.truth.json"].shot_frames() == TRUTH_SHOTS
    free = truths[f"{DEVICE}_{a}_free-000500-000540.truth.json"]
    assert free.shots == () and free.video.frames == 41 and free.audio.samples > 0
    splits = find_splits(out)
    clips = load_clips([c for s in SPLITS for c in splits[s]], (64, 48))
    assert len(clips) == 3
    for c in clips:
        assert c.n_frames == c.truth.video.frames
        t = c.times_ns - c.times_ns[0]
        assert abs(t - (1e9 / c.fps) * np.arange(c.n_frames)).max() < 0.25e9 / c.fps  # frame i at i / fps
    # exported is audited in the custody log
    exported = [e_.recording for e_ in b.custody.entries() if e_.action == "exported"]
    assert sorted(exported) == sorted([a, e])

    # without --reviewed-only: the partly reviewed recording too, its undecided detections as shots
    out2 = tmp_path / "ds2"
    rc, text, err = run_cli("export-dataset", str(out2), *common, "--since", "20260301T110000000Z",
                            "--until", "20260301T120000000Z")
    assert rc == 0, err
    (row,) = json.loads((out2 / "dataset.json").read_text())["recordings"]
    assert row["recording"] == bb and row["reviewed"] is False
    assert len(row["undecided_detections_as_shots"]) == 5
    assert load_truth(out2 / row["split"] / f"{DEVICE}_{bb}.truth.json").shot_frames() == TRUTH_SHOTS

    # bad selections
    rc, _, err = run_cli("export-dataset", str(tmp_path / "ds3"), *common, "--device", "cam-zz")
    assert rc != 0 and "no reviewed labels" in err and not (tmp_path / "ds3").exists()
    rc, _, err = run_cli("export-dataset", str(out), *common)
    assert rc != 0 and "exists and is not empty" in err
    rc, _, err = run_cli("export-dataset", str(tmp_path / "ds4"), *common, "--since", "yesterday")
    assert rc != 0 and "recording id form" in err


def test_changed_footage_is_refused_and_nothing_is_written(base: tuple[ReviewBase, list[str]],
                                                           tmp_path: Path) -> None:
    b, (a, _, e) = base
    for rec in (a, e):
        label(b, rec, kind="shot_free", frame=0, end_frame=20)
    seg = tmp_path / "evidence" / "recordings" / DEVICE / a / "segment-00003.mp4"
    os.chmod(seg.parent, 0o755)
    os.chmod(seg, 0o644)
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x01
    seg.write_bytes(bytes(data))
    out = tmp_path / "ds"
    with pytest.raises(ExportRefused, match=f"{a}/segment-00003.mp4: its SHA-256 no longer matches"):
        export_dataset(out, b.review, actor="ines", now_ns=NOW)
    assert not out.exists() and not list(tmp_path.glob(".ds.*"))
    # the other recording alone exports (the selection leaves the changed one out), made afresh from the
    # evidence: base's cached working copy is not trusted (here it is garbage)
    cached = tmp_path / "evidence" / "working" / DEVICE / e / "review.mp4"
    assert cached.is_file()
    cached.write_bytes(b"not a video")
    done = export_dataset(out, b.review, actor="ines", now_ns=NOW, since="20260301T120000000Z")
    assert done.recordings == 1 and done.negatives == 1

    # a replaced manifest (not the one verified on receipt)
    man = tmp_path / "evidence" / "recordings" / DEVICE / e / "manifest.json"
    os.chmod(man.parent, 0o755)
    os.chmod(man, 0o644)
    man.write_bytes(man.read_bytes().replace(b'"protected":', b'"protected" :'))
    with pytest.raises(ExportRefused, match="not the manifest base verified on receipt"):
        export_dataset(tmp_path / "ds5", b.review, actor="ines", now_ns=NOW, since="20260301T120000000Z")
    assert not (tmp_path / "ds5").exists()


def test_encrypted_footage_without_base_key_is_refused(made: dict[str, Path], tmp_path: Path) -> None:
    b = make_review_base(str(tmp_path / "base.db"), tmp_path / "evidence", made["enc"])
    try:
        (rec,) = offload(b, made["enc"])
        label(b, rec, kind="confirm", marker=detections(b, rec)[0])
        with pytest.raises(ExportRefused, match="no private key"):
            export_dataset(tmp_path / "ds", b.review, actor="ines", now_ns=NOW)
        assert not (tmp_path / "ds").exists()
        with pytest.raises(UsageError, match="reviewed recordings"):
            export_dataset(tmp_path / "ds", b.review, actor="ines", now_ns=NOW, reviewed_only=True)
    finally:
        b.close()


@pytest.mark.slow
def test_a_smoke_build_trains_on_the_export(made: dict[str, Path], tmp_path: Path) -> None:
    b, recs = offloaded(made, tmp_path, str(tmp_path / "base.db"))
    for rec in recs:
        for m in detections(b, rec):
            label(b, rec, kind="confirm", marker=m)
        label(b, rec, kind="shot_free", frame=500, end_frame=560)
    out = tmp_path / "ds"
    export_dataset(out, b.review, actor="ines", now_ns=NOW)
    bin_dir = Path(sys.executable).parent
    run = subprocess.run([str(bin_dir / "bodycam-model"), "build", "--data", str(out), "--out",
                          str(tmp_path / "model" / "smoke"), "--epochs", "1", "--steps", "2", "--batch", "8"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "model" / "smoke.tflite").is_file()
    assert "int8" in run.stdout
    b.close()


def _forge_marker(d: Path) -> None:
    """Append a gunshot marker 5 s after the first one (another id, another model) to a stored markers file."""
    os.chmod(d, 0o755)
    os.chmod(d / "markers.jsonl", 0o644)
    lines = (d / "markers.jsonl").read_text().splitlines()
    g = json.loads(next(line for line in lines if json.loads(line)["kind"] == "gunshot"))
    g.update(id="019ca8d7-0000-7000-8000-000000f0f0f0", t_mono_ns=g["t_mono_ns"] + 5_000_000_000)
    g["model"]["name"] = "forged-model"
    (d / "markers.jsonl").write_text("\n".join([*lines, json.dumps(g)]) + "\n")


def test_markers_forged_into_stored_evidence_are_refused_by_the_export_and_not_reviewed(
        base: tuple[ReviewBase, list[str]], made: dict[str, Path], tmp_path: Path) -> None:
    """The export and the review pages check markers.jsonl as ``bodycam verify`` does: a forged detection
    never becomes a training shot or a detection to review."""
    from bodycam.device.footage.seal import seal
    from bodycam.device.identity import load_signer

    b, (a, _, e) = base
    label(b, a, kind="confirm", marker=detections(b, a)[0])
    label(b, e, kind="shot_free", frame=0, end_frame=20)
    d = tmp_path / "evidence" / "recordings" / DEVICE / a
    _forge_marker(d)
    out = tmp_path / "ds"
    with pytest.raises(ExportRefused, match=f"{a}: markers.jsonl does not verify .*markers_file_hash"):
        export_dataset(out, b.review, actor="ines", now_ns=NOW)
    assert not out.exists() and not list(tmp_path.glob(".ds.*"))
    from bodycam.base.review_footage import MarkersUnverified

    with pytest.raises(MarkersUnverified, match="markers_file_hash"):
        b.review.state(DEVICE, a)
    listed = {r.recording: p for r, p in b.review.recordings()}
    assert listed[a].detections == 0 and listed[e].detections > 0  # the list still shows the others
    # the manifest re-signed by someone holding the device's key, with the forged file's hash: the forged
    # marker itself carries no valid signature
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["markers_sha256"] = hashlib.sha256((d / "markers.jsonl").read_bytes()).hexdigest()
    manifest["marker_count"] += 1
    os.chmod(d / "manifest.json", 0o644)
    signer = load_signer(made["plain"] / "state" / "identity" / "device.key")
    (d / "manifest.json").write_text(json.dumps(seal(manifest, signer), indent=2))
    with pytest.raises(MarkersUnverified, match="marker_signature") as info:
        b.review.state(DEVICE, a)
    assert "markers_file_hash" not in str(info.value)
    with pytest.raises(ExportRefused, match="marker_signature"):
        export_dataset(out, b.review, actor="ines", now_ns=NOW)
    assert not out.exists()
    # the untouched recording alone still exports
    assert export_dataset(out, b.review, actor="ines", now_ns=NOW, since="20260301T120000000Z").recordings == 1
