"""``bodycam-base listen`` as an operator runs it (real processes, Mosquitto, SQLite, PostgreSQL).

An unreachable broker is reported and retried visibly; a gunshot prints a line; a store outage is
retried without acknowledging, SIGTERM ends the process within 5 s with a non-zero status (SQLite
locked by another writer, PostgreSQL stopped), and what was pending is stored after the restart;
a consumer thread that dies ends the process with a non-zero status.
"""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from _mqtt import Mosquitto, free_port
from _pg import PgServer, find_bindir
from test_poison import marker, raw

from bodycam.base import cli
from bodycam.base.cli import main, open_store
from bodycam.base.rules import AddResult
from bodycam.base.store import SqliteStore
from bodycam.device.uplink.markers import Marker

pytestmark = pytest.mark.integration


class Listen:
    """``bodycam-base listen`` in a child process; stdout lines collected on a thread."""

    def __init__(self, broker_url: str, db: str, *extra: str) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "bodycam.base.cli", "listen", "--broker", broker_url, "--db", db, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line)

    def wait_for(self, needle: str, timeout: float = 15.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while sum(needle in s for s in self.seen) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} in {self.seen}")
            try:
                self.seen.append(self.lines.get(timeout=min(left, 0.2)))
            except queue.Empty:
                if self.p.poll() is not None and self.lines.empty():
                    raise AssertionError(f"listen exited {self.p.returncode} before {needle!r}: {self.seen}") from None

    def terminate(self) -> tuple[int, float, str]:
        """SIGTERM; (exit status, seconds until it ended, stderr)."""
        t0 = time.monotonic()
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(15)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
        took = time.monotonic() - t0
        assert self.p.stderr is not None and self.p.stdout is not None
        err = self.p.stderr.read()
        self.reader.join(5)
        self.p.stderr.close()
        self.p.stdout.close()
        return self.p.returncode, took, err


@pytest.fixture
def broker(mosquitto: Mosquitto) -> Mosquitto:
    return mosquitto


def pub(broker: Mosquitto, payload: bytes, topic: str = "bodycam/cam-01/marker") -> None:
    subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", topic, "-s"], input=payload,
                   check=True, timeout=10)


def test_unreachable_broker_is_reported_and_retried_visibly(tmp_path: Path) -> None:
    port = free_port()
    listen = Listen(f"mqtt://127.0.0.1:{port}", str(tmp_path / "base.db"), "-v")
    try:
        listen.wait_for("cannot connect to broker", count=2, timeout=10)
        assert any("retrying" in s for s in listen.seen)
    finally:
        rc, took, _ = listen.terminate()
    assert rc == 0 and took < 5


def test_gunshot_prints_a_line_and_the_default_client_id_is_stable(broker: Mosquitto, tmp_path: Path) -> None:
    db = str(tmp_path / "base.db")
    listen = Listen(broker.url, db)
    try:
        listen.wait_for("listening")
        assert cli.default_client_id("base", db) in listen.seen[-1]
        pub(broker, raw(marker(1)))
        listen.wait_for("GUNSHOT device cam-01 seq 1")
    finally:
        rc, _, err = listen.terminate()
    assert rc == 0, err
    assert cli.default_client_id("base", db) == cli.default_client_id("base", db)
    assert cli.default_client_id("base", db) != cli.default_client_id("base", db + "x")
    assert cli.default_client_id("base", db) != cli.default_client_id("other", db)


def _main_thread_cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def test_an_idle_listen_does_not_spin(broker: Mosquitto, tmp_path: Path) -> None:
    """Once subscribed, the main thread only waits for a signal: it used to wait on the (set)
    ``subscribed`` event in a loop, which returns at once, and burnt a core doing nothing. Over 4 s
    idle its CPU time must stay near zero (a spinning thread gets far more, even on a loaded machine)."""
    listen = Listen(broker.url, str(tmp_path / "base.db"))
    try:
        listen.wait_for("listening")
        time.sleep(0.5)
        before = _main_thread_cpu_s(listen.p.pid)
        time.sleep(4.0)
        used = _main_thread_cpu_s(listen.p.pid) - before
        assert used < 0.05, f"the main thread of an idle listen used {used:.2f} s of CPU in 4 s"
        pub(broker, raw(marker(1)))
        listen.wait_for("GUNSHOT device cam-01 seq 1")  # still listening
    finally:
        rc, _, err = listen.terminate()
    assert rc == 0, err


def test_sigterm_while_sqlite_is_locked_ends_within_5_s_and_loses_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "base.db"
    SqliteStore(db).close()
    listen = Listen(broker.url, str(db), "--client-id", "base-lock")
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        listen.wait_for("listening")
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        pub(broker, raw(marker(1)))
        listen.wait_for("store unavailable")
        rc, took, err = listen.terminate()
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()
    assert rc != 0 and took < 5, (rc, took, err)
    assert "store was unavailable" in err
    with SqliteStore(db) as s:
        assert s.count() == 0
    listen = Listen(broker.url, str(db), "--client-id", "base-lock")  # the broker kept it
    try:
        listen.wait_for("GUNSHOT device cam-01 seq 1")
    finally:
        assert listen.terminate()[0] == 0


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A server of this test's own: it is stopped in the middle."""
    bindir = find_bindir()
    assert bindir is not None
    server = PgServer(bindir, durable=True)  # a commit survives the outage, as in production
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_sigterm_during_a_postgres_outage_ends_within_5_s_and_loses_nothing(
    broker: Mosquitto, own_pg: PgServer
) -> None:
    url = own_pg.url(own_pg.create_db())
    listen = Listen(broker.url, url, "--client-id", "base-pg")
    try:
        listen.wait_for("listening")
        pub(broker, raw(marker(1)))
        listen.wait_for("GUNSHOT device cam-01 seq 1")
        own_pg.halt()
        second = marker(2, prev=Marker.from_dict(marker(1)).digest())
        pub(broker, raw(second))
        listen.wait_for("store unavailable")
        time.sleep(1.0)  # let it retry a while
        rc, took, err = listen.terminate()
    finally:
        if listen.p.poll() is None:
            listen.terminate()
    assert rc != 0 and took < 5, (rc, took, err)
    own_pg.resume()
    listen = Listen(broker.url, url, "--client-id", "base-pg")
    try:
        listen.wait_for("GUNSHOT device cam-01 seq 2")
    finally:
        assert listen.terminate()[0] == 0
    with closing(open_store(url)) as store:
        assert [s.marker.seq for s in store.markers()] == [1, 2]


class Broken:
    """The real store with a bug: every write raises something that is not a StorageError."""

    def __init__(self, db: Path) -> None:
        self.store = SqliteStore(db)

    def add_markers(self, items: Sequence[tuple[Marker, int]]) -> list[AddResult]:
        raise RuntimeError("a bug")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_dead_consumer_thread_ends_the_process_non_zero(broker: Mosquitto, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "open_store", lambda db, create=True: Broken(Path(db)))
    threading.Timer(1.0, pub, args=(broker, raw(marker(1)))).start()
    t0 = time.monotonic()
    rc = main(["listen", "--broker", broker.url, "--db", str(tmp_path / "b.db")])
    assert rc == 1 and time.monotonic() - t0 < 10
    assert "the consumer stopped on an error" in capsys.readouterr().err
