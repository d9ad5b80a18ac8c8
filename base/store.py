"""Storage at base, behind the small :class:`MarkerStore` protocol: SQLite here, PostgreSQL in
``store_pg``. Both apply the same rules (``rules``: idempotent by ``id``, conflicts quarantined,
hash chain, gaps, the contiguous seq base acknowledges), with the same tables and queries.

Every write is one transaction that rolls back on *any* error (not only database errors), so a
failed write never leaves a transaction open. Every method raises only
:class:`~bodycam.device.errors.StorageError` (the database is unavailable or refused the write).
A failure that comes from the state of the database, not from what is written (not reachable,
read-only, full disk, locked, I/O error), is the subclass :class:`StoreUnavailable`: an outage,
whatever the message. For any other failure the consumer asks :meth:`MarkerStore.ping` (a real
write) whether the database takes writes at all before it blames the message.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bodycam.base import rules
from bodycam.base import telemetry as telemetry_rules
from bodycam.base.rules import (
    AddResult,
    Chain,
    DeviceRow,
    Progress,
    Quarantined,
    QuarantineRow,
    device_row,
    devices_query,
    marker_query,
)
from bodycam.base.telemetry import StoredTelemetry, TelemetryIn
from bodycam.device.errors import StorageError
from bodycam.device.uplink.markers import Marker

_CREATED = re.compile(r"CREATE (?:UNIQUE )?(?:TABLE|INDEX) IF NOT EXISTS (\w+)")

__all__ = [
    "AddResult",
    "Chain",
    "DeviceRow",
    "MarkerStore",
    "Progress",
    "QuarantineRow",
    "Quarantined",
    "SqliteStore",
    "StoreUnavailable",
    "StoredMarker",
]


class StoreUnavailable(StorageError):
    """The database cannot take this write for a reason that is not the data written: it is not
    reachable, read-only (a PostgreSQL standby after a failover), out of disk space, locked or
    failing (I/O error, corruption). An outage: retried, never a verdict on a message."""


# SQLite primary result codes of a database that cannot be written now, whatever is written:
# BUSY, LOCKED, NOMEM, READONLY, INTERRUPT, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOLFS, AUTH, NOTADB
_SQLITE_OUTAGE = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 22, 23, 26})


def sqlite_error(where: str, exc: BaseException) -> StorageError:
    """The StorageError for an error of SQLite (or of the code in its transaction): StoreUnavailable
    when SQLite's result code says the database cannot be written now (SQLITE_FULL, SQLITE_READONLY, ...)
    or the file system failed (OSError)."""
    code = getattr(exc, "sqlite_errorcode", None)
    outage = isinstance(exc, OSError) or (isinstance(code, int) and code & 0xFF in _SQLITE_OUTAGE)
    name = getattr(exc, "sqlite_errorname", None)
    what = f"{type(exc).__name__}{f' ({name})' if name else ''}: {exc}"
    return (StoreUnavailable if outage else StorageError)(f"{where}: {what}")


@dataclass(frozen=True)
class StoredMarker:
    marker: Marker
    received_ns: int
    chain: Chain


class MarkerStore(Protocol):
    def add_markers(self, items: Sequence[tuple[Marker, int]]) -> list[AddResult]:
        """Store (marker, received_ns) pairs in one transaction, in order (conflicts go to quarantine)."""
        ...

    def set_status(self, device: str, state: str, t: str | None, received_ns: int, *, retained: bool = False) -> None:
        """A status message; a ``retained`` one (replayed at subscription) does not count as seen."""
        ...

    def quarantine(self, items: Sequence[Quarantined]) -> None:
        """Keep what could not be stored, for inspection (one transaction)."""
        ...

    def ping(self) -> None:
        """StorageError if the database cannot be written right now (an outage, not a bad message):
        a real write (``rules.ping``), so a database that answers reads but refuses writes fails it."""
        ...

    def add_telemetry(self, items: Sequence[TelemetryIn]) -> None:
        """Store validated telemetry messages in one transaction (``base/telemetry.py``)."""
        ...

    def progress(self, devices: Sequence[str] | None = None) -> list[Progress]:
        """Acknowledgement state of ``devices`` (None: every device with a stored marker)."""
        ...

    def markers(
        self,
        *,
        device: str | None = None,
        since_ns: int | None = None,
        kind: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
        until_ns: int | None = None,
        offset: int = 0,
        area: rules.Area | None = None,
    ) -> list[StoredMarker]: ...

    def quarantined(
        self, *, kind: str | None = None, device: str | None = None, limit: int = 100
    ) -> list[QuarantineRow]: ...

    def kinds(self) -> list[str]:
        """The kinds of the stored markers."""
        ...

    def devices(self) -> list[DeviceRow]: ...

    def close(self) -> None: ...


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def one(self, sql: str, args: Sequence[Any] = ()) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self._c.execute(sql, tuple(args)).fetchone()
        return row

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(self._c.execute(sql, tuple(args)).fetchall())

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return int(self._c.execute(sql, tuple(args)).rowcount)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return int(self._c.executemany(sql, [tuple(r) for r in rows]).rowcount)


def _stored(rows: Sequence[Sequence[Any]]) -> list[StoredMarker]:
    return [StoredMarker(Marker.from_json(r[0]), int(r[1]), r[2]) for r in rows]


class _Store:
    """What both stores share (everything but opening, transactions, locking and ``add_markers``):
    a subclass provides ``_tx()`` (one transaction, :class:`rules.Tx`) and ``_rows(sql, args)``
    (a read; SQL with ``?``), and ``_collate`` (byte order of device names in both databases)."""

    _collate = ""

    def _tx(self) -> AbstractContextManager[rules.Tx]:
        raise NotImplementedError

    def _rows(self, sql: str, args: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def set_status(self, device: str, state: str, t: str | None, received_ns: int, *, retained: bool = False) -> None:
        with self._tx() as tx:
            rules.set_status(tx, device, state, t, received_ns, retained=retained)

    def add_telemetry(self, items: Sequence[TelemetryIn]) -> None:
        if items:
            with self._tx() as tx:
                telemetry_rules.add_telemetry(tx, items)

    def telemetry(self) -> list[StoredTelemetry]:
        """The latest telemetry of every device that sent some."""
        return telemetry_rules.latest_rows(self._rows(telemetry_rules.LATEST_QUERY, ()))

    def telemetry_history(self, device: str, limit: int = 100) -> list[StoredTelemetry]:
        """A device's stored telemetry, newest first."""
        return telemetry_rules.latest_rows(self._rows(telemetry_rules.HISTORY_QUERY, (device, limit)))

    #: the newest quarantine rows kept (rules.QUARANTINE_KEEP; older ones are dropped as new ones come)
    quarantine_keep = rules.QUARANTINE_KEEP

    def quarantine(self, items: Sequence[Quarantined]) -> None:
        if items:
            with self._tx() as tx:
                rules.quarantine(tx, items, self.quarantine_keep)

    def progress(self, devices: Sequence[str] | None = None) -> list[Progress]:
        if devices is not None and not devices:
            return []
        return rules.progress_rows(self._rows(*rules.progress_query(devices)))

    def markers(
        self,
        *,
        device: str | None = None,
        since_ns: int | None = None,
        kind: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
        until_ns: int | None = None,
        offset: int = 0,
        area: rules.Area | None = None,
    ) -> list[StoredMarker]:
        sql, args = marker_query(
            f"device{self._collate}", device=device, since_ns=since_ns, kind=kind, limit=limit,
            newest_first=newest_first, until_ns=until_ns, offset=offset, area=area,
        )
        return _stored(self._rows(sql, args))

    def marker(self, marker_id: str) -> StoredMarker | None:
        """One stored marker by id."""
        rows = _stored(self._rows("SELECT body, received_ns, chain FROM markers WHERE id=?", (marker_id,)))
        return rows[0] if rows else None

    def quarantined(
        self, *, kind: str | None = None, device: str | None = None, limit: int = 100
    ) -> list[QuarantineRow]:
        return rules.quarantine_rows(self._rows(*rules.quarantine_query(kind=kind, device=device, limit=limit)))

    def transaction(self) -> AbstractContextManager[rules.Tx]:
        """One write transaction, for tables other modules keep in this database (``base/keys.py``)."""
        return self._tx()

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """One read (SQL with ``?``)."""
        return self._rows(sql, args)

    def kinds(self) -> list[str]:
        return [str(r[0]) for r in self._rows("SELECT DISTINCT kind FROM markers", ())]

    def devices(self) -> list[DeviceRow]:
        return [device_row(r) for r in self._rows(devices_query(f"d.device{self._collate}"), ())]

    def count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM markers", ())[0][0])


class SqliteStore(_Store):
    """SQLite (WAL, synchronous=FULL: stored means on disk before the PUBACK goes out).

    ``create=False`` refuses a database file that does not exist yet (the query commands must not
    make an empty database out of a typo). ``busy_timeout_s`` bounds how long a write waits for
    another writer; past it the write fails with StorageError and the consumer retries.
    """

    def __init__(self, path: Path, *, create: bool = True, busy_timeout_s: float = 2.0) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        if not create and not self._path.is_file():
            what = "directory" if not self._path.parent.is_dir() else "database"
            raise StorageError(f"base store {self._path}: no such {what} (run 'bodycam-base listen' to create it)")
        try:
            if create:
                self._path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self._path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
            )
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"base store {self._path}: cannot open: {exc}") from exc
        try:
            self._conn.execute("PRAGMA synchronous=FULL")
            serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
            statements = (*rules.schema(blob="BLOB", serial=serial), *telemetry_rules.schema(serial=serial))
            if not self._schema_current(statements):
                # only a database that needs its schema (new, or from an older version) takes the
                # write lock here: a query command next to a running `listen` must not wait for it
                self._conn.execute("PRAGMA journal_mode=WAL")
                with self._tx() as tx:
                    for stmt in statements:
                        tx.run(stmt)
                    columns = {str(r[1]) for r in tx.all("PRAGMA table_info(devices)")}
                    unique = tx.one(
                        "SELECT 1 FROM sqlite_master WHERE type='index' AND name='markers_device_seq_unique'"
                    )
                    marker_columns = {str(r[1]) for r in tx.all("PRAGMA table_info(markers)")}
                    rules.migrate(tx, columns, unique_index=unique is not None, marker_columns=marker_columns)
        except BaseException:
            self._conn.close()
            raise

    def _schema_current(self, statements: Sequence[str]) -> bool:
        """Whether every table and index of ``statements`` exists, the database is in WAL mode and
        nothing is left to migrate (reads only: no write lock)."""
        try:
            names = {str(r[0]) for r in self._rows("SELECT name FROM sqlite_master", ())}
            columns = {str(r[1]) for r in self._rows("PRAGMA table_info(devices)", ())}
            marker_columns = {str(r[1]) for r in self._rows("PRAGMA table_info(markers)", ())}
            mode = self._rows("PRAGMA journal_mode", ())
        except StorageError:
            return False  # e.g. locked while another connection changes the schema: take the slow path
        wanted = {m.group(1) for stmt in statements if (m := _CREATED.match(stmt))}
        return (
            wanted <= names
            and "markers_device_seq_unique" in names
            and columns >= rules.MIGRATED_COLUMNS
            and marker_columns >= rules.MIGRATED_MARKER_COLUMNS
            and bool(mode) and str(mode[0][0]).lower() == "wal"
        )

    @contextmanager
    def _tx(self) -> Iterator[_SqliteTx]:
        """One write transaction: committed, or rolled back on any exception (then StorageError)."""
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                yield _SqliteTx(c)
                c.execute("COMMIT")
            except BaseException as exc:
                if c.in_transaction:
                    with suppress(sqlite3.Error):
                        c.execute("ROLLBACK")
                if isinstance(exc, Exception) and not isinstance(exc, StorageError):
                    raise sqlite_error(f"base store {self._path}", exc) from exc
                raise

    def add_markers(self, items: Sequence[tuple[Marker, int]]) -> list[AddResult]:
        if not items:
            return []
        with self._tx() as tx:
            return rules.add_markers(tx, items)

    def ping(self) -> None:
        """Can we write now? (A locked, read-only or full database answers reads but is still an outage.)"""
        with self._tx() as tx:
            rules.ping(tx)

    def _rows(self, sql: str, args: Sequence[Any]) -> list[Any]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, tuple(args)).fetchall())
            except (sqlite3.Error, ValueError, OverflowError) as exc:
                raise sqlite_error(f"base store {self._path}", exc) from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
