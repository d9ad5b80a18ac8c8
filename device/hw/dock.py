"""Dock sense: whether the camera sits in its dock, so it may offload footage to base.

Behind one small protocol, :class:`DockSense` (``docked() -> bool``, never blocks for long):

* :class:`GpioDock`: a dock-sense contact on a GPIO input (BCM pin, pull towards the undocked
  level), debounced by the firmware's own :class:`~bodycam.device.hw.inputs.Debouncer`; the
  simulator's ``SimPinFactory`` drives it in tests, as it drives the buttons;
* :class:`ReachableDock`: base's web app accepts a TCP connection on its port (the camera is on
  the dock's network);
* :class:`ScheduleDock`: inside a configured UTC window (``"HH:MM-HH:MM"``, may cross midnight),
  e.g. the hours the cameras are in their chargers;
* :class:`AlwaysDock`: always (bench, tests).
"""

from __future__ import annotations

import socket
from typing import Protocol

from bodycam.device.clock import Clock
from bodycam.device.errors import ConfigError
from bodycam.device.hw.gpio import PinFactory
from bodycam.device.hw.inputs import Debouncer

DAY_MIN = 24 * 60


class DockSense(Protocol):
    def docked(self) -> bool: ...


def parse_window(text: str, where: str) -> tuple[int, int]:
    """``"22:00-06:30"`` -> (start, end) in minutes of the UTC day."""
    try:
        a, b = text.split("-")
        out = []
        for part in (a, b):
            h, m = part.strip().split(":")
            hh, mm = int(h), int(m)
            if not (0 <= hh <= 23 and 0 <= mm <= 59):
                raise ValueError
            out.append(hh * 60 + mm)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a window \"HH:MM-HH:MM\" (UTC)") from None
    if out[0] == out[1]:
        raise ConfigError(f"{where}: {text!r} is an empty window")
    return out[0], out[1]


class AlwaysDock:
    def docked(self) -> bool:
        return True


class ScheduleDock:
    def __init__(self, windows: list[str], clock: Clock) -> None:
        self.windows = [parse_window(w, "offload.schedule") for w in windows]
        self.clock = clock

    def docked(self) -> bool:
        minute = (self.clock.wall_ns() // 60_000_000_000) % DAY_MIN
        return any((a <= minute < b) if a < b else (minute >= a or minute < b) for a, b in self.windows)


class ReachableDock:
    def __init__(self, host: str, port: int, timeout_s: float = 2.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s

    def docked(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout_s):
                return True
        except OSError:
            return False


class GpioDock:
    """Docked while the dock-sense pin is at its active level (settled for ``debounce_ms``)."""

    def __init__(self, factory: PinFactory, pin: int, clock: Clock, *, active_low: bool = True,
                 debounce_ms: float = 200.0) -> None:
        self._pin = factory.input_pin(pin, "up" if active_low else "down")
        self._active_high = not active_low
        self._clock = clock
        self._debouncer = Debouncer(self._active(), round(debounce_ms * 1e6))

    def _active(self) -> bool:
        return self._pin.read() == self._active_high

    def docked(self) -> bool:
        self._debouncer.update(self._active(), self._clock.monotonic_ns())
        return self._debouncer.level
