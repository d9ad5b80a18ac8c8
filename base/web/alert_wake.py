"""Wake the alert hub when the alerts change: PostgreSQL ``LISTEN``/``NOTIFY``.

A statement-level trigger on ``web_alerts`` (``bodycam.base.web.db``) calls
``pg_notify('bodycam_alerts', '')`` whenever alert rows are inserted or updated: a gunshot marker
stored by any ``listen`` instance, a fleet alert, an acknowledgement made on any ``serve`` instance.
PostgreSQL delivers the notification when that transaction commits (never for one rolled back) and
folds identical notifications of one transaction into one, so a batch of markers is one wake-up.

:class:`PgAlertWaker` keeps its own connection (``LISTEN`` needs a session of its own; the store's
connection is shared by the web requests) on a thread and calls ``on_wake`` for every notification.
Notifications are only a hint: the hub still compares the whole set of open alerts on each wake-up,
so a notification lost while the connection was down costs nothing but time.

**Connected means proven.** ``LISTEN`` succeeding does not prove that notifications arrive (behind a
transaction-mode pooler such as PgBouncer's, ``LISTEN`` is accepted on one server session and the
notifications go to it, not to this client). So the waker sends itself a probe (``pg_notify`` with a
``probe:`` payload) at once and every ``probe_s``; :attr:`connected` is true only while its probes come
back within ``probe_timeout_s``. Whenever it changes, ``on_wake`` is called: on the way up the hub
reads what changed while notifications were not arriving; on the way down it returns to its short
poll. Probes never wake a hub (theirs or another instance's).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

CHANNEL = "bodycam_alerts"
PROBE = "probe:"  # the payload prefix of the wakers' own probes (the alert trigger's payload is empty)

_log = logging.getLogger(__name__)


class Waker(Protocol):
    """What :class:`bodycam.base.web.alerts.AlertHub` needs of a source of wake-ups."""

    @property
    def connected(self) -> bool:
        """True while wake-ups are delivered (the hub may then poll rarely)."""
        ...

    def start(self, on_wake: Callable[[], None]) -> None: ...

    def close(self) -> None: ...


class PgAlertWaker:
    """``LISTEN bodycam_alerts`` on a connection of its own, on a daemon thread; reconnects every ``retry_s``."""

    def __init__(self, url: str, *, retry_s: float = 2.0, connect_timeout_s: int = 2, check_s: float = 0.5,
                 probe_s: float = 5.0, probe_timeout_s: float = 3.0) -> None:
        self._url = url
        self.retry_s = retry_s
        self.connect_timeout_s = connect_timeout_s
        self.check_s = check_s  # how often the thread looks at the stop flag and the probe's clock
        self.probe_s = probe_s
        self.probe_timeout_s = probe_timeout_s
        self._token = f"{PROBE}{os.getpid()}:{id(self):x}"
        self._up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_wake: Callable[[], None] = lambda: None
        self.connections = 0  # how many times it (re)connected (for tests and status)

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def start(self, on_wake: Callable[[], None]) -> None:
        self._on_wake = on_wake
        self._thread = threading.Thread(target=self._run, name="alert-listen", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.check_s + self.connect_timeout_s + 5)

    def _run(self) -> None:
        import psycopg

        failed = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=self.connect_timeout_s,
                                     application_name="bodycam-base-alerts") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connections += 1
                    failed = False
                    self._listen(conn)
            except psycopg.Error as exc:
                if not failed:
                    _log.warning("alert notifications unavailable (polling instead): %s", exc)
                failed = True
            finally:
                self._set_up(False)
            self._stop.wait(self.retry_s)

    def _set_up(self, up: bool) -> None:
        if up == self._up.is_set():
            return
        if up:
            self._up.set()
            _log.info("alert notifications arrive")
        else:
            self._up.clear()
        self._on_wake()  # up: read what changed meanwhile; down: the hub returns to its short poll

    def _send_probe(self, conn: Any) -> None:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._token))

    def _listen(self, conn: Any) -> None:
        sent: float | None = None  # when the outstanding probe was sent
        due = time.monotonic()  # LISTEN alone proves nothing: probe at once
        warned = False
        while not self._stop.is_set():
            now = time.monotonic()
            if sent is None and now >= due:
                self._send_probe(conn)
                sent = now
            elif sent is not None and now - sent > self.probe_timeout_s:
                if self._up.is_set() or not warned:
                    warned = True
                    _log.warning("alert notifications stopped arriving (a transaction-mode pooler between base "
                                 "and PostgreSQL?): polling instead")
                self._set_up(False)
                sent, due = None, now + self.probe_s
            for n in conn.notifies(timeout=self.check_s):  # each as it arrives; the hub folds a burst into one read
                if n.payload == self._token:
                    sent, due = None, time.monotonic() + self.probe_s
                    self._set_up(True)
                elif not n.payload.startswith(PROBE):
                    self._on_wake()
