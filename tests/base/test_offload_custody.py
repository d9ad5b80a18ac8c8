"""Base signs every offload confirmation; the camera marks a recording offloaded (and retention may then
delete it) only on a confirmation signed by a custody key it trusts, naming this device, this recording
and its hashes. An impostor (a real TLS server with a certificate the camera trusts) that answers with
the right hashes but no valid signature makes nothing offloaded, nothing deleted, and raises the alarm;
the real base with its key confirms as before. Also: ``serve --custody-key`` checked at start, and a
camera with no custody key at all (alarm, nothing marked, then ``bodycam offload trust``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _offload import (
    DEVICE,
    Base,
    BaseProcess,
    Impostor,
    custody_dir,
    custody_of,
    custody_signer,
    recordings,
    signer_of,
)
from _pki import make_ca, make_server

from bodycam.base.cli import main as base_main
from bodycam.device.footage.offload_state import OFFLOAD_FILE, is_offloaded
from bodycam.device.footage.retention import DiskUsage, Retention, RetentionConfig
from bodycam.device.identity import Signer
from bodycam.device.uplink.markers import jcs
from bodycam.device.uplink.offload import BaseClient, Offloader, OffloadService, pending
from bodycam.device.uplink.offload_wire import CONFIRMATION_SCHEMA, sign_confirmation

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, Any]:
    d = tmp_path / "pki"
    ca_key = make_ca(d)
    make_server(d, ca_key)
    make_server(d, ca_key, "impostor")  # a certificate for base's name the camera's CA list accepts
    return d, ca_key


def service(cam: Path, url: str, ca: Path, trusted: Any = None) -> OffloadService:
    client = BaseClient(url, DEVICE, signer_of(cam), ca_file=str(ca), timeout_s=10)
    off = Offloader(client, trusted=custody_of(cam) if trusted is None else trusted, chunk_bytes=256 * 1024)
    return OffloadService(off, cam / "recordings", lambda: True)


def body(rec: Path, device: str = DEVICE) -> dict[str, Any]:
    """The content of base's confirmation of ``rec`` as on the card: the right hashes."""
    manifest = json.loads((rec / "manifest.json").read_bytes())
    return {"confirmed": True, "device": device, "recording": rec.name,
            "manifest_sha256": hashlib.sha256((rec / "manifest.json").read_bytes()).hexdigest(),
            "markers_sha256": manifest["markers_sha256"],
            "segments": {s["file"]: s["sha256"] for s in manifest["segments"]}, "key": manifest["key"],
            "stored_ns": 1}


def forgeries(cam: Path, base: Base) -> dict[str, Callable[[Path], dict[str, Any]]]:
    """How someone answering TLS as base can answer ``confirm`` for recording ``rec`` of ``cam``."""
    key = custody_signer(base.dir)  # base's real custody key (the impostor replays what it signed)
    other = {r.name: o for r, o in zip(recordings(cam), reversed(recordings(cam)), strict=True)}

    def replayed_package(rec: Path) -> dict[str, Any]:
        doc = {**body(rec), "schema": "bodycam.model-package/1", "key_id": key.key_id}
        doc["sig"] = key.sign(jcs(doc))  # base's key on another kind of document (a reused model-signing key)
        return doc

    return {
        "unsigned": lambda rec: body(rec),
        "signed by an untrusted key": lambda rec: sign_confirmation(body(rec), Signer.generate()),
        "base's signature over another recording": lambda rec: sign_confirmation(
            body(cam / "recordings" / other[rec.name]), key),
        "base's signature naming another device": lambda rec: sign_confirmation(body(rec, "cam-o9"), key),
        "a model-package signature replayed": replayed_package,
    }


def short_card(_: Path) -> DiskUsage:
    return DiskUsage(1 << 30, 1 << 30, 0)  # no free byte: retention deletes whatever it may


@pytest.mark.parametrize("in_status", [False, True], ids=["confirm", "status"])
@pytest.mark.parametrize("kind", ["unsigned", "signed by an untrusted key", "base's signature over another recording",
                                  "base's signature naming another device", "a model-package signature replayed"])
def test_an_impostor_s_confirmation_marks_nothing_deletes_nothing_raises_the_alarm_and_base_s_does(
        cam: Path, base: Base, pki: tuple[Path, Any], kind: str, in_status: bool) -> None:
    d, _ = pki
    recs = recordings(cam)
    forge = forgeries(cam, base)[kind]
    impostor = Impostor(d / "impostor.crt", d / "impostor.key", lambda name: forge(cam / "recordings" / name),
                        in_status=in_status)
    try:
        svc = service(cam, impostor.url, d / "ca.crt")
        assert svc.run_once() == 0
        svc.offloader.client.close()
    finally:
        impostor.close()
    assert impostor.confirms == (0 if in_status else 2) and (impostor.chunks > 0) != in_status
    for rec in recs:
        assert not (rec / OFFLOAD_FILE).exists() and not is_offloaded(rec, custody_of(cam)), kind
    assert pending(cam / "recordings", custody_of(cam)) == sorted(recs)  # both are still to offload
    tele = svc.telemetry()
    assert isinstance(tele["alarm"], str) and "NOT marked offloaded" in tele["alarm"], tele
    assert set(svc.unverified) == {r.name for r in recs} and set(tele["skipped"]) == {r.name for r in recs}  # type: ignore[arg-type]
    # the card is full: retention deletes nothing of it (the recordings are protected and not offloaded)
    result = Retention(cam / "recordings", RetentionConfig(min_free_mb=100), disk_usage=short_card,
                       trusted=custody_of(cam)).enforce()
    assert result.deleted == [] and result.alarm and all(r.is_dir() for r in recs)
    # the real base, with its custody key: confirmed and marked offloaded as before; the alarm clears
    server = BaseProcess(base.dir, cert=d / "server.crt", key=d / "server.key")
    try:
        real = service(cam, server.url, d / "ca.crt")
        assert real.run_once() == 2 and real.alarm is None and "alarm" not in real.telemetry()
        real.offloader.client.close()
        svc.offloader.client = BaseClient(server.url, DEVICE, signer_of(cam), ca_file=str(d / "ca.crt"))
        svc.skipped.clear()
        assert svc.run_once() == 0 and svc.alarm is None  # nothing pending any more: its alarm is over
    finally:
        svc.offloader.client.close()
        server.close()
    for rec in recs:
        assert is_offloaded(rec, custody_of(cam))
        conf = json.loads((rec / OFFLOAD_FILE).read_text())["confirmation"]
        assert conf["schema"] == CONFIRMATION_SCHEMA and conf["key_id"] == custody_signer(base.dir).key_id
        assert conf["sig"] and conf["recording"] == rec.name and conf["device"] == DEVICE
    assert Retention(cam / "recordings", RetentionConfig(min_free_mb=100), disk_usage=short_card,
                     trusted=custody_of(cam)).enforce().deleted == [r.name for r in recs]


def test_a_camera_without_a_custody_key_uploads_marks_nothing_alarms_then_bodycam_offload_trust(
        cam: Path, base: Base, pki: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No trusted custody key: the camera keeps recording and uploading (base stores the evidence), but
    marks nothing offloaded, with the alarm; once the key is trusted the next round marks both from
    base's signed status, without sending them again."""
    from bodycam.device.cli import main as cam_main

    d, _ = pki
    shutil.rmtree(custody_dir(cam))
    server = BaseProcess(base.dir, cert=d / "server.crt", key=d / "server.key")
    try:
        svc = service(cam, server.url, d / "ca.crt", trusted={})
        assert svc.alarm is not None and "no trusted custody key" in svc.alarm
        assert svc.run_once() == 0
        assert [e.action for e in base.custody.entries(recording=recordings(cam)[0].name)] == [
            "received", "verified", "stored"]  # at base, as evidence
        assert not any((r / OFFLOAD_FILE).exists() for r in recordings(cam))
        assert "no trusted custody key" in str(svc.telemetry()["alarm"])
        svc.offloader.client.close()
        # provisioning's step: the camera trusts base's custody key (the data dir of this camera is cam/state)
        config = tmp_path / "cam.toml"
        config.write_text(f'[device]\nid = "{DEVICE}"\ndata_dir = "{cam / "state"}"\n')
        assert cam_main(["offload", "trust", str(base.custody_key.with_suffix(".pub")), "--config", str(config),
                         "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["trusted"] == custody_signer(base.dir).key_id and Path(out["file"]).parent == custody_dir(cam)
        svc = service(cam, server.url, d / "ca.crt")
        sent = svc.offloader.client.sent_bytes
        assert svc.alarm is None and svc.run_once() == 2
        assert svc.offloader.client.sent_bytes == sent  # base's status answered "stored", signed
        assert all(is_offloaded(r, custody_of(cam)) for r in recordings(cam))
        svc.offloader.client.close()
    finally:
        server.close()


def test_serve_with_evidence_needs_a_readable_ed25519_custody_key_of_its_own(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    db, ev = str(tmp_path / "base.db"), str(tmp_path / "evidence")
    serve = ["serve", "--db", db, "--listen", "127.0.0.1:1", "--evidence", ev]

    def refused(extra: list[str], words: str) -> None:
        assert base_main([*serve, *extra]) == 2
        assert words in capsys.readouterr().err

    refused([], "--evidence needs --custody-key")
    refused(["--custody-key", str(tmp_path / "none.key")], "no custody key: run 'bodycam-base custody keygen")
    assert base_main(["custody", "keygen", str(tmp_path / "custody.key")]) == 0
    assert "custody key" in capsys.readouterr().out
    assert base_main(["custody", "keygen", str(tmp_path / "custody.key")]) == 2  # never overwritten
    capsys.readouterr()
    (tmp_path / "custody.pub").chmod(0o600)
    refused(["--custody-key", str(tmp_path / "custody.pub")], "not a PEM private key")  # the public half
    (tmp_path / "dir.key").mkdir(mode=0o700)
    refused(["--custody-key", str(tmp_path / "dir.key")], "cannot read the custody key")
    (tmp_path / "custody.key").chmod(0o644)
    refused(["--custody-key", str(tmp_path / "custody.key")], "may be read by others")
    (tmp_path / "custody.key").chmod(0o600)
    wrong = tmp_path / "ec.key"
    wrong.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    wrong.chmod(0o600)
    refused(["--custody-key", str(wrong)], "not an Ed25519 private key")
    refused(["--custody-key", str(tmp_path / "custody.key"), "--model-key", str(tmp_path / "custody.key"),
             "--model-packages", str(tmp_path / "pk")], "the same key")
    assert base_main(["serve", "--db", db, "--custody-key", str(tmp_path / "custody.key")]) == 2
    assert "--custody-key goes with --evidence" in capsys.readouterr().err
    assert not (tmp_path / "base.db").exists()  # refused before anything was opened
