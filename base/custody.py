"""Chain of custody at base: the append-only audit log and the index of stored evidence.

Two tables in the store's own database (SQLite or PostgreSQL, like ``device_keys``):

* ``custody_audit``: one row per event, never changed: ``received`` (an upload is complete at
  base), ``verified`` / ``refused`` (the verdict on receipt, with the reason), ``held`` (a recording
  signed with a retired key that base cannot place on its chain yet: 409, kept staged; one row until
  the reason changes), ``stored`` (in the evidence store), ``viewed`` (a file read back through base),
  ``exported`` (in a case bundle), ``handover`` / ``vouched`` (a retired key's chain head registered:
  ``base/chain_heads.py``):
  who (``device:<id>`` for a camera, the operator's name otherwise), when (base's clock) and what
  (device, recording, a JSON detail). **Append-only is enforced by the database**: triggers refuse
  every ``UPDATE`` and ``DELETE`` (and, on PostgreSQL, ``TRUNCATE``; on SQLite an ``INSERT`` naming an
  existing row, i.e. ``INSERT OR REPLACE``), so neither the application
  nor a person with the application's database login can rewrite the log without first dropping
  a trigger (which a database audit of DDL would show; the log itself is not hash-chained).
* ``evidence_recordings``: what the evidence store holds (device, recording, the SHA-256 of its
  signed manifest, when it was stored, where, sizes); one row per recording, written once (the same
  triggers refuse changing, deleting or replacing it).
* ``evidence_links``: the ``previous`` link each stored recording's signed manifest names (the
  recording before it and that manifest's SHA-256), written with its ``evidence_recordings`` row: what
  base holds lets a chain walk from a retired key's head reach the manifests before it
  (``base/chain_heads.py``, ``base/receive.py``). Recordings stored before this table existed have no
  row: the walk reads their stored manifest instead. Write-once like ``evidence_recordings`` (a second
  insert of a recording's link is ignored, never a replacement).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bodycam.base.rules import Tx

Action = Literal["received", "verified", "refused", "stored", "viewed", "exported", "held", "handover", "vouched"]
ACTIONS: frozenset[str] = frozenset({"received", "verified", "refused", "stored", "viewed", "exported", "held",
                                     "handover", "vouched"})


def _tables(serial: str) -> tuple[str, ...]:
    return (
        f"CREATE TABLE IF NOT EXISTS custody_audit (n {serial}, t_ns BIGINT NOT NULL, actor TEXT NOT NULL,"
        " action TEXT NOT NULL, device TEXT NOT NULL, recording TEXT NOT NULL, detail TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS custody_audit_recording ON custody_audit(device, recording, n)",
        "CREATE TABLE IF NOT EXISTS evidence_recordings (device TEXT NOT NULL, recording TEXT NOT NULL,"
        " manifest_sha256 TEXT NOT NULL, stored_ns BIGINT NOT NULL, location TEXT NOT NULL,"
        " bytes BIGINT NOT NULL, segments INTEGER NOT NULL, markers INTEGER NOT NULL,"
        " PRIMARY KEY (device, recording))",
        "CREATE TABLE IF NOT EXISTS evidence_links (device TEXT NOT NULL, recording TEXT NOT NULL,"
        " previous TEXT NOT NULL, previous_manifest_sha256 TEXT NOT NULL, PRIMARY KEY (device, recording))",
        "CREATE INDEX IF NOT EXISTS evidence_links_previous ON evidence_links(device, previous)",
    )


def sqlite_guards(table: str) -> tuple[str, ...]:
    """SQLite triggers making ``table`` (with an ``n INTEGER PRIMARY KEY``) append-only: no UPDATE, no
    DELETE, and no INSERT naming an existing ``n`` (``INSERT OR REPLACE`` deletes the old row without firing
    a DELETE trigger)."""
    return (
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: rows cannot be changed'); END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: rows cannot be deleted'); END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table} "
        f"WHEN NEW.n IS NOT NULL AND EXISTS (SELECT 1 FROM {table} WHERE n = NEW.n) "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: rows cannot be replaced'); END",
    )


def pg_guards(table: str) -> tuple[str, tuple[str, ...]]:
    """The PostgreSQL function and triggers refusing UPDATE, DELETE (an upsert's update included) and TRUNCATE."""
    function = (f"CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN RAISE EXCEPTION '{table} is append-only: % refused', TG_OP; END $$")
    return function, (
        f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()",
    )


def _index_guards(table: str, on_existing: str) -> tuple[str, ...]:
    """SQLite triggers making an evidence-index table (keyed by device and recording) write-once: no UPDATE,
    no DELETE, and an INSERT of an existing key does ``on_existing`` (``IGNORE``: nothing, as an ``ON
    CONFLICT DO NOTHING`` would; ``ABORT, '...'``: an error) instead of ``INSERT OR REPLACE`` swapping it."""
    upd, dele, _ = sqlite_guards(table)
    return (upd, dele,
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table} WHEN EXISTS "
            f"(SELECT 1 FROM {table} WHERE device = NEW.device AND recording = NEW.recording) "
            f"BEGIN SELECT RAISE({on_existing}); END")


#: the evidence index is write-once too (a recording's row and its link are never changed once stored)
_INDEX_SQLITE = (*_index_guards("evidence_recordings", "ABORT, 'evidence_recordings is append-only: rows "
                                "cannot be replaced'"), *_index_guards("evidence_links", "IGNORE"))
_INDEX_PG = {t: pg_guards(t) for t in ("evidence_recordings", "evidence_links")}


class CustodyStore(Protocol):
    """What the custody log needs from a store (``base.store._Store`` provides it)."""

    def transaction(self) -> AbstractContextManager[Tx]: ...

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]: ...


@dataclass(frozen=True)
class AuditEntry:
    n: int
    t_ns: int
    actor: str
    action: str
    device: str
    recording: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "t_ns": self.t_ns, "actor": self.actor, "action": self.action,
                "device": self.device, "recording": self.recording, "detail": self.detail}


@dataclass(frozen=True)
class StoredRecording:
    device: str
    recording: str
    manifest_sha256: str
    stored_ns: int
    location: str
    bytes: int
    segments: int
    markers: int


def _is_postgres(store: CustodyStore) -> bool:
    from bodycam.base.store import SqliteStore

    return not isinstance(store, SqliteStore)


def create_append_only(store: CustodyStore, tables: Callable[[str], Sequence[str]], sqlite: Sequence[str],
                       pg_function: str, pg_triggers: Sequence[str], trigger: str) -> None:
    """Create append-only tables on either store: ``tables(serial)`` and, on PostgreSQL (under the schema
    lock), the function and triggers refusing UPDATE/DELETE/TRUNCATE unless trigger ``trigger`` exists;
    on SQLite the ``sqlite`` statements (tables and triggers)."""
    with store.transaction() as tx:
        if _is_postgres(store):
            from bodycam.base.store_pg import _SCHEMA_LOCK

            tx.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            for stmt in tables("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"):
                tx.run(stmt)
            if tx.one("SELECT 1 FROM pg_trigger WHERE tgname=?", (trigger,)) is None:
                tx.run(pg_function.replace("%", "%%"))  # the cursor formats '%'
                for stmt in pg_triggers:
                    tx.run(stmt)
        else:
            for stmt in sqlite:
                tx.run(stmt)


def create_append_only_table(store: CustodyStore, tables: Callable[[str], Sequence[str]], table: str) -> None:
    """:func:`create_append_only` for ``tables(serial)`` whose ``table`` has the serial key ``n``: guarded by
    :func:`sqlite_guards` / :func:`pg_guards` (the trigger checked on PostgreSQL: ``<table>_no_change``)."""
    function, triggers = pg_guards(table)
    create_append_only(store, tables, (*tables("INTEGER PRIMARY KEY AUTOINCREMENT"), *sqlite_guards(table)),
                       function, triggers, f"{table}_no_change")


def by_recording(device: str | None, recording: str | None) -> tuple[str, list[str]]:
    """`` WHERE device=? AND recording=?`` for those given (``""`` for none) and its arguments."""
    where, args = [], []
    if device is not None:
        where.append("device=?")
        args.append(device)
    if recording is not None:
        where.append("recording=?")
        args.append(recording)
    return (" WHERE " + " AND ".join(where) if where else ""), args


class CustodyLog:
    def __init__(self, store: CustodyStore) -> None:
        self._store = store
        create_append_only_table(store, _tables, "custody_audit")
        for table, (function, triggers) in _INDEX_PG.items():  # separately: databases made before these guards
            create_append_only(store, lambda _serial: (), [q for q in _INDEX_SQLITE if f" ON {table} " in q],
                               function, triggers, f"{table}_no_change")

    @property
    def store(self) -> CustodyStore:
        return self._store

    def transaction(self) -> AbstractContextManager[Tx]:
        return self._store.transaction()

    def append(self, tx: Tx, t_ns: int, actor: str, action: Action, device: str, recording: str,
               detail: dict[str, Any] | None = None) -> None:
        """One audit row, inside the caller's transaction (the action and its record commit together)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown custody action {action!r}")
        tx.run("INSERT INTO custody_audit(t_ns, actor, action, device, recording, detail) VALUES (?,?,?,?,?,?)",
               (t_ns, actor, action, device, recording, json.dumps(detail or {}, sort_keys=True)))

    def record(self, t_ns: int, actor: str, action: Action, device: str, recording: str,
               detail: dict[str, Any] | None = None) -> None:
        """One audit row in its own transaction."""
        with self._store.transaction() as tx:
            self.append(tx, t_ns, actor, action, device, recording, detail)

    def entries(self, *, device: str | None = None, recording: str | None = None,
                limit: int = 10_000) -> list[AuditEntry]:
        sql = "SELECT n, t_ns, actor, action, device, recording, detail FROM custody_audit"
        clause, args = by_recording(device, recording)
        sql += clause
        rows = self._store.read(sql + f" ORDER BY n LIMIT {int(limit)}", args)
        return [AuditEntry(int(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), json.loads(r[6]))
                for r in rows]

    # -- the evidence index -------------------------------------------------------------------------
    def add_stored(self, tx: Tx, rec: StoredRecording) -> None:
        tx.run("INSERT INTO evidence_recordings(device, recording, manifest_sha256, stored_ns, location, bytes,"
               " segments, markers) VALUES (?,?,?,?,?,?,?,?)",
               (rec.device, rec.recording, rec.manifest_sha256, rec.stored_ns, rec.location, rec.bytes,
                rec.segments, rec.markers))

    def add_link(self, tx: Tx, device: str, recording: str, previous: Any) -> None:
        """The ``previous`` link of a stored recording's manifest (nothing for none or a malformed one)."""
        if not isinstance(previous, dict):
            return
        rec, sha = previous.get("recording"), previous.get("manifest_sha256")
        if isinstance(rec, str) and isinstance(sha, str):
            tx.run("INSERT INTO evidence_links(device, recording, previous, previous_manifest_sha256) VALUES (?,?,?,?)"
                   " ON CONFLICT (device, recording) DO NOTHING", (device, recording, rec, sha))

    def link(self, device: str, recording: str) -> tuple[str, str] | None:
        """The ``previous`` link (recording, manifest SHA-256) indexed for a stored recording, else None (it
        links nothing, or it was stored before this table existed: read its manifest)."""
        rows = self._store.read("SELECT previous, previous_manifest_sha256 FROM evidence_links WHERE device=? AND "
                                "recording=?", (device, recording))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def last_entry(self, device: str, recording: str) -> AuditEntry | None:
        """The newest audit row of a recording."""
        rows = self._store.read("SELECT n, t_ns, actor, action, device, recording, detail FROM custody_audit"
                                " WHERE device=? AND recording=? ORDER BY n DESC LIMIT 1", (device, recording))
        return None if not rows else AuditEntry(int(rows[0][0]), int(rows[0][1]), str(rows[0][2]), str(rows[0][3]),
                                                str(rows[0][4]), str(rows[0][5]), json.loads(rows[0][6]))

    def stored(self, device: str | None = None, recording: str | None = None) -> list[StoredRecording]:
        sql = ("SELECT device, recording, manifest_sha256, stored_ns, location, bytes, segments, markers"
               " FROM evidence_recordings")
        clause, args = by_recording(device, recording)
        sql += clause
        rows = self._store.read(sql + " ORDER BY device, recording", args)
        return [StoredRecording(str(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4]), int(r[5]), int(r[6]),
                                int(r[7])) for r in rows]
