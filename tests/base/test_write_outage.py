"""A database that answers reads but refuses writes is an outage, never a verdict on the markers.

PostgreSQL switched to read-only (as a standby after a failover, or ``default_transaction_read_only``),
SQLite on a full file system (a small tmpfs, filled up: SQLite's real ``SQLITE_FULL``), and the
signature check's key lookup failing while the database is down: in each case no marker is
quarantined, nothing is acknowledged (neither the broker's PUBACK nor base's ``ack``), the outage
is reported, and every marker is stored once the database takes writes again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _mqtt import Mosquitto
from test_ack import Watcher, is_ack, send
from test_signatures import Now, signed_markers
from test_store import WALL, make_markers

from bodycam.base.consumer import Consumer, ConsumerOptions, _Msg
from bodycam.base.keys import KeyRegistry, SignaturePolicy
from bodycam.base.store import SqliteStore
from bodycam.base.store_pg import PostgresStore
from bodycam.device.clock import VirtualClock
from bodycam.device.identity import Signer

pytestmark = pytest.mark.integration
TOPIC = "bodycam/cam-01/marker"


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class InThread:
    """``fn()`` on a thread of its own (the consumer blocks in it while the database is down)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = fn()
            except BaseException as exc:  # reported by join
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the consumer did not finish once the database took writes again"
        if self.error is not None:
            raise self.error
        return self.result


def pg_counts(url: str) -> tuple[int, int]:
    """(markers, quarantine rows), read on a connection of its own (reads work while writes do not)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        markers = conn.execute("SELECT COUNT(*) FROM markers").fetchone()
        quarantine = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()
    assert markers is not None and quarantine is not None
    return int(markers[0]), int(quarantine[0])


def test_a_read_only_postgres_is_an_outage_and_no_marker_is_quarantined_or_lost(pg_server: Any, pg_url: str,
                                                                                tmp_path: Path) -> None:
    name = pg_url.rsplit("/", 1)[1]
    ms = make_markers(tmp_path, 12)
    lines: list[str] = []
    store = PostgresStore(pg_url)
    try:
        c = Consumer(ConsumerOptions(url="mqtt://127.0.0.1:1", store_retry_max_s=0.2), store,
                     clock=VirtualClock(wall_epoch_ns=WALL), notify=lines.append)
        assert c.handle(TOPIC, ms[0].to_json()) == "stored"
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
            # read-only as after a failover to a standby: every new session refuses writes; the
            # consumer's session is ended so that its next one is read-only too
            admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        batch = [_Msg(0, i, 1, TOPIC, m.to_json(), False, WALL) for i, m in enumerate(ms[1:])]
        run = InThread(lambda: c._process(batch))
        wait_until(lambda: c.store_down or not run.thread.is_alive(), 20, "the outage to be reported")
        time.sleep(1.0)  # let it retry a while
        assert run.thread.is_alive(), f"a batch the database refused was finished: {run.result}"
        assert c.store_down and any(line.startswith("store unavailable") for line in lines), lines
        assert pg_counts(pg_url) == (1, 0)  # nothing stored, nothing quarantined: all still pending
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
        assert run.join(30) == ["stored"] * len(batch)
        assert not c.store_down and "store available again" in lines
        assert [s.marker.seq for s in store.markers()] == list(range(1, 13))
        assert store.quarantined() == [] and c.counters["quarantined"] == 0 and c.counters["rejected"] == 0
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
        store.close()


def fill(fs: Path) -> Path:
    """Fill ``fs`` to the last byte with one file; removing it frees the space again."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def test_sqlite_on_a_full_disk_acknowledges_nothing_and_loses_nothing(
    mosquitto: Mosquitto, tmp_path: Path, small_card: Callable[[str], Path]
) -> None:
    """End to end: markers arriving while the disk is full are neither stored, quarantined nor PUBACKed;
    a consumer stopped meanwhile leaves them to the broker, which hands them to the next one, after the
    disk has room again."""
    ms = make_markers(tmp_path, 30)
    w = Watcher(mosquitto.port, ["bodycam/+/ack"])
    with contextlib.nullcontext(small_card("2m")) as fs:
        db = fs / "base.db"
        opts = ConsumerOptions(url=mosquitto.url, client_id="base-full", store_retry_max_s=0.2)

        def consumer() -> tuple[Consumer, SqliteStore, list[str], threading.Event, threading.Thread]:
            store, lines, stop = SqliteStore(db), [], threading.Event()
            c = Consumer(opts, store, notify=lines.append)
            t = threading.Thread(target=c.run, args=(stop,), daemon=True)
            t.start()
            assert c.subscribed.wait(10)
            return c, store, lines, stop, t

        try:
            c, store, lines, stop, t = consumer()
            try:
                send(w, ms[:1])
                w.wait(is_ack(1))
                # the WAL file emptied (so a commit must grow it), then not one byte left on the disk
                with contextlib.closing(sqlite3.connect(db)) as conn:
                    assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
                filler = fill(fs)
                send(w, ms[1:])
                wait_until(lambda: c.store_down, 20, "the outage to be reported")
                time.sleep(1.0)  # let it retry a while
                assert any(line.startswith("store unavailable") and "full" in line for line in lines), lines
                assert not [g for g in w.drain(0.3) if g.body["seq"] > 1]  # no ack for what is not stored
                with contextlib.closing(sqlite3.connect(db)) as conn:  # reads work on a full disk
                    assert conn.execute("SELECT COUNT(*) FROM markers").fetchone()[0] == 1
                    assert conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == 0
                assert c.counters["quarantined"] == 0 and c.counters["stored"] == 1
            finally:
                stop.set()
                t.join(10)
                store.close()
            assert not t.is_alive() and c.unstored >= 1  # left to the broker: never PUBACKed
            filler.unlink()
            c, store, lines, stop, t = consumer()  # same client id: the broker's session delivers them
            try:
                w.wait(is_ack(30))
                assert [s.marker.seq for s in store.markers()] == list(range(1, 31))
                assert store.quarantined() == [] and c.counters["quarantined"] == 0
            finally:
                stop.set()
                t.join(10)
                store.close()
        finally:
            w.close()


def test_a_key_lookup_failing_during_an_outage_is_retried_not_a_verdict(pg_server: Any, pg_url: str,
                                                                        tmp_path: Path) -> None:
    store = PostgresStore(pg_url)
    try:
        registry = KeyRegistry(store)
        signer = Signer.generate()
        registry.add("cam-01", signer.public_pem(), WALL)
        now = Now()
        lines: list[str] = []
        c = Consumer(ConsumerOptions(url="mqtt://127.0.0.1:1", store_retry_max_s=0.2), store,
                     clock=VirtualClock(wall_epoch_ns=WALL), notify=lines.append,
                     signatures=SignaturePolicy(registry, monotonic=now))
        ms = signed_markers(tmp_path, signer, 2)
        assert c.handle(TOPIC, ms[0].to_json()) == "stored"
        now.t += 10.0  # the key cache is due: the next check reads the keys from the database
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the test server runs with synchronous_commit off (see test_web)
        pg_server.halt()
        try:
            run = InThread(lambda: c.handle(TOPIC, ms[1].to_json()))
            wait_until(lambda: c.store_down or not run.thread.is_alive(), 20, "the outage to be reported")
            assert run.thread.is_alive(), f"a marker was judged while the database was down: {run.result}"
        finally:
            pg_server.resume()
        assert run.join(30) == "stored"
        assert [s.marker.seq for s in store.markers()] == [1, 2]
        assert store.quarantined() == [] and c.counters["rejected"] == 0 and c.counters["unverified"] == 0
        assert any(line.startswith("store unavailable") for line in lines) and "store available again" in lines
    finally:
        store.close()
