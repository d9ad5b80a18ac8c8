"""NMEA framing, fix state and LocationTracker (synchronous feed, injected clock)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bodycam.device.clock import VirtualClock
from bodycam.device.errors import ConfigError, HardwareError
from bodycam.device.hw.config import GnssConfig
from bodycam.device.hw.gnss import GnssStats, LocationTracker, NmeaFramer, nmea_checksum, nmea_sentence
from bodycam.device.settings import load_section

GGA = b"$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76\r\n"
RMC = b"$GPRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A*43\r\n"
GSA = b"$GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1*39\r\n"
UTC_2011 = int(dt.datetime(2011, 5, 28, 9, 27, 50, tzinfo=dt.UTC).timestamp()) * 10**9


def tracker(clock: VirtualClock, **cfg: object) -> LocationTracker:
    return LocationTracker(load_section(GnssConfig, cfg, "gnss"), clock)


def test_checksum_matches_known_sentences() -> None:
    assert nmea_checksum(GGA[1 : GGA.index(b"*")]) == 0x76
    assert nmea_sentence("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1") == GSA


def test_fix_from_rmc_gga_gsa_with_age_from_clock() -> None:
    clock = VirtualClock(start_ns=5 * 10**9, wall_epoch_ns=UTC_2011 - 5 * 10**9)
    t = tracker(clock)
    assert t.latest() is None and t.marker_location() is None
    t.feed(RMC + GGA + GSA)
    clock.advance_ns(2_500_000_000)
    fix = t.latest()
    assert fix is not None
    assert fix.lat == pytest.approx(53.361336667) and fix.lon == pytest.approx(-6.50562)
    assert fix.alt_m == pytest.approx(61.7) and fix.hdop == pytest.approx(1.03)
    assert fix.num_sats == 8 and fix.fix == "gps"  # GSA came after this epoch's GGA
    assert fix.speed_mps == pytest.approx(0.02 * 1852 / 3600)
    assert fix.course_deg == pytest.approx(31.66)
    assert fix.utc_ns == UTC_2011
    assert fix.age_s == pytest.approx(2.5)
    assert t.marker_location() == {
        "lat": 53.3613367, "lon": -6.50562, "alt_m": 61.7, "hdop": 1.03, "fix": "gps", "age_s": 2.5,
    }
    # next epoch: GSA mode 3 is now known
    t.feed(GGA)
    assert t.latest() is not None and t.latest().fix == "3d"  # type: ignore[union-attr]
    s = t.stats()
    assert (s.sentences, s.used, s.bad_sentences) == (4, 4, 0)


def test_nmea41_rmc_nav_status_v_is_still_a_fix() -> None:
    """pynmea2's is_valid gets this wrong; u-blox sends navStatus V on every RMC."""
    t = tracker(VirtualClock())
    t.feed(nmea_sentence("GNRMC,092750.00,A,5321.6802,N,00630.3372,W,1.0,90.0,280511,,,A,V"))
    fix = t.latest()
    assert fix is not None and fix.speed_mps == pytest.approx(1852 / 3600)
    t2 = tracker(VirtualClock())
    t2.feed(nmea_sentence("GNRMC,092750.00,A,5321.6802,N,00630.3372,W,1.0,90.0,280511,,,N,V"))
    assert t2.latest() is None


def test_stale_fix_is_not_put_into_markers() -> None:
    clock = VirtualClock()
    t = tracker(clock, max_fix_age_s=10.0)
    t.feed(RMC + GGA)
    clock.advance_ns(10_000_000_001)
    assert t.latest() is not None
    assert t.marker_location() is None


def test_no_fix_keeps_last_fix_and_reports_it() -> None:
    clock = VirtualClock()
    t = tracker(clock)
    t.feed(RMC + GGA)
    assert t.has_fix()
    clock.advance_ns(10**9)
    t.feed(nmea_sentence("GNRMC,092751.00,V,,,,,,,280511,,,N,V") + nmea_sentence("GNGGA,092751.00,,,,,0,00,99.99,,,,,,"))
    assert not t.has_fix()
    fix = t.latest()
    assert fix is not None and fix.age_s == pytest.approx(1.0)


def test_clock_skew_flagged_beyond_tolerance() -> None:
    # the 2011 sample date is before GNSS_TIME_FLOOR (see the next test): the same RMC dated 2025
    rmc = nmea_sentence("GPRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,31.66,281125,,,A")
    utc = int(dt.datetime(2025, 11, 28, 9, 27, 50, tzinfo=dt.UTC).timestamp()) * 10**9
    clock = VirtualClock(wall_epoch_ns=utc + 1_500_000_000)
    t = tracker(clock, clock_tolerance_s=2.0)
    t.feed(rmc)
    check = t.time_check()
    assert check is not None and check.ok and check.skew_s == pytest.approx(1.5)
    clock2 = VirtualClock(wall_epoch_ns=utc - 3_000_000_000)
    t2 = tracker(clock2, clock_tolerance_s=2.0)
    t2.feed(rmc)
    check2 = t2.time_check()
    assert check2 is not None and not check2.ok and check2.skew_s == pytest.approx(-3.0)


def test_a_gnss_time_before_the_floor_judges_no_clock() -> None:
    """Cold-start dates (1980), two-digit years read as 19xx, week rollovers: the position counts, the time not."""
    clock = VirtualClock(wall_epoch_ns=UTC_2011)
    t = tracker(clock)
    t.feed(RMC)
    assert t.time_check() is None and t.latest() is not None
    s = t.stats()
    assert s.implausible_time == 1 and s.used == 1 and s.bad_sentences == 0


def test_bad_input_is_counted_and_skipped() -> None:
    clock = VirtualClock()
    t = tracker(clock)
    bad_ck = RMC.replace(b"*43", b"*44")
    truncated = GGA[:30]
    garbage = bytes(range(256)).replace(b"$", b"").replace(b"\n", b"") + b"\r\n"
    short_gga = nmea_sentence("GPGGA,092750.000,5321.6802,N")
    bad_field = nmea_sentence("GPGGA,092750.000,5321.6802,N,00630.3372,W,x,8,1.03,61.7,M,55.2,M,,")
    gsv = nmea_sentence("GPGSV,1,1,01,01,40,083,46")
    t.feed(bad_ck + truncated + garbage + short_gga + bad_field + gsv + b"$GPRMC,no star\r\n")
    s = t.stats()
    assert t.latest() is None
    assert s.bad_checksum == 2 and s.malformed == 2 and s.ignored == 1 and s.used == 0
    assert s.overlong == 1  # the truncated GGA runs into the garbage: one overlong line
    assert s.garbage_bytes > 250 and s.bad_sentences == 5
    # the truncated GGA glued onto the next line loses only itself
    t.feed(GGA[:20] + RMC)
    assert t.latest() is not None


def test_partial_lines_across_chunks() -> None:
    clock = VirtualClock()
    t = tracker(clock)
    data = RMC + GGA + GSA
    for i in range(len(data)):
        t.feed(data[i : i + 1])
    assert t.stats().used == 3 and t.latest() is not None


def test_overlong_line_without_newline_is_bounded() -> None:
    stats = GnssStats()
    framer = NmeaFramer(stats, max_line_bytes=100)
    for _ in range(50):
        assert framer.feed(b"x" * 1000) == []
    assert len(framer._buf) <= 100
    assert stats.overlong == 1
    assert framer.feed(b"\r\n" + GSA) == [GSA.rstrip()]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    clock = VirtualClock()
    t = tracker(clock)
    t.feed(data)
    t.feed(data + b"\n" + RMC)
    assert t.latest() is not None  # a good sentence after garbage is still read


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'gnss.baud'"):
        load_section(GnssConfig, {"baud": 9600}, "gnss")
    with pytest.raises(ConfigError, match=r"gnss\.baudrate"):
        load_section(GnssConfig, {"baudrate": 1234}, "gnss")


class _FailingStream:
    def __init__(self, chunks: list[bytes | Exception]) -> None:
        self.chunks = chunks
        self.closed = False

    def read_chunk(self) -> bytes:
        if not self.chunks:
            threading.Event().wait(0.01)
            return b""
        item = self.chunks.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.closed = True


def test_reader_thread_survives_missing_device_and_read_errors() -> None:
    clock = VirtualClock()
    streams = [_FailingStream([RMC[:10], HardwareError("unplugged")]), _FailingStream([GGA, RMC])]
    opened: list[_FailingStream] = []

    def open_stream() -> _FailingStream:
        if len(opened) == 0 and not hasattr(open_stream, "failed"):
            open_stream.failed = True  # type: ignore[attr-defined]
            raise HardwareError("serial device /dev/serial0 does not exist")
        s = streams[len(opened)]
        opened.append(s)
        return s

    cfg = load_section(GnssConfig, {"reopen_interval_s": 0.01}, "gnss")
    with LocationTracker(cfg, clock, open_stream) as t:
        for _ in range(500):
            if t.latest() is not None:
                break
            threading.Event().wait(0.01)
        fix = t.latest()
        s = t.stats()
    assert fix is not None
    assert s.open_errors == 1 and s.read_errors == 1
    assert opened[0].closed and opened[1].closed


def test_missing_serial_device_is_a_clear_error() -> None:
    from bodycam.device.hw.serial_port import open_serial

    with pytest.raises(HardwareError, match="does not exist"):
        open_serial("/dev/does-not-exist-ttyAMA9", 9600, 0.1)
