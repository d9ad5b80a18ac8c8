"""Wake the alert hub when the alerts change: PostgreSQL ``LISTEN``/``NOTIFY``.

A statement-level trigger on ``web_alerts`` (``bodycam.base.web.db``) calls
``pg_notify('bodycam_alerts', '')`` whenever alert rows are inserted or updated: a gunshot marker
stored by any ``listen`` instance, a fleet alert, an acknowledgement made on any ``serve`` instance.
PostgreSQL delivers the notification when that transaction commits (never for one rolled back) and
folds identical notifications of one transaction into one, so a batch of markers is one wake-up.

:class:`PgAlertWaker` keeps its own connection (``LISTEN`` needs a session of its own; the store's
connection is shared by the web requests) on a thread and calls ``on_wake`` for every notification.
Notifications are only a hint: the hub still compares the whole set of open alerts on each wake-up,
so a notification lost while the connection was down costs nothing but time. On every (re)connection
``on_wake`` is called too (whatever changed while it was away is read at once), and while the
connection is down :attr:`connected` is false and the hub falls back to its short poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

CHANNEL = "bodycam_alerts"

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

    def __init__(self, url: str, *, retry_s: float = 2.0, connect_timeout_s: int = 2, check_s: float = 0.5) -> None:
        self._url = url
        self.retry_s = retry_s
        self.connect_timeout_s = connect_timeout_s
        self.check_s = check_s  # how often the thread looks at the stop flag
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
                    self._up.set()
                    if failed:
                        _log.warning("alert notifications back")
                    failed = False
                    self._on_wake()  # read what changed while not listening
                    self._listen(conn)
            except psycopg.Error as exc:
                if not failed:
                    _log.warning("alert notifications unavailable (polling instead): %s", exc)
                failed = True
            finally:
                if self._up.is_set():
                    self._up.clear()
                    self._on_wake()  # the hub goes back to its short poll at once
            self._stop.wait(self.retry_s)

    def _listen(self, conn: Any) -> None:
        while not self._stop.is_set():
            for _ in conn.notifies(timeout=self.check_s):  # each as it arrives; the hub folds a burst into one poll
                self._on_wake()
