"""The clock is hardware too: injected everywhere, never read from a global.

`Clock` gives two times: ``monotonic_ns`` (the device's sensor/monotonic
timeline, on which frame timestamps and marker ``t_mono_ns`` live) and
``wall_ns`` (UTC wall time in nanoseconds since the epoch). The firmware uses
:class:`SystemClock`; the simulator and tests use :class:`VirtualClock`, which
only moves when told, so runs are deterministic and as fast as the CPU allows.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def monotonic_ns(self) -> int:
        """Monotonic time in nanoseconds (the sensor timeline)."""
        ...

    def wall_ns(self) -> int:
        """UTC wall-clock time in nanoseconds since the Unix epoch."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (virtual clocks advance instead of waiting)."""
        ...


class SystemClock:
    """The real clocks of the machine."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def wall_ns(self) -> int:
        return time.time_ns()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock:
    """A clock that moves only when advanced: deterministic simulated time.

    ``wall_ns`` is ``wall_epoch_ns + monotonic_ns``: the simulator sets the
    epoch to the clip's creation time (or a fixed documented epoch) so a
    marker's wall time is reproducible.
    """

    def __init__(self, start_ns: int = 0, wall_epoch_ns: int = 0) -> None:
        self._now = int(start_ns)
        self._wall_epoch = int(wall_epoch_ns)
        self._lock = threading.Lock()

    def monotonic_ns(self) -> int:
        with self._lock:
            return self._now

    def wall_ns(self) -> int:
        with self._lock:
            return self._wall_epoch + self._now

    def sleep(self, seconds: float) -> None:
        self.advance_ns(int(seconds * 1e9))

    def advance_ns(self, delta_ns: int) -> None:
        if delta_ns < 0:
            raise ValueError("a virtual clock cannot go backwards")
        with self._lock:
            self._now += int(delta_ns)

    def set_ns(self, now_ns: int) -> None:
        """Move to ``now_ns`` (never backwards: a later frame cannot be earlier)."""
        with self._lock:
            if now_ns > self._now:
                self._now = int(now_ns)


def mono_to_wall(clock: Clock, t_ns: int) -> int:
    """Wall time (ns since the epoch) of sensor/monotonic time ``t_ns``, by the clock's current offset."""
    return t_ns + (clock.wall_ns() - clock.monotonic_ns())


def rfc3339_ms(wall_ns: int) -> str:
    """UTC RFC 3339 time with milliseconds, e.g. ``2026-11-25T12:00:00.123Z``."""
    dt = _dt.datetime.fromtimestamp(wall_ns // 1_000_000_000, tz=_dt.UTC)
    ms = (wall_ns // 1_000_000) % 1000
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 UTC time into nanoseconds since the epoch."""
    value = text.strip()
    if value.endswith("Z") or value.endswith("z"):
        value = value[:-1] + "+00:00"
    dt = _dt.datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
