"""Space that footage cannot take: a preallocated file the outbox gives back when the card is full.

:class:`SpaceReserve` keeps a file of ``nbytes`` allocated blocks (``posix_fallocate``; zeros
written where the file system cannot fallocate) next to the outbox. When a marker commit fails
because the card is full, the outbox :meth:`release`\\ s part of it and commits into the space
that frees; footage never had it. :meth:`refill` grows the file back once there is room again:
retention (``device/footage/retention.py``) counts the :attr:`deficit` as space it must free
from unprotected footage first, then calls :meth:`refill`.

Thread-safe (the outbox releases from the loop or the publisher thread, retention refills from
the loop).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

from bodycam.device.errors import StorageError

log = logging.getLogger(__name__)
_CHUNK = 1 << 20  # released and refilled a MiB at a time


class SpaceReserve:
    def __init__(self, path: Path, nbytes: int) -> None:
        if nbytes < 0:
            raise StorageError(f"reserve {path}: size must be >= 0")
        self.path = Path(path)
        self.nbytes = nbytes
        self._lock = threading.Lock()
        try:
            self.path.touch(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"reserve {self.path}: cannot create ({exc.strerror or exc})") from exc
        self.refill()

    @property
    def size(self) -> int:
        """Bytes currently held."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    @property
    def deficit(self) -> int:
        """Bytes missing from the full reserve (given to the outbox and not yet refilled)."""
        return max(0, self.nbytes - self.size)

    def release(self, nbytes: int = _CHUNK) -> int:
        """Give up to ``nbytes`` back to the file system; returns how many were freed."""
        with self._lock:
            size = self.size
            take = min(size, max(0, nbytes))
            if take == 0:
                return 0
            try:
                os.truncate(self.path, size - take)
            except OSError as exc:
                log.error("reserve %s: cannot release space: %s", self.path, exc)
                return 0
            log.warning("reserve %s: released %d bytes for the outbox (%d left)", self.path, take, size - take)
            return take

    def refill(self) -> int:
        """Grow back towards ``nbytes`` as far as free space allows; returns the bytes added."""
        with self._lock:
            start = size = self.size
            while size < self.nbytes:
                step = min(_CHUNK, self.nbytes - size)
                if not _allocate(self.path, size, step):
                    break
                size += step
            return size - start


def _allocate(path: Path, offset: int, length: int) -> bool:
    """Allocate ``length`` bytes at ``offset`` (real blocks, not a sparse hole); False when full."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        try:
            os.posix_fallocate(fd, offset, length)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                os.ftruncate(fd, offset)  # fallocate may leave a partial extension
                return False
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                return False
            try:  # no fallocate here: write zeros
                os.pwrite(fd, bytes(length), offset)
            except OSError:
                os.ftruncate(fd, offset)
                return False
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
