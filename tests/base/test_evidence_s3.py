"""Evidence in an S3-compatible object store: ``bodycam-base serve --evidence DIR --evidence-s3 s3://...``
against a real S3 server process (moto's, speaking the S3 HTTP API on loopback), with the bucket's
Object Lock on. The camera offloads a recording (encrypted at rest, as by default); base verifies it,
puts every file with its SHA-256 as the S3 checksum and the index last, and confirms; export-case reads
it back from the bucket into a bundle that ``bodycam verify`` accepts. The object store going away
is a 503: the camera keeps the recording and the next try succeeds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _mqtt import wait_port
from _offload import (
    DEVICE,
    BaseProcess,
    custody_of,
    free_port,
    make_base,
    make_recordings,
    recordings,
    signer_of,
)

from bodycam.base.evidence_s3 import INDEX, S3EvidenceStore
from bodycam.device.footage.offload_state import is_offloaded
from bodycam.device.identity import load_public
from bodycam.device.uplink.offload import BaseClient, Offloader, OffloadError
from bodycam.device.verify import verify_path

pytestmark = pytest.mark.integration

boto3 = pytest.importorskip("boto3")
MOTO = shutil.which("moto_server", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
CREDS = {"AWS_ACCESS_KEY_ID": "bodycam-test", "AWS_SECRET_ACCESS_KEY": "bodycam-test-secret",
         "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "evidence"


class S3Server:
    def __init__(self, d: Path) -> None:
        assert MOTO is not None, "moto_server is not installed (pip install 'moto[server]': the dev extra)"
        self.port = free_port()
        self.log = (d / "s3.log").open("ab")
        self.start()

    def start(self) -> None:
        assert MOTO is not None
        self.proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log,
                                     stderr=subprocess.STDOUT, env={**os.environ, **CREDS})
        wait_port(self.port, 30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> object:
        return boto3.client("s3", endpoint_url=self.url, **{k.lower(): v for k, v in CREDS.items()
                                                             if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    server = S3Server(tmp_path)
    server.client().create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_recordings(tmp_path_factory.mktemp("s3") / "data", starts=("2026-03-01T10:00:00.000Z",),
                           encrypt=True)


def test_offload_into_s3_then_export_case_from_the_bucket(tmp_path: Path, made: Path, s3: S3Server) -> None:
    cam = tmp_path / "cam"
    shutil.copytree(made, cam)
    rec = recordings(cam)[0]
    b = make_base(tmp_path / "base", cam)
    b.close()
    server = BaseProcess(b.dir, web=True, extra=("--evidence-s3", f"s3://{BUCKET}/force-a", "--s3-endpoint", s3.url,
                                                 "--s3-lock-days", "30"))
    client = BaseClient(server.url, DEVICE, signer_of(cam), timeout_s=10)
    try:
        conf = Offloader(client, trusted=custody_of(cam), chunk_bytes=256 * 1024).upload(rec)
        assert is_offloaded(rec, custody_of(cam))
    finally:
        client.close()
        server.close()
    api = s3.client()
    keys = sorted(o["Key"] for o in api.list_objects_v2(Bucket=BUCKET)["Contents"])  # type: ignore[attr-defined]
    on_card = sorted(p.name for p in rec.iterdir() if p.name != "offload.json")
    assert keys == sorted([f"force-a/{DEVICE}/{rec.name}/{n}" for n in on_card]
                          + [f"force-a/{DEVICE}/{rec.name}/{INDEX}"])
    index = json.loads(api.get_object(Bucket=BUCKET, Key=f"force-a/{DEVICE}/{rec.name}/{INDEX}")[  # type: ignore[attr-defined]
        "Body"].read())
    assert set(index["files"]) == set(on_card) and set(conf["segments"]) <= set(index["files"])
    seg = sorted(conf["segments"])[0]
    assert index["files"][seg]["sha256"] == conf["segments"][seg]
    # Object Lock: stored evidence cannot be deleted, base's credentials included
    head = api.head_object(Bucket=BUCKET, Key=f"force-a/{DEVICE}/{rec.name}/{seg}")  # type: ignore[attr-defined]
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(Exception, match=r"AccessDenied|locked|retention|WORM"):
        api.delete_object(Bucket=BUCKET, Key=f"force-a/{DEVICE}/{rec.name}/{seg}",  # type: ignore[attr-defined]
                          VersionId=head["VersionId"])
    # nothing left in staging: the bucket holds it
    assert not any((b.dir / "evidence" / "incoming").rglob("*.age"))
    # export-case reads it back from the bucket; the bundle verifies offline
    out = tmp_path / "case"
    done = subprocess.run([sys.executable, "-m", "bodycam.base.cli", "export-case", str(out), "--device", DEVICE,
                           "--evidence", str(b.dir / "evidence"), "--evidence-s3", f"s3://{BUCKET}/force-a",
                           "--s3-endpoint", s3.url, "--db", str(b.dir / "base.db"), "--actor", "ada"],
                          capture_output=True, text=True, env={**os.environ, **CREDS})
    assert done.returncode == 0, done.stderr
    rec_out = next(p for p in out.rglob(rec.name) if p.is_dir())
    for name in on_card:
        assert (rec_out / name).read_bytes() == (rec / name).read_bytes(), name
    report = verify_path(rec_out, load_public(cam / "state" / "identity" / "device.pub"), "test")
    assert report.ok, [f for r in report.recordings for f in r.findings]


def test_the_object_store_going_away_is_a_retry_and_nothing_is_marked(
        tmp_path: Path, made: Path, s3: S3Server) -> None:
    cam = tmp_path / "cam"
    shutil.copytree(made, cam)
    rec = recordings(cam)[0]
    b = make_base(tmp_path / "base", cam)
    b.close()
    endpoint = s3.url
    server = BaseProcess(b.dir, web=True, extra=("--evidence-s3", f"s3://{BUCKET}", "--s3-endpoint", endpoint))
    client = BaseClient(server.url, DEVICE, signer_of(cam), timeout_s=30)
    try:
        s3.stop()
        with pytest.raises(OffloadError) as err:
            Offloader(client, trusted=custody_of(cam), chunk_bytes=256 * 1024).upload(rec)
        assert err.value.retry and "503" in str(err.value)
        assert not is_offloaded(rec, custody_of(cam))
        # the staged upload waits for the store: a new S3 server on the same port, the same bucket
        s3.log = (tmp_path / "s3-2.log").open("ab")
        s3.start()
        s3.client().create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)  # type: ignore[attr-defined]
        Offloader(client, trusted=custody_of(cam), chunk_bytes=256 * 1024).upload(rec)
        assert is_offloaded(rec, custody_of(cam))
    finally:
        client.close()
        server.close()


def test_a_store_that_refuses_a_changed_body_refuses_the_recording(tmp_path: Path, s3: S3Server) -> None:
    """Every object is read back and hashed before the index is written: bytes in the bucket that are
    not the verified ones (simulated: the hash of the verified file differs from what was sent) are
    an error, the recording is not stored, and the staging copy stays."""
    store = S3EvidenceStore(tmp_path / "ev", f"s3://{BUCKET}", endpoint_url=s3.url)
    src = store.staging / "cam-x" / "20260301T100000000Z"
    src.mkdir(parents=True)
    (src / "manifest.json").write_text("{}")
    import bodycam.base.evidence_s3 as mod

    real = mod._sha256_file
    mod._sha256_file = lambda p: ("00" * 32, p.stat().st_size)  # type: ignore[assignment]
    try:
        from bodycam.device.errors import StorageError

        with pytest.raises(StorageError, match="reads back"):
            store.put("cam-x", "20260301T100000000Z", src)
    finally:
        mod._sha256_file = real
    assert not store.has("cam-x", "20260301T100000000Z") and (src / "manifest.json").exists()
