"""Digital pins behind a small protocol, with an RPi.GPIO-backed factory.

:class:`PinFactory` hands out :class:`InputPin` / :class:`OutputPin` objects by BCM
number; the buttons, holster sensor, LED and haptic motor are built on it. The real
factory, :class:`RpiGpioFactory`, wraps ``RPi.GPIO`` (on a Pi 5 install
``rpi-lgpio``, which provides the same module). It is imported only when the
factory is constructed, never at import time; the simulator's factory lives in
``bodycam.hw_sim.gpio_sim``.
"""

from __future__ import annotations

import threading
from typing import Any, Literal, Protocol

from bodycam.device.errors import DependencyError, HardwareError

Pull = Literal["up", "down", "off"]


class InputPin(Protocol):
    def read(self) -> bool:
        """Current level: True = high."""
        ...


class OutputPin(Protocol):
    def write(self, high: bool) -> None: ...


class PinFactory(Protocol):
    def input_pin(self, pin: int, pull: Pull) -> InputPin: ...

    def output_pin(self, pin: int, initial_high: bool = False) -> OutputPin: ...

    def close(self) -> None:
        """Release every pin this factory set up (outputs go back to inputs)."""
        ...


class _RpiInput:
    def __init__(self, gpio: Any, pin: int) -> None:
        self._gpio = gpio
        self._pin = pin

    def read(self) -> bool:
        return bool(self._gpio.input(self._pin))


class _RpiOutput:
    def __init__(self, gpio: Any, pin: int) -> None:
        self._gpio = gpio
        self._pin = pin

    def write(self, high: bool) -> None:
        self._gpio.output(self._pin, self._gpio.HIGH if high else self._gpio.LOW)


def _import_rpi_gpio() -> Any:
    try:
        import RPi.GPIO as gpio
    except ImportError as exc:
        raise DependencyError(
            "RPi.GPIO is not installed: install the 'pi' extra (Pi 5: pip install rpi-lgpio instead)"
        ) from exc
    except RuntimeError as exc:  # "This module can only be run on a Raspberry Pi!"
        raise HardwareError(f"RPi.GPIO cannot run here: {exc}") from exc
    return gpio


class RpiGpioFactory:
    """Pins through ``RPi.GPIO`` (BCM numbering). ``gpio_module`` replaces the import (tests)."""

    def __init__(self, gpio_module: Any | None = None) -> None:
        self._gpio = gpio_module if gpio_module is not None else _import_rpi_gpio()
        self._pins: list[int] = []
        self._lock = threading.Lock()
        try:
            self._gpio.setwarnings(False)
            self._gpio.setmode(self._gpio.BCM)
        except (RuntimeError, ValueError) as exc:
            raise HardwareError(f"RPi.GPIO: cannot select BCM numbering: {exc}") from exc

    def _setup(self, pin: int, *args: Any, **kwargs: Any) -> None:
        try:
            self._gpio.setup(pin, *args, **kwargs)
        except (RuntimeError, ValueError) as exc:
            msg = str(exc)
            hint = ""
            if "SOC peripheral base address" in msg:
                hint = " (Raspberry Pi 5: replace RPi.GPIO with rpi-lgpio)"
            elif "access" in msg.lower() or "permission" in msg.lower():
                hint = " (add the service user to group 'gpio')"
            raise HardwareError(f"GPIO{pin}: setup failed: {msg}{hint}") from exc
        with self._lock:
            self._pins.append(pin)

    def input_pin(self, pin: int, pull: Pull) -> InputPin:
        pud = {"up": self._gpio.PUD_UP, "down": self._gpio.PUD_DOWN, "off": self._gpio.PUD_OFF}[pull]
        self._setup(pin, self._gpio.IN, pull_up_down=pud)
        return _RpiInput(self._gpio, pin)

    def output_pin(self, pin: int, initial_high: bool = False) -> OutputPin:
        self._setup(pin, self._gpio.OUT, initial=self._gpio.HIGH if initial_high else self._gpio.LOW)
        return _RpiOutput(self._gpio, pin)

    def close(self) -> None:
        with self._lock:
            pins, self._pins = self._pins, []
        if pins:
            self._gpio.cleanup(pins)
