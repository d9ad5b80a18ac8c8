"""The systemd watchdog, fed only by a loop that is making progress.

The main loop calls :meth:`Watchdog.kick` once per frame. ``kick()`` sends
``WATCHDOG=1`` when half of ``WatchdogSec`` (``$WATCHDOG_USEC``) has passed since the
last ping, measured on the injected clock. There is deliberately no background
thread: when the loop stalls (camera hang, deadlock, stuck inference) nobody kicks,
the pings stop, and systemd kills and restarts the service.

``$WATCHDOG_PID``, when set, must be this process (systemd sets it for the main PID);
otherwise the watchdog stays disabled so a child process never feeds it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from bodycam.device.clock import Clock
from bodycam.device.hw.sdnotify import Notifier


class Watchdog:
    def __init__(
        self,
        clock: Clock,
        notifier: Notifier | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._clock = clock
        self.notifier = notifier if notifier is not None else Notifier(env)
        self.interval_ns: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.interval_ns = int(usec) * 1000 // 2
        self._last_ping_ns: int | None = None
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self.interval_ns is not None and self.notifier.enabled

    def ready(self, status: str | None = None) -> None:
        """Start-up finished: READY=1 (+ STATUS); also the first watchdog ping."""
        self.notifier.ready(status)
        self.ping()

    def status(self, text: str) -> None:
        self.notifier.status(text)

    def stopping(self, status: str | None = None) -> None:
        self.notifier.stopping(status)

    def ping(self) -> None:
        """Ping now (e.g. during a long start-up step that is known to progress)."""
        if self.enabled and self.notifier.watchdog():
            self.pings += 1
        self._last_ping_ns = self._clock.monotonic_ns()

    def kick(self) -> None:
        """Called once per loop iteration; pings at most every half interval."""
        if self.interval_ns is None:
            return
        now = self._clock.monotonic_ns()
        if self._last_ping_ns is None or now - self._last_ping_ns >= self.interval_ns:
            self.ping()

    def close(self) -> None:
        self.notifier.close()
