"""RpiGpioFactory over a fake RPi.GPIO module; lazy-import failures are clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bodycam.device.clock import VirtualClock
from bodycam.device.errors import DependencyError, HardwareError
from bodycam.device.hw.config import GpioConfig
from bodycam.device.hw.gpio import RpiGpioFactory
from bodycam.device.hw.indicators import GpioIndicators
from bodycam.device.hw.inputs import GpioInputs, InputEvent
from bodycam.hw_sim.gpio_sim import FakeRPiGPIO, SimPinFactory


def test_factory_sets_bcm_pulls_and_outputs() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock)
    gpio = FakeRPiGPIO(pins)
    factory = RpiGpioFactory(gpio)
    assert gpio.mode == gpio.BCM and gpio.warnings is False
    button = factory.input_pin(17, "up")
    led = factory.output_pin(23, initial_high=False)
    assert button.read() is True  # pull-up rests high
    pins.press(17, 0.05)
    assert button.read() is False
    led.write(True)
    assert pins.history(23)[-1] == (0, True)
    factory.close()
    assert not pins.inputs and not pins.outputs  # cleanup() released exactly our pins


def test_factory_wraps_setup_errors() -> None:
    gpio = FakeRPiGPIO(SimPinFactory(VirtualClock()))
    factory = RpiGpioFactory(gpio)
    with pytest.raises(HardwareError, match="GPIO40: setup failed"):
        factory.input_pin(40, "up")


def test_inputs_and_indicators_run_over_rpi_factory() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock, {22: False})
    factory = RpiGpioFactory(FakeRPiGPIO(pins))
    cfg = GpioConfig()
    inputs = GpioInputs(factory, cfg, clock)
    ind = GpioIndicators(factory, cfg, clock)
    pins.press(27, 0.08, at_s=1.0)
    events: list[InputEvent] = []
    for _ in range(60):
        clock.advance_ns(33_000_000)
        events += inputs.poll()
        ind.tick()
    assert [e.kind for e in events] == ["marker"]
    ind.set_state("recording")
    assert pins.outputs[23].level is True


def test_missing_rpi_gpio_is_a_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "RPi", None)
    with pytest.raises(DependencyError, match="rpi-lgpio"):
        RpiGpioFactory()


def test_rpi_gpio_off_a_pi_is_a_hardware_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "RPi"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "GPIO.py").write_text('raise RuntimeError("This module can only be run on a Raspberry Pi!")\n')
    for name in ("RPi", "RPi.GPIO"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HardwareError, match="can only be run on a Raspberry Pi"):
        RpiGpioFactory()
    for name in ("RPi", "RPi.GPIO"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_importing_the_adapters_touches_no_hardware() -> None:
    import bodycam.device.hw.gpio
    import bodycam.device.hw.indicators
    import bodycam.device.hw.inputs  # noqa: F401

    assert "RPi.GPIO" not in sys.modules or sys.modules["RPi.GPIO"] is None


# -- Pi 4 and Pi 5 from one install: RPi.GPIO's and rpi-lgpio's errors ------------------------
@pytest.mark.parametrize("flavour", ["RPi.GPIO", "rpi-lgpio"])
def test_both_libraries_drive_the_same_factory(flavour: str) -> None:
    pins = SimPinFactory(VirtualClock())
    factory = RpiGpioFactory(FakeRPiGPIO(pins, flavour))
    factory.input_pin(17, "up")
    factory.output_pin(23)
    assert factory.pins == [17, 23]
    factory.close()
    factory.close()  # twice is fine
    assert factory.pins == [] and not pins.inputs and not pins.outputs


def test_lgpio_errors_are_hardware_errors_not_tracebacks() -> None:
    from bodycam.hw_sim.gpio_sim import FakeLgpio

    assert issubclass(FakeLgpio.error, Exception) and not issubclass(FakeLgpio.error, (RuntimeError, ValueError))
    busy = FakeRPiGPIO(SimPinFactory(VirtualClock()), "rpi-lgpio", busy=[17])
    factory = RpiGpioFactory(busy)
    with pytest.raises(HardwareError, match=r"GPIO17: setup failed: 'GPIO busy' \(another process holds"):
        factory.input_pin(17, "up")
    no_chip = FakeRPiGPIO(SimPinFactory(VirtualClock()), "rpi-lgpio", chip_access=False)
    with pytest.raises(HardwareError, match=r"cannot select BCM numbering: 'can not open gpiochip'.*group 'gpio'"):
        RpiGpioFactory(no_chip)


def test_rpi_gpio_on_a_pi5_says_to_use_rpi_lgpio() -> None:
    factory = RpiGpioFactory(FakeRPiGPIO(SimPinFactory(VirtualClock()), "RPi.GPIO", pi5=True))
    with pytest.raises(HardwareError, match=r"SOC peripheral base address.*rpi-lgpio"):
        factory.output_pin(23)
    factory = RpiGpioFactory(FakeRPiGPIO(SimPinFactory(VirtualClock()), "rpi-lgpio", busy=[], pi5=True))
    assert factory.output_pin(23) is not None  # rpi-lgpio drives a Pi 5


def test_the_pi_extra_installs_the_library_that_works_on_both() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["pi"]
    assert any(d.startswith("rpi-lgpio") for d in extra) and not any(d.startswith("RPi.GPIO") for d in extra)
