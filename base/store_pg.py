"""PostgreSQL implementation of :class:`bodycam.base.store.MarkerStore` (psycopg 3), for a fleet.

Same tables, same semantics and same queries as :class:`bodycam.base.store.SqliteStore`:
idempotent by ``id``, per-device seq gaps, ``prev`` hash-chain verification (``unknown``
until a late predecessor arrives, then settled), device status and last seen. Use it with
``bodycam-base listen --db postgresql://user@host/dbname`` (``pip install 'bodycam[postgres]'``).

Concurrency (several consumers of one shared-subscription group write at once, possibly
markers of the same device): each ``add_markers`` batch is one transaction (READ COMMITTED)
that first makes sure every device of the batch has a ``devices`` row (``INSERT ... ON
CONFLICT DO NOTHING``) and then locks those rows with ``SELECT ... FOR UPDATE``, in sorted
device order (so two batches that touch the same devices cannot deadlock). While the lock
is held no other writer can store a marker of that device, so the three read-then-write
steps see each other's committed results:

* the chain check of seq ``n`` reads the digest of ``n-1``, and storing ``n-1`` settles a
  waiting ``n``: without the lock, two transactions storing ``n-1`` and ``n`` at the same
  time would each miss the other's uncommitted row and ``n`` would stay ``unknown`` forever;
* the gap report compares ``seq`` with the device's ``max_seq`` (two unlocked writers would
  both report the same missing seqs);
* the duplicate check is ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING``, atomic anyway.

Readers (``markers``, ``devices``) take no locks. A connection that breaks (server restart)
makes the current call raise :class:`StorageError` (the consumer retries without
acknowledging); the next call reconnects.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bodycam.base.store import (
    AddResult,
    Chain,
    DeviceRow,
    StoredMarker,
    device_row,
    devices_query,
    marker_query,
)
from bodycam.device.clock import parse_rfc3339
from bodycam.device.errors import DependencyError, StorageError
from bodycam.device.uplink.markers import GENESIS_PREV, Marker

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = "pip install 'bodycam[postgres]'"
URL_PREFIXES = ("postgresql://", "postgres://")

# One statement per entry (psycopg runs one statement per execute with parameters).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS markers ("
    " id TEXT PRIMARY KEY, device TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,"
    " t TEXT NOT NULL, t_ns BIGINT NOT NULL, received_ns BIGINT NOT NULL,"
    " digest TEXT NOT NULL, prev TEXT NOT NULL, chain TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS markers_device_seq ON markers(device, seq)",
    "CREATE INDEX IF NOT EXISTS markers_t ON markers(t_ns)",
    "CREATE TABLE IF NOT EXISTS devices ("
    " device TEXT PRIMARY KEY, state TEXT, status_t TEXT, status_received_ns BIGINT,"
    " last_seen_ns BIGINT NOT NULL, max_seq BIGINT NOT NULL DEFAULT 0)",
)
# Key of the transaction-level advisory lock that serialises schema creation (several
# consumers starting at once would otherwise race in CREATE TABLE IF NOT EXISTS).
_SCHEMA_LOCK = 0x626F647963616D  # "bodycam"


def is_postgres_url(db: str) -> bool:
    return db.startswith(URL_PREFIXES)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise DependencyError(f"PostgreSQL store needs psycopg 3: {INSTALL_HINT}") from exc
    return psycopg


def _redact(url: str) -> str:
    """The URL without a password (for error messages)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


class PostgresStore:
    """PostgreSQL store; ``url`` is a libpq URL (``postgresql://user[:pw]@host[:port]/db``)."""

    def __init__(self, url: str, *, connect_timeout_s: int = 10) -> None:
        self._pg = _psycopg()
        self._url = url
        self._name = _redact(url)
        self._timeout = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    for stmt in _SCHEMA:
                        conn.execute(stmt)
            except self._pg.Error as exc:
                self._drop()
                raise StorageError(f"base store {self._name}: {exc}") from exc

    # -- connection -----------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, (re)connecting if there is none or it broke. Caller holds the lock."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._drop()
        try:
            conn: psycopg.Connection[Any] = self._pg.connect(
                self._url, autocommit=True, connect_timeout=self._timeout, application_name="bodycam-base"
            )
        except self._pg.Error as exc:
            raise StorageError(f"base store {self._name}: cannot connect: {exc}") from exc
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _fail(self, exc: Exception) -> StorageError:
        conn = self._conn
        if conn is not None and conn.broken:
            self._drop()
        return StorageError(f"base store {self._name}: {exc}")

    # -- writes ---------------------------------------------------------------------------------
    def add_markers(self, items: Sequence[tuple[Marker, int]]) -> list[AddResult]:
        if not items:
            return []
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    for device in sorted({m.device for m, _ in items}):
                        cur.execute(
                            "INSERT INTO devices(device, last_seen_ns, max_seq) VALUES (%s, 0, 0) "
                            "ON CONFLICT (device) DO NOTHING",
                            (device,),
                        )
                        cur.execute("SELECT 1 FROM devices WHERE device=%s FOR UPDATE", (device,))
                    return [self._add(cur, m, rx) for m, rx in items]
            except self._pg.Error as exc:
                raise self._fail(exc) from exc

    def _add(self, cur: psycopg.Cursor[Any], m: Marker, received_ns: int) -> AddResult:
        digest = m.digest()
        if m.seq == 1:
            chain: Chain = "ok" if m.prev == GENESIS_PREV else "broken"
        else:
            row = cur.execute(
                "SELECT digest FROM markers WHERE device=%s AND seq=%s", (m.device, m.seq - 1)
            ).fetchone()
            chain = "unknown" if row is None else ("ok" if row[0] == m.prev else "broken")
        inserted = cur.execute(
            "INSERT INTO markers(id, device, seq, kind, t, t_ns, received_ns, digest, prev, chain, body) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO NOTHING RETURNING 1",
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
        ).fetchone()
        if inserted is None:
            return AddResult(False, "unknown", None)
        # settle the successor that waited for this marker
        cur.execute(
            "UPDATE markers SET chain = CASE WHEN prev=%s THEN 'ok' ELSE 'broken' END "
            "WHERE device=%s AND seq=%s AND chain='unknown'",
            (digest, m.device, m.seq + 1),
        )
        row = cur.execute("SELECT max_seq FROM devices WHERE device=%s", (m.device,)).fetchone()
        max_seq = 0 if row is None else int(row[0])
        gap = (max_seq + 1, m.seq - 1) if m.seq > max_seq + 1 else None
        cur.execute(
            "UPDATE devices SET last_seen_ns=GREATEST(last_seen_ns, %s), max_seq=GREATEST(max_seq, %s) "
            "WHERE device=%s",
            (received_ns, m.seq, m.device),
        )
        return AddResult(True, chain, gap)

    def set_status(self, device: str, state: str, t: str | None, received_ns: int) -> None:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute(
                    "INSERT INTO devices(device, state, status_t, status_received_ns, last_seen_ns) "
                    "VALUES (%s,%s,%s,%s,%s) ON CONFLICT (device) DO UPDATE SET state=excluded.state, "
                    "status_t=excluded.status_t, status_received_ns=excluded.status_received_ns, "
                    "last_seen_ns=GREATEST(devices.last_seen_ns, excluded.last_seen_ns)",
                    (device, state, t, received_ns, received_ns),
                )
            except self._pg.Error as exc:
                raise self._fail(exc) from exc

    # -- reads ----------------------------------------------------------------------------------
    def markers(
        self,
        *,
        device: str | None = None,
        since_ns: int | None = None,
        kind: str | None = None,
        limit: int = 1000,
    ) -> list[StoredMarker]:
        # COLLATE "C": byte order, as SQLite sorts, whatever the database's locale
        sql, args = marker_query("%s", 'device COLLATE "C"', device=device, since_ns=since_ns, kind=kind, limit=limit)
        return [StoredMarker(Marker.from_json(r[0]), int(r[1]), r[2]) for r in self._rows(sql, args)]

    def devices(self) -> list[DeviceRow]:
        return [device_row(r) for r in self._rows(devices_query('d.device COLLATE "C"'), ())]

    def count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM markers", ())[0][0])

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            conn = self._connection()
            try:
                return list(conn.execute(sql, args).fetchall())
            except self._pg.Error as exc:
                raise self._fail(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
