"""Retention with offload: what base confirmed goes first; un-offloaded unprotected footage only when
the card would otherwise fill (alarm + footage_deleted marker); protected footage never before base
confirmed it, in a confirmation signed by a custody key the camera trusts. Recordings here are
directories with the manifest fields retention reads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from bodycam.device.config import AppConfig
from bodycam.device.footage.offload_state import (
    OFFLOAD_FILE,
    confirmation_problem,
    is_offloaded,
    mark_offloaded,
)
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.retention import DiskUsage, Retention, RetentionConfig
from bodycam.device.identity import Signer
from bodycam.device.uplink.markers import jcs
from bodycam.device.uplink.offload_wire import sign_confirmation

MB = 1024 * 1024
BASE = Signer.generate()  # base's custody key
TRUSTED = {BASE.key_id: BASE.public}


def confirmation(d: Path) -> dict[str, object]:
    """What base confirms for the recording ``d`` as it is on the card (unsigned)."""
    manifest = json.loads((d / "manifest.json").read_bytes())
    return {"confirmed": True, "device": manifest["device"], "recording": d.name,
            "manifest_sha256": hashlib.sha256((d / "manifest.json").read_bytes()).hexdigest(),
            "markers_sha256": manifest.get("markers_sha256"),
            "segments": {s["file"]: s.get("sha256") for s in manifest["segments"]}, "key": "k", "stored_ns": 1}


def confirm(d: Path, signer: Signer = BASE) -> None:
    mark_offloaded(d, "https://base", "2026-01-01T01:00:00.000Z", sign_confirmation(confirmation(d), signer))


def make(root: Path, name: str, *, protected: bool, offloaded: bool = False, mb: int = 10) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "segment-00000.mp4").write_bytes(b"\0" * (mb * MB))
    manifest = {"schema": "bodycam.recording/1", "recording": name, "device": "cam-r1", "complete": True,
                "protected": protected, "segments": [{"index": 0, "file": "segment-00000.mp4", "sha256": "a" * 64}],
                "start_utc": "2026-01-01T00:00:00.000Z", "end_utc": "2026-01-01T00:01:00.000Z"}
    (d / "manifest.json").write_text(json.dumps(manifest))
    if offloaded:
        confirm(d)
    return d


def retention(root: Path, min_free_mb: float, card_mb: int) -> Retention:
    return Retention(root, RetentionConfig(min_free_mb=min_free_mb), disk_usage=Card(root, card_mb), trusted=TRUSTED)


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
    result = retention(root, 20, 45).enforce()
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
    result = retention(root, 20, 45).enforce()
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
    result = retention(root, 100, 30).enforce()
    assert result.deleted == [] and result.lost == [] and result.alarm
    # confirmed by base: now it may go
    confirm(root / "20260101T000000000Z")
    result = retention(root, 100, 30).enforce()
    assert result.deleted == ["20260101T000000000Z"] and result.lost == []


def test_a_confirmation_of_another_manifest_does_not_count(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    rec = make(root, "20260101T000000000Z", protected=True, offloaded=True)
    assert is_offloaded(rec, TRUSTED)
    (rec / "manifest.json").write_text((rec / "manifest.json").read_text() + " ")  # changed since
    assert not is_offloaded(rec, TRUSTED)
    (rec / OFFLOAD_FILE).write_text("{not json")
    assert not is_offloaded(rec, TRUSTED)
    result = retention(root, 100, 30).enforce()
    assert result.deleted == [] and result.alarm


def _forgeries(rec: Path, other: Path) -> dict[str, object]:
    """Confirmations of ``rec`` that must not count, each as someone answering as base could make it."""
    body = confirmation(rec)
    stranger = Signer.generate()
    package = {**body, "schema": "bodycam.model-package/1", "key_id": BASE.key_id}  # base's key, another document
    package["sig"] = BASE.sign(jcs(package))
    tampered = sign_confirmation(body, BASE)
    tampered["segments"] = {"segment-00000.mp4": "b" * 64}
    return {
        "unsigned (as the firmware before signed confirmations kept them)": body,
        "signed by a key the camera does not trust": sign_confirmation(body, stranger),
        "base's signature over another recording": sign_confirmation(confirmation(other), BASE),
        "base's signature naming another device": sign_confirmation({**body, "device": "cam-x"}, BASE),
        "base's signature on a model package (schema)": package,
        "altered after base signed it": tampered,
    }


def test_retention_deletes_nothing_on_a_confirmation_it_cannot_verify(tmp_path: Path) -> None:
    """offload.json is checked again before a recording is deleted as offloaded: a confirmation that an
    impostor answered (or an older firmware kept unsigned) never lets protected footage go."""
    root = tmp_path / "recordings"
    rec = make(root, "20260101T000000000Z", protected=True)
    other = make(root, "20260101T010000000Z", protected=True)
    for what, conf in _forgeries(rec, other).items():
        mark_offloaded(rec, "https://impostor", "2026-01-01T01:00:00.000Z", conf)  # type: ignore[arg-type]
        assert (rec / OFFLOAD_FILE).is_file()
        assert confirmation_problem(rec, conf, TRUSTED) is not None, what
        assert not is_offloaded(rec, TRUSTED), what
        result = retention(root, 100, 30).enforce()
        assert result.deleted == [] and result.alarm, what
    # the same recording, confirmed by base: it may go now
    confirm(rec)
    assert confirmation_problem(rec, json.loads((rec / OFFLOAD_FILE).read_text())["confirmation"], TRUSTED) is None
    assert retention(root, 100, 30).enforce().deleted == [rec.name]
    # no custody key trusted: nothing counts as offloaded
    confirm(other)
    assert not is_offloaded(other, {}) and is_offloaded(other, TRUSTED)
    assert Retention(root, RetentionConfig(min_free_mb=100), disk_usage=Card(root, 30)).enforce().deleted == []


def test_a_confirmation_is_no_model_package_either(tmp_path: Path) -> None:
    """The other way round: base's signed confirmation, put where a model package's manifest goes, is
    refused by the camera's package check (its schema), even when the same key were trusted for both."""
    from bodycam.device.model_package import MANIFEST, PackageError, verify_package

    rec = make(tmp_path / "recordings", "20260101T000000000Z", protected=True)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / MANIFEST).write_bytes(jcs(sign_confirmation(confirmation(rec), BASE)))
    with pytest.raises(PackageError, match="schema"):
        verify_package(pkg, TRUSTED)


def test_nothing_is_deleted_while_there_is_room_even_offloaded(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    make(root, "20260101T000000000Z", protected=False, offloaded=True)
    result = retention(root, 1, 100).enforce()
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


@pytest.mark.integration
@pytest.mark.parametrize("trusted", [False, True], ids=["no custody key", "custody key trusted"])
def test_the_firmware_raises_the_offload_alarm_without_a_custody_key_and_keeps_recording(
        tmp_path: Path, trusted: bool) -> None:
    """The assembly: with offload on and no custody key trusted, the camera runs and records (a config
    mistake in offload must not stop a body camera) and the offload alarm is up (LED source, telemetry);
    with base's key in ``<data_dir>/identity/trusted-custody`` there is no such alarm."""
    from _offload import EXAMPLE

    from bodycam.device.identity import trust_key
    from bodycam.device.uplink.offload import OffloadConfig
    from bodycam.hw_sim.sim_run import SimOptions, run_clip

    out = tmp_path / "out"
    if trusted:
        key = tmp_path / "custody.pub"
        key.write_bytes(BASE.public_pem())
        trust_key(key, out / "identity" / "trusted-custody")
    cfg = AppConfig(recording=RecordingConfig(segment_s=2.0, pre_event_s=5.0),
                    offload=OffloadConfig(enabled=True, url="https://127.0.0.1:9", interval_s=3600))
    seen: dict[str, object] = {}

    def assembled(fw: object) -> None:
        seen["alarms"] = fw.app.alarms()  # type: ignore[attr-defined]
        seen["telemetry"] = fw.offload.telemetry()  # type: ignore[attr-defined]

    report = run_clip(SimOptions(clip=EXAMPLE, out=out, config=cfg, broker=None, gnss=False), on_assembled=assembled)
    assert report.recordings and report.recordings[0]["complete"]  # it recorded all the same
    offload_alarms = [a for a in seen["alarms"] if a.startswith("offload:")]  # type: ignore[attr-defined]
    tele = seen["telemetry"]
    if trusted:
        assert offload_alarms == [] and "alarm" not in tele  # type: ignore[operator]
    else:
        assert len(offload_alarms) == 1 and "no trusted custody key" in offload_alarms[0]
        assert "no trusted custody key" in tele["alarm"]  # type: ignore[index]


def test_a_trusted_key_folder_with_too_many_keys_is_refused_not_cut(tmp_path: Path) -> None:
    # every key file is read, or the folder is refused: a key left out silently would be a key not trusted
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bodycam.device.errors import ConfigError
    from bodycam.device.identity import MAX_TRUSTED, IdentityError, public_pem, trust_key, trusted_keys

    folder = tmp_path / "trusted"
    folder.mkdir()
    for i in range(MAX_TRUSTED):
        (folder / f"k{i:02d}.pem").write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    assert len(trusted_keys(folder, "offload.trusted_keys_dir")) == MAX_TRUSTED
    new = tmp_path / "new.pem"
    new.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(IdentityError, match="already 16 trusted keys"):  # `bodycam offload trust` says so at once
        trust_key(new, folder)
    (folder / "zz-the-new-one.pem").write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(ConfigError, match=r"offload\.trusted_keys_dir: .* holds 17 key files"):
        trusted_keys(folder, "offload.trusted_keys_dir")
