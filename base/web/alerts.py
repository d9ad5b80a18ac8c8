"""Live alerts: poll the open alerts, fan changes out to every page's event stream.

How ``serve`` learns of a new gunshot marker: the marker's own transaction makes its ``web_alerts``
row (a trigger, :mod:`bodycam.base.web.db`); the hub reads the set of **unacknowledged** alerts
(one indexed query on a partial index holding only open alerts) and compares it with the previous
read: a new row is an ``alert`` event, a row gone is an ``ack`` event. Comparing sets rather than
following an id cursor needs no ordering guarantee from the database (PostgreSQL identities can
commit out of order when several ``listen`` instances write), and acknowledgements made on another
``serve`` instance reach this one's pages the same way.

When it reads: on PostgreSQL, when a notification says the alerts changed (``LISTEN``/``NOTIFY``,
:mod:`bodycam.base.web.alert_wake`), at most every ``min_gap_s`` (a burst of notifications is one
read), and every ``fallback_s`` (5 s) as a safety net; on SQLite, or while the notification
connection is down, every ``poll_s`` (default 0.2 s).

A page's stream (``subscribe``) starts with a snapshot of the open alerts and the outage state, so
a reload, a new page or a restarted server shows every unacknowledged alert. An outage of the
database is an ``outage`` event (and ``restored`` when it answers again), never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from bodycam.base.provenance import describe
from bodycam.base.web.alert_wake import Waker
from bodycam.base.web.db import Alert, WebDb
from bodycam.device.errors import StorageError

_log = logging.getLogger(__name__)


def evidence_of(marker: dict[str, Any]) -> dict[str, Any] | None:
    """Which sources fired: ``evidence`` (DESIGN section 4), top level or inside ``extra``."""
    extra = marker.get("extra")
    ev = marker.get("evidence", extra.get("evidence") if isinstance(extra, dict) else None)
    return ev if isinstance(ev, dict) else None


def alert_event(a: Alert, unverified: str | None = None) -> dict[str, Any]:
    """The page's event for alert ``a``; ``unverified``: why its marker is not verified (None: verified;
    see :mod:`bodycam.base.provenance`). The page shows an unverified alert as such, never hides it."""
    try:
        body = json.loads(a.body)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    loc = body.get("location")
    return {
        "type": "alert",
        "n": a.n,
        "marker": a.marker_id,
        "device": a.device,
        "kind": a.kind,
        "t": a.t,
        "received_ns": a.received_ns,
        "confidence": body.get("confidence"),
        "location": loc if isinstance(loc, dict) else None,
        "evidence": evidence_of(body),
        # a fleet alert (base/web/fleet.py): its text, and the fleet page instead of a marker page
        "detail": body.get("detail") if isinstance(body.get("detail"), str) else None,
        "href": "/fleet" if a.marker_id.startswith("fleet:") else None,
        # a marker's alert: whether its signature verified with a registered key; a fleet alert: None
        "verified": (unverified is None) if a.is_marker else None,
        "signature": describe(unverified) if a.is_marker else None,
    }


class AlertHub:
    def __init__(self, db: WebDb, *, poll_s: float = 0.2, keepalive_s: float = 15.0, waker: Waker | None = None,
                 fallback_s: float = 5.0, min_gap_s: float = 0.05) -> None:
        self.db = db
        self.poll_s = poll_s
        self.keepalive_s = keepalive_s
        self.waker = waker
        self.fallback_s = max(fallback_s, poll_s)
        self.min_gap_s = min(min_gap_s, poll_s)
        self._wake = asyncio.Event()
        self.open: dict[int, dict[str, Any]] = {}
        self.outage: str | None = None
        self._subs: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self.polls = 0
        self._retry = False  # the last read failed part-way: read again at the short poll

    # -- polling ------------------------------------------------------------------------------------
    async def poll_once(self) -> None:
        try:
            alerts = await run_in_threadpool(self.db.open_alerts)
        except StorageError as exc:
            if self.outage is None:
                _log.warning("store unavailable: %s", exc)
                self.outage = "the database is not answering; alerts resume when it is back"
                self._publish({"type": "outage", "message": self.outage})
            return
        if self.outage is not None:
            self.outage = None
            self._publish({"type": "restored"})
        now = {a.n for a in alerts}
        for n in [n for n in self.open if n not in now]:
            del self.open[n]
            self._publish({"type": "ack", "n": n})
        new = [a for a in alerts if a.n not in self.open]
        if new:  # a new alert's signature is checked once, not at every poll
            try:
                events = await run_in_threadpool(self._events, new)
            except StorageError as exc:  # the key registry did not answer: the next poll tries again
                _log.warning("store unavailable: %s", exc)
                self._retry = True  # at the short poll, not after the notified hub's safety interval
                return
            for ev in events:
                self.open[ev["n"]] = ev
                self._publish(ev)
        self._retry = False
        self.polls += 1

    def _events(self, alerts: list[Alert]) -> list[dict[str, Any]]:
        return [alert_event(a, self.db.unverified(a.body, a.received_ns) if a.is_marker else None) for a in alerts]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            self._wake.clear()  # a wake-up during the read below makes another read
            began = loop.time()
            try:
                await self.poll_once()
            except Exception:  # never let one bad poll end the alerts
                _log.exception("alert poll failed")
            notified = self.waker is not None and self.waker.connected and self.outage is None and not self._retry
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.fallback_s if notified else self.poll_s)
            gap = self.min_gap_s - (loop.time() - began)
            if gap > 0 and not self._stopping.is_set():
                await asyncio.sleep(gap)

    def wake_threadsafe(self) -> None:
        """Read the alerts now (from any thread): the database said they changed."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between: nothing to wake
                loop.call_soon_threadsafe(self._wake.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.poll_once()
        self._task = asyncio.create_task(self._run(), name="alert-hub")
        if self.waker is not None:
            self.waker.start(self.wake_threadsafe)

    def _close_streams(self) -> None:
        self._stopping.set()
        self._wake.set()
        for q in list(self._subs):
            q.put_nowait({"type": "bye"})

    def close_streams_threadsafe(self) -> None:
        """End every page's stream (from a signal handler or another thread): the server is stopping."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._close_streams)

    async def stop(self) -> None:
        self._close_streams()
        if self.waker is not None:
            await run_in_threadpool(self.waker.close)
        if self._task is not None:
            await self._task

    # -- fan-out ------------------------------------------------------------------------------------
    def _publish(self, ev: dict[str, Any]) -> None:
        for q in list(self._subs):
            q.put_nowait(ev)

    def acked_here(self, n: int) -> None:
        """An acknowledgement made by this instance: tell every page now, not at the next poll."""
        if self.open.pop(n, None) is not None:
            self._publish({"type": "ack", "n": n})

    async def stream(self, is_disconnected: Callable[[], Any]) -> AsyncIterator[str]:
        """Server-sent events for one page: the snapshot, then every change; a comment as keep-alive."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        snapshot = [{"type": "snapshot", "alerts": list(self.open.values()), "outage": self.outage}]
        self._subs.add(q)
        try:
            yield "retry: 1000\n\n"
            for ev in snapshot:
                yield _sse(ev)
            while not self._stopping.is_set():
                try:
                    ev = await asyncio.wait_for(q.get(), self.keepalive_s)
                except TimeoutError:
                    if await is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if ev["type"] == "bye":
                    return
                yield _sse(ev)
        finally:
            self._subs.discard(q)


def _sse(ev: dict[str, Any]) -> str:
    # json.dumps escapes newlines, so one data line per event; "<" etc. are escaped too (defence in depth)
    data = json.dumps(ev, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"event: {ev['type']}\ndata: {data}\n\n"
