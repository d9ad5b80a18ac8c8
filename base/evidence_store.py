"""Where base keeps verified recordings, behind the small :class:`EvidenceStore` protocol.

:class:`FileEvidenceStore` (the default) keeps ``<root>/recordings/<device>/<recording>/`` with the
files exactly as the camera signed them (segments, ``markers.jsonl``, ``chapters.vtt``,
``manifest.json``). A recording is moved in from base's staging area (``<root>/incoming``, same
filesystem: one ``rename``, then the directory entries are fsynced), made read-only, and never
replaced: a second ``put`` of the same recording is refused.

:class:`bodycam.base.evidence_s3.S3EvidenceStore` implements the same protocol on an S3-compatible
object store (``serve --evidence-s3``), with the folder as its staging area.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from bodycam.device.errors import StorageError
from bodycam.device.footage.recording import fsync_dir


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


class EvidenceStore(Protocol):
    """Verified recordings, and a local staging area for uploads still arriving."""

    @property
    def staging(self) -> Path:
        """A local directory for uploads in progress (one subdirectory per device and recording)."""
        ...

    @property
    def root(self) -> Path:
        """A local directory for base's own bookkeeping (refused uploads are kept under it)."""
        ...

    def room_for(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more can be staged (and then stored) without filling base."""
        ...

    def put(self, device: str, recording: str, src: Path) -> str:
        """Take the verified files in directory ``src`` (consumed); returns where they are now."""
        ...

    def has(self, device: str, recording: str) -> bool: ...

    def location(self, device: str, recording: str) -> str:
        """Where a stored recording is (a path, or an object store URL)."""
        ...

    def files(self, device: str, recording: str) -> list[str]:
        """The file names of a stored recording."""
        ...

    def open(self, device: str, recording: str, name: str) -> BinaryIO: ...


class LocalArea:
    """The local folder every evidence store has: ``incoming/`` (uploads being received), ``refused/``,
    and the free-space reserve the receiver checks before it takes a chunk."""

    def __init__(self, root: Path, reserve_mb: float, disk_usage: Callable[[Path], DiskUsage] | None,
                 folders: tuple[str, ...] = ("incoming",)) -> None:
        self._root = Path(root)
        self.reserve = int(reserve_mb * 1024 * 1024)
        self._usage = disk_usage or (lambda p: DiskUsage(*shutil.disk_usage(p)))
        try:
            for name in folders:
                (self._root / name).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"evidence store {self._root}: cannot create ({exc.strerror or exc})") from exc

    @property
    def root(self) -> Path:
        return self._root

    @property
    def staging(self) -> Path:
        """Where uploads are received (same filesystem as a file store: ``put`` is a rename)."""
        return self._root / "incoming"

    def room_for(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more can be written and still leave the reserve free."""
        return self._usage(self._root).free - nbytes >= self.reserve


class FileEvidenceStore(LocalArea):
    def __init__(self, root: Path, *, reserve_mb: float = 64.0,
                 disk_usage: Callable[[Path], DiskUsage] | None = None) -> None:
        super().__init__(root, reserve_mb, disk_usage, ("recordings", "incoming"))

    def _dir(self, device: str, recording: str) -> Path:
        for part in (device, recording):
            if not part or Path(part).name != part or part.startswith("."):
                raise StorageError(f"evidence store: bad name {part!r}")
        return self.root / "recordings" / device / recording

    def put(self, device: str, recording: str, src: Path) -> str:
        dest = self._dir(device, recording)
        if dest.exists():
            raise StorageError(f"evidence store: {device}/{recording} is already stored (never replaced)")
        try:
            for f in src.iterdir():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
                f.chmod(0o444)
            fsync_dir(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, dest)
            fsync_dir(dest.parent)
            fsync_dir(src.parent)
            dest.chmod(0o555)
        except OSError as exc:
            raise StorageError(f"evidence store: cannot store {device}/{recording} ({exc.strerror or exc})") from exc
        return str(dest)

    def has(self, device: str, recording: str) -> bool:
        return self._dir(device, recording).is_dir()

    def location(self, device: str, recording: str) -> str:
        return str(self._dir(device, recording))

    def files(self, device: str, recording: str) -> list[str]:
        d = self._dir(device, recording)
        return sorted(p.name for p in d.iterdir() if p.is_file())

    def open(self, device: str, recording: str, name: str) -> BinaryIO:
        if Path(name).name != name:
            raise StorageError(f"evidence store: bad file name {name!r}")
        try:
            return (self._dir(device, recording) / name).open("rb")
        except OSError as exc:
            raise StorageError(f"evidence store: {device}/{recording}/{name}: {exc.strerror or exc}") from exc
