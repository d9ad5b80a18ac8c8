"""Offload with custody, end to end: the camera's uploader against base's receiver served by a real
uvicorn on loopback, over TLS with a CA made at test time; cuts at chosen bytes; refusals."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _offload import DEVICE, Base, BaseProcess, CutProxy, make_base, make_recordings, recordings, signer_of
from _pki import make_ca, make_server

from bodycam.device.footage.offload_state import OFFLOAD_FILE, is_offloaded
from bodycam.device.footage.seal import seal
from bodycam.device.identity import Signer, load_public
from bodycam.device.uplink.offload import BaseClient, Offloader, OffloadError, OffloadService, pending
from bodycam.device.verify import verify_path

pytestmark = pytest.mark.integration

CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_recordings(tmp_path_factory.mktemp("offload") / "data")


@pytest.fixture
def cam(made: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "cam"
    shutil.copytree(made, copy)
    return copy


@pytest.fixture
def base(tmp_path: Path, cam: Path) -> Iterator[Base]:
    b = make_base(tmp_path / "base", cam)
    yield b
    b.close()


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    make_server(d, make_ca(d))
    return d


@pytest.fixture
def tls_server(base: Base, pki: Path) -> Iterator[BaseProcess]:
    s = BaseProcess(base.dir, cert=pki / "server.crt", key=pki / "server.key")
    yield s
    close_clients()
    s.close()


_open: list[BaseClient] = []


def close_clients() -> None:
    """Before a server stops (uvicorn waits for open keep-alive connections)."""
    while _open:
        _open.pop().close()


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_clients()


def offloader(cam: Path, url: str, ca: Path | None = None, signer: Signer | None = None) -> Offloader:
    client = BaseClient(url, DEVICE, signer or signer_of(cam), ca_file=None if ca is None else str(ca), timeout_s=10)
    _open.append(client)
    return Offloader(client, chunk_bytes=CHUNK)


def stored_dir(base: Base, rec: Path) -> Path:
    return base.evidence.root / "recordings" / DEVICE / rec.name


def actions(base: Base, rec: str) -> list[str]:
    return [e.action for e in base.custody.entries(device=DEVICE, recording=rec)]


def test_over_tls_base_verifies_stores_and_confirms_then_the_camera_marks_offloaded(
        cam: Path, base: Base, tls_server: BaseProcess, pki: Path) -> None:
    off = offloader(cam, tls_server.url, pki / "ca.crt")
    recs = recordings(cam)
    assert pending(cam / "recordings") == sorted(recs, key=lambda r: (not json.loads(
        (r / "manifest.json").read_text())["protected"], r.name))
    for rec in recs:
        conf = off.upload(rec)
        manifest = json.loads((rec / "manifest.json").read_text())
        # the confirmation names the hashes base verified: the manifest's, every segment's, the markers'
        assert conf["segments"] == {s["file"]: s["sha256"] for s in manifest["segments"]}
        assert conf["markers_sha256"] == manifest["markers_sha256"]
        assert is_offloaded(rec)
        state = json.loads((rec / OFFLOAD_FILE).read_text())
        assert state["confirmation"] == conf and state["base"] == tls_server.url
        kept = stored_dir(base, rec)
        for f in rec.iterdir():
            if f.name != OFFLOAD_FILE:
                assert (kept / f.name).read_bytes() == f.read_bytes(), f.name
        assert not (kept / OFFLOAD_FILE).exists()
        assert actions(base, rec.name) == ["received", "verified", "stored"]
        assert all(e.actor == f"device:{DEVICE}" for e in base.custody.entries(recording=rec.name))
    assert pending(cam / "recordings") == []
    # what base holds is evidence by itself: bodycam verify with the registered key, the chain included
    report = verify_path(base.evidence.root / "recordings" / DEVICE,
                         load_public(cam / "state" / "identity" / "device.pub"), "test")
    assert report.ok, [(r.recording, f) for r in report.recordings for f in r.findings]
    # uploading again is a confirmation again (the camera may have missed the answer), nothing re-sent
    sent = off.client.sent_bytes
    (recs[0] / OFFLOAD_FILE).unlink()
    assert off.upload(recs[0])["manifest_sha256"] == json.loads((recs[0] / OFFLOAD_FILE).read_text())[
        "manifest_sha256"]
    assert off.client.sent_bytes == sent


def test_a_camera_that_does_not_trust_base_s_certificate_sends_nothing(
        cam: Path, base: Base, tls_server: BaseProcess, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_ca(other, "another CA")
    off = offloader(cam, tls_server.url, other / "ca.crt")
    with pytest.raises(OffloadError, match="certificate does not verify"):
        off.upload(recordings(cam)[0])
    assert not is_offloaded(recordings(cam)[0])
    assert base.custody.entries() == []


def _upload_until_confirmed(off: Offloader, rec: Path, attempts: int = 8) -> int:
    """Upload, resuming after each failure; returns the failures seen."""
    failures = 0
    for _ in range(attempts):
        try:
            off.upload(rec)
            return failures
        except OffloadError as exc:
            assert exc.retry, exc
            assert not is_offloaded(rec)
            failures += 1
    raise AssertionError(f"not confirmed after {attempts} attempts")


def _points(up: bytes, down: bytes) -> dict[str, tuple[str, int]]:
    """Where to cut, found in a clean session's transcript (plain HTTP: the bytes are readable)."""
    puts = [i for i in range(len(up)) if up.startswith(b"PUT ", i)]
    confirm = up.index(b"POST ")
    third = puts[3]  # a segment's first chunk: headers, then the body
    body = up.index(b"\r\n\r\n", third) + 4
    last_put = puts[-1]
    return {
        "first byte": ("up", 1),
        "inside the status request": ("up", 40),
        "inside a PUT's headers": ("up", third + 30),
        "at the first byte of a chunk": ("up", body),
        "mid-chunk": ("up", body + CHUNK // 2),
        "one byte before the end of a chunk": ("up", body + CHUNK - 1),
        "inside the last PUT": ("up", last_put + 100),
        "after the last byte before the confirm": ("up", confirm),
        "inside the confirm request": ("up", confirm + 20),
        "inside a chunk's answer": ("down", down.index(b"HTTP/1.1 200", 1) + 10),
        "inside the confirmation (base stored it, the camera did not hear)": ("down", down.rindex(b"HTTP/1.1") + 30),
    }


def test_a_cut_at_any_byte_resumes_and_costs_at_most_a_chunk(made: Path, tmp_path: Path) -> None:
    """Cut the connection at many points (either direction); each upload resumes from what base holds
    and ends confirmed, with at most one chunk sent again per cut."""
    rec_name = recordings(made)[0].name
    clean_cam = tmp_path / "clean"
    shutil.copytree(made, clean_cam)
    b0 = make_base(tmp_path / "b0", clean_cam)
    s0 = BaseProcess(b0.dir)
    proxy = CutProxy(s0.port)
    try:
        off = offloader(clean_cam, proxy.url)
        off.upload(clean_cam / "recordings" / rec_name)
        clean_sent = off.client.sent_bytes
        up, down = bytes(proxy.up), bytes(proxy.down)
    finally:
        close_clients()
        proxy.close()
        s0.close()
        b0.close()
    points = _points(up, down)
    assert len(up) > 10 * CHUNK
    for i, (what, (direction, at)) in enumerate(points.items()):
        cam = tmp_path / f"cam{i}"
        shutil.copytree(made, cam)
        rec = cam / "recordings" / rec_name
        b = make_base(tmp_path / f"b{i}", cam)
        s = BaseProcess(b.dir)
        p = CutProxy(s.port, cut_up=at if direction == "up" else None, cut_down=at if direction == "down" else None)
        try:
            off = offloader(cam, p.url)
            failures = _upload_until_confirmed(off, rec)
            assert p.cuts == 1 and failures == 1, what
            assert is_offloaded(rec), what
            kept = b.evidence.root / "recordings" / DEVICE / rec_name
            for f in rec.iterdir():
                if f.name != OFFLOAD_FILE:
                    assert (kept / f.name).read_bytes() == f.read_bytes(), (what, f.name)
            assert off.client.sent_bytes - clean_sent <= CHUNK, what  # resume cost: at most the chunk in flight
            assert actions(b, rec_name) == ["received", "verified", "stored"], what
            assert list((b.evidence.root / "incoming" / DEVICE).iterdir()) == [], what
        finally:
            close_clients()
            p.close()
            s.close()
            b.close()


def test_a_cut_inside_tls_at_raw_offsets_resumes(made: Path, tmp_path: Path, pki: Path) -> None:
    rec_name = recordings(made)[0].name
    for i, at in enumerate((700, 150_000, 400_000)):
        cam = tmp_path / f"cam{i}"
        shutil.copytree(made, cam)
        b = make_base(tmp_path / f"b{i}", cam)
        s = BaseProcess(b.dir, cert=pki / "server.crt", key=pki / "server.key")
        p = CutProxy(s.port, cut_up=at)
        try:
            off = offloader(cam, f"https://127.0.0.1:{p.port}", pki / "ca.crt")
            assert _upload_until_confirmed(off, cam / "recordings" / rec_name) == 1
            assert p.cuts == 1
            assert is_offloaded(cam / "recordings" / rec_name)
        finally:
            close_clients()
            p.close()
            s.close()
            b.close()


# -- refusals: tampered, truncated, unsigned, unknown key ---------------------------------------------------
def _refused(off: Offloader, rec: Path) -> OffloadError:
    with pytest.raises(OffloadError) as info:
        off.upload(rec)
    assert not info.value.retry
    assert not is_offloaded(rec) and not (rec / OFFLOAD_FILE).exists()
    return info.value


def _refusal_audited(base: Base, rec: Path, code: str) -> None:
    entries = base.custody.entries(recording=rec.name)
    assert [e.action for e in entries] == ["received", "refused"]
    assert code in entries[-1].detail["codes"] and entries[-1].detail["reason"]
    assert not (base.evidence.root / "recordings" / DEVICE / rec.name).exists()
    kept = Path(entries[-1].detail["kept"])  # kept aside for inspection, never as evidence
    assert kept.is_dir() and kept.is_relative_to(base.evidence.root / "refused")


def test_a_tampered_segment_is_refused_with_the_reason_and_audited(
        cam: Path, base: Base, tls_server: BaseProcess, pki: Path) -> None:
    rec = recordings(cam)[0]
    seg = rec / "segment-00001.mp4"
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x01
    seg.write_bytes(bytes(data))
    err = _refused(offloader(cam, tls_server.url, pki / "ca.crt"), rec)
    assert "segment_hash" in err.codes and "segment-00001.mp4" in str(err)
    _refusal_audited(base, rec, "segment_hash")
    logged = (base.dir / "server.log").read_text()
    assert "REFUSED" in logged and "segment_hash" in logged


def test_a_truncated_segment_is_refused(cam: Path, base: Base, tls_server: BaseProcess, pki: Path) -> None:
    rec = recordings(cam)[0]
    seg = rec / "segment-00000.mp4"
    seg.write_bytes(seg.read_bytes()[:-1000])
    err = _refused(offloader(cam, tls_server.url, pki / "ca.crt"), rec)
    assert {"segment_size", "segment_hash"} <= set(err.codes)
    _refusal_audited(base, rec, "segment_size")


def test_an_unsigned_or_re_signed_manifest_is_refused(
        cam: Path, base: Base, tls_server: BaseProcess, pki: Path) -> None:
    first, second = recordings(cam)
    doc = json.loads((first / "manifest.json").read_text())
    (first / "manifest.json").write_text(json.dumps(seal(doc, None), indent=2))
    err = _refused(offloader(cam, tls_server.url, pki / "ca.crt"), first)
    assert err.codes == ["unsigned"]
    _refusal_audited(base, first, "unsigned")
    doc = json.loads((second / "manifest.json").read_text())
    (second / "manifest.json").write_text(json.dumps(seal(doc, Signer.generate()), indent=2))
    err = _refused(offloader(cam, tls_server.url, pki / "ca.crt"), second)
    assert err.codes == ["unknown_key"]
    _refusal_audited(base, second, "unknown_key")


def test_requests_not_signed_by_the_registered_key_are_refused(
        cam: Path, base: Base, tls_server: BaseProcess, pki: Path) -> None:
    rec = recordings(cam)[0]
    err = _refused(offloader(cam, tls_server.url, pki / "ca.crt", signer=Signer.generate()), rec)
    assert err.codes == ["unknown_key"]
    assert base.custody.entries() == [] and not (base.evidence.staging / DEVICE).exists()
    # another registered camera cannot upload in this camera's name
    other = Signer.generate()
    base.keys.add("cam-o2", other.public_pem(), 0)
    client = BaseClient(tls_server.url, "cam-o2", other, ca_file=str(pki / "ca.crt"))
    _open.append(client)
    code, doc = client.request("GET", f"/api/offload/v1/recordings/{DEVICE}/{rec.name}")
    assert code == 403 and doc["refused"] == ["wrong_device"]
    client.device = DEVICE  # claims to be the camera: its key is not the camera's
    code, doc = client.request("GET", f"/api/offload/v1/recordings/{DEVICE}/{rec.name}")
    assert code == 401 and doc["refused"] == ["unknown_key"]


def test_a_confirmation_that_does_not_name_the_camera_s_hashes_marks_nothing(cam: Path) -> None:
    rec = recordings(cam)[0]
    manifest = json.loads((rec / "manifest.json").read_text())
    good = {"confirmed": True, "device": DEVICE, "recording": rec.name,
            "manifest_sha256": __import__("hashlib").sha256((rec / "manifest.json").read_bytes()).hexdigest(),
            "markers_sha256": manifest["markers_sha256"],
            "segments": {s["file"]: s["sha256"] for s in manifest["segments"]}}
    Offloader._check(rec, manifest, good)
    for key, bad in (("manifest_sha256", "0" * 64), ("markers_sha256", "1" * 64), ("recording", "x"),
                     ("segments", {**good["segments"], "segment-00000.mp4": "2" * 64})):
        with pytest.raises(OffloadError, match="does not name"):
            Offloader._check(rec, manifest, {**good, key: bad})


def test_the_service_offloads_only_when_docked(cam: Path, base: Base, tls_server: BaseProcess, pki: Path) -> None:
    docked = [False]
    svc = OffloadService(offloader(cam, tls_server.url, pki / "ca.crt"), cam / "recordings", lambda: docked[0])
    assert svc.run_once() == 0 and base.custody.entries() == []
    docked[0] = True
    assert svc.run_once() == 2 and pending(cam / "recordings") == []
    assert svc.run_once() == 0

