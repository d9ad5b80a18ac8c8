"""Whether the wall clock can be trusted: the ``clock`` object every marker carries.

``{"synced": bool, "source": "ntp" | "gnss" | "none", "offset_ms": float | null}``:

* ``ntp``: the system clock is synchronised by NTP. systemd-timesyncd says so with the
  flag file ``/run/systemd/timesync/synchronized``; otherwise the kernel's own state is
  asked (``adjtimex`` in read-only mode: ``TIME_ERROR`` means unsynchronised). Under the
  unit's ``ProtectClock=yes`` the syscall is refused, so on the camera the flag file is
  what counts (chrony users: the GNSS check below still applies).
* ``gnss``: not NTP, but the system clock agrees with GNSS UTC within
  ``gnss.clock_tolerance_s`` (from the last RMC with a valid time).
* ``offset_ms``: system clock minus GNSS UTC, whenever a GNSS time is known (also when
  NTP is the source: a large offset then points at a problem).

GNSS time that cannot be right is not used: times before ``GNSS_TIME_FLOOR`` are refused by the
parser (``hw/gnss.py``); when NTP has the clock, a GNSS time more than
:data:`MAX_GNSS_SKEW_WHEN_SYNCED_S` from it is the receiver's fault (a week-rollover bug, a corrupted
date) and gives ``offset_ms: null``; an offset a marker cannot carry (beyond
``markers.CLOCK_OFFSET_MS_MAX``, e.g. a board without RTC still at 1970) is null too. Each is logged
once per episode; this object never raises (a marker must never be lost for its ``clock``).

The firmware does not set the clock itself (that is NTP's or chrony's job); it says how far
the markers' wall times can be trusted.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bodycam.device.hw.gnss import TimeCheck
from bodycam.device.uplink.markers import CLOCK_OFFSET_MS_MAX, JSON

log = logging.getLogger(__name__)

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
#: with NTP synchronised, a GNSS time further than this from the system clock is not believed
MAX_GNSS_SKEW_WHEN_SYNCED_S = 86400.0


class TimeSource(Protocol):
    def time_check(self) -> TimeCheck | None: ...


def kernel_clock_state() -> int | None:
    """adjtimex(2) in read-only mode (modes = 0): the clock state, or None when refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex (208 bytes on x86-64/aarch64), zeroed
        rc = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    return None if rc < 0 else rc


class ClockSync:
    """Callable giving the marker's ``clock`` object; see the module docstring."""

    def __init__(self, gnss: TimeSource | None = None, *, flag: Path | None = TIMESYNCD_FLAG,
                 kernel_state: Callable[[], int | None] | None = kernel_clock_state) -> None:
        self._gnss = gnss
        self._flag = flag
        self._kernel_state = kernel_state
        self._ignored: str | None = None  # why the GNSS time is being ignored (logged once per episode)

    def ntp_synced(self) -> bool:
        if self._flag is not None and self._flag.exists():
            return True
        state = self._kernel_state() if self._kernel_state is not None else None
        return state is not None and state != TIME_ERROR

    def _ignore(self, why: str | None) -> None:
        if why is not None and why != self._ignored:
            log.warning("clock: GNSS time ignored: %s", why)
        elif why is None and self._ignored is not None:
            log.info("clock: GNSS time usable again")
        self._ignored = why

    def __call__(self) -> dict[str, JSON]:
        try:
            tc = self._gnss.time_check() if self._gnss is not None else None
        except Exception as exc:  # never cost a marker its existence for its clock field
            tc = None
            self._ignore(f"the GNSS time check failed ({exc})")
        ntp = self.ntp_synced()
        offset = None if tc is None else round(tc.skew_s * 1000.0, 1)
        if offset is not None and not abs(offset) <= CLOCK_OFFSET_MS_MAX:  # also NaN
            self._ignore(f"system clock minus GNSS UTC = {tc.skew_s if tc else 0:.0f} s is beyond what a marker carries")
            tc, offset = None, None
        elif tc is not None and ntp and not abs(tc.skew_s) <= MAX_GNSS_SKEW_WHEN_SYNCED_S:
            self._ignore(f"GNSS UTC is {tc.skew_s:.0f} s from the NTP-synchronised clock")
            tc, offset = None, None
        elif tc is not None:
            self._ignore(None)
        if ntp:
            return {"synced": True, "source": "ntp", "offset_ms": offset}
        if tc is not None and tc.ok:
            return {"synced": True, "source": "gnss", "offset_ms": offset}
        return {"synced": False, "source": "none", "offset_ms": offset}
