"""Status LED patterns and haptic pulses, driven by the injected clock.

A pattern is a tuple of millisecond durations alternating on/off, starting with
on; an empty tuple is "off", a single value "solid on". LED patterns repeat, phased
from the moment the state was set; haptic pulses play once (a new pulse replaces a
running one). ``tick()`` (once per frame) writes a pin only when its level changes.
"""

from __future__ import annotations

from typing import Literal, Protocol

from bodycam.device.clock import Clock
from bodycam.device.hw.config import GpioConfig
from bodycam.device.hw.gpio import OutputPin, PinFactory

LedState = Literal["idle", "buffering", "recording", "alarm"]
PulsePattern = Literal["auto_start", "dismissed", "refused", "marker"]

LED_PATTERNS: dict[LedState, tuple[int, ...]] = {
    "idle": (40, 4960),  # heartbeat blip every 5 s: powered, not buffering
    "buffering": (200, 1800),  # slow blink: pre-event buffer running
    "recording": (1,),  # solid
    "alarm": (100, 100),  # fast blink (storage full, hardware fault)
}
HAPTIC_PATTERNS: dict[PulsePattern, tuple[int, ...]] = {
    "auto_start": (400,),  # one long buzz: recording started by itself
    "dismissed": (80, 120, 80),  # two short buzzes: trigger dismissed, recording stopped
    # three long buzzes: dismissal refused (a shot was detected, or nothing to dismiss); recording goes on
    "refused": (300, 150, 300, 150, 300),
    "marker": (60,),  # one tick: manual marker taken
}


class Indicators(Protocol):
    def set_state(self, state: LedState) -> None: ...

    def pulse(self, pattern: PulsePattern) -> None: ...

    def tick(self) -> None:
        """Advance LED blinking and haptic pulses to the clock's current time."""
        ...


def level_at(pattern: tuple[int, ...], elapsed_ns: int, repeat: bool) -> bool:
    """Whether ``pattern`` is on at ``elapsed_ns`` after it started."""
    if not pattern:
        return False
    if len(pattern) == 1 and repeat:
        return True
    period_ns = sum(pattern) * 1_000_000
    t = elapsed_ns % period_ns if repeat else elapsed_ns
    for i, ms in enumerate(pattern):
        t -= ms * 1_000_000
        if t < 0:
            return i % 2 == 0
    return False


class _Driver:
    def __init__(self, pin: OutputPin | None, active_high: bool) -> None:
        self.pin = pin
        self.active_high = active_high
        self.on: bool | None = None

    def set(self, on: bool) -> None:
        if self.pin is not None and on != self.on:
            self.pin.write(on == self.active_high)
            self.on = on


class GpioIndicators:
    """The status LED and haptic motor on GPIO outputs (pins ``None`` are not fitted)."""

    def __init__(self, factory: PinFactory, config: GpioConfig, clock: Clock) -> None:
        self._clock = clock

        def out(pin: int | None, active_high: bool) -> _Driver:
            if pin is None:
                return _Driver(None, active_high)
            return _Driver(factory.output_pin(pin, initial_high=not active_high), active_high)

        self._led = out(config.led_pin, config.led_active_high)
        self._haptic = out(config.haptic_pin, config.haptic_active_high)
        self.state: LedState = "idle"
        self._state_since = clock.monotonic_ns()
        self._pulse: tuple[int, ...] = ()
        self._pulse_since = 0
        self.tick()

    def set_state(self, state: LedState) -> None:
        if state not in LED_PATTERNS:
            raise ValueError(f"unknown LED state {state!r}")
        if state != self.state:
            self.state = state
            self._state_since = self._clock.monotonic_ns()
        self.tick()

    def pulse(self, pattern: PulsePattern) -> None:
        self._pulse = HAPTIC_PATTERNS[pattern]
        self._pulse_since = self._clock.monotonic_ns()
        self.tick()

    def tick(self) -> None:
        now = self._clock.monotonic_ns()
        self._led.set(level_at(LED_PATTERNS[self.state], now - self._state_since, repeat=True))
        self._haptic.set(level_at(self._pulse, now - self._pulse_since, repeat=False))

    def close(self) -> None:
        self._led.set(False)
        self._haptic.set(False)
