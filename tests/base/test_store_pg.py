"""The PostgreSQL store against a real server: the same cases as the SQLite store, concurrent writers.

Every store case runs against both stores (``db`` is a SQLite path or a ``postgresql://`` URL, opened
the way ``bodycam-base`` opens it), so their behaviour is identical. The server is Debian's
PostgreSQL started by a session fixture (tests/base/_pg.py); missing binaries fail with the install
hint. The integration case at the end runs two ``bodycam-base listen`` processes of one shared group
into one PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from _mqtt import Mosquitto
from _pg import PgServer
from test_store import WALL, make_markers

from bodycam.base.cli import main, open_store
from bodycam.base.store import AddResult, SqliteStore
from bodycam.base.store_pg import PostgresStore
from bodycam.device.errors import DependencyError, StorageError
from bodycam.device.uplink.markers import Marker

HELPER = str(Path(__file__).resolve().parents[1] / "_mqtt.py")


def opened(db: str) -> SqliteStore | PostgresStore:
    store = open_store(db)
    assert isinstance(store, PostgresStore if db.startswith("postgresql://") else SqliteStore)
    return store


def test_idempotent_chain_and_gaps(db: str, tmp_path: Path) -> None:
    ms = make_markers(tmp_path, 6)
    with opened(db) as store:
        r = store.add_markers([(ms[0], 1), (ms[1], 2)])
        assert [x.stored for x in r] == [True, True] and [x.chain for x in r] == ["ok", "ok"]
        assert store.add_markers([(ms[1], 3)])[0].stored is False  # duplicate
        assert store.add_markers([]) == []
        r4 = store.add_markers([(ms[4], 4)])[0]  # 3 and 4 missing so far
        assert r4.gap == (3, 4) and r4.chain == "unknown"
        assert store.devices()[0].missing == 2
        store.add_markers([(ms[3], 5), (ms[2], 6), (ms[5], 7)])
        chains = {s.marker.seq: s.chain for s in store.markers()}
        assert chains == {1: "ok", 2: "ok", 3: "ok", 4: "ok", 5: "ok", 6: "ok"}  # settled when 4 arrived
        d = store.devices()[0]
        assert (d.markers, d.max_seq, d.missing, d.chain_broken) == (6, 6, 0, 0)
        assert d.last_seen_ns == 7
        assert store.count() == 6
        assert [s.received_ns for s in store.markers()] == [1, 2, 6, 5, 4, 7]
        assert store.markers()[2].marker == ms[2]  # the wire form round-trips


def test_broken_chain_is_detected(db: str, tmp_path: Path) -> None:
    ms = make_markers(tmp_path, 3)
    forged = Marker.from_dict({**ms[1].to_dict(), "prev": "f" * 64})
    with opened(db) as store:
        store.add_markers([(ms[0], 1), (forged, 2), (ms[2], 3)])
        chains = [s.chain for s in store.markers()]
        # a tampered seq 2 breaks the link into it and the link out of it (seq 3 hashes the genuine seq 2)
        assert chains == ["ok", "broken", "broken"]
        assert store.devices()[0].chain_broken == 2


def test_late_predecessor_with_wrong_digest_settles_broken(db: str, tmp_path: Path) -> None:
    ms = make_markers(tmp_path, 3)
    forged2 = Marker.from_dict({**ms[1].to_dict(), "kind": "dismissed"})  # changes its digest
    with opened(db) as store:
        assert store.add_markers([(ms[2], 1)])[0] == AddResult(True, "unknown", (1, 2), first=True)
        assert store.add_markers([(ms[0], 2), (forged2, 3)])[1].chain == "ok"
        assert [s.chain for s in store.markers()] == ["ok", "ok", "broken"]


def test_status_and_queries(db: str, tmp_path: Path) -> None:
    ms = make_markers(tmp_path, 4) + make_markers(tmp_path, 2, device="cam-02")
    with opened(db) as store:
        store.set_status("cam-00", "online", None, 5)  # status before any marker
        store.add_markers([(m, WALL + i) for i, m in enumerate(ms)])
        store.set_status("cam-01", "offline", ms[0].t, 1)  # older arrival: last seen stays
        devs = {d.device: d for d in store.devices()}
        assert list(devs) == ["cam-00", "cam-01", "cam-02"]
        assert (devs["cam-00"].state, devs["cam-00"].markers, devs["cam-00"].last_seen_ns) == ("online", 0, 5)
        assert (devs["cam-01"].state, devs["cam-01"].status_t, devs["cam-01"].last_seen_ns) == (
            "offline",
            ms[0].t,
            WALL + 3,
        )
        assert [s.marker.seq for s in store.markers(device="cam-01", kind="gunshot")] == [2, 4]
        assert len(store.markers(limit=3)) == 3
        assert [s.marker.device for s in store.markers()] == ["cam-01"] * 4 + ["cam-02"] * 2


def test_cli_markers_and_devices(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ms = make_markers(tmp_path, 4) + make_markers(tmp_path, 2, device="cam-02")
    with opened(db) as store:
        store.add_markers([(m, WALL) for m in ms])
        store.set_status("cam-01", "offline", ms[0].t, WALL)
    assert main(["markers", "--db", db]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["DEVICE", "SEQ", "TIME", "(UTC)"]
    assert len(out.splitlines()) == 7 and "rec-1@1.000s" in out
    assert main(["markers", "--db", db, "--device", "cam-01", "--kind", "gunshot", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == [4, 2] and all(r["_chain"] == "ok" for r in rows)
    assert main(["markers", "--db", db, "--since", ms[3].t, "--json"]) == 0
    assert {json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()} == {ms[3].id}
    assert main(["devices", "--db", db, "--json"]) == 0
    devs = {d["device"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    assert devs["cam-01"]["state"] == "offline" and devs["cam-02"]["markers"] == 2
    assert main(["devices", "--db", db]) == 0
    assert "cam-02" in capsys.readouterr().out


def test_concurrent_writers(db: str, tmp_path: Path) -> None:
    """Two connections store interleaved seqs of one device at once (two consumers of a shared group).

    Without serialisation per device, a marker and its predecessor committed at the same time each
    miss the other (the successor stays ``unknown`` forever) and both writers report the same gap.
    """
    n = 200
    ms = make_markers(tmp_path, n)
    stores = [opened(db), opened(db)]
    results: list[list[tuple[int, AddResult]]] = [[], []]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            barrier.wait(10)
            for m in ms[k::2]:  # writer 0: seqs 1, 3, 5...; writer 1: 2, 4, 6...
                results[k].append((m.seq, stores[k].add_markers([(m, m.seq)])[0]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in (0, 1)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        rows = stores[0].markers()
        assert [s.marker.seq for s in rows] == list(range(1, n + 1))
        assert {s.chain for s in rows} == {"ok"}
        d = stores[1].devices()[0]
        assert (d.markers, d.max_seq, d.missing, d.chain_broken) == (n, n, 0, 0)
        # every seq reported missing was reported once, and only while it really was missing
        reported = [s for _, r in results[0] + results[1] if r.gap for s in range(r.gap[0], r.gap[1] + 1)]
        assert len(reported) == len(set(reported))
        assert all(r.stored for _, r in results[0] + results[1])
    finally:
        for s in stores:
            s.close()


def test_missing_psycopg_is_a_dependency_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an environment without it looks like
    with pytest.raises(DependencyError, match=r"pip install 'bodycam\[postgres\]'"):
        open_store("postgresql://base@127.0.0.1/bodycam")
    assert main(["devices", "--db", "postgres://base@127.0.0.1/bodycam"]) == 1
    assert "pip install 'bodycam[postgres]'" in capsys.readouterr().err


@pytest.mark.integration
def test_unreachable_server_and_reconnect(pg_server: PgServer, pg_url: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"cannot connect") as info:
        PostgresStore(f"postgresql://postgres:secret@127.0.0.1:{pg_server.port}/no_such_db")
    assert "secret" not in str(info.value)
    ms = make_markers(tmp_path, 2)
    with PostgresStore(pg_url) as store:
        store.add_markers([(ms[0], 1)])
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:  # the server drops us
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name='bodycam-base'"
            )
        with pytest.raises(StorageError):
            store.add_markers([(ms[1], 2)])  # not stored: the consumer retries without a PUBACK
        assert store.add_markers([(ms[1], 2)])[0] == AddResult(True, "ok", None)  # reconnected
        assert store.count() == 2


def test_a_connection_left_in_a_failed_transaction_is_replaced(pg_url: str, tmp_path: Path) -> None:
    """An error that leaves the session in a failed (or unknown) transaction must not poison every
    later call: the next call reconnects instead of reusing it (seen as a 30 s dashboard outage)."""
    ms = make_markers(tmp_path, 1)
    with PostgresStore(pg_url) as store:
        store.ping()
        conn = store._conn
        assert conn is not None
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        store.ping()  # not "current transaction is aborted"
        assert store._conn is not conn
        assert store.add_markers([(ms[0], 1)])[0].stored


def test_an_operational_error_drops_the_connection(pg_url: str) -> None:
    with PostgresStore(pg_url) as store:
        store.ping()
        conn = store._conn
        with pytest.raises(StorageError):
            store._rows("SELECT pg_terminate_backend(pg_backend_pid())", ())  # the server drops us itself
        assert store._conn is not conn
        store.ping()


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.integration
def test_two_listeners_share_a_group_into_postgres(mosquitto: Mosquitto, pg_url: str, tmp_path: Path) -> None:
    """Device process -> Mosquitto -> two `bodycam-base listen --db postgresql://...` of one group."""
    url = mosquitto.url
    n = 200
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in (1, 2):
            p = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bodycam.base.cli",
                    "listen",
                    "--broker",
                    url,
                    "--db",
                    pg_url,
                    "--client-id",
                    f"pg-{i}",
                    "--group",
                    "fleet",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            procs.append(p)
            assert p.stdout is not None
            while "listening" not in (line := p.stdout.readline()):
                assert line, "bodycam-base listen ended before it was listening"
        dev = subprocess.Popen(
            [
                sys.executable,
                HELPER,
                "device",
                "--url",
                url,
                "--outbox",
                str(tmp_path / "ob.db"),
                "--device",
                "cam-07",
                "--count",
                str(n),
                "--interval-s",
                "0.002",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        assert dev.wait(60) == 0
        with PostgresStore(pg_url) as store:
            _wait(lambda: store.count() >= n, 20, f"{n} markers in PostgreSQL")
            rows = store.markers()
            d = next(x for x in store.devices() if x.device == "cam-07")
        assert [s.marker.seq for s in rows] == list(range(1, n + 1))
        assert {s.chain for s in rows} == {"ok"}
        assert (d.markers, d.missing, d.chain_broken) == (n, 0, 0)
    finally:
        counters = []
        for p in procs:
            p.terminate()
            out, _ = p.communicate(timeout=20)
            counters.append(json.loads(out.strip().splitlines()[-1]) if out.strip() else {})
    # both consumers took a share (Mosquitto round-robins a group's messages)
    assert all(c.get("stored", 0) > 0 for c in counters), counters
    assert sum(c.get("stored", 0) for c in counters) == n
