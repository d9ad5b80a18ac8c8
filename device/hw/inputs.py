"""Buttons and holster sensor: debounced input events timed by the injected clock.

:class:`GpioInputs` samples the record button, the marker/dismiss button and the
holster sensor over a :class:`PinFactory`. A level change counts once it has been
seen continuously for ``debounce_ms``; the event is timed at the first sample of the
new level. Buttons emit on press; the holster emits ``holster_draw`` /
``holster_return`` on each settled change (its state at start-up emits nothing; see
``holster_drawn``). Whether a marker press is a manual marker or a dismissal is the
state machine's decision, not this module's.

Sampling happens in ``poll()`` (once per frame). Presses shorter than two poll
intervals can be missed, so on hardware call :meth:`GpioInputs.start_sampler` to
sample on a small thread as well (``poll()`` then only drains the queue).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal, Protocol

from bodycam.device.clock import Clock
from bodycam.device.hw.config import GpioConfig
from bodycam.device.hw.gpio import InputPin, PinFactory, Pull

InputKind = Literal["record", "marker", "holster_draw", "holster_return"]


@dataclass(frozen=True)
class InputEvent:
    kind: InputKind
    t_mono_ns: int


class Inputs(Protocol):
    def poll(self) -> list[InputEvent]:
        """Events since the last call, oldest first. Never blocks."""
        ...


class Debouncer:
    """Settles a sampled level: a change counts after ``debounce_ns`` without reverting."""

    def __init__(self, initial: bool, debounce_ns: int) -> None:
        self.level = initial
        self._debounce_ns = debounce_ns
        self._candidate: bool | None = None
        self._since_ns = 0

    def update(self, level: bool, now_ns: int) -> int | None:
        """Feed one sample; returns the start time of a newly settled level, else None."""
        if level == self.level:
            self._candidate = None
            return None
        if self._candidate != level:
            self._candidate = level
            self._since_ns = now_ns
        if now_ns - self._since_ns >= self._debounce_ns:
            self.level = level
            self._candidate = None
            return self._since_ns
        return None


class _Channel:
    def __init__(self, pin: InputPin, active_high: bool, debounce_ns: int, kinds: tuple[InputKind | None, ...]):
        self.pin = pin
        self.active_high = active_high
        self.debouncer = Debouncer(self.active(), debounce_ns)
        self.on_active, self.on_inactive = kinds

    def active(self) -> bool:
        return self.pin.read() == self.active_high


class GpioInputs:
    """Debounced record / marker / holster inputs (pins ``None`` in config are skipped)."""

    def __init__(self, factory: PinFactory, config: GpioConfig, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: list[InputEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        debounce_ns = round(config.debounce_ms * 1e6)
        pull: Pull = "up" if config.buttons_active_low else "down"
        self._channels: list[_Channel] = []
        self._holster: _Channel | None = None
        buttons: tuple[tuple[int | None, InputKind], ...] = (
            (config.record_pin, "record"),
            (config.marker_pin, "marker"),
        )
        for pin, kind in buttons:
            if pin is not None:
                ch = _Channel(factory.input_pin(pin, pull), not config.buttons_active_low, debounce_ns, (kind, None))
                self._channels.append(ch)
        if config.holster_pin is not None:
            # "active" = drawn = the level opposite to the holstered level.
            drawn_high = config.holster_holstered_level == "low"
            self._holster = _Channel(
                factory.input_pin(config.holster_pin, "up" if drawn_high else "down"),
                drawn_high,
                debounce_ns,
                ("holster_draw", "holster_return"),
            )
            self._channels.append(self._holster)

    @property
    def holster_drawn(self) -> bool | None:
        """Settled holster state (None without a holster sensor)."""
        with self._lock:
            return None if self._holster is None else self._holster.debouncer.level

    def sample(self) -> None:
        """Read every pin once and queue settled changes."""
        with self._lock:
            now = self._clock.monotonic_ns()
            for ch in self._channels:
                active = ch.active()
                started = ch.debouncer.update(active, now)
                if started is None:
                    continue
                kind = ch.on_active if active else ch.on_inactive
                if kind is not None:
                    self._queue.append(InputEvent(kind, started))
            self._queue.sort(key=lambda e: e.t_mono_ns)

    def poll(self) -> list[InputEvent]:
        if self._thread is None:
            self.sample()
        with self._lock:
            events, self._queue = self._queue, []
        return events

    def start_sampler(self, period_s: float = 0.005) -> None:
        """Sample on a background thread every ``period_s`` (real hardware)."""
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(period_s):
                self.sample()

        self._thread = threading.Thread(target=run, name="gpio-inputs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
