"""Simulated GPIO: pins that tests drive in (virtual) time, outputs that record history.

* :class:`SimPinFactory` implements the firmware's ``PinFactory``. An input pin's
  level is a function of the clock: ``press(pin, duration_s)`` schedules "low for
  80 ms", ``set_level`` schedules a change, ``bounce`` schedules contact chatter.
  Output pins record ``(t_ns, level)`` on every change (``history(pin)``).
* :class:`FakeRPiGPIO` is a stand-in for the ``RPi.GPIO`` module API over a SimPinFactory, to
  test ``RpiGpioFactory`` off a Pi, in both flavours and with their real error types:
  ``"RPi.GPIO"`` (``RuntimeError``/``ValueError``; on a Pi 5 every setup fails with "Cannot
  determine SOC peripheral base address") and ``"rpi-lgpio"`` (the same API over lgpio: a
  pin another process holds, or a gpiochip the user may not open, raise ``lgpio.error``, a
  plain ``Exception``; the module carries its ``lgpio`` as rpi-lgpio does).
* :class:`ScenarioInputs` plays a scenario (``[{"t_s": 3.0, "event": "record"}, ...]``)
  by pressing the simulated pins and returns events from ``poll()`` through the
  firmware's own debouncing ``GpioInputs``. A button press lasts 80 ms unless the event
  says ``"hold_s": 2.0``; ``{"event": "dismiss"}`` is the marker button held
  ``gpio.dismiss_hold_s`` + 0.5 s (the dismiss gesture). What a press means (manual
  marker or dismissal) is decided by ``GpioInputs`` from how long the pin was held.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from bodycam.device.clock import Clock
from bodycam.device.errors import ConfigError, HardwareError
from bodycam.device.hw.config import GpioConfig
from bodycam.device.hw.gpio import Pull
from bodycam.device.hw.inputs import GpioInputs, InputEvent, InputKind
from bodycam.device.safe_load import load_json, load_toml


class SimInputPin:
    """Level = the last scheduled change at or before the clock's time."""

    def __init__(self, clock: Clock, resting_high: bool, initial_high: bool | None = None) -> None:
        self._clock = clock
        self.resting_high = resting_high
        self._times: list[int] = [-(2**62)]
        self._levels: list[bool] = [resting_high if initial_high is None else initial_high]
        self._lock = threading.Lock()
        #: while set, ``read`` raises ``HardwareError`` with it, as the RPi.GPIO/lgpio adapter does
        self.read_error: str | None = None

    def schedule(self, t_ns: int, high: bool) -> None:
        with self._lock:
            i = bisect.bisect_right(self._times, t_ns)
            self._times.insert(i, t_ns)
            self._levels.insert(i, high)

    def read(self) -> bool:
        error = self.read_error
        if error is not None:
            raise HardwareError(error)
        now = self._clock.monotonic_ns()
        with self._lock:
            return self._levels[bisect.bisect_right(self._times, now) - 1]


class SimOutputPin:
    def __init__(self, clock: Clock, initial_high: bool) -> None:
        self._clock = clock
        self.level = initial_high
        self.history: list[tuple[int, bool]] = [(clock.monotonic_ns(), initial_high)]

    def write(self, high: bool) -> None:
        high = bool(high)
        if high != self.level:
            self.level = high
            self.history.append((self._clock.monotonic_ns(), high))


class SimPinFactory:
    """A PinFactory whose inputs tests drive and whose outputs tests read.

    An input rests at its pull level (pull-up: high) unless ``initial_levels`` says
    otherwise (e.g. a holster reed switch that is closed at start).
    """

    def __init__(self, clock: Clock, initial_levels: Mapping[int, bool] | None = None) -> None:
        self._clock = clock
        self._initial = dict(initial_levels or {})
        self.inputs: dict[int, SimInputPin] = {}
        self.outputs: dict[int, SimOutputPin] = {}
        self.closed = False

    def _check_free(self, pin: int) -> None:
        if self.closed:
            raise HardwareError("sim GPIO: factory closed")
        if pin in self.inputs or pin in self.outputs:
            raise HardwareError(f"sim GPIO{pin}: already in use")

    def input_pin(self, pin: int, pull: Pull) -> SimInputPin:
        self._check_free(pin)
        p = SimInputPin(self._clock, resting_high=pull == "up", initial_high=self._initial.get(pin))
        self.inputs[pin] = p
        return p

    def output_pin(self, pin: int, initial_high: bool = False) -> SimOutputPin:
        self._check_free(pin)
        p = SimOutputPin(self._clock, initial_high)
        self.outputs[pin] = p
        return p

    def close(self) -> None:
        self.closed = True

    # -- driving inputs ----------------------------------------------------------
    def _at(self, at_s: float | None) -> int:
        return self._clock.monotonic_ns() if at_s is None else round(at_s * 1e9)

    def set_level(self, pin: int, high: bool, at_s: float | None = None) -> None:
        self.inputs[pin].schedule(self._at(at_s), high)

    def press(self, pin: int, duration_s: float = 0.08, at_s: float | None = None) -> None:
        """Drive ``pin`` away from its resting level for ``duration_s`` (a button press)."""
        p = self.inputs[pin]
        t = self._at(at_s)
        p.schedule(t, not p.resting_high)
        p.schedule(t + round(duration_s * 1e9), p.resting_high)

    def bounce(self, pin: int, at_s: float, high: bool, chatter_ms: float = 1.0, count: int = 4) -> None:
        """Contact chatter: ``count`` short flips of ``chatter_ms`` before settling at ``high``."""
        t = round(at_s * 1e9)
        step = round(chatter_ms * 1e6)
        for k in range(count):
            self.inputs[pin].schedule(t + 2 * k * step, high)
            self.inputs[pin].schedule(t + (2 * k + 1) * step, not high)
        self.inputs[pin].schedule(t + 2 * count * step, high)

    def fail_reads(self, pin: int, error: str | None) -> None:
        """Make every read of ``pin`` raise ``HardwareError(error)`` until called with None."""
        self.inputs[pin].read_error = error

    # -- reading outputs ---------------------------------------------------------
    def history(self, pin: int) -> list[tuple[int, bool]]:
        return list(self.outputs[pin].history)

    def on_intervals(self, pin: int, active_high: bool = True) -> list[tuple[int, int]]:
        """Closed intervals ``(start_ns, end_ns)`` the output was active (end = -1: still on)."""
        out: list[tuple[int, int]] = []
        start: int | None = None
        for t, level in self.outputs[pin].history:
            if level == active_high and start is None:
                start = t
            elif level != active_high and start is not None:
                out.append((start, t))
                start = None
        if start is not None:
            out.append((start, -1))
        return out


class _LgpioError(Exception):
    """lgpio's ``error`` (lgpio.py: ``class error(Exception)`` carrying the error text)."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return repr(self.value)


class FakeLgpio:
    """The part of the ``lgpio`` module the RPi.GPIO shim exposes: its ``error`` type."""

    error = _LgpioError


class FakeRPiGPIO:
    """The subset of the ``RPi.GPIO`` module API the firmware uses, over simulated pins.

    ``flavour``: ``"RPi.GPIO"`` or ``"rpi-lgpio"``; ``busy``: pins another process holds (only
    lgpio notices: RPi.GPIO maps the registers and claims nothing);
    ``pi5``: the board is a Pi 5 (RPi.GPIO cannot drive it); ``chip_access``: whether the
    user may open ``/dev/gpiochip0`` (rpi-lgpio opens it in ``setmode``).
    """

    BCM = 11
    BOARD = 10
    IN = 1
    OUT = 0
    HIGH = 1
    LOW = 0
    PUD_OFF = 20
    PUD_DOWN = 21
    PUD_UP = 22

    def __init__(self, pins: SimPinFactory, flavour: str = "RPi.GPIO", *, busy: Sequence[int] = (),
                 pi5: bool = False, chip_access: bool = True) -> None:
        if flavour not in ("RPi.GPIO", "rpi-lgpio"):
            raise ValueError("flavour is 'RPi.GPIO' or 'rpi-lgpio'")
        self.flavour = flavour
        if flavour == "rpi-lgpio":
            self.lgpio = FakeLgpio()
        self.busy = frozenset(busy)
        self.pi5 = pi5
        self.chip_access = chip_access
        self.pins = pins
        self.mode: int | None = None
        self.warnings = True
        self._out: dict[int, SimOutputPin] = {}
        self._in: dict[int, SimInputPin] = {}

    def setwarnings(self, flag: bool) -> None:
        self.warnings = bool(flag)

    def setmode(self, mode: int) -> None:
        if self.flavour == "rpi-lgpio" and not self.chip_access:
            raise _LgpioError("can not open gpiochip")
        if mode not in (self.BCM, self.BOARD):
            raise ValueError("An invalid mode was passed to setmode()")
        if self.mode is not None and self.mode != mode:
            raise ValueError("A different mode has already been set!")
        self.mode = mode

    def _channel(self, channel: int) -> int:
        if self.mode is None:
            raise RuntimeError(
                "Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or GPIO.setmode(GPIO.BCM)"
            )
        if not 0 <= channel <= 27:
            raise ValueError("The channel sent is invalid on a Raspberry Pi")
        return channel

    def setup(self, channel: int, direction: int, pull_up_down: int = PUD_OFF, initial: int = -1) -> None:
        ch = self._channel(channel)
        if self.flavour == "RPi.GPIO" and self.pi5:
            raise RuntimeError("Cannot determine SOC peripheral base address")
        if ch in self.busy and self.flavour == "rpi-lgpio":  # RPi.GPIO (mmap of gpiomem) claims nothing
            raise _LgpioError("GPIO busy")
        if direction == self.OUT:
            if pull_up_down != self.PUD_OFF:
                raise ValueError("pull_up_down parameter is not valid for outputs")
            self._out[ch] = self.pins.output_pin(ch, initial_high=initial == self.HIGH)
        elif direction == self.IN:
            if initial != -1:
                raise ValueError("initial parameter is not valid for inputs")
            if pull_up_down not in (self.PUD_OFF, self.PUD_DOWN, self.PUD_UP):
                raise ValueError("Invalid value for pull_up_down - should be either PUD_OFF, PUD_UP or PUD_DOWN")
            pull: Pull = {self.PUD_UP: "up", self.PUD_DOWN: "down"}.get(pull_up_down, "off")  # type: ignore[assignment]
            self._in[ch] = self.pins.input_pin(ch, pull)
        else:
            raise ValueError("An invalid direction was passed to setup()")

    def input(self, channel: int) -> int:
        ch = self._channel(channel)
        if ch in self._in:
            return self.HIGH if self._in[ch].read() else self.LOW
        if ch in self._out:
            return self.HIGH if self._out[ch].level else self.LOW
        raise RuntimeError("You must setup() the GPIO channel first")

    def output(self, channel: int, value: int | bool) -> None:
        ch = self._channel(channel)
        if ch not in self._out:
            raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
        self._out[ch].write(bool(value))

    def cleanup(self, channel: int | Sequence[int] | None = None) -> None:
        chans = list(self._in) + list(self._out) if channel is None else (
            [channel] if isinstance(channel, int) else list(channel)
        )
        for ch in chans:
            self._in.pop(ch, None)
            self._out.pop(ch, None)
            self.pins.inputs.pop(ch, None)
            self.pins.outputs.pop(ch, None)


# -- scenarios --------------------------------------------------------------------
@dataclass(frozen=True)
class ScenarioEvent:
    t_s: float
    event: InputKind
    hold_s: float | None = None  # how long a button is held (None: a short press, or the dismiss hold)


#: events that are button presses (``hold_s`` applies); ``dismiss`` is a long press of the marker button
_PRESSES = ("record", "marker", "dismiss")


#: what a scenario may script: the inputs' events, not the fault report the firmware derives from them
_KINDS: tuple[str, ...] = tuple(k for k in get_args(InputKind) if k != "holster_flapping")


#: scenario times are seconds into the clip: a week bounds any clip (and stays far inside int64 ns)
MAX_T_S = 7 * 86400.0


def parse_scenario(data: Any, where: str = "scenario") -> list[ScenarioEvent]:
    """Validate ``[{"t_s": 3.0, "event": "record"}, ...]`` (or ``{"events": [...]}``)."""
    if isinstance(data, Mapping):
        extra = set(data) - {"events"}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {sorted(extra)} (expected 'events')")
        data = data.get("events", [])
        where = f"{where}.events"
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list of events, got {type(data).__name__}")
    events: list[ScenarioEvent] = []
    for i, item in enumerate(data):
        w = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{w}: expected a table like {{t_s = 3.0, event = \"record\"}}")
        unknown = set(item) - {"t_s", "event", "hold_s"}
        if unknown:
            raise ConfigError(f"{w}: unknown key(s) {sorted(unknown)} (known: event, hold_s, t_s)")
        if "t_s" not in item or "event" not in item:
            raise ConfigError(f"{w}: needs both 't_s' and 'event'")
        t = item["t_s"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or not 0 <= t <= MAX_T_S:
            raise ConfigError(
                f"{w}.t_s: must be a finite number >= 0 and <= {MAX_T_S:.0f} (seconds into the clip), got {t!r}"
            )
        kind = item["event"]
        if kind not in _KINDS:
            raise ConfigError(f"{w}.event: {kind!r} is not one of {', '.join(_KINDS)}")
        hold = item.get("hold_s")
        if hold is not None:
            if kind not in _PRESSES:
                raise ConfigError(f"{w}.hold_s: only a button press ({', '.join(_PRESSES)}) is held")
            if isinstance(hold, bool) or not isinstance(hold, int | float) or not math.isfinite(hold) or not (
                    0.05 <= hold <= 60):
                raise ConfigError(f"{w}.hold_s: must be a number of seconds in 0.05..60, got {hold!r}")
            hold = float(hold)
        events.append(ScenarioEvent(float(t), kind, hold))
    events.sort(key=lambda e: e.t_s)
    drawn = False
    for e in events:
        if e.event == "holster_draw" and drawn:
            raise ConfigError(f"{where}: holster_draw at {e.t_s} s while already drawn")
        if e.event == "holster_return" and not drawn:
            raise ConfigError(f"{where}: holster_return at {e.t_s} s while holstered")
        if e.event.startswith("holster"):
            drawn = e.event == "holster_draw"
    return events


def load_scenario(path: str | Path) -> list[ScenarioEvent]:
    """Read a scenario from a .json or .toml file (TOML: ``[[events]]`` tables)."""
    p = Path(path)
    data: Any = load_toml(p, "scenario") if p.suffix == ".toml" else load_json(p, "scenario")
    return parse_scenario(data, str(p))


class ScenarioInputs:
    """Inputs that replay a scenario through simulated pins and the real GpioInputs."""

    def __init__(
        self,
        events: Sequence[ScenarioEvent],
        clock: Clock,
        config: GpioConfig | None = None,
        press_ms: float = 80.0,
    ) -> None:
        self.config = config or GpioConfig()
        drawn_high = self.config.holster_holstered_level == "low"
        initial = {} if self.config.holster_pin is None else {self.config.holster_pin: not drawn_high}
        self.pins = SimPinFactory(clock, initial)  # the scenario starts holstered
        self._inputs = GpioInputs(self.pins, self.config, clock)
        press_s = press_ms / 1000.0
        settle_s = 2 * self.config.debounce_ms / 1000.0
        last: dict[int, tuple[float, float]] = {}  # pin -> (previous event's time, its duration)
        pin_of = {
            "record": self.config.record_pin,
            "marker": self.config.marker_pin,
            "dismiss": self.config.marker_pin,
            "holster_draw": self.config.holster_pin,
            "holster_return": self.config.holster_pin,
        }
        for e in events:
            pin = pin_of[e.event]
            if pin is None:
                raise ConfigError(f"scenario: event {e.event!r} at {e.t_s} s but its pin is not configured")
            held = e.hold_s if e.hold_s is not None else (
                self.config.dismiss_hold_s + 0.5 if e.event == "dismiss" else press_s)
            if pin in last:
                t_prev, d_prev = last[pin]
                gap_s = d_prev + settle_s
                if e.t_s - t_prev < gap_s:
                    raise ConfigError(
                        f"scenario: {e.event!r} at {e.t_s} s is within {gap_s * 1000:.0f} ms of the previous "
                        f"event on the same input"
                    )
            if e.event in _PRESSES:
                last[pin] = (e.t_s, held)
                self.pins.press(pin, held, at_s=e.t_s)
            else:
                last[pin] = (e.t_s, press_s)
                self.pins.set_level(pin, drawn_high == (e.event == "holster_draw"), at_s=e.t_s)

    def poll(self) -> list[InputEvent]:
        return self._inputs.poll()

    @property
    def holster_drawn(self) -> bool | None:
        return self._inputs.holster_drawn
