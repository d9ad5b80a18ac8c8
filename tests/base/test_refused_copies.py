"""Refused uploads kept aside at base are bounded (review-handover R3): one copy per manifest, at most
``Receiver.refused_cap_bytes`` per device; what is not kept is said in the audit row, and the camera's
own files are untouched (real recordings, real SQLite, base's real Receiver)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _offload import DEVICE, make_base, make_recordings, recordings

from bodycam.base.receive import Refused


def offer(base: object, rec: Path) -> list[str]:
    rx = base.receiver  # type: ignore[attr-defined]
    stage = rx._staging(DEVICE, rec.name)
    stage.mkdir(parents=True, exist_ok=True)
    for f in rec.iterdir():
        if f.is_file():
            shutil.copy2(f, stage / f.name)
    with pytest.raises(Refused) as refused:
        rx.confirm(DEVICE, rec.name)
    return refused.value.codes


def damaged(tmp_path: Path) -> Path:
    cam = make_recordings(tmp_path / "cam", starts=("2026-03-01T10:00:00.000Z",))
    (rec,) = recordings(cam)
    seg = sorted(rec.glob("segment-*.mp4"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 1
    seg.write_bytes(bytes(data))
    return rec


def test_base_keeps_one_refused_copy_per_manifest(tmp_path: Path) -> None:
    rec = damaged(tmp_path)
    base = make_base(tmp_path / "base", rec.parent.parent)
    for _ in range(3):  # the camera offers it at every start
        assert offer(base, rec) == ["segment_hash"]
    kept = list((tmp_path / "base" / "evidence" / "refused" / DEVICE).iterdir())
    assert len(kept) == 1
    rows = [e.detail for e in base.custody.entries(device=DEVICE, recording=rec.name) if e.action == "refused"]
    assert [r.get("copy") for r in rows] == [None, "already kept", "already kept"]
    assert all(r["kept"] == str(kept[0]) for r in rows)


def test_base_keeps_at_most_refused_cap_bytes_per_device(tmp_path: Path) -> None:
    rec = damaged(tmp_path)
    base = make_base(tmp_path / "base", rec.parent.parent)
    base.receiver.refused_cap_bytes = 1024
    before = {p.name: p.read_bytes() for p in rec.iterdir() if p.is_file()}
    assert offer(base, rec) == ["segment_hash"]
    assert not (tmp_path / "base" / "evidence" / "refused" / DEVICE).exists()
    (row,) = [e.detail for e in base.custody.entries(device=DEVICE, recording=rec.name) if e.action == "refused"]
    assert row["kept"] is None and "at most 1024 bytes" in row["copy"]
    assert {p.name: p.read_bytes() for p in rec.iterdir() if p.is_file()} == before  # the camera's files untouched


def test_a_genuine_manifest_uploaded_under_another_name_is_no_evidence_about_that_name(tmp_path: Path) -> None:
    """Base keeps a refused manifest's signed link (``seen_manifests``) only under its own recording id: a
    copy uploaded as another recording cannot make evidence against that id (``keys accept-chain``)."""
    cam = make_recordings(tmp_path / "cam", starts=("2026-03-01T10:00:00.000Z",))
    (rec,) = recordings(cam)
    copy = cam / "recordings" / "20260301T120000000Z"
    shutil.copytree(rec, copy)
    base = make_base(tmp_path / "base", cam)
    assert offer(base, copy)
    assert base.receiver.chain.seen.rows(DEVICE) == []
