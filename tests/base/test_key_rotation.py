"""Key rotation without stranding evidence, end to end on both stores (SQLite, PostgreSQL): a camera
records with its key K, is re-provisioned (``bodycam provision --force``: key N, and K's hand-over to N
naming K's last recording, signed by both) and records again; base registers N and **retires** K
(``bodycam-base keys retire``). Offloaded over HTTPS to ``bodycam-base serve --evidence``, every recording
is taken: the camera gives base the hand-over first, the one signed with N is taken at once, the ones
signed with K on the chain that ends at the hand-over's head, all in one round of the camera's offload
thread; each verifies with the key that signed it. **Revoking** K instead (compromise) still refuses K's
recordings. A recording forged with K (by someone who also holds the camera's active key to upload it,
or who plants it on the card for the camera to upload) is refused whatever time it claims, and K alone
cannot even authenticate (review-custody F1). One refused recording after the rotation strands nothing,
held uploads are audited, and an operator vouches for a chain that has no hand-over (F2); a recording K
signed that ends after the retirement time is taken in the camera's normal order (F3)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from _offload import (
    CUSTODY_KEY,
    DEVICE,
    EXAMPLE,
    BaseProcess,
    custody_dir,
    custody_of,
    custody_signer,
    make_recordings,
    recordings,
    signer_of,
)
from _pki import make_ca, make_server

from bodycam.base.cli import main as base_main
from bodycam.base.cli import open_store
from bodycam.base.custody import CustodyLog
from bodycam.device.config import AppConfig
from bodycam.device.footage.handover import HANDOVER_DIR, rotate_key
from bodycam.device.footage.offload_state import is_offloaded
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.seal import seal
from bodycam.device.identity import IdentityConfig, Signer, load_public, load_signer, trust_key
from bodycam.device.uplink.offload import BaseClient, Offloader, OffloadError, OffloadService
from bodycam.device.verify import verify_recording
from bodycam.hw_sim.sim_run import SimOptions, run_clip

pytestmark = pytest.mark.integration

RETIRED_AT = "2026-06-01T00:00:00Z"  # between the old key's recordings (March) and the new key's (June 2)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cam/``: two recordings signed with K, then (re-provisioned) one signed with N that links the last;
    ``old.pub``/``old.key``: K (the private half kept only to play the thief who finds it later)."""
    d = tmp_path_factory.mktemp("rotation")
    cam = make_recordings(d / "cam")  # 2026-03-01 10:00 and 11:00, key K
    ident = cam / "state" / "identity"
    shutil.copy2(ident / "device.pub", d / "old.pub")
    shutil.copy2(ident / "device.key", d / "old.key")
    # the camera's new key N (bodycam provision --force): K hands over to N, naming its last recording
    rotate_key(ident / "device.key", DEVICE, cam, "2026-06-01T08:00:00.000Z")
    make_recordings(cam, starts=("2026-06-02T10:00:00.000Z",))  # N's first recording links K's last
    return d


@dataclass
class Site:
    cam: Path
    old: Path  # K's public key
    db: str
    base_dir: Path
    pki: Path

    def keys(self, *args: str) -> None:
        assert base_main(["keys", *args, "--db", self.db]) == 0

    def custody(self) -> CustodyLog:
        return CustodyLog(open_store(self.db, create=False))  # type: ignore[arg-type]

    def actions(self, recording: str) -> list[str]:
        log = self.custody()
        try:
            return [e.action for e in log.entries(device=DEVICE, recording=recording)]
        finally:
            log._store.close()  # type: ignore[attr-defined]

    def stored(self) -> list[str]:
        log = self.custody()
        try:
            return [r.recording for r in log.stored(DEVICE)]
        finally:
            log._store.close()  # type: ignore[attr-defined]


@pytest.fixture
def site(rotated: Path, tmp_path: Path, db: str) -> Site:
    cam = tmp_path / "cam"
    shutil.copytree(rotated / "cam", cam)
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    pki = tmp_path / "pki"
    make_server(pki, make_ca(pki))
    s = Site(cam, rotated / "old.pub", db, base_dir, pki)
    s.keys("add", DEVICE, str(s.old))  # K, registered when the camera was provisioned
    custody_signer(base_dir)
    trust_key((base_dir / CUSTODY_KEY).with_suffix(".pub"), custody_dir(cam))
    # the rotation at base: the new key registered (the camera signs with it from now on)
    s.keys("add", DEVICE, str(cam / "state" / "identity" / "device.pub"))
    return s


@pytest.fixture
def server(site: Site) -> Iterator[BaseProcess]:
    p = BaseProcess(site.base_dir, web=True, cert=site.pki / "server.crt", key=site.pki / "server.key", db=site.db)
    yield p
    p.close()


def service(site: Site, url: str, signer: Signer | None = None) -> OffloadService:
    client = BaseClient(url, DEVICE, signer or signer_of(site.cam), ca_file=str(site.pki / "ca.crt"), timeout_s=30)
    return OffloadService(Offloader(client, trusted=custody_of(site.cam), chunk_bytes=256 * 1024),
                          site.cam / "recordings", lambda: True)


def old_key_id(site: Site) -> str:
    from bodycam.device.identity import key_id

    return key_id(load_public(site.old))


def test_after_rotation_with_retire_the_old_key_s_recordings_upload_and_verify(site: Site, server: BaseProcess,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    r1, r2, s = recordings(site.cam)
    k = old_key_id(site)
    assert [json.loads((r / "manifest.json").read_text())["key"] for r in (r1, r2)] == [k, k]
    assert json.loads((s / "manifest.json").read_text())["previous"]["recording"] == r2.name
    site.keys("retire", DEVICE, k, "--at", RETIRED_AT)
    capsys.readouterr()
    site.keys("list", "--json")
    states = {row["key_id"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert states[k]["state"] == "retired" and states[k]["retired"] == "2026-06-01T00:00:00.000Z"
    assert states[signer_of(site.cam).key_id]["state"] == "active"
    svc = service(site, server.url)
    try:
        # one round: S (the new key) at once; then R2 (pinned by S) and R1 (pinned by R2), newest first
        assert svc.run_once() == 3, svc.telemetry()
    finally:
        svc.close()
    assert svc.confirmed == [s.name, r2.name, r1.name] and svc.alarm is None and svc.awaiting == {}
    assert all(is_offloaded(r, custody_of(site.cam)) for r in (r1, r2, s))
    assert sorted(site.stored()) == [r1.name, r2.name, s.name]
    for rec, key in ((r1, site.old), (r2, site.old), (s, site.cam / "state" / "identity" / "device.pub")):
        assert site.actions(rec.name) == ["received", "verified", "stored"]
        kept = site.base_dir / "evidence" / "recordings" / DEVICE / rec.name
        report, _ = verify_recording(kept, load_public(key))  # what base holds verifies with the key that signed it
        assert report.ok, [f for f in report.findings if f.level == "fail"]


def test_a_revoked_key_s_recordings_are_still_refused(site: Site, server: BaseProcess) -> None:
    r1, r2, s = recordings(site.cam)
    site.keys("revoke", DEVICE, old_key_id(site), "--at", RETIRED_AT)  # compromise, not rotation
    svc = service(site, server.url)
    try:
        assert svc.run_once() == 1  # only S
    finally:
        svc.close()
    assert is_offloaded(s, custody_of(site.cam)) and not any(is_offloaded(r, custody_of(site.cam)) for r in (r1, r2))
    assert svc._refused == {r1.name, r2.name}  # not again until the next start
    assert site.stored() == [s.name]
    for rec in (r1, r2):
        assert site.actions(rec.name) == ["received", "refused"]
    assert base_main(["keys", "retire", DEVICE, old_key_id(site), "--db", site.db]) == 2  # revoked stays revoked


def forge(out: Path, old_key: Path, start: str) -> Path:
    """A recording made with the retired key K (the thief runs the firmware with it), dated ``start``."""
    cfg = AppConfig(recording=RecordingConfig(segment_s=2.0, pre_event_s=5.0))
    cfg = replace(cfg, device=replace(cfg.device, id=DEVICE), identity=IdentityConfig(key_file=str(old_key)))
    run_clip(SimOptions(clip=EXAMPLE, out=out, config=cfg, broker=None, start_time=start, gnss=False))
    (rec,) = recordings(out)
    return rec


def test_a_recording_forged_with_the_retired_key_after_its_retirement_is_refused(
        site: Site, server: BaseProcess, rotated: Path, tmp_path: Path) -> None:
    k = old_key_id(site)
    site.keys("retire", DEVICE, k, "--at", RETIRED_AT)
    svc = service(site, server.url)
    try:
        assert svc.run_once() == 3  # the real chain is at base
    finally:
        svc.close()
    after = forge(tmp_path / "after", rotated / "old.key", "2026-07-01T10:00:00.000Z")
    backdated = forge(tmp_path / "backdated", rotated / "old.key", "2026-03-01T09:00:00.000Z")
    assert json.loads((backdated / "manifest.json").read_text())["key"] == k
    # the strongest thief: K and the camera's active key to authenticate the upload
    client = BaseClient(server.url, DEVICE, signer_of(site.cam), ca_file=str(site.pki / "ca.crt"), timeout_s=30)
    off = Offloader(client, trusted=custody_of(site.cam), chunk_bytes=256 * 1024)
    try:
        with pytest.raises(OffloadError) as made_after:
            off.upload(after)
        assert made_after.value.codes == ["retired_key"] and not made_after.value.retry
        with pytest.raises(OffloadError) as made_before:
            off.upload(backdated)
        # the chain from K's hand-over head (R2 -> R1 -> nothing) is all at base and does not reach it: refused
        # outright (it used to be held back for ever at 409: never taken either)
        assert made_before.value.codes == ["retired_key"] and not made_before.value.retry
    finally:
        client.close()
    assert not is_offloaded(after, custody_of(site.cam)) and not is_offloaded(backdated, custody_of(site.cam))
    assert after.name not in site.stored() and backdated.name not in site.stored()
    assert site.actions(after.name) == ["received", "refused"] and site.actions(backdated.name) == ["received", "refused"]
    # K alone cannot even ask: a retired key authenticates nothing
    thief = BaseClient(server.url, DEVICE, load_signer(rotated / "old.key"), ca_file=str(site.pki / "ca.crt"))
    with closing(thief):
        code, doc = thief.request("GET", f"/api/offload/v1/recordings/{DEVICE}/{backdated.name}")
    assert code == 403 and doc["refused"] == ["retired_key"]


def plant(site: Site, rotated: Path, name: str, start: str, end: str) -> Path:
    """The thief's forgery (review-custody F1): K's last recording cut to 3 of its segments, markers gone,
    renamed ``name`` and dated ``start``..``end``, re-sealed with the retired key K, written onto the card
    while the camera is off (``bodycam verify`` with K finds nothing wrong with it)."""
    r2 = recordings(site.cam)[1]
    forged = site.cam / "recordings" / name
    shutil.copytree(r2, forged)
    m = json.loads((forged / "manifest.json").read_bytes())
    for p in sorted(forged.glob("segment-*.mp4"))[3:]:
        p.unlink()
    (forged / "markers.jsonl").unlink()
    (forged / "chapters.vtt").unlink()
    m.update(recording=name, started_by="manual", segments=m["segments"][:3], start_utc=start, end_utc=end,
             markers_sha256=None, marker_count=0,
             previous={"recording": r2.name, "manifest_sha256": hashlib.sha256((r2 / "manifest.json").read_bytes())
                       .hexdigest()})
    (forged / "manifest.json").write_text(json.dumps(seal(m, load_signer(rotated / "old.key")), indent=2) + "\n")
    report, _ = verify_recording(forged, load_public(site.old))
    assert report.ok, [f for f in report.findings if f.level == "fail"]
    return forged


@pytest.mark.parametrize("name,start,end", [
    ("20260602T120003100Z", "2026-03-01T12:00:00.000Z", "2026-03-01T12:00:05.999Z"),  # backdated (repro a)
    ("20260901T120003100Z", "2026-09-01T12:00:00.000Z", "2026-09-01T12:00:05.999Z"),  # after the retirement (b)
], ids=["backdated", "after_retirement"])
def test_a_recording_planted_on_the_card_with_the_leaked_retired_key_is_never_taken(
        site: Site, server: BaseProcess, rotated: Path, name: str, start: str, end: str) -> None:
    r1, r2, s = recordings(site.cam)
    site.keys("retire", DEVICE, old_key_id(site), "--at", RETIRED_AT)
    forged = plant(site, rotated, name, start, end)
    make_recordings(site.cam, starts=("2026-09-02T10:00:00.000Z",))  # the camera starts again and records
    n2 = recordings(site.cam)[-1]
    assert n2.name > forged.name
    # the camera does not link what it cannot verify with its key or its hand-over: the chain goes on from S
    assert json.loads((n2 / "manifest.json").read_text())["previous"]["recording"] == s.name
    for _ in range(2):  # two docks, the camera restarted in between (a new offload thread)
        svc = service(site, server.url)
        try:
            svc.run_once()
        finally:
            svc.close()
        assert forged.name not in svc._refused and forged.name in svc.skipped  # tried again, with backoff
    assert sorted(site.stored()) == sorted(r.name for r in (r1, r2, s, n2))
    assert not is_offloaded(forged, custody_of(site.cam))
    actions = site.actions(forged.name)
    assert "stored" not in actions and "verified" not in actions
    # refused for its retired key once: offered again in the same round and at the next dock, base's status says
    # it would refuse that manifest again, so no byte of it is sent again (review-handover R3: it was re-uploaded
    # in full every time, and base kept every copy)
    assert actions == ["received", "refused"], actions
    assert "not on its chain" in svc.telemetry()["skipped"][forged.name]["reason"]  # type: ignore[index]
    assert len(list((site.base_dir / "evidence" / "refused" / DEVICE).glob(forged.name + ".*"))) == 1
    # something changed at base (a new head for K): the camera offers it once more, and base decides again
    site.keys("accept-chain", DEVICE, old_key_id(site), r2.name, sha(r2), "--reason", "depot check", "--by", "al")
    svc = service(site, server.url)
    try:
        svc.run_once()
    finally:
        svc.close()
    assert site.actions(forged.name) == ["received", "refused"] * 2
    assert len(list((site.base_dir / "evidence" / "refused" / DEVICE).glob(forged.name + ".*"))) == 1  # one copy


def test_base_takes_no_retired_key_recording_because_a_recording_of_the_active_key_links_it(
        site: Site, server: BaseProcess, rotated: Path) -> None:
    """An older camera linked the newest recording on its card, whoever signed it: base no longer takes
    that link as vouching for a retired key's recording."""
    site.keys("retire", DEVICE, old_key_id(site), "--at", RETIRED_AT)
    forged = plant(site, rotated, "20260602T120003100Z", "2026-03-01T12:00:00.000Z", "2026-03-01T12:00:05.999Z")
    make_recordings(site.cam, starts=("2026-09-02T10:00:00.000Z",))
    n2 = recordings(site.cam)[-1]
    m = json.loads((n2 / "manifest.json").read_bytes())
    m["previous"] = {"recording": forged.name,
                     "manifest_sha256": hashlib.sha256((forged / "manifest.json").read_bytes()).hexdigest()}
    (n2 / "manifest.json").write_text(json.dumps(seal(m, signer_of(site.cam)), indent=2) + "\n")  # as it linked
    svc = service(site, server.url)
    try:
        assert svc.run_once() == 4  # R1, R2, S and N2: the genuine chain
    finally:
        svc.close()
    assert n2.name in site.stored() and forged.name not in site.stored()
    assert site.actions(forged.name)[-2:] == ["received", "refused"]


def test_one_refused_recording_after_the_rotation_strands_nothing(site: Site, server: BaseProcess) -> None:
    r1, r2, s = recordings(site.cam)
    seg = s / "segment-00004.mp4"
    data = bytearray(seg.read_bytes())
    data[1000] ^= 1  # one bit flips on the card in N's first recording (review-custody F2)
    seg.write_bytes(bytes(data))
    site.keys("retire", DEVICE, old_key_id(site), "--at", RETIRED_AT)
    svc = service(site, server.url)
    try:
        assert svc.run_once() == 2, svc.telemetry()
    finally:
        svc.close()
    assert sorted(site.stored()) == [r1.name, r2.name]  # the hand-over pins K's chain, not S
    assert site.actions(s.name) == ["received", "refused"]
    assert svc.awaiting == {}


def test_held_uploads_are_audited_and_an_operator_vouches_for_a_chain_without_a_hand_over(
        site: Site, server: BaseProcess, capsys: pytest.CaptureFixture[str]) -> None:
    r1, r2, s = recordings(site.cam)
    shutil.rmtree(site.cam / HANDOVER_DIR)  # rotated by older firmware (or the old key was lost): no hand-over
    k = old_key_id(site)
    site.keys("retire", DEVICE, k, "--at", RETIRED_AT)
    for dock in range(2):  # two docks: held both times, audited once (until the reason changes)
        svc = service(site, server.url)
        try:
            assert svc.run_once() == (1 if dock == 0 else 0)
        finally:
            svc.close()
        assert sorted(svc.awaiting) == [r1.name, r2.name]
    assert site.stored() == [s.name]
    log = site.custody()
    try:
        held = {r.name: log.entries(device=DEVICE, recording=r.name) for r in (r1, r2)}
    finally:
        log._store.close()  # type: ignore[attr-defined]
    for rec, rows in held.items():
        assert [e.action for e in rows] == ["held"], rec
        detail = rows[0].detail
        assert detail["codes"] == ["awaiting_successor"] and detail["waiting_for"] == "handover" and detail["key"] == k
        assert detail["manifest_sha256"] == hashlib.sha256((site.cam / "recordings" / rec / "manifest.json")
                                                           .read_bytes()).hexdigest()
    sha2 = held[r2.name][0].detail["manifest_sha256"]
    # the operator's word, with who and why; refused without a reason, or with a hash that is not one
    assert base_main(["keys", "accept-chain", DEVICE, k, r2.name, sha2, "--reason", " ", "--by", "alice",
                      "--db", site.db]) == 2
    assert base_main(["keys", "accept-chain", DEVICE, k, r2.name, "abc", "--reason", "x", "--by", "alice",
                      "--db", site.db]) == 2
    capsys.readouterr()
    site.keys("accept-chain", DEVICE, k, r2.name, sha2, "--reason", "card read at the depot, case 17", "--by", "alice")
    assert "alice vouches" in capsys.readouterr().out
    svc = service(site, server.url)
    try:
        assert svc.run_once() == 2
    finally:
        svc.close()
    assert sorted(site.stored()) == [r1.name, r2.name, s.name]
    assert site.actions(r2.name) == ["held", "vouched", "received", "verified", "stored"]
    assert site.actions(r1.name) == ["held", "received", "verified", "stored"]
    log = site.custody()
    try:
        (vouched,) = [e for e in log.entries(device=DEVICE, recording=r2.name) if e.action == "vouched"]
    finally:
        log._store.close()  # type: ignore[attr-defined]
    assert vouched.actor == "operator:alice" and vouched.detail["reason"] == "card read at the depot, case 17"


def test_the_hand_over_is_registered_by_the_operator_once_and_a_forged_one_is_refused(
        site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (record,) = (site.cam / HANDOVER_DIR).glob("*.json")
    k = old_key_id(site)
    assert record.name == f"{k}.json"
    capsys.readouterr()
    site.keys("handover", DEVICE, str(record), "--by", "bob")
    site.keys("handover", DEVICE, str(record), "--by", "bob")
    out = capsys.readouterr().out
    assert "registered: its chain ends at 20260301T110003100Z" in out and "already registered" in out
    doc = json.loads(record.read_text())
    doc["head"]["recording"] = "20260901T120003100Z"  # the head moved: no longer what both keys signed
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert base_main(["keys", "handover", DEVICE, str(bad), "--db", site.db]) == 2
    assert "does not verify" in capsys.readouterr().err
    site.keys("heads", "--device", DEVICE, "--json")
    (row,) = map(json.loads, capsys.readouterr().out.splitlines())
    assert row["key_id"] == k and row["recording"] == "20260301T110003100Z" and row["kind"] == "handover"
    assert row["by"] == "operator:bob"


def test_a_recording_still_running_at_the_retirement_is_taken_in_the_camera_s_normal_order(
        site: Site, server: BaseProcess) -> None:
    r1, r2, s = recordings(site.cam)
    # `keys retire --at`: while K's 11:00 recording (ends 11:00:19.999) was running (review-custody F3)
    site.keys("retire", DEVICE, old_key_id(site), "--at", "2026-03-01T11:00:10Z")
    assert json.loads((r2 / "manifest.json").read_text())["end_utc"] > "2026-03-01T11:00:10"
    svc = service(site, server.url)
    try:
        assert svc.run_once() == 3, svc.telemetry()
    finally:
        svc.close()
    assert svc._refused == set() and svc.skipped == {}
    assert sorted(site.stored()) == [r1.name, r2.name, s.name]
    assert site.actions(r2.name) == ["received", "verified", "stored"]


def test_base_answers_a_retired_key_recording_it_cannot_place_yet_409_not_422(site: Site, server: BaseProcess) -> None:
    """Offered oldest first (an older camera's order), before the head is at base: held, never refused."""
    r1, r2, s = recordings(site.cam)
    site.keys("retire", DEVICE, old_key_id(site), "--at", "2026-03-01T11:00:10Z")
    client = BaseClient(server.url, DEVICE, signer_of(site.cam), ca_file=str(site.pki / "ca.crt"), timeout_s=30)
    off = Offloader(client, trusted=custody_of(site.cam), chunk_bytes=256 * 1024)
    try:
        client.handover(json.loads(next((site.cam / HANDOVER_DIR).glob("*.json")).read_text()))
        with pytest.raises(OffloadError) as first:
            off.upload(r1)
        assert first.value.codes == ["awaiting_successor"] and first.value.retry
        off.upload(r2)
        off.upload(r1)
        off.upload(s)
    finally:
        client.close()
    assert sorted(site.stored()) == [r1.name, r2.name, s.name]
    assert site.actions(r1.name) == ["held", "received", "verified", "stored"]


# -- a cut chain (review-handover R1) -------------------------------------------------------------------
# A thief holding the leaked retired key K and the card flips one bit in a segment of K's hand-over head R2
# (so base refuses R2) and plants P, made with K by the firmware and linking the genuine R1. Base keeps
# R2's signed manifest although it refuses R2, so R2's own link places R1 and shows P for what it is: P is
# never taken, and `keys accept-chain` refuses to vouch for it (a fork: R2 and P both claim to follow R1)
# unless --despite-conflicts; `keys held` shows why.


def forge_after(work: Path, old_key: Path, genuine: Path, start: str) -> Path:
    """A recording made with K by the firmware on a copy of the card holding ``genuine``: it links it."""
    (work / "recordings").mkdir(parents=True)
    shutil.copytree(genuine, work / "recordings" / genuine.name)
    cfg = AppConfig(recording=RecordingConfig(segment_s=2.0, pre_event_s=5.0))
    cfg = replace(cfg, device=replace(cfg.device, id=DEVICE), identity=IdentityConfig(key_file=str(old_key)))
    run_clip(SimOptions(clip=EXAMPLE, out=work, config=cfg, broker=None, start_time=start, gnss=False))
    (made,) = [p for p in recordings(work) if p.name != genuine.name]
    return made


def sha(rec: Path) -> str:
    return hashlib.sha256((rec / "manifest.json").read_bytes()).hexdigest()


@pytest.fixture
def cut(site: Site, rotated: Path, tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    r1, r2, s = recordings(site.cam)
    made = forge_after(tmp_path / "thief", rotated / "old.key", r1, "2026-03-01T10:30:00.000Z")
    planted = site.cam / "recordings" / made.name
    shutil.copytree(made, planted)
    assert json.loads((planted / "manifest.json").read_text())["previous"]["recording"] == r1.name
    seg = sorted(r2.glob("segment-*.mp4"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 1  # one bit: base refuses R2 (the hand-over head)
    seg.write_bytes(bytes(data))
    site.keys("retire", DEVICE, old_key_id(site), "--at", RETIRED_AT)
    return r1, r2, planted, s


def test_a_refused_head_s_signed_link_places_the_chain_and_the_forgery_is_never_taken(
        site: Site, server: BaseProcess, cut: tuple[Path, Path, Path, Path]) -> None:
    r1, r2, planted, s = cut
    for _ in range(2):  # two docks, the camera restarted in between
        svc = service(site, server.url)
        try:
            svc.run_once()
        finally:
            svc.close()
    assert sorted(site.stored()) == [r1.name, s.name]  # R1 placed by R2's signed link, though R2 is refused
    assert is_offloaded(r1, custody_of(site.cam)) and not is_offloaded(planted, custody_of(site.cam))
    assert "held" not in site.actions(planted.name) and site.actions(planted.name) == ["received", "refused"]
    assert site.actions(r2.name) == ["received", "refused"] * 2  # damaged: offered at each start (it may be mended)
    aside = site.base_dir / "evidence" / "refused" / DEVICE
    assert len(list(aside.glob(r2.name + ".*"))) == 1  # base keeps one copy of a manifest's refused upload (R3)


def test_accept_chain_refuses_a_head_base_holds_evidence_against(
        site: Site, server: BaseProcess, cut: tuple[Path, Path, Path, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    _, r2, planted, _ = cut
    svc = service(site, server.url)
    try:
        svc.run_once()
    finally:
        svc.close()
    k = old_key_id(site)
    capsys.readouterr()
    # the review's operator: vouches for the planted recording with its hash (it verifies with K)
    args = ["keys", "accept-chain", DEVICE, k, planted.name, sha(planted), "--reason", "R2 damaged", "--by", "sgt",
            "--db", site.db]
    assert base_main(args) == 2
    err = capsys.readouterr().err
    assert "a fork" in err and r2.name in err and "goes past" in err, err
    site.keys("held", DEVICE)
    out = capsys.readouterr().out
    assert planted.name in out and "fork" in out, out
    site.keys("heads", "--device", DEVICE, "--json")
    assert [json.loads(x)["kind"] for x in capsys.readouterr().out.splitlines()] == ["handover"]  # nothing kept
    assert base_main([*args, "--despite-conflicts"]) == 0  # the explicit override: loud, and audited
    assert "WARNING: vouched DESPITE" in capsys.readouterr().err
    log = site.custody()
    try:
        (row,) = [e for e in log.entries(device=DEVICE, recording=planted.name) if e.action == "vouched"]
    finally:
        log._store.close()  # type: ignore[attr-defined]
    assert row.detail["despite_conflicts"] is True and any("fork" in c for c in row.detail["conflicts"])


def test_a_retired_key_manifest_whose_signature_fails_is_refused_before_any_chain_walk(
        site: Site, server: BaseProcess) -> None:
    """A manifest that only names the retired key (review-handover R7, R3): final ``bad_signature``, decided
    before base walks the chain (it used to walk it, then answer ``retired_key``, which the camera retries)."""
    r1 = recordings(site.cam)[0]
    site.keys("retire", DEVICE, old_key_id(site), "--at", RETIRED_AT)
    fake = site.cam / "recordings" / "20260301T120000000Z"
    shutil.copytree(r1, fake)
    m = json.loads((fake / "manifest.json").read_text())
    m["recording"] = fake.name  # the signature no longer covers it
    (fake / "manifest.json").write_text(json.dumps(m))
    client = BaseClient(server.url, DEVICE, signer_of(site.cam), ca_file=str(site.pki / "ca.crt"), timeout_s=30)
    off = Offloader(client, trusted=custody_of(site.cam), chunk_bytes=256 * 1024)
    try:
        client.handover(json.loads(next((site.cam / HANDOVER_DIR).glob("*.json")).read_text()))
        with pytest.raises(OffloadError) as refused:
            off.upload(fake)
        assert refused.value.codes == ["bad_signature"] and not refused.value.retry
        with pytest.raises(OffloadError) as again:  # asked again: base's status says so, nothing is sent
            off.upload(fake)
        assert again.value.codes == ["bad_signature"] and "before and would again" in str(again.value)
    finally:
        client.close()
    assert site.actions(fake.name) == ["received", "refused"]
