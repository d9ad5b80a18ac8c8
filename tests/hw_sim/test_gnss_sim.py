"""Route -> NMEA -> real pseudo-terminal -> pyserial -> LocationTracker thread."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import pytest

from bodycam.device.clock import VirtualClock
from bodycam.device.errors import ConfigError
from bodycam.device.hw.config import GnssConfig
from bodycam.device.hw.gnss import (
    GnssLocation,
    GnssStats,
    Location,
    LocationTracker,
    NmeaFramer,
    nmea_sentence,
)
from bodycam.hw_sim.gnss_sim import GnssSimulator, PtyPort, Route, Waypoint, epoch_sentences

START_UTC = 1_764_000_000 * 10**9  # 2025-11-24T16:00:00Z
ROUTE = Route([Waypoint(0.0, 52.5200, 13.4050, 34.0), Waypoint(100.0, 52.5209, 13.4050, 44.0)])  # ~100 m north


def wait_for(cond: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def step(sim: GnssSimulator, tracker: LocationTracker, clock: VirtualClock, t_s: float) -> None:
    """Move the clock to ``t_s``, write that epoch and wait until the reader has it
    (the reader stamps fixes with the clock when it parses them)."""
    clock.set_ns(round(t_s * 1e9))
    before = tracker.stats().sentences
    expected = before + (3 if t_s < sim.silent_after_s else 0)
    sim.write_epoch(t_s)
    assert wait_for(lambda: tracker.stats().sentences == expected)


def test_route_interpolates_position_speed_course() -> None:
    p = ROUTE.at(50.0)
    assert p.lat == pytest.approx(52.52045) and p.alt_m == pytest.approx(39.0)
    assert p.speed_mps == pytest.approx(1.0, rel=0.01) and p.course_deg == pytest.approx(0.0, abs=0.01)
    assert ROUTE.at(500.0).speed_mps == 0.0
    with pytest.raises(ConfigError, match="times must increase"):
        Route([Waypoint(1.0, 0, 0), Waypoint(1.0, 0, 0)])


def test_generated_sentences_pass_the_firmware_framer() -> None:
    stats = GnssStats()
    data = b"".join(epoch_sentences(START_UTC, ROUTE.at(3.0)) + epoch_sentences(START_UTC, None))
    assert len(NmeaFramer(stats).feed(data)) == 6 and stats.bad_sentences == 0


def test_tracker_reads_route_through_real_pty() -> None:
    clock = VirtualClock(wall_epoch_ns=START_UTC)
    with PtyPort() as port:
        sim = GnssSimulator(port, ROUTE, START_UTC, no_fix_until_s=2.0)
        cfg = GnssConfig(device=port.device, baudrate=9600, read_timeout_s=0.05)
        with LocationTracker(cfg, clock) as tracker:
            assert tracker.wait_connected(5.0)  # pyserial flushes input on open
            step(sim, tracker, clock, 0.0)
            assert tracker.latest() is None and not tracker.has_fix()
            for k in range(2, 11):
                step(sim, tracker, clock, float(k))
            assert tracker.stats().used == 30
            clock.advance_ns(400_000_000)
            fix = tracker.latest()
            check = tracker.time_check()
            stats = tracker.stats()
    assert fix is not None and tracker.last_error is None
    p = ROUTE.at(10.0)
    assert fix.lat == pytest.approx(p.lat, abs=1e-7) and fix.lon == pytest.approx(p.lon, abs=1e-7)
    assert fix.alt_m == pytest.approx(p.alt_m, abs=0.05) and fix.fix == "3d" and fix.hdop == pytest.approx(0.9)
    assert fix.speed_mps == pytest.approx(1.0, rel=0.01) and fix.course_deg == pytest.approx(0.0, abs=0.01)
    assert fix.utc_ns == START_UTC + 10 * 10**9
    assert fix.age_s == pytest.approx(0.4)
    assert check is not None and check.ok and abs(check.skew_s) < 1e-6
    assert stats.bad_sentences == 0 and stats.garbage_bytes == 0


def test_garbage_is_counted_and_good_sentences_all_arrive() -> None:
    clock = VirtualClock(wall_epoch_ns=START_UTC)
    with PtyPort() as port:
        sim = GnssSimulator(port, ROUTE, START_UTC, garbage_rate=0.3, seed=7)
        cfg = GnssConfig(device=port.device, read_timeout_s=0.05)
        with LocationTracker(cfg, clock) as tracker:
            assert tracker.wait_connected(5.0)  # pyserial flushes input on open
            for k in range(60):
                clock.set_ns(k * 10**9)
                sim.write_epoch(float(k))
            sim.port.write(b"\r\n")  # terminate a possibly truncated last sentence
            inj = sim.injected
            assert wait_for(lambda: tracker.stats().sentences == inj.sentences)
            stats = tracker.stats()
            fix = tracker.latest()
    assert inj.garbage_bursts > 5 and inj.bad_checksums > 5 and inj.truncated > 5
    # a truncated sentence running into a garbage line also reads as a bad checksum
    assert inj.bad_checksums <= stats.bad_checksum <= inj.bad_checksums + inj.truncated
    assert stats.garbage_bytes > 0 and stats.malformed == 0
    assert fix is not None and fix.lat == pytest.approx(ROUTE.at(59.0).lat, abs=2e-5)


def test_silent_receiver_does_not_block_and_fix_ages() -> None:
    clock = VirtualClock(wall_epoch_ns=START_UTC)
    with PtyPort() as port:
        sim = GnssSimulator(port, ROUTE, START_UTC, silent_after_s=3.0)
        cfg = GnssConfig(device=port.device, read_timeout_s=0.05, max_fix_age_s=10.0)
        with LocationTracker(cfg, clock) as tracker:
            assert tracker.wait_connected(5.0)  # pyserial flushes input on open
            for k in range(8):
                step(sim, tracker, clock, float(k))
            assert tracker.stats().used == 9
            clock.set_ns(20 * 10**9)
            t0 = time.monotonic()
            fix = tracker.latest()
            loc = tracker.marker_location()
            elapsed = time.monotonic() - t0
            silent = tracker.silent_for_s()
    assert elapsed < 0.05
    assert fix is not None and fix.age_s == pytest.approx(18.0)  # last fix at t=2
    assert loc is None
    assert silent == pytest.approx(18.0)


def test_simulator_follows_a_virtual_clock_on_its_thread() -> None:
    clock = VirtualClock(wall_epoch_ns=START_UTC)
    with PtyPort() as port:
        sim = GnssSimulator(port, ROUTE, START_UTC, rate_hz=5.0)
        cfg = GnssConfig(device=port.device, read_timeout_s=0.05)
        with LocationTracker(cfg, clock) as tracker:
            assert tracker.wait_connected(5.0)  # pyserial flushes input on open
            sim.start(clock, poll_s=0.002)
            try:
                for _ in range(20):
                    clock.advance_ns(100_000_000)
                    threading.Event().wait(0.003)
                assert wait_for(lambda: sim.injected.epochs == 11)
                assert wait_for(lambda: tracker.stats().used == 33)
            finally:
                sim.stop()
            fix = tracker.latest()
    assert fix is not None and fix.utc_ns == START_UTC + 2 * 10**9
    assert not math.isnan(fix.lat)


def _body(sentence: bytes) -> str:
    return sentence[1 : sentence.index(b"*")].decode()


def _with_field(sentence: bytes, index: int, value: str) -> bytes:
    fields = _body(sentence).split(",")
    fields[index] = value
    return nmea_sentence(",".join(fields))


def test_checksum_valid_but_impossible_fixes_and_dates_are_refused_through_a_real_pty() -> None:
    """Two flipped bits the XOR checksum cannot see (lat 52 -> 92), NaN / absurd altitude, negative or
    infinite HDOP, lon 200, a 1970 date: none becomes the fix, none judges the clock, each is counted."""
    clock = VirtualClock(wall_epoch_ns=START_UTC)
    rmc, gga, gsa = epoch_sentences(START_UTC, ROUTE.at(0.0))
    bad_gga = [
        _with_field(gga, 2, "9212.31800"),  # lat 92
        _with_field(gga, 4, "20000.00000"),  # lon 200
        _with_field(gga, 9, "nan"),  # altitude
        _with_field(gga, 9, "1000000.0"),
        _with_field(gga, 8, "-1.0"),  # HDOP
        _with_field(gga, 8, "inf"),
    ]
    old_rmc = _with_field(rmc, 9, _body(rmc).split(",")[9][:4] + "70")  # year 70: pynmeagps says 1970
    with PtyPort() as port:
        cfg = GnssConfig(device=port.device, read_timeout_s=0.05)
        with LocationTracker(cfg, clock) as tracker:
            assert tracker.wait_connected(5.0)
            port.write(b"".join(bad_gga))
            assert wait_for(lambda: tracker.stats().sentences == len(bad_gga))
            assert tracker.latest() is None and not tracker.has_fix()
            assert tracker.last_refusal is not None and "location.hdop" in tracker.last_refusal
            port.write(old_rmc)
            assert wait_for(lambda: tracker.stats().sentences == len(bad_gga) + 1)
            assert tracker.time_check() is None  # a 1970 GNSS time judges no clock
            fix_1970 = tracker.latest()
            port.write(rmc + gga + gsa)  # a good epoch is taken at once
            assert wait_for(lambda: tracker.stats().sentences == len(bad_gga) + 4)
            fix = tracker.latest()
            check = tracker.time_check()
            stats = tracker.stats()
            location = GnssLocation(tracker, cfg.max_fix_age_s).location()
    assert stats.implausible == len(bad_gga) and stats.implausible_time == 1 and stats.malformed == 0
    assert stats.bad_sentences == len(bad_gga)
    # the 1970 RMC's position was fine: it is kept; its time only judges no clock
    assert fix_1970 is not None and fix_1970.lat == pytest.approx(ROUTE.at(0.0).lat, abs=1e-7)
    assert fix is not None and fix.lat == pytest.approx(ROUTE.at(0.0).lat, abs=1e-7)
    assert check is not None and check.ok
    assert location is not None and location.lat == pytest.approx(ROUTE.at(0.0).lat, abs=1e-7)


def test_a_fix_that_slips_past_the_parser_never_raises_for_a_marker() -> None:
    """Defence in depth: GnssLocation.location() gives None (logged) rather than raising."""
    clock = VirtualClock(wall_epoch_ns=START_UTC)
    tracker = LocationTracker(GnssConfig(device="/dev/null"), clock)
    tracker._state.fix = Location(lat=91.0, lon=0.0, alt_m=None, hdop=None, fix="3d", num_sats=None,
                                  speed_mps=None, course_deg=None, utc_ns=None, received_mono_ns=0, age_s=0.0)
    assert GnssLocation(tracker, 10.0).location() is None
