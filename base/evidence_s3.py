"""Evidence in an S3-compatible object store (MinIO, Ceph RGW, AWS S3, ...), through boto3.

The same :class:`bodycam.base.evidence_store.EvidenceStore` protocol as the file store; uploads are
still received into a local staging folder (``<root>/incoming``, ``<root>/refused``), and only a
verified recording is put into the bucket:

* each file to ``<prefix><device>/<recording>/<name>`` with its SHA-256 sent as the S3 checksum
  (``ChecksumSHA256``: the object store refuses a body that does not match), and, if configured,
  S3 Object Lock in COMPLIANCE mode until ``lock_days`` from now (the bucket must have Object Lock
  enabled: then nobody, base included, can delete or overwrite it before that date);
* each object read back and hashed (an S3 server that does not check the checksum cannot slip
  other bytes in);
* then the index object ``<prefix><device>/<recording>/.stored.json`` (names, sizes, SHA-256s),
  written last, so a recording counts as stored only once every file is in; never replaced
  (``has`` is checked first and the index is written with ``If-None-Match: *``);
* only then is the staging copy removed.

Reading back (``files``/``open``) goes through the index. Credentials come from boto3's usual chain
(environment, shared config, instance role); the endpoint from ``endpoint_url``. Every failure of
the object store is a :class:`StorageError` (the receiver answers 503: the camera keeps the
recording and tries again later).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

from bodycam.base.evidence_store import DiskUsage, LocalArea
from bodycam.device.errors import StorageError, UsageError

INDEX = ".stored.json"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` -> (bucket, prefix ending in '/' or '')."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise UsageError(f"{url!r}: an S3 location is s3://bucket[/prefix]")
    prefix = parts.path.strip("/")
    return parts.netloc, (prefix + "/") if prefix else ""


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


class S3EvidenceStore(LocalArea):
    """Its :class:`LocalArea` (``root``) holds uploads until they are verified and put in the bucket."""

    def __init__(self, root: Path, url: str, *, endpoint_url: str | None = None, lock_days: float | None = None,
                 reserve_mb: float = 64.0, client: Any = None,
                 disk_usage: Callable[[Path], DiskUsage] | None = None,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = url
        self.lock_days = lock_days
        self._now = now
        if client is None:
            try:
                import boto3
            except ImportError as exc:
                raise UsageError("S3 evidence storage needs boto3: pip install 'bodycam[s3]'") from exc
            client = boto3.client("s3", endpoint_url=endpoint_url)
        self.s3 = client
        super().__init__(root, reserve_mb, disk_usage)

    def _key(self, device: str, recording: str, name: str = "") -> str:
        for part in (device, recording) + ((name,) if name else ()):
            if not part or "/" in part or "\\" in part or (part.startswith(".") and part != INDEX):
                raise StorageError(f"evidence store: bad name {part!r}")
        return f"{self.prefix}{device}/{recording}/{name}"

    def _call(self, what: str, fn: Callable[..., Any], **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kw)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise StorageError(f"evidence store {self.url}: {what}: {err.get('Code')} {err.get('Message') or ''}"
                               .rstrip()) from exc
        except BotoCoreError as exc:
            raise StorageError(f"evidence store {self.url}: {what}: {exc}") from exc

    def _index(self, device: str, recording: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self._key(device, recording, INDEX))
        except ClientError as exc:
            err = exc.response.get("Error", {})
            if err.get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise StorageError(f"evidence store {self.url}: read the index of {device}/{recording}: "
                               f"{err.get('Code')} {err.get('Message') or ''}".rstrip()) from exc
        except BotoCoreError as exc:  # cannot connect, no credentials, ...
            raise StorageError(f"evidence store {self.url}: read the index of {device}/{recording}: {exc}") from exc
        try:
            doc = json.loads(obj["Body"].read())
        except ValueError as exc:
            raise StorageError(f"evidence store {self.url}: {device}/{recording}/{INDEX} is not JSON") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
            raise StorageError(f"evidence store {self.url}: {device}/{recording}/{INDEX} names no files")
        return doc

    def put(self, device: str, recording: str, src: Path) -> str:
        if self.has(device, recording):
            raise StorageError(f"evidence store: {device}/{recording} is already stored (never replaced)")
        extra: dict[str, Any] = {}
        if self.lock_days is not None:
            extra = {"ObjectLockMode": "COMPLIANCE",
                     "ObjectLockRetainUntilDate": self._now() + dt.timedelta(days=self.lock_days)}
        files: dict[str, dict[str, Any]] = {}
        try:
            names = sorted(p.name for p in src.iterdir() if p.is_file())
        except OSError as exc:
            raise StorageError(f"evidence store: cannot read {src} ({exc.strerror or exc})") from exc
        for name in names:
            sha, size = _sha256_file(src / name)
            with (src / name).open("rb") as fh:
                self._call(f"put {device}/{recording}/{name}", self.s3.put_object, Bucket=self.bucket,
                           Key=self._key(device, recording, name), Body=fh,
                           ChecksumAlgorithm="SHA256", ChecksumSHA256=base64.b64encode(bytes.fromhex(sha)).decode(), **extra)
            self._read_back(device, recording, name, sha, size)
            files[name] = {"sha256": sha, "size": size}
        index = {"schema": "bodycam.evidence-index/1", "device": device, "recording": recording, "files": files,
                 "stored": self._now().isoformat().replace("+00:00", "Z")}
        body = json.dumps(index, sort_keys=True).encode()
        self._call(f"put {device}/{recording}/{INDEX}", self.s3.put_object, Bucket=self.bucket,
                   Key=self._key(device, recording, INDEX), Body=body, IfNoneMatch="*",
                   ChecksumAlgorithm="SHA256", ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(), **extra)
        shutil.rmtree(src, ignore_errors=True)  # in the bucket, every file and the index: the copy goes
        return self.location(device, recording)

    def _read_back(self, device: str, recording: str, name: str, sha: str, size: int) -> None:
        """What the bucket returns must be what was verified (not every S3 server checks the checksum)."""
        obj = self._call(f"read back {device}/{recording}/{name}", self.s3.get_object, Bucket=self.bucket,
                         Key=self._key(device, recording, name))
        from botocore.exceptions import BotoCoreError

        h = hashlib.sha256()
        got = 0
        body = obj["Body"]
        try:
            for block in iter(lambda: body.read(1 << 20), b""):
                h.update(block)
                got += len(block)
        except BotoCoreError as exc:  # botocore checks the stored checksum itself where the server keeps one
            raise StorageError(f"evidence store {self.url}: {device}/{recording}/{name} reads back wrong: {exc}: "
                               "not stored") from exc
        finally:
            body.close()
        if got != size or h.hexdigest() != sha:
            raise StorageError(f"evidence store {self.url}: {device}/{recording}/{name} reads back as {got} bytes, "
                               f"SHA-256 {h.hexdigest()[:12]}..., not the verified {size} bytes {sha[:12]}...: "
                               "not stored")

    def has(self, device: str, recording: str) -> bool:
        return self._index(device, recording) is not None

    def location(self, device: str, recording: str) -> str:
        return f"s3://{self.bucket}/{self._key(device, recording)}"

    def files(self, device: str, recording: str) -> list[str]:
        doc = self._index(device, recording)
        if doc is None:
            raise StorageError(f"evidence store: {device}/{recording} is not stored")
        return sorted(str(n) for n in doc["files"])

    def open(self, device: str, recording: str, name: str) -> BinaryIO:
        if name not in self.files(device, recording):
            raise StorageError(f"evidence store: {device}/{recording}/{name}: no such file")
        obj = self._call(f"get {device}/{recording}/{name}", self.s3.get_object, Bucket=self.bucket,
                         Key=self._key(device, recording, name))
        return cast(BinaryIO, obj["Body"])





def add_s3_arguments(parser: Any) -> None:
    """``--evidence-s3`` and friends, for every command that opens the evidence store."""
    parser.add_argument("--evidence-s3", metavar="s3://BUCKET[/PREFIX]",
                        help="keep verified recordings in an S3-compatible object store (the --evidence folder "
                             "is then only the staging area); credentials from the usual AWS_* variables")
    parser.add_argument("--s3-endpoint", metavar="URL", help="the object store's endpoint (MinIO, Ceph RGW, ...); "
                                                             "default: AWS")
    parser.add_argument("--s3-lock-days", type=float, metavar="DAYS",
                        help="S3 Object Lock (COMPLIANCE) on every stored object for DAYS (the bucket must have "
                             "Object Lock enabled)")


def open_evidence(root: Path, args: Any, *, reserve_mb: float = 64.0) -> Any:
    """The evidence store the command line asks for: the folder ``root``, or S3 with ``root`` as staging."""
    from bodycam.base.evidence_store import FileEvidenceStore

    s3 = getattr(args, "evidence_s3", None)
    if s3 is None:
        if getattr(args, "s3_endpoint", None) or getattr(args, "s3_lock_days", None) is not None:
            raise UsageError("--s3-endpoint and --s3-lock-days go with --evidence-s3")
        return FileEvidenceStore(root, reserve_mb=reserve_mb)
    days = getattr(args, "s3_lock_days", None)
    if days is not None and not days > 0:
        raise UsageError("--s3-lock-days must be > 0")
    return S3EvidenceStore(root, s3, endpoint_url=getattr(args, "s3_endpoint", None), lock_days=days,
                           reserve_mb=reserve_mb)

__all__ = ["INDEX", "S3EvidenceStore", "add_s3_arguments", "open_evidence", "parse_s3_url"]
