"""The durable outbox: every marker is committed here before anything else sees it.

SQLite in WAL mode. Durability policy: ``fsync="full"`` (default) sets
``PRAGMA synchronous=FULL``, so a commit is on stable storage when
:meth:`Outbox.record` returns (survives kill -9 *and* power loss);
``fsync="normal"`` survives kill -9 but may lose the last commits on power loss.

One transaction per marker writes the marker row and the per-device state
(last ``seq`` and ``prev`` digest) together, so ``seq`` and the hash chain
continue across restarts.

A marker's life (end-to-end acknowledgement, DESIGN.md section 4)::

    recorded --PUBACK--> sent --base's ack (seq <= N)--> confirmed --keep_confirmed_s--> deleted

The broker's PUBACK only marks a marker *sent* (:meth:`mark_sent`, which counts the sends);
it stays until base's ``ack`` confirms it (:meth:`confirm`, monotonic). Confirmed markers are
kept for a retention window (``keep_confirmed_s``, and at most ``keep_confirmed_mb`` of them,
oldest dropped first: :meth:`prune`) so a base restored from an older backup can ask for them
again (:meth:`held`). Unconfirmed markers are never deleted: disk use is bounded by base's
confirmation.

A full card: telemetry snapshots (a bounded table of their own) are dropped first; then the
outbox takes space from its :class:`~bodycam.device.uplink.reserve.SpaceReserve` (a
preallocated file footage cannot take); if even that is gone, the marker is kept **in memory**,
in order, still handed out by :meth:`unsent` so it is published, and :attr:`journal_error`
says why (the storage alarm). Such markers are committed, oldest first, as soon as a commit
works again (:meth:`flush`, also tried before every new marker). While markers are only in
memory, the chain head (``seq`` and ``prev``) is written in place into a small preallocated
file (``<outbox>.head``), so a restart on a still-full card continues the chain instead of
reusing a sequence number that base has already seen.

Thread-safe: one connection guarded by a lock (the publisher thread marks and confirms while
the loop records).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from bodycam.device.clock import Clock
from bodycam.device.errors import ConfigError, MarkerError, StorageError
from bodycam.device.settings import require
from bodycam.device.uplink.markers import (
    DEVICE_RE,
    GENESIS_PREV,
    Marker,
    MarkerDraft,
    MarkerSigner,
    build_marker,
    uuid7,
)
from bodycam.device.uplink.reserve import SpaceReserve

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (device TEXT PRIMARY KEY, seq INTEGER NOT NULL, prev TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS markers (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS telemetry (n INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS confirmations (seq INTEGER PRIMARY KEY, t_ns INTEGER NOT NULL);
"""
#: columns added by end-to-end acknowledgement (an older outbox file is upgraded in place)
_COLUMNS = (("sends", "INTEGER NOT NULL DEFAULT 0"),)
_HEAD_BYTES = 128


@dataclass(frozen=True)
class OutboxConfig:
    """``[outbox]``: reserved space and how long markers base has confirmed are kept."""

    fsync: Literal["full", "normal"] = "full"
    reserve_mb: float = 8.0  # preallocated next to the outbox; footage cannot take it
    keep_confirmed_s: float = 7 * 86400.0  # a base restored from a backup can ask for these again
    keep_confirmed_mb: float = 4.0  # and at most this much of them (oldest confirmed dropped first)

    def __post_init__(self) -> None:
        require(0 <= self.reserve_mb <= 65536, "outbox.reserve_mb", "must be 0..65536")
        require(0 <= self.keep_confirmed_s <= 366 * 86400, "outbox.keep_confirmed_s", "must be 0..31622400 s")
        require(
            self.keep_confirmed_mb >= 0 and (self.reserve_mb == 0 or self.keep_confirmed_mb <= self.reserve_mb),
            "outbox.keep_confirmed_mb",
            "must be 0..outbox.reserve_mb (confirmed markers live in the reserved space)",
        )

    @property
    def reserve_bytes(self) -> int:
        return int(self.reserve_mb * 1024 * 1024)

    @property
    def keep_confirmed_bytes(self) -> int | None:
        return int(self.keep_confirmed_mb * 1024 * 1024) if self.reserve_mb > 0 else None


@dataclass
class Held:
    """A marker the outbox holds, with its delivery state."""

    marker: Marker
    body: bytes
    sends: int = 0


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


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
        reserve_bytes: int = 0,
        keep_confirmed_s: float = 7 * 86400.0,
        keep_confirmed_bytes: int | None = None,
        signer: MarkerSigner | None = None,
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
        self._keep_ns = int(keep_confirmed_s * 1e9)
        self._keep_bytes = keep_confirmed_bytes
        self._lock = threading.RLock()
        self._signer = signer  # signs every marker (sig + key) before it is committed
        self.telemetry_dropped = 0
        self._mem: list[Held] = []  # committed nowhere yet (full card), oldest first
        self._journal_error: str | None = None
        self._unreadable: set[int] = set()  # rows that no longer parse: skipped (see _readable)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self.reserve = SpaceReserve(self._path.with_name(self._path.name + ".reserve"), reserve_bytes) \
                if reserve_bytes > 0 else None
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"outbox {self._path}: cannot open: {exc}") from exc
        while True:  # a restart on a full card: opening needs room for the WAL and its index
            try:
                self._conn = sqlite3.connect(
                    str(self._path), isolation_level=None, check_same_thread=False, timeout=10.0
                )
                mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                self._conn.execute("PRAGMA user_version").fetchone()  # creates the -shm index
                break
            except (OSError, sqlite3.Error) as exc:
                with contextlib.suppress(Exception):
                    self._conn.close()
                # only a full card is helped by the reserve's room (a corrupt file is not: keep the room)
                if not _is_disk_full(exc) or self.reserve is None or not self.reserve.release():
                    raise StorageError(f"outbox {self._path}: cannot open: {exc}") from exc
        try:
            if str(mode).lower() != "wal":
                raise StorageError(f"outbox {self._path}: WAL mode not available (got {mode})")
            self._sync = "FULL" if fsync == "full" else "NORMAL"
            self._conn.execute(f"PRAGMA synchronous={self._sync}")
            self._conn.executescript(_SCHEMA)
            have = {str(r[1]) for r in self._conn.execute("PRAGMA table_info(markers)").fetchall()}
            for name, decl in _COLUMNS:
                if name not in have:
                    self._conn.execute(f"ALTER TABLE markers ADD COLUMN {name} {decl}")
            if max_bytes is not None:
                page = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
                self._conn.execute(f"PRAGMA max_page_count={max(1, max_bytes // page)}")
            self._check_device()
            row = self._conn.execute("SELECT seq, prev FROM state WHERE device=?", (device_id,)).fetchone()
            self._seq, self._prev = (int(row[0]), str(row[1])) if row else (0, GENESIS_PREV)
            self._check_state()
            row = self._conn.execute("SELECT MAX(seq) FROM confirmations").fetchone()
            self._acked = int(row[0]) if row and row[0] is not None else 0
            self._unsaved: list[tuple[int, int]] = []  # confirmations the full card refused, kept in memory
        except sqlite3.Error as exc:
            self._conn.close()
            raise StorageError(f"outbox {self._path}: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise
        self._head_path = self._path.with_name(self._path.name + ".head")
        self._read_head()

    @classmethod
    def from_config(cls, path: Path, device_id: str, clock: Clock, cfg: OutboxConfig,
                    signer: MarkerSigner | None = None) -> Outbox:
        return cls(path, device_id, clock, fsync=cfg.fsync, reserve_bytes=cfg.reserve_bytes,
                   keep_confirmed_s=cfg.keep_confirmed_s, keep_confirmed_bytes=cfg.keep_confirmed_bytes,
                   signer=signer)

    def _check_device(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='device'").fetchone()
        if row is None:
            self._conn.execute("INSERT INTO meta(key, value) VALUES ('device', ?)", (self._device,))
        elif row[0] != self._device:
            raise ConfigError(
                f"outbox {self._path} belongs to device {row[0]!r}, not {self._device!r}: "
                "use another file (markers of the old device are still in it)"
            )

    # -- the chain head while markers are only in memory -----------------------------------
    def _check_state(self) -> None:
        """``state`` behind the newest journaled marker (a restored or edited file): continue after the
        marker, never reuse its seq (a reused seq forks the chain at base and could not be journaled)."""
        row = self._conn.execute("SELECT seq, body FROM markers ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None or int(row[0]) <= self._seq:
            return
        try:
            newest = Marker.from_json(bytes(row[1]))
            seq, prev = newest.seq, newest.digest()
        except MarkerError as exc:  # keep running: the next marker's chain link is then broken at base
            seq, prev = int(row[0]), hashlib.sha256(bytes(row[1])).hexdigest()
            log.error("outbox %s: marker seq %d is unreadable (%s); the chain goes on after it, unlinked",
                      self._path, seq, exc)
        log.error("outbox %s: its state says seq %d but markers are journaled up to seq %d (the file was "
                  "restored or edited); the chain continues after seq %d", self._path, self._seq, seq, seq)
        self._seq, self._prev = seq, prev

    def _read_head(self) -> None:
        """Continue after markers a previous run could publish but never journal (full card)."""
        try:
            text = self._head_path.read_bytes()[:_HEAD_BYTES].decode("ascii").split()
        except (OSError, UnicodeDecodeError):
            text = []
        if len(text) == 2 and text[0].isdigit() and len(text[1]) == 64:
            seq = int(text[0])
            if seq > self._seq:
                log.error(
                    "outbox %s: markers seq %d..%d were published but never journaled (the card was "
                    "full when the previous run ended); the chain continues after them",
                    self._path, self._seq + 1, seq,
                )
                self._seq, self._prev = seq, text[1]
        try:  # preallocate it now, while there is room, so writing it later needs no new block
            if not self._head_path.exists() or self._head_path.stat().st_size < _HEAD_BYTES:
                self._write_head()
        except OSError:
            pass

    def _write_head(self) -> None:
        data = f"{self._seq} {self._prev}\n".encode("ascii").ljust(_HEAD_BYTES, b" ")
        fd = os.open(self._head_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- markers ---------------------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self._device

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq

    @property
    def acked_seq(self) -> int:
        """The highest seq base has confirmed (0: none yet)."""
        with self._lock:
            return self._acked

    @property
    def journal_error(self) -> str | None:
        """Why markers are only in memory right now (None: every marker is on disk)."""
        with self._lock:
            return self._journal_error

    @property
    def in_memory(self) -> int:
        """Markers not yet committed to disk (full card); they are published anyway."""
        with self._lock:
            return len(self._mem)

    def record(self, draft: MarkerDraft) -> Marker:
        """Complete ``draft`` (id, seq, prev, t) and commit it durably before returning.

        When the card is full even after dropping telemetry and taking the reserved space, the
        marker is kept in memory in order (see the module docstring): it is returned and published
        all the same, and :attr:`journal_error` is set.
        """
        with self._lock:
            marker = build_marker(
                draft,
                marker_id=uuid7(self._clock.wall_ns()),
                device=self._device,
                seq=self._seq + 1,
                prev=self._prev,
                signer=self._signer,
            )
            held = Held(marker, marker.to_json())
            if self._mem:
                self._flush_locked()
            if not self._mem:
                error = self._commit(held)
                if error is None:
                    self._seq, self._prev = marker.seq, marker.digest()
                    return marker
            else:
                error = self._journal_error or "earlier markers are still waiting"
            self._mem.append(held)
            self._seq, self._prev = marker.seq, marker.digest()
            if self._journal_error is None:
                log.error("outbox %s: cannot commit markers (%s); keeping them in memory, in order, "
                          "and publishing them; they are written as soon as there is room", self._path, error)
            self._journal_error = error
            try:
                self._write_head()
            except OSError as exc:
                log.error("outbox %s: cannot write the chain head either: %s", self._path, exc)
            return marker

    def flush(self) -> int:
        """Commit markers kept in memory, oldest first; returns how many are still only in memory."""
        with self._lock:
            if self._mem:
                self._flush_locked()
            return len(self._mem)

    def _flush_locked(self) -> None:
        while self._mem:
            error = self._commit(self._mem[0])
            if error is not None:
                self._journal_error = error
                return
            self._mem.pop(0)
        log.warning("outbox %s: every marker kept in memory is now on disk", self._path)
        self._journal_error = None

    def _commit(self, held: Held) -> str | None:
        """Commit one marker, making room if the card is full; None on success, else why not."""
        attempts: list[Callable[[], object]] = [self._drop_all_telemetry]
        if self.reserve is not None:
            attempts += [self.reserve.release] * (self.reserve.size // (1 << 20) + 2)
        while True:
            try:
                self._commit_marker(held)
                return None
            except (sqlite3.Error, OSError) as exc:
                if not _is_disk_full(exc) or not attempts:
                    return f"marker seq {held.marker.seq} not written: {exc}"
                attempts.pop(0)()

    def _commit_marker(self, held: Held) -> None:
        c, marker = self._conn, held.marker
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(
                "INSERT INTO markers(seq, id, body, sends) VALUES (?, ?, ?, ?)",
                (marker.seq, marker.id, held.body, held.sends),
            )
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

    def unsent(self, limit: int, after_seq: int = 0) -> list[Marker]:
        """Up to ``limit`` markers not yet PUBACKed (and not confirmed) with seq > ``after_seq``, oldest first."""
        with self._lock:
            after = max(after_seq, self._acked)
            rows = self._query(
                "SELECT seq, body FROM markers WHERE seq > ? AND sends = 0 ORDER BY seq LIMIT ?",
                (after, max(0, limit) + len(self._unreadable)),
            )
            out = [m for m, _ in self._readable(rows)]
            out += [h.marker for h in self._mem if h.marker.seq > after and h.sends == 0]
            return out[: max(0, limit)]

    #: the name the simulator and older callers use
    pending = unsent

    def unconfirmed_sent(self, limit: int, after_seq: int = 0) -> list[Held]:
        """Markers PUBACKed at least once but not confirmed by base, oldest first."""
        with self._lock:
            after = max(after_seq, self._acked)
            rows = self._query(
                "SELECT seq, body, sends FROM markers WHERE seq > ? AND sends > 0 ORDER BY seq LIMIT ?",
                (after, max(0, limit) + len(self._unreadable)),
            )
            out = [Held(m, bytes(r[1]), int(r[2])) for m, r in self._readable(rows)]
            out += [h for h in self._mem if h.marker.seq > after and h.sends > 0]
            return out[: max(0, limit)]

    def last_sent_seq(self) -> int:
        """The highest seq the broker has PUBACKed at least once (0: none)."""
        with self._lock:
            row = self._query("SELECT MAX(seq) FROM markers WHERE sends > 0", ())[0]
            top = int(row[0]) if row[0] is not None else 0
            return max([top] + [h.marker.seq for h in self._mem if h.sends > 0])

    def sent_rows(self, limit: int) -> list[tuple[int, int, bytes]]:
        """``(seq, sends, body)`` of markers sent but not confirmed, oldest first, without parsing them
        (the publisher scans these every second while base is away)."""
        with self._lock:
            rows = self._query(
                "SELECT seq, sends, body FROM markers WHERE seq > ? AND sends > 0 ORDER BY seq LIMIT ?",
                (self._acked, max(0, limit)),
            )
            out = [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]
            out += [(h.marker.seq, h.sends, h.body) for h in self._mem if h.marker.seq > self._acked and h.sends > 0]
            return out[: max(0, limit)]

    def held(self, from_seq: int, to_seq: int, limit: int) -> list[Marker]:
        """Markers still held (confirmed ones too) with ``from_seq <= seq <= to_seq``, oldest first."""
        with self._lock:
            rows = self._query(
                "SELECT seq, body FROM markers WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
                (from_seq, to_seq, max(0, limit) + len(self._unreadable)),
            )
            out = [m for m, _ in self._readable(rows)]
            out += [h.marker for h in self._mem if from_seq <= h.marker.seq <= to_seq]
            return out[: max(0, limit)]

    def _readable(self, rows: list[tuple[Any, ...]]) -> list[tuple[Marker, tuple[Any, ...]]]:
        """``(seq, body, ...)`` rows as markers; a row that no longer parses (the file was damaged or
        edited) is skipped, logged once, and taken out of delivery (``sends = -1``), so one bad row never
        stops the markers after it."""
        out = []
        for r in rows:
            try:
                out.append((Marker.from_json(bytes(r[1])), r))
            except MarkerError as exc:
                seq = int(r[0])
                if seq not in self._unreadable:
                    self._unreadable.add(seq)
                    log.error("outbox %s: marker seq %d is unreadable (%s); it is skipped (base will report "
                              "the gap)", self._path, seq, exc)
                    self._write_many("UPDATE markers SET sends = -1 WHERE seq=?", [(seq,)])
        return out

    def mark_sent(self, seqs: Iterable[int]) -> None:
        """The broker PUBACKed these markers (once more): they are *sent*, still held until confirmed.

        Committed without their own fsync (``synchronous=NORMAL``): a mark lost to a power cut
        only means the marker is sent again (base deduplicates by id).
        """
        keys = sorted(set(seqs))
        if not keys:
            return
        with self._lock:
            for h in self._mem:
                if h.marker.seq in keys:
                    h.sends += 1
            self._write_many("UPDATE markers SET sends = sends + 1 WHERE seq=?", [(k,) for k in keys])

    def confirm(self, seq: int) -> bool:
        """Base has durably stored every marker up to ``seq``. False (nothing changes) when ``seq`` is
        lower than what base confirmed before (base restored from a backup: it will ask for a resend),
        or higher than the last marker this outbox made (base holds another chain of this device: the
        outbox was replaced or reset; taking it would mark markers never sent as delivered).

        Held in memory at once; written without its own fsync (a confirmation lost to a power cut
        or refused by a full card only means the retained ack is applied again later).
        """
        with self._lock:
            if seq < self._acked or seq > self._seq:
                return False
            if seq > self._acked:
                self._acked = seq
                self._unsaved.append((seq, self._clock.wall_ns()))
                self._save_confirmations()
            return True

    def _save_confirmations(self) -> None:
        if not self._unsaved:
            return
        try:
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany("INSERT OR REPLACE INTO confirmations(seq, t_ns) VALUES (?, ?)", self._unsaved)
            self._conn.execute("COMMIT")
            self._unsaved.clear()
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            if len(self._unsaved) == 1:  # once per episode
                log.warning("outbox %s: cannot store base's ack yet (%s); held in memory", self._path, exc)
        finally:
            self._conn.execute(f"PRAGMA synchronous={self._sync}")

    def prune(self) -> int:
        """Delete confirmed markers past the retention window (or over its size cap, oldest first)."""
        with self._lock:
            cutoff = self._clock.wall_ns() - self._keep_ns
            try:
                row = self._conn.execute("SELECT MAX(seq) FROM confirmations WHERE t_ns <= ?", (cutoff,)).fetchone()
                upto = max([int(row[0]) if row[0] is not None else 0] + [q for q, t in self._unsaved if t <= cutoff])
                n = 0
                if upto > 0:
                    n = self._conn.execute("DELETE FROM markers WHERE seq <= ?", (upto,)).rowcount
                    self._conn.execute("DELETE FROM confirmations WHERE seq < ?", (upto,))
                if self._keep_bytes is not None:
                    total = int(self._conn.execute(
                        "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM markers WHERE seq <= ?", (self._acked,)
                    ).fetchone()[0])
                    if total > self._keep_bytes:
                        rows = self._conn.execute(
                            "SELECT seq, LENGTH(body) FROM markers WHERE seq <= ? ORDER BY seq", (self._acked,)
                        ).fetchall()
                        drop = []
                        for seq, size in rows:
                            if total <= self._keep_bytes:
                                break
                            drop.append((seq,))
                            total -= int(size)
                        self._conn.executemany("DELETE FROM markers WHERE seq=?", drop)
                        n += len(drop)
            except sqlite3.Error as exc:
                raise StorageError(f"outbox {self._path}: cannot prune: {exc}") from exc
            self._mem = [h for h in self._mem if h.marker.seq > upto]
            self._save_confirmations()
            return max(0, n)

    def depth(self) -> int:
        """Number of markers waiting for the broker's PUBACK."""
        with self._lock:
            n = int(self._query("SELECT COUNT(*) FROM markers WHERE sends = 0 AND seq > ?", (self._acked,))[0][0])
            return n + sum(1 for h in self._mem if h.sends == 0 and h.marker.seq > self._acked)

    def unconfirmed(self) -> int:
        """Number of markers base has not confirmed yet (what bounds the outbox's disk use)."""
        with self._lock:
            n = int(self._query("SELECT COUNT(*) FROM markers WHERE seq > ?", (self._acked,))[0][0])
            return n + sum(1 for h in self._mem if h.marker.seq > self._acked)

    def _write_many(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        try:
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(sql, args)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            log.error("outbox %s: cannot update delivery state: %s", self._path, exc)
        finally:
            self._conn.execute(f"PRAGMA synchronous={self._sync}")

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
            if self._mem and self.flush():
                log.error("outbox %s: closing with %d marker(s) never written to disk (seq %d..%d; "
                          "the card is full); they were handed to the publisher", self._path, len(self._mem),
                          self._mem[0].marker.seq, self._mem[-1].marker.seq)
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
