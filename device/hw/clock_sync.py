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

The firmware does not set the clock itself (that is NTP's or chrony's job); it says how far
the markers' wall times can be trusted.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bodycam.device.hw.gnss import TimeCheck
from bodycam.device.uplink.markers import JSON

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised


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

    def ntp_synced(self) -> bool:
        if self._flag is not None and self._flag.exists():
            return True
        state = self._kernel_state() if self._kernel_state is not None else None
        return state is not None and state != TIME_ERROR

    def __call__(self) -> dict[str, JSON]:
        tc = self._gnss.time_check() if self._gnss is not None else None
        offset = None if tc is None else round(tc.skew_s * 1000.0, 1)
        if self.ntp_synced():
            return {"synced": True, "source": "ntp", "offset_ms": offset}
        if tc is not None and tc.ok:
            return {"synced": True, "source": "gnss", "offset_ms": offset}
        return {"synced": False, "source": "none", "offset_ms": offset}
