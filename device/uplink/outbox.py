"""The durable outbox: every marker is committed here before anything else sees it.

SQLite in WAL mode. Durability policy: ``fsync="full"`` (default) sets
``PRAGMA synchronous=FULL``, so a commit is on stable storage when
:meth:`Outbox.record` returns (survives kill -9 *and* power loss);
``fsync="normal"`` survives kill -9 but may lose the last commits on power loss.

One transaction per marker writes the marker row and the per-device state
(last ``seq`` and ``prev`` digest) together, so ``seq`` and the hash chain
continue across restarts. Rows are removed only by :meth:`ack` (after the
broker's PUBACK). Telemetry snapshots waiting for a connection live in a
separate bounded table and are the first thing dropped when the disk is full;
a marker that still cannot be committed raises :class:`StorageError`.

Thread-safe: one connection guarded by a lock (the publisher thread acks while
the loop records).
"""

from __future__ import annotations

import errno
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from bodycam.device.clock import Clock
from bodycam.device.errors import ConfigError, StorageError
from bodycam.device.uplink.markers import DEVICE_RE, GENESIS_PREV, Marker, MarkerDraft, build_marker, uuid7

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (device TEXT PRIMARY KEY, seq INTEGER NOT NULL, prev TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS markers (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS telemetry (n INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
"""


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


class Outbox:
    """Durable, ordered queue of markers for one device (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        device_id: str,
        clock: Clock,
        *,
        fsync: Literal["full", "normal"] = "full",
        max_telemetry: int = 1000,
        max_bytes: int | None = None,
    ) -> None:
        if not DEVICE_RE.match(device_id):
            raise ConfigError(f"outbox: device id {device_id!r} is not valid")
        if fsync not in ("full", "normal"):
            raise ConfigError(f"outbox: fsync must be 'full' or 'normal', got {fsync!r}")
        if max_telemetry < 0:
            raise ConfigError("outbox: max_telemetry must be >= 0")
        self._path = Path(path)
        self._device = device_id
        self._clock = clock
        self._max_telemetry = max_telemetry
        self._lock = threading.RLock()
        self.telemetry_dropped = 0
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self._path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"outbox {self._path}: cannot open: {exc}") from exc
        try:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"outbox {self._path}: WAL mode not available (got {mode})")
            self._sync = "FULL" if fsync == "full" else "NORMAL"
            self._conn.execute(f"PRAGMA synchronous={self._sync}")
            self._conn.executescript(_SCHEMA)
            if max_bytes is not None:
                page = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
                self._conn.execute(f"PRAGMA max_page_count={max(1, max_bytes // page)}")
            self._check_device()
            row = self._conn.execute("SELECT seq, prev FROM state WHERE device=?", (device_id,)).fetchone()
            self._seq, self._prev = (int(row[0]), str(row[1])) if row else (0, GENESIS_PREV)
        except sqlite3.Error as exc:
            self._conn.close()
            raise StorageError(f"outbox {self._path}: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    def _check_device(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='device'").fetchone()
        if row is None:
            self._conn.execute("INSERT INTO meta(key, value) VALUES ('device', ?)", (self._device,))
        elif row[0] != self._device:
            raise ConfigError(
                f"outbox {self._path} belongs to device {row[0]!r}, not {self._device!r}: "
                "use another file (markers of the old device are still in it)"
            )

    # -- markers ---------------------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self._device

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq

    def record(self, draft: MarkerDraft) -> Marker:
        """Complete ``draft`` (id, seq, prev, t) and commit it durably before returning.

        Raises StorageError when it cannot be committed (after dropping queued
        telemetry to make room); the seq/prev state is unchanged then.
        """
        with self._lock:
            marker = build_marker(
                draft,
                marker_id=uuid7(self._clock.wall_ns()),
                device=self._device,
                seq=self._seq + 1,
                prev=self._prev,
            )
            body = marker.to_json()
            try:
                self._commit_marker(marker, body)
            except (sqlite3.Error, OSError) as exc:
                if not _is_disk_full(exc):
                    raise StorageError(f"outbox {self._path}: cannot commit marker: {exc}") from exc
                dropped = self._drop_all_telemetry()
                try:
                    self._commit_marker(marker, body)
                except (sqlite3.Error, OSError) as exc2:
                    raise StorageError(
                        f"outbox {self._path}: disk full, marker seq {marker.seq} NOT recorded "
                        f"(dropped {dropped} telemetry rows first): {exc2}"
                    ) from exc2
            self._seq, self._prev = marker.seq, marker.digest()
            return marker

    def _commit_marker(self, marker: Marker, body: bytes) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("INSERT INTO markers(seq, id, body) VALUES (?, ?, ?)", (marker.seq, marker.id, body))
            c.execute(
                "INSERT INTO state(device, seq, prev) VALUES (?, ?, ?) "
                "ON CONFLICT(device) DO UPDATE SET seq=excluded.seq, prev=excluded.prev",
                (self._device, marker.seq, marker.digest()),
            )
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def pending(self, limit: int, after_seq: int = 0) -> list[Marker]:
        """Up to ``limit`` unacknowledged markers with seq > ``after_seq``, oldest first."""
        with self._lock:
            rows = self._query(
                "SELECT body FROM markers WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, max(0, limit))
            )
        return [Marker.from_json(bytes(r[0])) for r in rows]

    def ack(self, marker_id: str) -> None:
        """Remove a marker after the broker's PUBACK (unknown ids are ignored)."""
        self.ack_many([marker_id])

    def ack_many(self, marker_ids: Iterable[str]) -> None:
        """Remove several markers in one transaction.

        Acks are committed without their own fsync (``synchronous=NORMAL`` for this commit):
        an ack lost to a power cut only means the marker is sent again (base deduplicates);
        the next marker commit syncs the log anyway.
        """
        ids = [(i,) for i in marker_ids]
        if not ids:
            return
        with self._lock:
            try:
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("DELETE FROM markers WHERE id=?", ids)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StorageError(f"outbox {self._path}: cannot ack: {exc}") from exc
            finally:
                self._conn.execute(f"PRAGMA synchronous={self._sync}")

    def depth(self) -> int:
        """Number of markers waiting for a PUBACK."""
        with self._lock:
            return int(self._query("SELECT COUNT(*) FROM markers", ())[0][0])

    # -- telemetry (bounded, dropped first) ------------------------------------------------
    def put_telemetry(self, payload: bytes) -> bool:
        """Queue a telemetry payload; keeps at most ``max_telemetry`` (oldest dropped). False if dropped."""
        with self._lock:
            if self._max_telemetry == 0:
                self.telemetry_dropped += 1
                return False
            try:
                c = self._conn
                c.execute("BEGIN IMMEDIATE")
                c.execute("INSERT INTO telemetry(body) VALUES (?)", (payload,))
                cur = c.execute(
                    "DELETE FROM telemetry WHERE n <= (SELECT MAX(n) FROM telemetry) - ?",
                    (self._max_telemetry,),
                )
                self.telemetry_dropped += max(0, cur.rowcount)
                c.execute("COMMIT")
                return True
            except (sqlite3.Error, OSError):
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self.telemetry_dropped += 1
                return False

    def take_telemetry(self, limit: int) -> list[bytes]:
        """Remove and return up to ``limit`` queued telemetry payloads, oldest first."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT n, body FROM telemetry ORDER BY n LIMIT ?", (limit,)
                ).fetchall()
                if rows:
                    self._conn.execute("DELETE FROM telemetry WHERE n <= ?", (rows[-1][0],))
            except sqlite3.Error as exc:
                raise StorageError(f"outbox {self._path}: {exc}") from exc
        return [bytes(r[1]) for r in rows]

    def telemetry_depth(self) -> int:
        with self._lock:
            return int(self._query("SELECT COUNT(*) FROM telemetry", ())[0][0])

    def _drop_all_telemetry(self) -> int:
        try:
            cur = self._conn.execute("DELETE FROM telemetry")
            n = max(0, cur.rowcount)
        except sqlite3.Error:
            return 0
        self.telemetry_dropped += n
        return n

    def _query(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        try:
            return list(self._conn.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise StorageError(f"outbox {self._path}: {exc}") from exc

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
