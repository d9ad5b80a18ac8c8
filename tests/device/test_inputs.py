"""Debounced inputs over simulated pins, and scenario playback through them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bodycam.device.clock import VirtualClock
from bodycam.device.errors import ConfigError
from bodycam.device.hw.config import GpioConfig
from bodycam.device.hw.inputs import Debouncer, GpioInputs, InputEvent
from bodycam.device.settings import load_section
from bodycam.hw_sim.gpio_sim import ScenarioInputs, SimPinFactory, load_scenario, parse_scenario

FRAME_NS = 33_333_333
MS = 1_000_000


def run(inputs: GpioInputs | ScenarioInputs, clock: VirtualClock, until_s: float, step_ns: int = FRAME_NS) -> list[InputEvent]:
    events: list[InputEvent] = []
    while clock.monotonic_ns() < until_s * 1e9:
        clock.advance_ns(step_ns)
        events += inputs.poll()
    return events


def test_debouncer_needs_a_stable_level() -> None:
    d = Debouncer(False, 30 * MS)
    assert d.update(True, 0) is None
    assert d.update(False, 10 * MS) is None  # bounced back
    assert d.update(True, 20 * MS) is None
    assert d.update(True, 49 * MS) is None
    assert d.update(True, 50 * MS) == 20 * MS  # timed at the first sample of the run
    assert d.level is True
    assert d.update(True, 60 * MS) is None


def test_press_yields_one_event_timed_at_its_start() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})
    inputs = GpioInputs(pins, GpioConfig(), clock)
    pins.press(17, 0.08, at_s=1.0)
    pins.press(27, 0.08, at_s=2.0)
    events = run(inputs, clock, 3.0, step_ns=MS)
    assert events == [InputEvent("record", 1_000_000_000), InputEvent("marker", 2_000_000_000)]


# -- the marker button's two gestures (issue 10) ---------------------------------------------------
def test_short_press_is_a_marker_reported_at_release_timed_at_the_press() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})
    inputs = GpioInputs(pins, GpioConfig(), clock)
    pins.press(27, 0.5, at_s=2.0)
    assert run(inputs, clock, 2.4, step_ns=MS) == []  # still held: short or long is not known yet
    assert run(inputs, clock, 3.0, step_ns=MS) == [InputEvent("marker", 2_000_000_000)]


def test_long_press_is_a_dismiss_at_the_hold_time_and_nothing_at_release() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})
    inputs = GpioInputs(pins, GpioConfig(dismiss_hold_s=1.5), clock)
    pins.press(27, 3.0, at_s=2.0)
    got = run(inputs, clock, 3.6, step_ns=MS)
    assert got == [InputEvent("dismiss", 3_500_000_000)]  # while the finger is still down
    assert run(inputs, clock, 6.0, step_ns=MS) == []  # the release adds nothing


def test_a_press_just_short_of_the_hold_is_a_marker_even_when_sampled_late() -> None:
    """Released at 1.49 s, next sample at 1.52 s: the pin reads released, so no dismissal."""
    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})
    inputs = GpioInputs(pins, GpioConfig(dismiss_hold_s=1.5), clock)
    pins.press(27, 1.49, at_s=1.0)
    got = run(inputs, clock, 4.0, step_ns=FRAME_NS)
    assert [e.kind for e in got] == ["marker"]
    assert 1_000_000_000 <= got[0].t_mono_ns < 1_000_000_000 + FRAME_NS


def test_long_press_at_frame_rate_sampling_is_timed_exactly() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})
    inputs = GpioInputs(pins, GpioConfig(dismiss_hold_s=2.0), clock)
    pins.press(27, 2.5, at_s=1.0)
    got = run(inputs, clock, 5.0)
    assert [e.kind for e in got] == ["dismiss"]
    press = got[0].t_mono_ns - 2_000_000_000  # press seen at the first frame at or after 1.0 s
    assert 1_000_000_000 <= press < 1_000_000_000 + FRAME_NS


def test_the_record_button_has_no_long_press() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})
    inputs = GpioInputs(pins, GpioConfig(), clock)
    pins.press(17, 3.0, at_s=1.0)
    assert run(inputs, clock, 5.0, step_ns=MS) == [InputEvent("record", 1_000_000_000)]


def test_dismiss_hold_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"gpio\.dismiss_hold_s"):
        load_section(GpioConfig, {"dismiss_hold_s": 0.1}, "gpio")


def test_scenario_long_presses_through_the_real_debouncing_inputs() -> None:
    clock = VirtualClock()
    events = parse_scenario([{"t_s": 1.0, "event": "marker"}, {"t_s": 2.0, "event": "marker", "hold_s": 2.0},
                             {"t_s": 5.0, "event": "dismiss"}, {"t_s": 8.0, "event": "marker", "hold_s": 1.0}])
    got = run(ScenarioInputs(events, clock, GpioConfig(dismiss_hold_s=1.5)), clock, 10.0)
    assert [e.kind for e in got] == ["marker", "dismiss", "dismiss", "marker"]
    for e, want in zip(got, [1.0, 3.5, 6.5, 8.0], strict=True):
        assert want * 1e9 <= e.t_mono_ns < want * 1e9 + FRAME_NS


def test_chatter_and_glitches_are_filtered() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})
    inputs = GpioInputs(pins, GpioConfig(debounce_ms=20), clock)
    pins.bounce(17, at_s=1.0, high=False, chatter_ms=2, count=5)  # press with contact chatter
    pins.bounce(17, at_s=1.5, high=True, chatter_ms=2, count=5)  # release with chatter
    pins.press(27, 0.010, at_s=2.0)  # 10 ms glitch: shorter than debounce
    events = run(inputs, clock, 3.0, step_ns=MS)
    assert events == [InputEvent("record", 1_020_000_000)]  # timed at the last flip (5 x 2 x 2 ms)


def test_holster_draw_and_return() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})  # reed switch closed: holstered
    inputs = GpioInputs(pins, GpioConfig(), clock)
    assert inputs.holster_drawn is False
    pins.set_level(22, True, at_s=1.0)
    pins.set_level(22, False, at_s=4.0)
    events = run(inputs, clock, 2.0)
    assert [e.kind for e in events] == ["holster_draw"] and inputs.holster_drawn is True
    assert 1_000_000_000 <= events[0].t_mono_ns < 1_000_000_000 + FRAME_NS
    assert [e.kind for e in run(inputs, clock, 5.0)] == ["holster_return"]


def test_active_high_wiring_and_missing_pins() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock, {5: True})
    cfg = load_section(
        GpioConfig,
        {"buttons_active_low": False, "holster_holstered_level": "high", "record_pin": 6, "marker_pin": None,
         "holster_pin": 5},
        "gpio",
    )
    inputs = GpioInputs(pins, cfg, clock)
    assert set(pins.inputs) == {5, 6} and inputs.holster_drawn is False
    pins.press(6, 0.08, at_s=0.5)  # pull-down rests low, press drives high
    pins.set_level(5, False, at_s=0.7)
    assert [e.kind for e in run(inputs, clock, 1.0)] == ["record", "holster_draw"]


def test_sampler_thread_catches_presses_between_polls() -> None:
    from bodycam.device.clock import SystemClock

    clock = SystemClock()
    pins = SimPinFactory(clock, {22: False})
    inputs = GpioInputs(pins, GpioConfig(debounce_ms=10), clock)
    inputs.start_sampler(0.002)
    try:
        # 200 ms: long enough that a loaded 2-core machine still schedules the sampler during it
        pins.press(17, 0.2, at_s=(clock.monotonic_ns() + 20 * MS) / 1e9)
        clock.sleep(0.4)  # the loop is busy: no poll during the press
        events = inputs.poll()  # with the sampler running, poll() only drains its queue
        deadline = clock.monotonic_ns() + 3_000 * MS
        while not events and clock.monotonic_ns() < deadline:  # a starved sampler may still be settling it
            clock.sleep(0.05)
            events = inputs.poll()
    finally:
        inputs.close()
    assert [e.kind for e in events] == ["record"]


def test_scenario_events_come_through_debounced_pins() -> None:
    clock = VirtualClock()
    events = parse_scenario(
        [{"t_s": 3.0, "event": "record"}, {"t_s": 5.2, "event": "holster_draw"}, {"t_s": 6.0, "event": "marker"},
         {"t_s": 6.5, "event": "marker"}, {"t_s": 9.0, "event": "holster_return"}]
    )
    inputs = ScenarioInputs(events, clock)
    got = run(inputs, clock, 10.0)
    assert [e.kind for e in got] == ["record", "holster_draw", "marker", "marker", "holster_return"]
    for e, want in zip(got, [3.0, 5.2, 6.0, 6.5, 9.0], strict=True):
        assert want * 1e9 <= e.t_mono_ns < want * 1e9 + FRAME_NS
    assert run(inputs, clock, 12.0) == []


def test_scenario_polled_before_its_time_returns_nothing() -> None:
    clock = VirtualClock()
    inputs = ScenarioInputs(parse_scenario([{"t_s": 3.0, "event": "record"}]), clock)
    assert run(inputs, clock, 2.9) == []
    assert [e.kind for e in run(inputs, clock, 3.2)] == ["record"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([{"t_s": 1.0, "event": "reload"}], r"scenario\[0\]\.event: 'reload' is not one of"),
        ([{"t_s": -1, "event": "record"}], r"t_s: must be a finite number >= 0"),
        ([{"t_s": "3", "event": "record"}], r"t_s: must be a finite number"),
        ([{"t": 1.0, "event": "record"}], r"unknown key\(s\) \['t'\]"),
        ([{"event": "record"}], r"needs both"),
        ({"evnts": []}, r"unknown key\(s\) \['evnts'\]"),
        ([{"t_s": 1.0, "event": "holster_return"}], r"holster_return at 1.0 s while holstered"),
        ([{"t_s": 1, "event": "holster_draw"}, {"t_s": 2, "event": "holster_draw"}], r"already drawn"),
        ("record at 3", r"expected a list"),
        ([{"t_s": 1.0, "event": "holster_draw", "hold_s": 1}], r"hold_s: only a button press"),
        ([{"t_s": 1.0, "event": "marker", "hold_s": -1}], r"hold_s: must be a number of seconds"),
        ([{"t_s": 1.0, "event": "marker", "hold_s": True}], r"hold_s: must be a number of seconds"),
    ],
)
def test_scenario_validation(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scenario(data)


def test_scenario_presses_too_close_or_unwired() -> None:
    clock = VirtualClock()
    with pytest.raises(ConfigError, match="within 140 ms"):
        ScenarioInputs(parse_scenario([{"t_s": 1.0, "event": "marker"}, {"t_s": 1.1, "event": "marker"}]), clock)
    with pytest.raises(ConfigError, match="within 2060 ms"):  # the long press is still going on
        ScenarioInputs(parse_scenario([{"t_s": 1.0, "event": "dismiss"}, {"t_s": 2.5, "event": "marker"}]), clock)
    with pytest.raises(ConfigError, match="pin is not configured"):
        ScenarioInputs(parse_scenario([{"t_s": 1.0, "event": "marker"}]), clock, GpioConfig(marker_pin=None))


def test_load_scenario_files(tmp_path: Path) -> None:
    j = tmp_path / "s.json"
    j.write_text(json.dumps({"events": [{"t_s": 2, "event": "marker"}, {"t_s": 1, "event": "record"}]}))
    assert [e.event for e in load_scenario(j)] == ["record", "marker"]
    t = tmp_path / "s.toml"
    t.write_text('[[events]]\nt_s = 5.2\nevent = "holster_draw"\n')
    assert load_scenario(t)[0].t_s == 5.2
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_scenario(bad)
    with pytest.raises(ConfigError, match="scenario not found"):
        load_scenario(tmp_path / "missing.json")


def test_gpio_config_rejects_shared_pins() -> None:
    with pytest.raises(ConfigError, match="share a pin"):
        load_section(GpioConfig, {"led_pin": 17}, "gpio")
    with pytest.raises(ConfigError, match=r"gpio\.haptic_pin"):
        load_section(GpioConfig, {"haptic_pin": 99}, "gpio")


def test_a_pin_read_error_never_ends_the_sampler_it_alarms_and_the_buttons_come_back(
        caplog: pytest.LogCaptureFixture) -> None:
    """One lgpio error used to end the 5 ms sampler thread for good: every later press was lost, silently."""
    import logging

    from bodycam.device.clock import SystemClock

    clock = SystemClock()
    pins = SimPinFactory(clock, {22: False})
    told: list[str] = []
    inputs = GpioInputs(pins, GpioConfig(debounce_ms=10), clock, on_alarm=told.append)
    inputs.start_sampler(0.002)

    def press_and_collect() -> list[str]:
        pins.press(17, 0.2, at_s=(clock.monotonic_ns() + 20 * MS) / 1e9)
        clock.sleep(0.3)
        events = inputs.poll()
        deadline = clock.monotonic_ns() + 3_000 * MS
        while not events and clock.monotonic_ns() < deadline:
            clock.sleep(0.05)
            events = inputs.poll()
        return [e.kind for e in events]

    try:
        assert press_and_collect() == ["record"] and inputs.alarm is None
        with caplog.at_level(logging.ERROR, logger="bodycam.device.hw.inputs"):
            pins.fail_reads(17, "GPIO17: read failed: lgpio.error 'bad handle'")
            clock.sleep(0.3)  # dozens of attempts at 2 ms, fewer once backing off
            assert inputs.alarm is not None and "bad handle" in inputs.alarm
            assert inputs.poll() == []
            pins.fail_reads(17, None)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and len(told) == 1 and "ALARM GPIO inputs" in told[0]
        assert inputs.read_errors >= 2
        # reads work again: the alarm clears within the backoff (at most MAX_BACKOFF_S) and presses count
        deadline = clock.monotonic_ns() + 3_000 * MS
        while inputs.alarm is not None and clock.monotonic_ns() < deadline:
            clock.sleep(0.02)
        assert inputs.alarm is None
        assert press_and_collect() == ["record"]
    finally:
        inputs.close()


def test_poll_samples_itself_when_the_sampler_thread_is_gone() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})
    inputs = GpioInputs(pins, GpioConfig(debounce_ms=10), clock)
    inputs.start_sampler(0.002)
    inputs._stop.set()  # the thread ends (as it did on an uncaught error), the object stays
    assert inputs._thread is not None
    inputs._thread.join(1.0)
    pins.fail_reads(17, "bad handle")
    assert inputs.poll() == [] and inputs.alarm is not None  # poll() samples, and survives the error
    pins.fail_reads(17, None)
    pins.press(17, 0.08, at_s=0.1)
    assert run(inputs, clock, 0.3, step_ns=MS) == [InputEvent("record", 100_000_000)]
    assert inputs.alarm is None
    inputs.close()


def test_a_flapping_holster_sensor_is_reported_once_and_held_back_until_it_settles() -> None:
    """A reed switch toggling every 100 ms for 30 s (the review measured 600 markers a minute): at most
    HOLSTER_FLAP_LIMIT changes a window reach the state machine, one holster_flapping marker, an alarm; the
    level it settles at (drawn) is passed on, so the recording it started is still going."""
    from bodycam.device.footage.recording_state import (
        Action,
        EmitMarker,
        Event,
        RecordingConfig,
        RecordingStateMachine,
        StartRecording,
        State,
    )
    from bodycam.device.hw.inputs import HOLSTER_FLAP_LIMIT, HOLSTER_SETTLE_S

    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})  # holstered
    inputs = GpioInputs(pins, GpioConfig(), clock)
    sm = RecordingStateMachine(RecordingConfig(auto_stop_after_s=0))
    for k in range(301):  # 1.0 s .. 31.0 s; an odd count: it ends drawn
        pins.set_level(22, k % 2 == 0, at_s=1.0 + k * 0.1)
    t_ms = 0

    def sample(until_ms: int) -> Iterator[tuple[int, list[Action]]]:
        """Sampled every 5 ms, as the hardware sampler does: each step's time and the machine's actions."""
        nonlocal t_ms
        while t_ms < until_ms:
            t_ms += 5
            clock.set_ns(t_ms * MS)
            yield t_ms, [a for ev in inputs.poll() for a in sm.handle(Event(ev.kind, ev.t_mono_ns, "button"))]

    markers: list[str] = []
    starts = 0
    alarm_seen = False
    for now_ms, actions in sample(40_000):
        markers += [a.kind for a in actions if isinstance(a, EmitMarker)]
        starts += sum(isinstance(a, StartRecording) for a in actions)
        alarm_seen = alarm_seen or inputs.alarm == "holster sensor flapping"
        if now_ms == 30_000:
            assert inputs.alarm == "holster sensor flapping"
    changes = [m for m in markers if m in ("holster_draw", "holster_return")]
    assert markers.count("holster_flapping") == 1 and alarm_seen
    assert HOLSTER_FLAP_LIMIT <= len(changes) <= HOLSTER_FLAP_LIMIT + 1  # + the settled level
    assert changes[0] == "holster_draw" and changes[-1] == "holster_draw"  # it settled drawn
    assert starts == 1 and sm.state == State.RECORDING  # the first draw started it; nothing stopped it
    assert inputs.alarm is None  # settled: no alarm after HOLSTER_SETTLE_S
    assert 31.0 + HOLSTER_SETTLE_S < 40.0
    # a real return and draw soon after it settled are passed on at once, not taken for more flapping
    markers.clear()
    pins.set_level(22, False, at_s=41.0)
    pins.set_level(22, True, at_s=44.0)
    for _, actions in sample(44_200):
        markers += [a.kind for a in actions if isinstance(a, EmitMarker)]
    assert [m for m in markers if m.startswith("holster")] == ["holster_return", "holster_draw"]


def test_a_holster_used_normally_is_never_held_back() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})
    inputs = GpioInputs(pins, GpioConfig(), clock)
    for k in range(8):  # drawn and holstered four times in 40 s
        pins.set_level(22, k % 2 == 0, at_s=1.0 + k * 5.0)
    events = run(inputs, clock, 45.0, step_ns=5 * MS)
    assert [e.kind for e in events] == ["holster_draw", "holster_return"] * 4
    assert [e.t_mono_ns for e in events] == [round((1.0 + k * 5.0) * 1e9) for k in range(8)]
    assert inputs.alarm is None
