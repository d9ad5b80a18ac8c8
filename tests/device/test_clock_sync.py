"""The markers' `clock` object: NTP (timesyncd flag or the kernel's state), GNSS agreement, offset."""

from __future__ import annotations

from pathlib import Path

import pytest

from bodycam.device.hw.clock_sync import TIME_ERROR, ClockSync, kernel_clock_state
from bodycam.device.hw.gnss import TimeCheck


class Gnss:
    def __init__(self, tc: TimeCheck | None) -> None:
        self.tc = tc

    def time_check(self) -> TimeCheck | None:
        return self.tc


def test_timesyncd_flag_means_ntp(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    sync = ClockSync(Gnss(TimeCheck(0.0123, True, 0)), flag=flag, kernel_state=lambda: TIME_ERROR)
    assert sync() == {"synced": True, "source": "ntp", "offset_ms": 12.3}


@pytest.mark.parametrize(("state", "synced"), [(0, True), (TIME_ERROR, False), (None, False)])
def test_kernel_state_without_the_flag(tmp_path: Path, state: int | None, synced: bool) -> None:
    sync = ClockSync(None, flag=tmp_path / "absent", kernel_state=lambda: state)
    assert sync() == {"synced": synced, "source": "ntp" if synced else "none", "offset_ms": None}


def test_gnss_agreement_when_ntp_is_not_synced(tmp_path: Path) -> None:
    good = ClockSync(Gnss(TimeCheck(-0.4, True, 0)), flag=None, kernel_state=None)
    assert good() == {"synced": True, "source": "gnss", "offset_ms": -400.0}
    off = ClockSync(Gnss(TimeCheck(75.0, False, 0)), flag=None, kernel_state=None)
    assert off() == {"synced": False, "source": "none", "offset_ms": 75000.0}
    unknown = ClockSync(Gnss(None), flag=None, kernel_state=None)
    assert unknown() == {"synced": False, "source": "none", "offset_ms": None}


def test_the_kernel_can_be_asked_here() -> None:
    """adjtimex(2) read-only works unconfined (the unit's ProtectClock refuses it: the flag counts there)."""
    state = kernel_clock_state()
    assert state is None or 0 <= state <= TIME_ERROR


def test_an_offset_no_marker_can_carry_is_left_out() -> None:
    """A board without RTC still at 1970 and a good GNSS: -56 years is beyond clock.offset_ms's range."""
    far = ClockSync(Gnss(TimeCheck(-56 * 365.25 * 86400, False, 0)), flag=None, kernel_state=None)
    assert far() == {"synced": False, "source": "none", "offset_ms": None}
    nan = ClockSync(Gnss(TimeCheck(float("nan"), False, 0)), flag=None, kernel_state=None)
    assert nan() == {"synced": False, "source": "none", "offset_ms": None}


def test_a_gnss_time_far_from_the_ntp_clock_is_not_believed(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    rollover = ClockSync(Gnss(TimeCheck(1024 * 7 * 86400.0, False, 0)), flag=flag, kernel_state=None)
    assert rollover() == {"synced": True, "source": "ntp", "offset_ms": None}
    near = ClockSync(Gnss(TimeCheck(3600.0, False, 0)), flag=flag, kernel_state=None)  # a real problem: shown
    assert near() == {"synced": True, "source": "ntp", "offset_ms": 3600000.0}


def test_a_failing_time_source_never_raises() -> None:
    class Broken:
        def time_check(self) -> TimeCheck | None:
            raise RuntimeError("reader gone")

    assert ClockSync(Broken(), flag=None, kernel_state=None)() == {"synced": False, "source": "none", "offset_ms": None}
