"""Digital pins behind a small protocol, with an RPi.GPIO-backed factory.

:class:`PinFactory` hands out :class:`InputPin` / :class:`OutputPin` objects by BCM
number; the buttons, holster sensor, LED and haptic motor are built on it. The real
factory, :class:`RpiGpioFactory`, wraps the ``RPi.GPIO`` API. The ``pi`` extra installs
``rpi-lgpio``, which provides that module over ``/dev/gpiochip*`` on every Pi (4, 5, Zero 2,
CM4/CM5), so one install works on both generations (the original RPi.GPIO does not work on
a Pi 5). rpi-lgpio raises ``lgpio.error`` (a plain ``Exception``) besides RPi.GPIO's
``RuntimeError``/``ValueError``: every one becomes a :class:`HardwareError` naming the pin
and the likely fix. It is imported only when the factory is constructed, never at import
time; the simulator's factory and a fake of both libraries live in ``bodycam.hw_sim.gpio_sim``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal, Protocol

from bodycam.device.errors import DependencyError, HardwareError

log = logging.getLogger(__name__)

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


def gpio_errors(gpio: Any) -> tuple[type[BaseException], ...]:
    """What the RPi.GPIO-API module raises: RuntimeError/ValueError, and ``lgpio.error`` under rpi-lgpio."""
    errors: tuple[type[BaseException], ...] = (RuntimeError, ValueError)
    lgpio_error = getattr(getattr(gpio, "lgpio", None), "error", None)
    if isinstance(lgpio_error, type) and issubclass(lgpio_error, Exception):
        errors += (lgpio_error,)
    return errors


def _hint(msg: str) -> str:
    low = msg.lower()
    if "soc peripheral base address" in low:
        return " (Raspberry Pi 5: RPi.GPIO does not work there; install rpi-lgpio, the 'pi' extra)"
    if "busy" in low:
        return " (another process holds this pin: stop it, or pick another pin in [gpio])"
    if "access" in low or "permission" in low or "gpiochip" in low:
        return " (the service user needs group 'gpio' and the unit DeviceAllow=char-gpiochip)"
    return ""


class _RpiInput:
    def __init__(self, gpio: Any, pin: int, errors: tuple[type[BaseException], ...]) -> None:
        self._gpio = gpio
        self._pin = pin
        self._errors = errors

    def read(self) -> bool:
        try:
            return bool(self._gpio.input(self._pin))
        except self._errors as exc:
            raise HardwareError(f"GPIO{self._pin}: read failed: {exc}") from exc


class _RpiOutput:
    def __init__(self, gpio: Any, pin: int, errors: tuple[type[BaseException], ...]) -> None:
        self._gpio = gpio
        self._pin = pin
        self._errors = errors

    def write(self, high: bool) -> None:
        try:
            self._gpio.output(self._pin, self._gpio.HIGH if high else self._gpio.LOW)
        except self._errors as exc:
            raise HardwareError(f"GPIO{self._pin}: write failed: {exc}") from exc


def _import_rpi_gpio() -> Any:
    try:
        import RPi.GPIO as gpio
    except ImportError as exc:
        raise DependencyError("RPi.GPIO's API is not installed: install the 'pi' extra (rpi-lgpio)") from exc
    except Exception as exc:
        raise HardwareError(f"RPi.GPIO cannot run here: {exc}{_hint(str(exc))}") from exc
    return gpio


class RpiGpioFactory:
    """Pins through ``RPi.GPIO`` (BCM numbering). ``gpio_module`` replaces the import (tests)."""

    def __init__(self, gpio_module: Any | None = None) -> None:
        self._gpio = gpio_module if gpio_module is not None else _import_rpi_gpio()
        self._errors = gpio_errors(self._gpio)
        self._pins: list[int] = []
        self._lock = threading.Lock()
        try:
            self._gpio.setwarnings(False)
            self._gpio.setmode(self._gpio.BCM)
        except self._errors as exc:
            raise HardwareError(f"RPi.GPIO: cannot select BCM numbering: {exc}{_hint(str(exc))}") from exc

    def _setup(self, pin: int, *args: Any, **kwargs: Any) -> None:
        try:
            self._gpio.setup(pin, *args, **kwargs)
        except self._errors as exc:
            raise HardwareError(f"GPIO{pin}: setup failed: {exc}{_hint(str(exc))}") from exc
        with self._lock:
            self._pins.append(pin)

    def input_pin(self, pin: int, pull: Pull) -> InputPin:
        pud = {"up": self._gpio.PUD_UP, "down": self._gpio.PUD_DOWN, "off": self._gpio.PUD_OFF}[pull]
        self._setup(pin, self._gpio.IN, pull_up_down=pud)
        return _RpiInput(self._gpio, pin, self._errors)

    def output_pin(self, pin: int, initial_high: bool = False) -> OutputPin:
        self._setup(pin, self._gpio.OUT, initial=self._gpio.HIGH if initial_high else self._gpio.LOW)
        return _RpiOutput(self._gpio, pin, self._errors)

    @property
    def pins(self) -> list[int]:
        """BCM numbers this factory has set up and not yet released."""
        with self._lock:
            return list(self._pins)

    def close(self) -> None:
        """Release our pins (outputs go back to inputs); safe to call twice; errors are logged, not raised."""
        with self._lock:
            pins, self._pins = self._pins, []
        if pins:
            try:
                self._gpio.cleanup(pins)
            except self._errors as exc:
                log.warning("GPIO: releasing pins %s failed: %s", pins, exc)
