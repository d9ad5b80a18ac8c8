"""Dock sense: the simulated dock contact (SimPinFactory, the buttons' twin), the schedule, reachability;
and the firmware's offload service built from [offload] and driven by the dock."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bodycam.device.clock import VirtualClock
from bodycam.device.errors import ConfigError
from bodycam.device.hw.dock import GpioDock, ReachableDock, ScheduleDock, parse_window
from bodycam.device.identity import Signer
from bodycam.device.uplink.offload import OffloadConfig, build_service
from bodycam.hw_sim.gpio_sim import SimPinFactory

S = 1_000_000_000
DAY0 = 1_764_374_400 * S  # 2025-11-29T00:00:00Z


def test_the_dock_contact_is_debounced() -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock)
    dock = GpioDock(pins, 5, clock, active_low=True, debounce_ms=200)
    assert not dock.docked()  # pull-up: undocked reads high
    pins.set_level(5, False)  # the contact closes to ground
    assert not dock.docked()
    clock.advance_ns(100_000_000)
    pins.set_level(5, True)  # chatter: back open before it settled
    assert not dock.docked()
    pins.set_level(5, False)  # closed again, seen from now
    assert not dock.docked()
    clock.advance_ns(150_000_000)
    assert not dock.docked()
    clock.advance_ns(100_000_000)
    assert dock.docked()
    pins.set_level(5, True)  # taken out of the dock
    assert dock.docked()  # not settled yet
    clock.advance_ns(250_000_000)
    assert not dock.docked()


@pytest.mark.parametrize(("window", "inside", "outside"), [
    ("08:00-17:30", ["08:00", "12:00", "17:29"], ["07:59", "17:30", "23:00"]),
    ("22:00-06:00", ["22:00", "23:59", "00:00", "05:59"], ["06:00", "12:00", "21:59"]),
])
def test_the_schedule_in_utc(window: str, inside: list[str], outside: list[str]) -> None:
    def at(hhmm: str) -> bool:
        h, m = map(int, hhmm.split(":"))
        return ScheduleDock([window], VirtualClock(wall_epoch_ns=DAY0 + (h * 60 + m) * 60 * S)).docked()

    assert all(at(t) for t in inside) and not any(at(t) for t in outside)


def test_bad_windows_are_one_line_errors() -> None:
    for bad in ("8-17", "08:00-08:00", "24:00-01:00", "08:00"):
        with pytest.raises(ConfigError, match=r"offload\.schedule"):
            parse_window(bad, "offload.schedule")


def test_reachable_means_base_accepts_a_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        assert ReachableDock("127.0.0.1", port, timeout_s=1).docked()
    assert not ReachableDock("127.0.0.1", port, timeout_s=1).docked()


def test_the_service_from_config_uses_the_dock_pin(tmp_path: Path) -> None:
    clock = VirtualClock()
    pins = SimPinFactory(clock)
    cfg = OffloadConfig(enabled=True, url="https://127.0.0.1:9", dock="gpio", dock_pin=5)
    base = Signer.generate()  # base's custody key, trusted by the camera
    trusted = {base.key_id: base.public}
    svc = build_service(cfg, "cam-d1", Signer.generate(), clock, tmp_path, pins, trusted=trusted)
    try:
        assert svc.run_once() == 0  # not docked: base is not even asked (port 9 would refuse)
        assert svc.last_error is None and svc.alarm is None
        pins.set_level(5, False)
        assert not svc.docked()
        clock.advance_ns(S)
        assert svc.docked() and svc.run_once() == 0  # docked, nothing pending
        with pytest.raises(ConfigError, match="no GPIO"):
            build_service(cfg, "cam-d1", Signer.generate(), clock, tmp_path, None, trusted=trusted)
        with pytest.raises(ConfigError, match=r"offload\.ca_file"):
            build_service(OffloadConfig(enabled=True, url="https://b:1", ca_file=str(tmp_path / "none.pem")),
                          "cam-d1", Signer.generate(), clock, tmp_path, trusted=trusted)
    finally:
        svc.close()
