"""Buttons and holster sensor: debounced input events timed by the injected clock.

:class:`GpioInputs` samples the record button, the marker/dismiss button and the
holster sensor over a :class:`PinFactory`. A level change counts once it has been
seen continuously for ``debounce_ms``; the event is timed at the first sample of the
new level. The record button emits ``record`` on press; the holster emits ``holster_draw`` /
``holster_return`` on each settled change (its state at start-up emits nothing; see
``holster_drawn``).

The marker button has two gestures, told apart here by how long it is held:

* a short press (released before ``gpio.dismiss_hold_s``) emits ``marker`` at release,
  timed at the press: always a manual marker, never anything else;
* a long press emits ``dismiss`` the moment it has been held ``dismiss_hold_s``
  (timed then; the haptic answers while the finger is still on the button) and nothing
  at release. Whether a dismissal is allowed is the state machine's decision.

A holster sensor that flaps (a loose magnet, a broken reed switch) would make a marker of every
change. Changes are passed on while there are at most :data:`HOLSTER_FLAP_LIMIT` of them in
:data:`HOLSTER_FLAP_WINDOW_S`; beyond that the sensor is *flapping*: one ``holster_flapping`` event
(at most one a window), :attr:`GpioInputs.alarm` says so, and its changes are held back until it has
kept one level for :data:`HOLSTER_SETTLE_S`. The level it settles at is then passed on if it
differs from the last one passed on (timed when it was reached), so the state machine ends with
the sensor's real state: a weapon drawn during the flapping still starts a recording, and the first
draw before the limit is never held back.

Sampling happens in ``poll()`` (once per frame). Presses shorter than two poll
intervals can be missed, so on hardware call :meth:`GpioInputs.start_sampler` to
sample on a small thread as well (``poll()`` then only drains the queue; should that
thread ever end, ``poll()`` samples again itself).

A pin that cannot be read (``HardwareError`` from RPi.GPIO/lgpio, or anything else) never
ends the sampling: the error is logged once per episode, :attr:`GpioInputs.alarm` says why
(an alarm source of the loop: LED, telemetry), ``on_alarm`` is told once (``STATUS=`` on the
camera), and the sampler retries with a backoff (doubling up to :data:`MAX_BACKOFF_S`) until a
read works again, when the alarm clears.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from bodycam.device.clock import Clock
from bodycam.device.hw.config import GpioConfig
from bodycam.device.hw.gpio import InputPin, PinFactory, Pull

log = logging.getLogger(__name__)
#: the longest pause between attempts while the pins cannot be read
MAX_BACKOFF_S = 1.0

#: more holster changes than this within HOLSTER_FLAP_WINDOW_S: the sensor is flapping
HOLSTER_FLAP_LIMIT = 20
HOLSTER_FLAP_WINDOW_S = 60.0
#: a flapping sensor counts as settled after keeping one level this long
HOLSTER_SETTLE_S = 5.0

InputKind = Literal["record", "marker", "dismiss", "holster_draw", "holster_return", "holster_flapping"]


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
    def __init__(self, pin: InputPin, active_high: bool, debounce_ns: int, kinds: tuple[InputKind | None, ...],
                 hold_ns: int | None = None, long_kind: InputKind | None = None):
        self.pin = pin
        self.active_high = active_high
        self.debouncer = Debouncer(self.active(), debounce_ns)
        self.on_active, self.on_inactive = kinds
        # a button with a long-press gesture: ``on_active`` at release of a short press, ``long_kind``
        # once held ``hold_ns``
        self.hold_ns = hold_ns
        self.long_kind = long_kind
        self.pressed_at: int | None = None
        self.long_fired = False

    def active(self) -> bool:
        return self.pin.read() == self.active_high

    def events(self, active: bool, now: int) -> list[InputEvent]:
        """Feed one sample; the events it completes."""
        out: list[InputEvent] = []
        started = self.debouncer.update(active, now)
        if started is not None:
            if self.hold_ns is None:
                kind = self.on_active if active else self.on_inactive
                if kind is not None:
                    out.append(InputEvent(kind, started))
            elif active:  # pressed: short or long is known at release or after hold_ns
                self.pressed_at, self.long_fired = started, False
            else:
                if self.pressed_at is not None and not self.long_fired and self.on_active is not None:
                    out.append(InputEvent(self.on_active, self.pressed_at))
                self.pressed_at = None
        if (self.hold_ns is not None and self.long_kind is not None and self.pressed_at is not None
                and not self.long_fired and active and self.debouncer.level
                and now - self.pressed_at >= self.hold_ns):
            self.long_fired = True
            out.append(InputEvent(self.long_kind, self.pressed_at + self.hold_ns))
        return out


class FlapLimiter:
    """Holds back the changes of a flapping two-state input; see the module docstring."""

    def __init__(self, initial: bool, limit: int = HOLSTER_FLAP_LIMIT, window_s: float = HOLSTER_FLAP_WINDOW_S,
                 settle_s: float = HOLSTER_SETTLE_S) -> None:
        self._limit = limit
        self._window_ns = round(window_s * 1e9)
        self._settle_ns = round(settle_s * 1e9)
        self._changes: collections.deque[int] = collections.deque()
        self.level = initial  # the sensor's settled level (True: drawn)
        self.reported = initial  # the last level passed on
        self._last_change_ns = 0
        self.flapping = False
        self._last_flap_event_ns: int | None = None
        self.held_back = 0  # changes not passed on (cumulative)

    def feed(self, events: list[InputEvent], now_ns: int) -> list[InputEvent]:
        """The holster's events of one sample (oldest first) -> what is passed on."""
        out: list[InputEvent] = []
        for ev in events:
            self._changes.append(ev.t_mono_ns)
            while self._changes and self._changes[0] <= ev.t_mono_ns - self._window_ns:
                self._changes.popleft()
            self.level, self._last_change_ns = ev.kind == "holster_draw", ev.t_mono_ns
            if not self.flapping and len(self._changes) > self._limit:
                self.flapping = True
                log.error("ALARM holster sensor flapping: %d changes in %.0f s; its changes are held back until it "
                          "keeps one level for %.0f s", len(self._changes), self._window_ns / 1e9,
                          self._settle_ns / 1e9)
                if self._last_flap_event_ns is None or ev.t_mono_ns - self._last_flap_event_ns >= self._window_ns:
                    self._last_flap_event_ns = ev.t_mono_ns
                    out.append(InputEvent("holster_flapping", ev.t_mono_ns))
            if self.flapping:
                self.held_back += 1
                continue
            out.append(ev)
            self.reported = self.level
        if self.flapping and now_ns - self._last_change_ns >= self._settle_ns:
            self.flapping = False
            self._changes.clear()  # settled: the next real draw is judged afresh, not as more flapping
            log.warning("holster sensor settled (%s)", "drawn" if self.level else "holstered")
            if self.level != self.reported:
                out.append(InputEvent("holster_draw" if self.level else "holster_return", self._last_change_ns))
                self.reported = self.level
        return out


class GpioInputs:
    """Debounced record / marker / holster inputs (pins ``None`` in config are skipped)."""

    def __init__(self, factory: PinFactory, config: GpioConfig, clock: Clock,
                 on_alarm: Callable[[str], None] | None = None) -> None:
        self._clock = clock
        self.on_alarm = on_alarm  # told once per read-error episode (STATUS= on the camera)
        self._error: str | None = None  # the read error of the current episode
        self.read_errors = 0  # cumulative
        self._lock = threading.Lock()
        self._queue: list[InputEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        debounce_ns = round(config.debounce_ms * 1e6)
        pull: Pull = "up" if config.buttons_active_low else "down"
        self._channels: list[_Channel] = []
        self._holster: _Channel | None = None
        if config.record_pin is not None:
            self._channels.append(_Channel(factory.input_pin(config.record_pin, pull), not config.buttons_active_low,
                                           debounce_ns, ("record", None)))
        if config.marker_pin is not None:
            self._channels.append(_Channel(factory.input_pin(config.marker_pin, pull), not config.buttons_active_low,
                                           debounce_ns, ("marker", None), hold_ns=round(config.dismiss_hold_s * 1e9),
                                           long_kind="dismiss"))
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
        self._holster_limit = None if self._holster is None else FlapLimiter(self._holster.debouncer.level)

    @property
    def holster_drawn(self) -> bool | None:
        """Settled holster state (None without a holster sensor)."""
        with self._lock:
            return None if self._holster is None else self._holster.debouncer.level

    @property
    def alarm(self) -> str | None:
        """Why the inputs are not working (a pin cannot be read, the holster sensor flaps), or None."""
        error = self._error
        if error is not None:
            return f"GPIO inputs: {error}"
        if self._holster_limit is not None and self._holster_limit.flapping:
            return "holster sensor flapping"
        return None

    def sample(self) -> None:
        """Read every pin once and queue settled changes. Raises what a pin's ``read`` raises."""
        with self._lock:
            now = self._clock.monotonic_ns()
            levels = [ch.active() for ch in self._channels]  # all pins read before any state changes
            for ch, active in zip(self._channels, levels, strict=True):
                events = ch.events(active, now)
                if ch is self._holster and self._holster_limit is not None:
                    events = self._holster_limit.feed(events, now)
                self._queue += events
            self._queue.sort(key=lambda e: e.t_mono_ns)

    def sample_safely(self) -> bool:
        """``sample()``, a read error turned into the alarm (logged once per episode); whether it worked."""
        try:
            self.sample()
        except Exception as exc:  # RPi.GPIO/lgpio errors: the buttons must come back when the pin does
            self.read_errors += 1
            why = f"read failed: {exc}"
            if self._error is None:
                self._error = why
                log.error("ALARM GPIO inputs: %s; retrying (buttons and holster are not seen meanwhile)", why)
                if self.on_alarm is not None:
                    try:
                        self.on_alarm(f"ALARM GPIO inputs: {why}")
                    except Exception:
                        log.exception("GPIO alarm callback failed")
            return False
        if self._error is not None:
            log.warning("GPIO inputs: reads work again after %d error(s)", self.read_errors)
            self._error = None
        return True

    def poll(self) -> list[InputEvent]:
        thread = self._thread
        if thread is None or not thread.is_alive():
            self.sample_safely()
        with self._lock:
            events, self._queue = self._queue, []
        return events

    def start_sampler(self, period_s: float = 0.005) -> None:
        """Sample on a background thread every ``period_s`` (real hardware)."""
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            wait = period_s
            while not self._stop.wait(wait):
                # back off while the pins fail (one line in the log, not 200 a second); resume at once after
                wait = period_s if self.sample_safely() else min(max(wait * 2, period_s), MAX_BACKOFF_S)

        self._thread = threading.Thread(target=run, name="gpio-inputs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
