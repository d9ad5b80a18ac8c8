"""Key rotation without stranding evidence, end to end on both stores (SQLite, PostgreSQL): a camera
records with its key K, is re-provisioned (``bodycam provision --force``: key N) and records again; base
registers N and **retires** K (``bodycam-base keys retire``). Offloaded over HTTPS to ``bodycam-base
serve --evidence``, every recording is taken: the one signed with N at once, the ones signed with K once
the recording after each is at base (its manifest links theirs), all in one round of the camera's
offload thread; each verifies with the key that signed it. **Revoking** K instead (compromise) still
refuses K's recordings. A recording forged with K after its retirement (by someone who also holds the
camera's active key to upload it) is refused: made after the retirement, 422; backdated, held back for
ever (no recording base holds links it); and K alone cannot even authenticate."""

from __future__ import annotations

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
from bodycam.device.footage.offload_state import is_offloaded
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.identity import IdentityConfig, Signer, load_public, load_signer, provision, trust_key
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
    provision(ident / "device.key", DEVICE, force=True)  # the camera's new key N (bodycam provision --force)
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
        assert made_before.value.codes == ["awaiting_successor"]  # it never gets a successor at base
        with pytest.raises(OffloadError) as again:
            off.upload(backdated)
        assert again.value.codes == ["awaiting_successor"]
    finally:
        client.close()
    assert not is_offloaded(after, custody_of(site.cam)) and not is_offloaded(backdated, custody_of(site.cam))
    assert after.name not in site.stored() and backdated.name not in site.stored()
    assert site.actions(after.name) == ["received", "refused"] and site.actions(backdated.name) == []
    # K alone cannot even ask: a retired key authenticates nothing
    thief = BaseClient(server.url, DEVICE, load_signer(rotated / "old.key"), ca_file=str(site.pki / "ca.crt"))
    with closing(thief):
        code, doc = thief.request("GET", f"/api/offload/v1/recordings/{DEVICE}/{backdated.name}")
    assert code == 403 and doc["refused"] == ["retired_key"]
