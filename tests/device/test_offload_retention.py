"""Retention with offload: what base confirmed goes first; un-offloaded unprotected footage only when
the card would otherwise fill (alarm + footage_deleted marker); protected footage never before base
confirmed it. Recordings here are directories with the manifest fields retention reads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from bodycam.device.config import AppConfig
from bodycam.device.footage.offload_state import OFFLOAD_FILE, is_offloaded, mark_offloaded
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.retention import DiskUsage, Retention, RetentionConfig

MB = 1024 * 1024


def make(root: Path, name: str, *, protected: bool, offloaded: bool = False, mb: int = 10) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "segment-00000.mp4").write_bytes(b"\0" * (mb * MB))
    manifest = {"schema": "bodycam.recording/1", "recording": name, "complete": True, "protected": protected,
                "segments": [{"index": 0, "file": "segment-00000.mp4"}], "start_utc": "2026-01-01T00:00:00.000Z",
                "end_utc": "2026-01-01T00:01:00.000Z"}
    (d / "manifest.json").write_text(json.dumps(manifest))
    if offloaded:
        sha = hashlib.sha256((d / "manifest.json").read_bytes()).hexdigest()
        mark_offloaded(d, "https://base", "2026-01-01T01:00:00.000Z", {"manifest_sha256": sha})
    return d


class Card:
    """A card of ``size_mb`` whose use is the recordings on it (plus ``other_mb``)."""

    def __init__(self, root: Path, size_mb: int, other_mb: int = 0) -> None:
        self.root, self.size, self.other = root, size_mb * MB, other_mb * MB

    def __call__(self, _: Path) -> DiskUsage:
        used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()) + self.other
        return DiskUsage(self.size, used, self.size - used)


def names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_offloaded_footage_goes_first_protected_or_not(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    make(root, "20260101T000000000Z", protected=False)  # oldest, not offloaded
    make(root, "20260101T010000000Z", protected=True, offloaded=True)
    make(root, "20260101T020000000Z", protected=False, offloaded=True)
    make(root, "20260101T030000000Z", protected=True)
    # 40 MB of footage on a 45 MB card, 20 MB must stay free: two recordings must go
    result = Retention(root, RetentionConfig(min_free_mb=20), disk_usage=Card(root, 45)).enforce()
    assert result.deleted == ["20260101T010000000Z", "20260101T020000000Z"]
    assert result.lost == [] and not result.alarm
    assert names(root) == ["20260101T000000000Z", "20260101T030000000Z"]


def test_un_offloaded_unprotected_footage_only_when_the_card_would_fill_with_the_alarm(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    old = make(root, "20260101T000000000Z", protected=False)
    make(root, "20260101T010000000Z", protected=True)
    make(root, "20260101T020000000Z", protected=False, offloaded=True)
    make(root, "20260101T030000000Z", protected=False)
    sha = hashlib.sha256((old / "manifest.json").read_bytes()).hexdigest()
    result = Retention(root, RetentionConfig(min_free_mb=20), disk_usage=Card(root, 45)).enforce()
    # the offloaded one first, then the oldest un-offloaded unprotected one (lost, alarmed)
    assert result.deleted == ["20260101T020000000Z", "20260101T000000000Z"]
    assert [(x.recording, x.segments, x.manifest_sha256) for x in result.lost] == [("20260101T000000000Z", 1, sha)]
    assert result.lost[0].bytes >= 10 * MB and result.lost[0].start_utc == "2026-01-01T00:00:00.000Z"
    assert not result.alarm  # there is room now; the recorder raises the alarm for the lost footage
    assert names(root) == ["20260101T010000000Z", "20260101T030000000Z"]


def test_protected_footage_is_never_deleted_before_base_confirms_it(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    make(root, "20260101T000000000Z", protected=True)
    make(root, "20260101T010000000Z", protected=True)
    result = Retention(root, RetentionConfig(min_free_mb=100), disk_usage=Card(root, 30)).enforce()
    assert result.deleted == [] and result.lost == [] and result.alarm
    # confirmed by base: now it may go
    rec = root / "20260101T000000000Z"
    mark_offloaded(rec, "https://base", "t", {"manifest_sha256": hashlib.sha256(
        (rec / "manifest.json").read_bytes()).hexdigest()})
    result = Retention(root, RetentionConfig(min_free_mb=100), disk_usage=Card(root, 30)).enforce()
    assert result.deleted == ["20260101T000000000Z"] and result.lost == []


def test_a_confirmation_of_another_manifest_does_not_count(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    rec = make(root, "20260101T000000000Z", protected=True, offloaded=True)
    assert is_offloaded(rec)
    (rec / "manifest.json").write_text((rec / "manifest.json").read_text() + " ")  # changed since
    assert not is_offloaded(rec)
    (rec / OFFLOAD_FILE).write_text("{not json")
    assert not is_offloaded(rec)
    result = Retention(root, RetentionConfig(min_free_mb=100), disk_usage=Card(root, 30)).enforce()
    assert result.deleted == [] and result.alarm


def test_nothing_is_deleted_while_there_is_room_even_offloaded(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    make(root, "20260101T000000000Z", protected=False, offloaded=True)
    result = Retention(root, RetentionConfig(min_free_mb=1), disk_usage=Card(root, 100)).enforce()
    assert result.deleted == [] and not result.alarm


@pytest.mark.integration
def test_the_firmware_writes_a_footage_deleted_marker_for_lost_footage(tmp_path: Path) -> None:
    """A real simulator run on a card holding an older un-offloaded unprotected recording and a
    protected one, with a cap that the new recording overflows: the unprotected one is deleted and a
    signed footage_deleted marker names it; the protected one stays."""
    from _offload import EXAMPLE

    from bodycam.hw_sim.sim_run import SimOptions, run_clip

    out = tmp_path / "out"
    root = out / "recordings"
    make(root, "20200101T000000000Z", protected=False, mb=3)
    make(root, "20200101T010000000Z", protected=True, mb=3)
    cfg = AppConfig(recording=RecordingConfig(segment_s=2.0, pre_event_s=5.0),
                    retention=RetentionConfig(min_free_mb=0, max_total_mb=7))
    cfg = replace(cfg, device=replace(cfg.device, id="cam-r1"))
    report = run_clip(SimOptions(clip=EXAMPLE, out=out, config=cfg, broker=None, gnss=False))
    deleted = [m for m in report.stats.markers if m.kind == "footage_deleted"]
    assert [m.extra["recording"] for m in deleted] == ["20200101T000000000Z"]  # type: ignore[index]
    assert deleted[0].extra["reason"] == "card_full_not_offloaded" and deleted[0].sig  # type: ignore[index]
    assert not (root / "20200101T000000000Z").exists() and (root / "20200101T010000000Z").is_dir()
