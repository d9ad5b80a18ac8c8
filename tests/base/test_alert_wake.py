"""The alert hub reads the alerts when PostgreSQL notifies it (``LISTEN``/``NOTIFY``,
``base/web/alert_wake.py``), not only at its poll: real PostgreSQL, a real second connection, and the
hub's own event stream. The hubs here poll rarely (``fallback_s`` 60 s), so an event that arrives
within the waits below came from a notification."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from test_web import WALL, make_markers

from bodycam.base.cli import open_store
from bodycam.base.store_pg import PostgresStore
from bodycam.base.web.alert_wake import PgAlertWaker
from bodycam.base.web.alerts import AlertHub
from bodycam.base.web.db import WebDb

WAIT_S = 15.0  # far below the hubs' 60 s safety poll; generous for a loaded machine


class Stream:
    """A page's event stream from ``hub``, read on the running loop into a queue."""

    def __init__(self, hub: AlertHub) -> None:
        self.q: asyncio.Queue[str] = asyncio.Queue()
        self.gen: AsyncIterator[str] = hub.stream(self._connected)
        self.task = asyncio.create_task(self._read())

    @staticmethod
    async def _connected() -> bool:
        return False

    async def _read(self) -> None:
        async for chunk in self.gen:
            self.q.put_nowait(chunk)

    async def next_event(self, kind: str, timeout: float = WAIT_S) -> str:
        async def find() -> str:
            while True:
                chunk = await self.q.get()
                if chunk.startswith(f"event: {kind}\n"):
                    return chunk
        return await asyncio.wait_for(find(), timeout)


def store_in_thread(url: str, tmp: Path, kinds: list[str], device: str) -> threading.Thread:
    """What a ``listen`` instance does, on its own connection."""
    def run() -> None:
        with closing(open_store(url)) as store:
            store.add_markers([(m, WALL) for m in make_markers(tmp, kinds, device=device)])
    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.fixture
def pg(pg_url: str) -> Iterator[tuple[str, WebDb]]:
    store = open_store(pg_url)
    try:
        yield pg_url, WebDb(store)
    finally:
        store.close()


def hub_of(web: WebDb, url: str, **kw: Any) -> tuple[AlertHub, PgAlertWaker]:
    waker = PgAlertWaker(url, retry_s=0.2, check_s=0.2)
    return AlertHub(web, poll_s=0.1, fallback_s=60.0, waker=waker, **kw), waker


async def until(cond: Any, timeout: float = WAIT_S) -> None:
    async def wait() -> None:
        while not cond():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(wait(), timeout)


@pytest.mark.integration
def test_a_stored_gunshot_and_an_ack_on_another_instance_wake_the_hub(pg: tuple[str, WebDb], tmp_path: Path) -> None:
    url, web = pg

    async def main() -> None:
        hub, waker = hub_of(web, url)
        await hub.start()
        try:
            await until(lambda: waker.connected)
            s = Stream(hub)
            await s.next_event("snapshot")
            polls = hub.polls
            t = store_in_thread(url, tmp_path, ["manual", "gunshot"], "cam-07")
            ev = await s.next_event("alert")
            t.join()
            assert '"device": "cam-07"' in ev
            assert hub.polls > polls
            # an acknowledgement made by another serve instance (its own WebDb on its own connection)
            (n,) = list(hub.open)
            other = open_store(url)
            try:
                assert await asyncio.to_thread(WebDb(other).acknowledge, n, "piet", WALL, "10.0.0.9")
            finally:
                other.close()
            assert f'"n": {n}' in await s.next_event("ack")
            assert hub.open == {}
        finally:
            await hub.stop()
        assert not waker.connected

    asyncio.run(main())


@pytest.mark.integration
def test_a_lost_notification_connection_reconnects_and_reads_what_was_missed(
    pg: tuple[str, WebDb], tmp_path: Path
) -> None:
    url, web = pg
    assert isinstance(web.store, PostgresStore)

    async def main() -> None:
        hub, waker = hub_of(web, url)
        await hub.start()
        try:
            await until(lambda: waker.connected)
            s = Stream(hub)
            await s.next_event("snapshot")
            # the server ends the listening session (a restart, an idle timeout, an administrator)
            killed = await asyncio.to_thread(
                web.rows, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'bodycam-base-alerts'")
            assert [bool(r[0]) for r in killed] == [True]
            await until(lambda: waker.connections >= 2 and waker.connected)
            t = store_in_thread(url, tmp_path, ["gunshot"], "cam-08")
            assert '"device": "cam-08"' in await s.next_event("alert")
            t.join()
        finally:
            await hub.stop()

    asyncio.run(main())


def test_without_notifications_the_hub_polls_and_a_wake_reads_at_once(tmp_path: Path) -> None:
    """The hub's side on SQLite with a stand-in waker: connected -> only a wake-up (or the long
    fallback) reads; disconnected -> the short poll."""
    store = open_store(str(tmp_path / "base.db"))
    web = WebDb(store)

    class Waker:
        connected = True
        on_wake: Any = None

        def start(self, on_wake: Any) -> None:
            self.on_wake = on_wake

        def close(self) -> None:
            pass

    w = Waker()

    async def main() -> None:
        hub = AlertHub(web, poll_s=0.05, fallback_s=60.0, waker=w)
        await hub.start()
        try:
            s = Stream(hub)
            await s.next_event("snapshot")
            await asyncio.sleep(0.1)  # the loop is now in its 60 s wait
            store.add_markers([(m, WALL) for m in make_markers(tmp_path, ["gunshot"])])
            polls = hub.polls
            with pytest.raises(TimeoutError):
                await s.next_event("alert", timeout=0.5)  # connected and not woken: no read
            assert hub.polls == polls
            await asyncio.to_thread(w.on_wake)  # from another thread, as the waker calls it
            await s.next_event("alert")
            # the link goes down: the hub is woken once and polls every poll_s from then on
            w.connected = False
            await asyncio.to_thread(w.on_wake)
            await until(lambda: hub.polls >= polls + 5, timeout=5.0)
        finally:
            await hub.stop()
        store.close()

    asyncio.run(main())


class PooledWaker(PgAlertWaker):
    """A waker whose notifications never come back, as behind a transaction-mode pooler (its LISTEN
    is accepted on a server session it does not keep): its probes go nowhere."""

    def _send_probe(self, conn: Any) -> None:
        conn.execute("SELECT pg_notify('somewhere_else', 'x')")


@pytest.mark.integration
def test_a_waker_whose_notifications_do_not_arrive_is_not_connected_and_the_hub_polls(
    pg: tuple[str, WebDb], tmp_path: Path
) -> None:
    url, web = pg

    async def main() -> None:
        waker = PooledWaker(url, retry_s=0.2, check_s=0.1, probe_s=0.3, probe_timeout_s=0.3)
        hub = AlertHub(web, poll_s=0.1, fallback_s=60.0, waker=waker)
        await hub.start()
        try:
            await until(lambda: waker.connections >= 1)
            await asyncio.sleep(1.0)  # several probes sent and timed out
            assert not waker.connected
            s = Stream(hub)
            await s.next_event("snapshot")
            polls = hub.polls
            await until(lambda: hub.polls >= polls + 3, timeout=5.0)  # the short poll, not the 60 s one
            t = store_in_thread(url, tmp_path, ["gunshot"], "cam-09")
            assert '"device": "cam-09"' in await s.next_event("alert")
            t.join()
        finally:
            await hub.stop()

    asyncio.run(main())
