"""Storage at base, behind the small :class:`MarkerStore` protocol (SQLite now; PostgreSQL drop-in).

* markers are stored once per ``id`` (idempotent: re-deliveries are counted as duplicates);
* each marker's ``prev`` is checked against the stored digest of the device's ``seq - 1``
  (``chain`` = ``ok`` / ``broken`` / ``unknown`` while the predecessor is missing; it is
  settled when the predecessor arrives later);
* per device: last status (online/offline), last seen, highest seq, gaps (missing seqs).

A PostgreSQL store implements the same five methods with the same tables (``TEXT``,
``BIGINT``; ``INSERT ... ON CONFLICT (id) DO NOTHING`` works unchanged in both); see
docs/markers-and-mqtt.md.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from bodycam.device.clock import parse_rfc3339
from bodycam.device.errors import StorageError
from bodycam.device.uplink.markers import GENESIS_PREV, Marker

Chain = Literal["ok", "broken", "unknown"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS markers (
    id TEXT PRIMARY KEY, device TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    t TEXT NOT NULL, t_ns INTEGER NOT NULL, received_ns INTEGER NOT NULL,
    digest TEXT NOT NULL, prev TEXT NOT NULL, chain TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS markers_device_seq ON markers(device, seq);
CREATE INDEX IF NOT EXISTS markers_t ON markers(t_ns);
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, state TEXT, status_t TEXT, status_received_ns INTEGER,
    last_seen_ns INTEGER NOT NULL, max_seq INTEGER NOT NULL DEFAULT 0);
"""


@dataclass(frozen=True)
class AddResult:
    stored: bool  # False: a duplicate id
    chain: Chain
    gap: tuple[int, int] | None  # seqs first..last newly known to be missing before this one


@dataclass(frozen=True)
class StoredMarker:
    marker: Marker
    received_ns: int
    chain: Chain


@dataclass(frozen=True)
class DeviceRow:
    device: str
    state: str | None
    status_t: str | None
    last_seen_ns: int
    markers: int
    max_seq: int
    missing: int
    chain_broken: int


def marker_query(ph: str, device_order: str, *, device: str | None, since_ns: int | None, kind: str | None,
                 limit: int) -> tuple[str, tuple[Any, ...]]:
    """The ``markers`` query shared by the SQLite and PostgreSQL stores (``ph``: placeholder)."""
    where: list[str] = []
    args: list[Any] = []
    for cond, value in (("device=", device), ("t_ns>=", since_ns), ("kind=", kind)):
        if value is not None:
            where.append(cond + ph)
            args.append(value)
    sql = "SELECT body, received_ns, chain FROM markers"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return f"{sql} ORDER BY {device_order}, seq LIMIT {ph}", (*args, limit)


def devices_query(device_order: str) -> str:
    """The per-device summary query shared by both stores."""
    return (
        "SELECT d.device, d.state, d.status_t, d.last_seen_ns, "
        "(SELECT COUNT(*) FROM markers m WHERE m.device=d.device), d.max_seq, "
        "(SELECT COUNT(DISTINCT seq) FROM markers m WHERE m.device=d.device), "
        "(SELECT COUNT(*) FROM markers m WHERE m.device=d.device AND chain='broken') "
        f"FROM devices d ORDER BY {device_order}"
    )


def device_row(r: Sequence[Any]) -> DeviceRow:
    return DeviceRow(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), int(r[5]) - int(r[6]), int(r[7]))


class MarkerStore(Protocol):
    def add_markers(self, items: Sequence[tuple[Marker, int]]) -> list[AddResult]:
        """Store (marker, received_ns) pairs in one transaction, in order."""
        ...

    def set_status(self, device: str, state: str, t: str | None, received_ns: int) -> None: ...

    def markers(
        self,
        *,
        device: str | None = None,
        since_ns: int | None = None,
        kind: str | None = None,
        limit: int = 1000,
    ) -> list[StoredMarker]: ...

    def devices(self) -> list[DeviceRow]: ...

    def close(self) -> None: ...


class SqliteStore:
    """SQLite (WAL, synchronous=FULL: stored means on disk before the PUBACK goes out)."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self._path), isolation_level=None, check_same_thread=False, timeout=30
            )
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"base store {self._path}: cannot open: {exc}") from exc
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self._conn.close()
            raise StorageError(f"base store {self._path}: {exc}") from exc

    def add_markers(self, items: Sequence[tuple[Marker, int]]) -> list[AddResult]:
        if not items:
            return []
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                results = [self._add(c, m, rx) for m, rx in items]
                c.execute("COMMIT")
            except sqlite3.Error as exc:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise StorageError(f"base store {self._path}: {exc}") from exc
            return results

    def _add(self, c: sqlite3.Connection, m: Marker, received_ns: int) -> AddResult:
        if c.execute("SELECT 1 FROM markers WHERE id=?", (m.id,)).fetchone():
            return AddResult(False, "unknown", None)
        digest = m.digest()
        if m.seq == 1:
            chain: Chain = "ok" if m.prev == GENESIS_PREV else "broken"
        else:
            row = c.execute(
                "SELECT digest FROM markers WHERE device=? AND seq=?", (m.device, m.seq - 1)
            ).fetchone()
            chain = "unknown" if row is None else ("ok" if row[0] == m.prev else "broken")
        c.execute(
            "INSERT INTO markers(id, device, seq, kind, t, t_ns, received_ns, digest, prev, chain, body) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                m.id,
                m.device,
                m.seq,
                m.kind,
                m.t,
                parse_rfc3339(m.t),
                received_ns,
                digest,
                m.prev,
                chain,
                m.to_json().decode("utf-8"),
            ),
        )
        # settle the successor that waited for this marker
        c.execute(
            "UPDATE markers SET chain = CASE WHEN prev=? THEN 'ok' ELSE 'broken' END "
            "WHERE device=? AND seq=? AND chain='unknown'",
            (digest, m.device, m.seq + 1),
        )
        row = c.execute("SELECT max_seq FROM devices WHERE device=?", (m.device,)).fetchone()
        max_seq = 0 if row is None else int(row[0])
        gap = (max_seq + 1, m.seq - 1) if m.seq > max_seq + 1 else None
        c.execute(
            "INSERT INTO devices(device, last_seen_ns, max_seq) VALUES (?,?,?) ON CONFLICT(device) DO UPDATE SET "
            "last_seen_ns=MAX(last_seen_ns, excluded.last_seen_ns), max_seq=MAX(max_seq, excluded.max_seq)",
            (m.device, received_ns, m.seq),
        )
        return AddResult(True, chain, gap)

    def set_status(self, device: str, state: str, t: str | None, received_ns: int) -> None:
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO devices(device, state, status_t, status_received_ns, last_seen_ns) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(device) DO UPDATE SET state=excluded.state, status_t=excluded.status_t, "
                    "status_received_ns=excluded.status_received_ns, "
                    "last_seen_ns=MAX(last_seen_ns, excluded.last_seen_ns)",
                    (device, state, t, received_ns, received_ns),
                )
            except sqlite3.Error as exc:
                raise StorageError(f"base store {self._path}: {exc}") from exc

    def markers(
        self,
        *,
        device: str | None = None,
        since_ns: int | None = None,
        kind: str | None = None,
        limit: int = 1000,
    ) -> list[StoredMarker]:
        sql, args = marker_query("?", "device", device=device, since_ns=since_ns, kind=kind, limit=limit)
        return [StoredMarker(Marker.from_json(r[0]), int(r[1]), r[2]) for r in self._rows(sql, args)]

    def devices(self) -> list[DeviceRow]:
        return [device_row(r) for r in self._rows(devices_query("d.device"), ())]

    def count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM markers", ())[0][0])

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise StorageError(f"base store {self._path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
