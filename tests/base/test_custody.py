"""The custody audit log is append-only, enforced by the database (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bodycam.base.custody import CustodyLog, StoredRecording
from bodycam.base.store import SqliteStore
from bodycam.base.store_pg import PostgresStore, is_postgres_url
from bodycam.device.errors import StorageError


def open_store(db: str) -> SqliteStore | PostgresStore:
    return PostgresStore(db) if is_postgres_url(db) else SqliteStore(Path(db))


def test_the_audit_log_refuses_update_and_delete(db: str) -> None:
    store = open_store(db)
    try:
        log = CustodyLog(store)
        CustodyLog(store)  # opening again keeps the triggers (no error, no duplicate)
        log.record(1, "device:cam-01", "received", "cam-01", "20260101T000000000Z", {"bytes": 10})
        log.record(2, "olga", "viewed", "cam-01", "20260101T000000000Z")
        for sql in ("UPDATE custody_audit SET actor='nobody'", "DELETE FROM custody_audit",
                    "UPDATE custody_audit SET detail='{}' WHERE n=1"):
            with pytest.raises(StorageError, match="append-only"), store.transaction() as tx:
                tx.run(sql)
        if isinstance(store, PostgresStore):
            with pytest.raises(StorageError, match="append-only"), store.transaction() as tx:
                tx.run("TRUNCATE custody_audit")
        entries = log.entries(device="cam-01")
        assert [(e.t_ns, e.actor, e.action, e.detail) for e in entries] == [
            (1, "device:cam-01", "received", {"bytes": 10}), (2, "olga", "viewed", {})]
        with pytest.raises(StorageError, match="unknown custody action"):
            log.record(3, "x", "edited", "cam-01", "r")  # type: ignore[arg-type]
        rec = StoredRecording("cam-01", "20260101T000000000Z", "a" * 64, 5, "/x", 10, 2, 3)
        with store.transaction() as tx:
            log.add_stored(tx, rec)
        assert log.stored("cam-01") == [rec]
        with pytest.raises(StorageError), store.transaction() as tx:  # stored once, never replaced
            log.add_stored(tx, rec)
    finally:
        store.close()
