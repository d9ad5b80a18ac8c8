"""Offload with custody, end to end: the camera's uploader against base's receiver served by a real
uvicorn on loopback, over TLS with a CA made at test time; cuts at chosen bytes; refusals."""

from __future__ import annotations

import json
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _offload import (
    DEVICE,
    Base,
    BaseProcess,
    CutProxy,
    custody_of,
    custody_signer,
    make_base,
    make_recordings,
    recordings,
    signer_of,
)
from _pki import make_ca, make_server

from bodycam.device.footage.offload_state import OFFLOAD_FILE
from bodycam.device.footage.offload_state import is_offloaded as offloaded_under
from bodycam.device.footage.seal import seal
from bodycam.device.identity import Signer, load_public
from bodycam.device.uplink.offload import BaseClient, Offloader, OffloadError, OffloadService
from bodycam.device.uplink.offload import pending as pending_under
from bodycam.device.verify import verify_path

pytestmark = pytest.mark.integration

CHUNK = 64 * 1024


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
    """The camera of ``cam``'s uploader, trusting base's custody key (``make_base`` installed it)."""
    client = BaseClient(url, DEVICE, signer or signer_of(cam), ca_file=None if ca is None else str(ca), timeout_s=10)
    _open.append(client)
    return Offloader(client, trusted=custody_of(cam), chunk_bytes=CHUNK)


def is_offloaded(rec: Path) -> bool:
    """Offloaded as the camera sees it: a confirmation signed by a custody key it trusts (``rec``'s card)."""
    return offloaded_under(rec, custody_of(rec.parents[1]))


def pending(root: Path) -> list[Path]:
    return pending_under(root, custody_of(root.parent))


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
        # signed by base's custody key, kept with its signature (checked again whenever it is read)
        assert conf["schema"] == "bodycam.offload-confirmation/1" and conf["sig"]
        assert conf["key_id"] == custody_signer(base.dir).key_id
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


def test_an_unregistered_key_is_refused_before_base_reads_the_body(
        cam: Path, base: Base, tls_server: BaseProcess, pki: Path) -> None:
    """The signature covers the body's hash (a header), so base checks it first: a client without a
    registered key announces an 8 MiB chunk, sends 1 KiB and waits; base answers 401 at once instead of
    waiting for (and holding) the rest."""
    import http.client

    from bodycam.device.uplink.offload_wire import MAX_CHUNK, PREFIX

    rec = recordings(cam)[0]
    target = f"{PREFIX}/recordings/{DEVICE}/{rec.name}/segment-00000.mp4?offset=0"
    stranger = BaseClient(tls_server.url, DEVICE, Signer.generate(), ca_file=str(pki / "ca.crt"))
    _open.append(stranger)
    headers = stranger.signed_headers("PUT", target, "0" * 64)  # the hash of a body it will never finish
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    conn = http.client.HTTPSConnection("localhost", tls_server.port, context=ctx, timeout=15)
    try:
        conn.putrequest("PUT", target)
        for k, v in (*headers.items(), ("content-length", str(MAX_CHUNK))):
            conn.putheader(k, v)
        conn.endheaders()
        conn.send(b"x" * 1024)
        resp = conn.getresponse()  # the old order read the whole body first: this timed out
        assert resp.status == 401 and json.loads(resp.read())["refused"] == ["unknown_key"]
    finally:
        conn.close()
    assert not (base.evidence.staging / DEVICE).exists()


def test_the_service_offloads_only_when_docked(cam: Path, base: Base, tls_server: BaseProcess, pki: Path) -> None:
    docked = [False]
    svc = OffloadService(offloader(cam, tls_server.url, pki / "ca.crt"), cam / "recordings", lambda: docked[0])
    assert svc.run_once() == 0 and base.custody.entries() == []
    docked[0] = True
    assert svc.run_once() == 2 and pending(cam / "recordings") == []
    assert svc.run_once() == 0


def _damage(rec: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Card damage in one recording; the name of the file it hits."""
    if how == "segment missing":
        (rec / "segment-00003.mp4").unlink()
        return "segment-00003.mp4"
    if how == "segment not a file":  # what a damaged card's file system can show; root reads any mode
        (rec / "segment-00002.mp4").unlink()
        (rec / "segment-00002.mp4").mkdir()
        return "segment-00002.mp4"
    if how == "markers missing":
        (rec / "markers.jsonl").unlink()
        return "markers.jsonl"
    # an I/O error in the middle of reading a segment (EIO from the card)
    import errno

    bad = rec / "segment-00001.mp4"
    real_open = Path.open

    class Failing:
        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def __enter__(self) -> Failing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def seek(self, pos: int) -> int:
            return int(self.fh.seek(pos))

        def read(self, n: int) -> bytes:
            if self.fh.tell() > 0:
                raise OSError(errno.EIO, "Input/output error")
            return bytes(self.fh.read(n))

    def open_(self: Path, mode: str = "r", *a: Any, **k: Any) -> Any:
        fh = real_open(self, mode, *a, **k)
        return Failing(fh) if self == bad and "r" in mode else fh

    monkeypatch.setattr(Path, "open", open_)
    return "segment-00001.mp4"


@pytest.mark.parametrize("how", ["segment missing", "segment not a file", "markers missing", "I/O error"])
def test_a_recording_the_camera_cannot_read_is_skipped_with_backoff_and_never_blocks_the_others(
        cam: Path, made: Path, base: Base, tls_server: BaseProcess, pki: Path, how: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = pending(cam / "recordings")  # the damaged one is first in every round
    name = _damage(first, how, monkeypatch)
    now = [1000.0]
    svc = OffloadService(offloader(cam, tls_server.url, pki / "ca.crt"), cam / "recordings", lambda: True,
                         interval_s=30.0, monotonic=lambda: now[0])
    assert svc.run_once() == 1  # the other recording goes on
    assert is_offloaded(second) and not is_offloaded(first)
    assert actions(base, second.name) == ["received", "verified", "stored"]
    tele = svc.telemetry()
    assert isinstance(tele["error"], str) and first.name in tele["error"] and name in tele["error"]
    assert tele["skipped"] == {first.name: {"reason": tele["error"], "failures": 1}}
    assert first.name not in svc._refused  # not a refusal: tried again later
    # backoff: not tried again before interval_s, then after it; the delay doubles
    assert svc.run_once() == 0 and svc.skipped[first.name].failures == 1
    now[0] += 31
    assert svc.run_once() == 0 and svc.skipped[first.name].failures == 2
    now[0] += 31
    assert svc.run_once() == 0 and svc.skipped[first.name].failures == 2
    now[0] += 30
    assert svc.run_once() == 0 and svc.skipped[first.name].failures == 3
    assert svc.telemetry()["error"] == svc.skipped[first.name].reason
    # the card is readable again (the file back): the next try after the backoff offloads it
    monkeypatch.undo()
    orig = made / "recordings" / first.name / name
    if (first / name).is_dir():
        (first / name).rmdir()
    shutil.copy2(orig, first / name)
    now[0] += 121
    assert svc.run_once() == 1 and is_offloaded(first)
    assert svc.skipped == {} and svc.telemetry()["error"] is None and "skipped" not in svc.telemetry()
    assert actions(base, first.name) == ["received", "verified", "stored"]



# -- whatever fails, nothing is marked offloaded that base has not confirmed -----------------------------
def _staged(base_dir: Path) -> int:
    d = base_dir / "evidence" / "incoming" / DEVICE
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) if d.is_dir() else 0


UPLOADER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from _offload import DEVICE, custody_of, signer_of
from bodycam.device.uplink.offload import BaseClient, Offloader
cam, url = Path({cam!r}), {url!r}
off = Offloader(BaseClient(url, DEVICE, signer_of(cam), timeout_s=10), trusted=custody_of(cam),
                chunk_bytes=16 * 1024)
off.upload(cam / "recordings" / {rec!r})
print("confirmed")
"""


def test_killing_the_uploader_mid_upload_marks_nothing_and_the_next_run_resumes(
        cam: Path, base: Base, tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    rec = recordings(cam)[0]
    server = BaseProcess(base.dir)
    try:
        code = UPLOADER.format(tests=str(Path(__file__).parents[1]), cam=str(cam), url=server.url, rec=rec.name)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while _staged(base.dir) < 300_000:  # some chunks in: kill it
            assert proc.poll() is None and time.monotonic() < deadline, "the upload ended before the kill"
            time.sleep(0.005)
        proc.kill()
        proc.wait(10)
        assert not (rec / OFFLOAD_FILE).exists() and base.custody.entries() == []
        staged = _staged(base.dir)
        off = offloader(cam, server.url)
        off.upload(rec)
        assert is_offloaded(rec)
        assert off.client.sent_bytes <= sum(f.stat().st_size for f in rec.iterdir()) - staged + CHUNK
    finally:
        close_clients()
        server.close()


def test_killing_base_mid_upload_marks_nothing_and_a_restarted_base_takes_the_rest(
        cam: Path, base: Base, pki: Path) -> None:
    import threading
    import time

    rec = recordings(cam)[0]
    server = BaseProcess(base.dir, cert=pki / "server.crt", key=pki / "server.key")
    port = server.port
    errors: list[BaseException] = []
    off = offloader(cam, server.url, pki / "ca.crt")
    off.chunk = 16 * 1024

    def upload() -> None:
        try:
            off.upload(rec)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=upload)
    t.start()
    deadline = time.monotonic() + 60
    while _staged(base.dir) < 300_000:
        assert t.is_alive() and time.monotonic() < deadline
        time.sleep(0.005)
    server.kill()
    t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], OffloadError) and errors[0].retry
    assert not (rec / OFFLOAD_FILE).exists()
    assert [e.action for e in base.custody.entries()] == []
    # base comes back (same port, same store): the camera resumes from what base holds
    server = BaseProcess.__new__(BaseProcess)
    server.__init__(base.dir, cert=pki / "server.crt", key=pki / "server.key")  # type: ignore[misc]
    try:
        off.client = BaseClient(server.url, DEVICE, signer_of(cam), ca_file=str(pki / "ca.crt"))
        _open.append(off.client)
        assert off.upload(rec)["manifest_sha256"]
        assert is_offloaded(rec) and port != 0
        assert actions(base, rec.name) == ["received", "verified", "stored"]
    finally:
        close_clients()
        server.close()


def test_a_full_disk_at_base_refuses_the_chunk_and_marks_nothing(cam: Path, tmp_path: Path) -> None:
    """Base's evidence store on a real 2 MiB filesystem (tmpfs, as root): the upload of a 2.5 MB
    recording fills it; base answers 507, keeps exactly what it confirmed, and the camera keeps
    the recording un-offloaded; once there is room, it completes."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.fail("this test mounts a small tmpfs: run the suite as root (CI does)", pytrace=False)
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "evidence").symlink_to(mnt)
        make_base(tmp_path / "b", cam).close()
        server = BaseProcess(tmp_path / "b", env={"BODYCAM_TEST_RESERVE_MB": "0"})  # let the disk fill
        rec = recordings(cam)[0]
        try:
            off = offloader(cam, server.url)
            with pytest.raises(OffloadError) as info:
                off.upload(rec)
            # refused before writing (base_full: statvfs says it will not fit) or by the write (ENOSPC)
            assert info.value.retry and info.value.codes in (["base_full"], ["base_write"]), info.value
            assert "507" in str(info.value)
            assert not (rec / OFFLOAD_FILE).exists()
            state = off.client.status(rec.name)
            assert state["state"] == "partial"
            assert all(n % CHUNK == 0 or n == (rec / name).stat().st_size
                       for name, n in state["files"].items())  # whole chunks only: what was confirmed
            subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)  # room again
            off.upload(rec)
            assert is_offloaded(rec)
        finally:
            close_clients()
            server.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_base_refuses_a_chunk_that_would_eat_its_reserve(cam: Path, tmp_path: Path) -> None:
    from bodycam.base.evidence_store import DiskUsage
    from bodycam.base.receive import Refused

    free = [10 * 1024 * 1024]
    b = make_base(tmp_path / "b", cam, reserve_mb=8, disk_usage=lambda _: DiskUsage(1 << 40, 0, free[0]))
    rec = recordings(cam)[0].name
    data = b"x" * (3 * 1024 * 1024)
    sha = __import__("hashlib").sha256(data).hexdigest()
    with pytest.raises(Refused) as info:
        b.receiver.write_chunk(DEVICE, rec, "segment-00000.mp4", 0, data, sha)
    assert info.value.status == 507 and info.value.codes == ["base_full"]
    assert not (b.evidence.staging / DEVICE / rec / "segment-00000.mp4").exists()
    free[0] = 12 * 1024 * 1024
    assert b.receiver.write_chunk(DEVICE, rec, "segment-00000.mp4", 0, data, sha) == len(data)
    b.close()


# -- the case bundle ----------------------------------------------------------------------------------------
def test_offload_into_the_web_app_then_export_case_a_bundle_bodycam_verify_accepts_and_a_tamper_is_named(
        cam: Path, base: Base, pki: Path, tmp_path: Path) -> None:
    """The one web app (bodycam-base serve --evidence, over HTTPS) takes the camera's uploads; the
    dashboard's pages still want a login; export-case writes the bundle; bodycam verify checks it."""
    import subprocess
    import sys
    import urllib.request

    web = BaseProcess(base.dir, cert=pki / "server.crt", key=pki / "server.key", web=True)
    try:
        off = offloader(cam, web.url, pki / "ca.crt")
        for rec in recordings(cam):
            off.upload(rec)
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        with urllib.request.urlopen(f"{web.url}/fleet", context=ctx) as page:
            assert page.url.endswith("/login?next=/fleet")  # the dashboard's own guard, same app
    finally:
        close_clients()
        web.close()
    out = tmp_path / "case-17"
    cli = [sys.executable, "-m", "bodycam.base.cli"]
    done = subprocess.run([*cli, "export-case", str(out), "--device", DEVICE, "--evidence",
                           str(base.evidence.root), "--db", str(base.dir / "base.db"), "--actor", "olga"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 recording(s)" in done.stdout and "everything verifies" in done.stdout
    case = json.loads((out / "case.json").read_text())
    assert case["exported_by"] == "olga" and case["verified"] is True
    assert [r["recording"] for r in case["recordings"]] == [r.name for r in recordings(cam)]
    assert json.loads((out / "verification.json").read_text())["ok"] is True
    custody = [json.loads(line) for line in (out / "custody.jsonl").read_text().splitlines()]
    assert [c["action"] for c in custody] == ["received", "verified", "stored", "exported"] * 2
    assert custody[3]["actor"] == "olga"
    assert [e.action for e in base.custody.entries(recording=recordings(cam)[0].name)][-1] == "exported"
    # the auditor's side: bodycam verify on the bundle, with the key in it and with the registered one
    verify = [sys.executable, "-m", "bodycam.device.cli", "verify"]
    ok = subprocess.run([*verify, str(out)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    ok = subprocess.run([*verify, str(out), "--key", str(cam / "state" / "identity" / "device.pub"), "--json"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    # tamper with the bundle: a byte of a segment, and a marker removed
    first = out / "recordings" / recordings(cam)[0].name
    seg = first / "segment-00002.mp4"
    data = bytearray(seg.read_bytes())
    data[100] ^= 0xFF
    seg.write_bytes(bytes(data))
    second = out / "recordings" / recordings(cam)[1].name
    lines = (second / "markers.jsonl").read_bytes().splitlines(keepends=True)
    (second / "markers.jsonl").write_bytes(b"".join(lines[:1] + lines[2:]))
    bad = subprocess.run([*verify, str(out), "--json"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    found = {(r["recording"], f["code"], f["where"]) for r in json.loads(bad.stdout)["recordings"]
             for f in r["findings"] if f["level"] == "fail"}
    assert (first.name, "segment_hash", "segment-00002.mp4") in found
    assert {(second.name, "markers_file_hash"), (second.name, "marker_gap")} <= {(r, c) for r, c, _ in found}
    # a bundle is written once
    again = subprocess.run([*cli, "export-case", str(out), "--device", DEVICE, "--evidence",
                            str(base.evidence.root), "--db", str(base.dir / "base.db")],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_footage_encrypted_at_rest_is_offloaded_as_it_is_on_the_card_and_verifies_both_ways(
        tmp_path: Path) -> None:
    """The default on a provisioned camera: ``segment-NNNNN.mp4.age`` files. Base takes them as they
    are (the ciphertext is what the manifest signs first), verifies them on receipt, and what it
    stores verifies offline with the device key, and with base's age key the plaintext too."""
    from bodycam.device.footage.atrest import load_identity

    cam = make_recordings(tmp_path / "enc", starts=("2026-03-01T12:00:00.000Z",), encrypt=True)
    rec = recordings(cam)[0]
    assert sorted(p.name for p in rec.glob("segment-*")) and all(
        p.name.endswith(".mp4.age") for p in rec.glob("segment-*"))
    b = make_base(tmp_path / "base", cam)
    server = BaseProcess(b.dir)
    try:
        off = offloader(cam, server.url)
        conf = off.upload(rec)
        assert is_offloaded(rec) and all(name.endswith(".mp4.age") for name in conf["segments"])
        kept = stored_dir(b, rec)
        assert sorted(p.name for p in kept.iterdir()) == sorted(p.name for p in rec.iterdir() if p.name != OFFLOAD_FILE)
        public = load_public(cam / "state" / "identity" / "device.pub")
        assert verify_path(kept, public, "test").ok
        decrypted = verify_path(kept, public, "test", decrypt=load_identity(cam / "state" / "identity" / "base.age.key"))
        assert decrypted.ok, [f for r in decrypted.recordings for f in r.findings]
        assert actions(b, rec.name) == ["received", "verified", "stored"]
    finally:
        close_clients()
        server.close()
        b.close()


def test_a_late_request_of_a_killed_uploader_never_cuts_what_base_holds(cam: Path, base: Base) -> None:
    """A chunk that arrives after newer ones (the request of an uploader killed mid-send, handled late)
    carries the same bytes: base keeps everything it holds. A file that really changed (other bytes
    at the offset) is taken again from there, as the uploader's restart of a file asks."""
    import hashlib

    rec = recordings(cam)[0]
    seg = sorted(p for p in rec.iterdir() if p.name.startswith("segment-"))[0]
    blob = seg.read_bytes()
    rx = base.receiver
    chunk = 64 * 1024

    def put(offset: int, data: bytes) -> int:
        return rx.write_chunk(DEVICE, rec.name, seg.name, offset, data, hashlib.sha256(data).hexdigest())

    for off in range(0, len(blob), chunk):
        assert put(off, blob[off:off + chunk]) == min(len(blob), off + chunk)
    staged = base.evidence.staging / DEVICE / rec.name / seg.name
    assert put(0, blob[:chunk]) == len(blob)  # late, same bytes: nothing cut
    assert put(chunk // 2, blob[chunk // 2:chunk // 2 + chunk]) == len(blob)
    assert staged.read_bytes() == blob
    other = bytes(b ^ 0xFF for b in blob[:chunk])  # another file: base takes it from offset 0
    assert put(0, other) == chunk and staged.read_bytes() == other
