"""PostgreSQL implementation of :class:`bodycam.base.store.MarkerStore` (psycopg 3), for a fleet.

Same tables, same rules (``bodycam.base.rules``, shared with :class:`bodycam.base.store.SqliteStore`)
and same queries: idempotent by ``id``, conflicts quarantined, per-device seq gaps, ``prev``
hash-chain verification (``unknown`` until a late predecessor arrives, then settled), the
contiguous seq base acknowledges, device status and last seen. Use it with
``bodycam-base listen --db postgresql://user@host/dbname`` (``pip install 'bodycam[postgres]'``).

Concurrency (several consumers of one shared-subscription group write at once, possibly
markers of the same device): first every device of the batch gets a ``devices`` row (``INSERT
... ON CONFLICT DO NOTHING``, committed on its own), then the batch is one transaction (READ
COMMITTED) that locks those rows with one ``SELECT ... ORDER BY device FOR UPDATE`` (sorted, so
two batches that touch the same devices cannot deadlock) and applies ``rules.add_markers`` (a few
statements per batch, rows written with pipelined ``executemany``). While the lock
is held no other writer can store a marker of that device, so the three read-then-write
steps see each other's committed results:

* the chain check of seq ``n`` reads the digest of ``n-1``, and storing ``n-1`` settles a
  waiting ``n``: without the lock, two transactions storing ``n-1`` and ``n`` at the same
  time would each miss the other's uncommitted row and ``n`` would stay ``unknown`` forever;
* the gap report compares ``seq`` with the device's ``max_seq`` (two unlocked writers would
  both report the same missing seqs);
* the duplicate and conflict checks read ``id`` and ``(device, seq)``; both are unique indexes
  too, and the insert is ``ON CONFLICT DO NOTHING`` (an id taken by another device's concurrent
  writer is then reported as a conflict, never an error that would stop the batch).

Readers (``markers``, ``devices``) take no locks. Any error rolls the transaction back and is a
:class:`StorageError`; a connection that breaks (server restart) makes the current call fail (the
consumer retries without acknowledging) and the next call reconnects. An error that comes from the
state of the server, not from the data (no connection; SQLSTATE classes 08 connection, 25 invalid
transaction state such as ``read_only_sql_transaction`` on a standby or with
``default_transaction_read_only``, 40 serialization/deadlock, 53 insufficient resources such as a
full disk, 55 lock not available, 57 operator intervention, 58 system error, 72 snapshot too
old, F0 configuration file error, XX internal error; 42501 insufficient privilege) is a :class:`StoreUnavailable`: an outage for the consumer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bodycam.base import rules
from bodycam.base import telemetry as telemetry_rules
from bodycam.base.rules import (
    AddResult,
)
from bodycam.base.store import StoreUnavailable, _Store
from bodycam.device.errors import DependencyError, StorageError
from bodycam.device.uplink.markers import Marker

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = "pip install 'bodycam[postgres]'"
URL_PREFIXES = ("postgresql://", "postgres://")

# Key of the transaction-level advisory lock that serialises schema creation (several
# consumers starting at once would otherwise race in CREATE TABLE IF NOT EXISTS).
_SCHEMA_LOCK = 0x626F647963616D  # "bodycam"
# SQLSTATE classes (and codes) of a server that cannot take writes now, whatever is written (see above)
_OUTAGE_CLASSES = frozenset({"08", "25", "40", "53", "55", "57", "58", "72", "F0", "XX"})
_OUTAGE_CODES = frozenset({"42501"})


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


class _PgTx:
    """A psycopg cursor with the rules' ``?`` placeholders (the rules' SQL has no other ``?`` or ``%``)."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def one(self, sql: str, args: Sequence[Any] = ()) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self._cur.execute(_ph(sql), tuple(args)).fetchone()
        return row

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(self._cur.execute(_ph(sql), tuple(args)).fetchall())

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return int(self._cur.execute(_ph(sql), tuple(args)).rowcount)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        self._cur.executemany(_ph(sql), [tuple(r) for r in rows])  # pipelined: one round trip
        return int(self._cur.rowcount)


def _ph(sql: str) -> str:
    return sql.replace("?", "%s")


class PostgresStore(_Store):
    """PostgreSQL store; ``url`` is a libpq URL (``postgresql://user[:pw]@host[:port]/db``).

    ``connect_timeout_s`` bounds a (re)connection attempt, so a consumer stopping during an
    outage is never stuck in one for long.
    """

    _collate = ' COLLATE "C"'  # byte order, as SQLite sorts, whatever the database's locale

    def __init__(self, url: str, *, connect_timeout_s: int = 2) -> None:
        self._pg = _psycopg()
        self._url = url
        self._name = _redact(url)
        self._timeout = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._tx() as tx:
            tx.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            serial = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
            for stmt in (*rules.schema(blob="BYTEA", serial=serial), *telemetry_rules.schema(serial=serial)):
                tx.run(stmt)
            def columns_of(table: str) -> set[str]:
                return {
                    str(r[0])
                    for r in tx.all(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_schema=current_schema() AND table_name=?", (table,)
                    )
                }

            unique = tx.one("SELECT to_regclass('markers_device_seq_unique')")
            rules.migrate(tx, columns_of("devices"), unique_index=unique is not None and unique[0] is not None,
                          marker_columns=columns_of("markers"))

    @property
    def url(self) -> str:
        """The libpq URL it connects to (with any password: not for messages; ``_redact`` is)."""
        return self._url

    # -- connection -----------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, (re)connecting if there is none or it broke. Caller holds the lock."""
        conn0 = self._conn
        if (
            conn0 is not None
            and not conn0.closed
            and not conn0.broken
            # between two calls (lock held, autocommit) a healthy connection is idle; one left in a
            # failed or unknown transaction by an error mid-commit would refuse every later statement
            and conn0.info.transaction_status == self._pg.pq.TransactionStatus.IDLE
        ):
            return conn0
        self._drop()
        try:
            conn: psycopg.Connection[Any] = self._pg.connect(
                self._url, autocommit=True, connect_timeout=self._timeout, application_name="bodycam-base"
            )
        except self._pg.Error as exc:
            raise StoreUnavailable(f"base store {self._name}: cannot connect: {exc}") from exc
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a dead connection must not hide the first error
                conn.close()

    def _fail(self, exc: Exception) -> StorageError:
        """The error for ``exc``; the connection is dropped unless it is known to be healthy.

        psycopg marks a connection ``broken`` only when libpq saw the socket fail; an operational
        error the server sends before it goes (``admin_shutdown`` at a restart, ``idle session
        timeout``) or an interface error leaves it looking open, and reusing it would fail forever.
        An outage (``StoreUnavailable``: a read-only session, a full disk, ...) drops it too, so the
        next call reconnects (and a session opened read-only becomes writable once the server is).
        Only an error in the data or the statement (integrity, syntax, ...) keeps the connection.
        """
        conn = self._conn
        lost = conn is None or conn.broken or conn.closed
        state = str(getattr(exc, "sqlstate", None) or "")
        if state:  # the server's verdict: a program limit (54) or bad data (22, 23) is the message's
            outage = lost or state[:2] in _OUTAGE_CLASSES or state in _OUTAGE_CODES
        else:  # raised by the client: no connection, or it failed
            outage = lost or isinstance(exc, self._pg.OperationalError | self._pg.InterfaceError)
        if conn is not None and (
            outage  # the next call reconnects: e.g. a read-only session after a failover finds the new primary
            or isinstance(exc, self._pg.OperationalError | self._pg.InterfaceError)
            or conn.info.transaction_status == self._pg.pq.TransactionStatus.UNKNOWN
        ):
            self._drop()
        code = f" [{state}]" if state else ""
        return (StoreUnavailable if outage else StorageError)(f"base store {self._name}: {exc}{code}")

    # -- writes ---------------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[_PgTx]:
        """One transaction: committed, or rolled back on any exception (then StorageError)."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield _PgTx(cur)
            except StorageError:
                raise
            except Exception as exc:
                raise self._fail(exc) from exc

    def add_markers(self, items: Sequence[tuple[Marker, int]]) -> list[AddResult]:
        if not items:
            return []
        devices = sorted({m.device for m, _ in items})
        with self._tx() as tx:
            # every device of the batch has a row, committed apart: creating rows inside the batch's
            # transaction would lock new rows before the existing ones and two batches could deadlock
            tx.many("INSERT INTO devices(device, last_seen_ns, max_seq, contig_seq) VALUES (?, 0, 0, 0) "
                    "ON CONFLICT (device) DO NOTHING", [(d,) for d in devices])
        with self._tx() as tx:
            # lock the batch's devices rows in sorted order (see the module docstring)
            for part in rules.in_chunks(devices):
                tx.all(f"SELECT 1 FROM devices WHERE device IN ({','.join('?' * len(part))}) "
                       'ORDER BY device COLLATE "C" FOR UPDATE', part)
            return rules.add_markers(tx, items)

    def ping(self) -> None:
        """A real write (``rules.ping``): a read-only server (a standby, ``default_transaction_read_only``)
        answers reads but refuses it."""
        with self._tx() as tx:
            rules.ping(tx)

    def _rows(self, sql: str, args: Sequence[Any]) -> list[Any]:
        with self._lock:
            conn = self._connection()
            try:
                return list(conn.execute(_ph(sql), tuple(args)).fetchall())
            except Exception as exc:
                raise self._fail(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
