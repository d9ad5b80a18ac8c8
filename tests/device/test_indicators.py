"""LED patterns and haptic pulses, read back from simulated output history."""

from __future__ import annotations

import pytest

from bodycam.device.clock import VirtualClock
from bodycam.device.hw.config import GpioConfig
from bodycam.device.hw.indicators import GpioIndicators, level_at
from bodycam.hw_sim.gpio_sim import SimPinFactory

MS = 1_000_000
LED, HAPTIC = 23, 24


def setup(cfg: GpioConfig | None = None) -> tuple[VirtualClock, SimPinFactory, GpioIndicators]:
    clock = VirtualClock()
    pins = SimPinFactory(clock)
    return clock, pins, GpioIndicators(pins, cfg or GpioConfig(), clock)


def tick_for(ind: GpioIndicators, clock: VirtualClock, ms: int, step_ms: int = 1) -> None:
    for _ in range(ms // step_ms):
        clock.advance_ns(step_ms * MS)
        ind.tick()


def test_level_at() -> None:
    assert level_at((), 5, repeat=True) is False
    assert level_at((1,), 10**12, repeat=True) is True
    assert [level_at((100, 100), t * MS, repeat=True) for t in (0, 99, 100, 199, 200)] == [True, True, False, False, True]
    assert level_at((80, 120, 80), 250 * MS, repeat=False) is True
    assert level_at((80, 120, 80), 280 * MS, repeat=False) is False


def test_led_patterns_per_state() -> None:
    clock, pins, ind = setup()
    ind.set_state("buffering")
    tick_for(ind, clock, 4000)
    assert pins.on_intervals(LED) == [(0, 200 * MS), (2000 * MS, 2200 * MS), (4000 * MS, -1)]
    ind.set_state("recording")
    tick_for(ind, clock, 3000, step_ms=33)
    assert pins.outputs[LED].level is True and pins.on_intervals(LED)[-1] == (4000 * MS, -1)
    ind.set_state("alarm")
    tick_for(ind, clock, 999)
    # 5 Hz: the first blink continues the solid "recording" interval, then 4 more
    assert len(pins.on_intervals(LED)) == 2 + 1 + 4
    ind.close()
    assert pins.outputs[LED].level is False and pins.outputs[HAPTIC].level is False


def test_idle_is_a_short_heartbeat() -> None:
    clock, pins, ind = setup()
    tick_for(ind, clock, 9_990, step_ms=10)
    assert pins.on_intervals(LED) == [(0, 40 * MS), (5000 * MS, 5040 * MS)]


@pytest.mark.parametrize(
    ("pattern", "intervals_ms"),
    [("auto_start", [(100, 500)]), ("dismissed", [(100, 180), (300, 380)]), ("marker", [(100, 160)])],
)
def test_haptic_pulses_play_once(pattern: str, intervals_ms: list[tuple[int, int]]) -> None:
    clock, pins, ind = setup()
    tick_for(ind, clock, 100)
    ind.pulse(pattern)  # type: ignore[arg-type]
    tick_for(ind, clock, 2000)
    assert pins.on_intervals(HAPTIC) == [(a * MS, b * MS) for a, b in intervals_ms]


def test_active_low_outputs_and_unfitted_pins() -> None:
    _clock, pins, ind = setup(GpioConfig(led_active_high=False, haptic_pin=None))
    assert HAPTIC not in pins.outputs
    assert pins.history(LED)[0] == (0, True)  # set up "off" for an active-low LED ...
    ind.set_state("recording")
    assert pins.outputs[LED].level is False  # ... and on = low
    ind.pulse("marker")  # no motor fitted: nothing to do, no error
    with pytest.raises(ValueError, match="unknown LED state"):
        ind.set_state("party")  # type: ignore[arg-type]
