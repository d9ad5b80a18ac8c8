"""GNSS: NMEA 0183 from a UART into the latest position fix.

Three small parts:

* :class:`NmeaFramer` cuts a byte stream into ``$...*hh`` sentences, verifying the
  checksum and bounding line length; everything else is counted and skipped.
* :class:`FixState` folds GGA / RMC / GSA sentences (any talker: GP, GN, GL, GA, GB)
  into a position, fix quality, HDOP, speed/course and GNSS UTC time.
* :class:`LocationTracker` reads a :class:`ByteStream` on a background thread
  (reopening the port when it fails) so garbage, partial lines and a silent receiver
  never stall the loop; ``latest()`` returns a :class:`Location` whose ``age_s``
  comes from the injected clock.

Field parsing uses pynmeagps (checksum verified here as well, so bad sentences are
classified); lat/lon are signed decimal degrees.

A checksum-valid sentence can still be nonsense: the XOR checksum misses two flipped bits in
the same position, and receivers report cold-start dates. :class:`FixState` therefore refuses
a fix a marker could not carry (outside the ranges of ``bodycam.device.uplink.markers.Location``:
|lat| > 90, |lon| > 180, altitude, HDOP, NaN/inf; counted as ``implausible``) and a GNSS time
before :data:`GNSS_TIME_FLOOR` (pynmeagps reads two-digit years 51..99 as 1951..1999; a receiver
that lost its almanac says 1980; a week-rollover bug is 19.6 years back): that time is not used to
judge the clock (counted as ``implausible_time``; the position of that sentence still counts). Each
refusal is logged, the first at once and then at most once a minute.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bodycam.device.clock import Clock
from bodycam.device.errors import HardwareError, MarkerError
from bodycam.device.hw.config import GnssConfig
from bodycam.device.hw.serial_port import ByteStream, open_serial
from bodycam.device.uplink.markers import location_problem

if TYPE_CHECKING:
    from bodycam.device.uplink.markers import Location as MarkerLocation

log = logging.getLogger(__name__)

KNOT_MPS = 1852.0 / 3600.0
#: a GNSS time earlier than this is not believed (this firmware was written after it): it is not used to
#: judge the clock. Later dates are judged against the system clock by ``hw/clock_sync.py`` when NTP has it.
GNSS_TIME_FLOOR = _dt.datetime(2025, 1, 1, tzinfo=_dt.UTC)
GNSS_TIME_FLOOR_NS = int(GNSS_TIME_FLOOR.timestamp()) * 1_000_000_000
_REFUSAL_LOG_INTERVAL_NS = 60 * 1_000_000_000
# Minimum number of comma-separated fields (after the address) per sentence type.
_MIN_FIELDS = {"GGA": 14, "RMC": 11, "GSA": 17}
_QUALITY_NAMES = {2: "dgps", 3: "pps", 4: "rtk", 5: "rtk_float", 6: "estimated", 7: "manual", 8: "simulated"}


def nmea_checksum(body: bytes) -> int:
    """XOR of the bytes between ``$`` and ``*``."""
    value = 0
    for b in body:
        value ^= b
    return value


def nmea_sentence(body: str) -> bytes:
    """``body`` (without ``$``/checksum) as a complete sentence with CR LF."""
    raw = body.encode("ascii")
    return b"$" + raw + b"*" + f"{nmea_checksum(raw):02X}".encode() + b"\r\n"


@dataclass
class GnssStats:
    """Counters of what the reader saw (all cumulative)."""

    sentences: int = 0  # checksum-valid sentences
    used: int = 0  # GGA/RMC/GSA that updated the state
    ignored: int = 0  # valid but of another type (GSV, VTG, TXT, proprietary, ...)
    bad_checksum: int = 0
    malformed: int = 0  # good checksum, bad content (too few fields, non-numeric, ...)
    implausible: int = 0  # good checksum, a fix no marker can carry (lat > 90, NaN, absurd altitude, ...)
    implausible_time: int = 0  # RMC time before GNSS_TIME_FLOOR: not used for the clock
    garbage_bytes: int = 0  # bytes outside any sentence, or non-ASCII sentences
    overlong: int = 0  # lines longer than max_line_bytes (dropped)
    read_errors: int = 0
    open_errors: int = 0

    @property
    def bad_sentences(self) -> int:
        return self.bad_checksum + self.malformed + self.overlong + self.implausible


class NmeaFramer:
    """Cut bytes into checksum-valid NMEA sentences (bytes without CR LF)."""

    def __init__(self, stats: GnssStats, max_line_bytes: int = 256) -> None:
        self._buf = bytearray()
        self._stats = stats
        self._max = max_line_bytes
        self._discarding = False  # inside an overlong line: drop until the next line end

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self._max:
                    # No line end in sight: keep only a possible sentence start.
                    start = self._buf.rfind(b"$")
                    if start <= 0 or len(self._buf) - start > self._max:
                        if not self._discarding:
                            self._stats.overlong += 1
                        self._stats.garbage_bytes += len(self._buf)
                        self._buf.clear()
                        self._discarding = True
                    else:
                        self._stats.garbage_bytes += start
                        del self._buf[:start]
                return out
            line = bytes(self._buf[:nl]).rstrip(b"\r")
            del self._buf[: nl + 1]
            if self._discarding:
                self._discarding = False
                self._stats.garbage_bytes += len(line)
                continue
            sentence = self._check(line)
            if sentence is not None:
                out.append(sentence)

    def _check(self, line: bytes) -> bytes | None:
        start = line.rfind(b"$")
        if start < 0:
            self._stats.garbage_bytes += len(line)
            return None
        self._stats.garbage_bytes += start
        line = line[start:]
        if len(line) > self._max:
            self._stats.overlong += 1
            self._stats.garbage_bytes += len(line)
            return None
        star = line.rfind(b"*")
        if star < 0 or len(line) - star != 3:
            self._stats.bad_checksum += 1  # truncated or missing checksum
            return None
        body = line[1:star]
        try:
            given = int(line[star + 1 :], 16)
        except ValueError:
            self._stats.bad_checksum += 1
            return None
        if given != nmea_checksum(body):
            self._stats.bad_checksum += 1
            return None
        if any(b < 0x20 or b > 0x7E for b in body):
            self._stats.garbage_bytes += len(line)
            return None
        self._stats.sentences += 1
        return line


@dataclass(frozen=True)
class Location:
    """A position fix as of ``received_mono_ns``; ``age_s`` as of the ``latest()`` call."""

    lat: float
    lon: float
    alt_m: float | None
    hdop: float | None
    fix: str  # "gps", "2d", "3d", "dgps", "rtk", "rtk_float", "estimated", ...
    num_sats: int | None
    speed_mps: float | None
    course_deg: float | None
    utc_ns: int | None  # GNSS UTC time of the fix when known
    received_mono_ns: int
    age_s: float

    def to_marker_location(self) -> dict[str, Any]:
        """The marker's ``location`` object: ``{lat, lon, alt_m, hdop, fix, age_s}``."""
        return {
            "lat": round(self.lat, 7),
            "lon": round(self.lon, 7),
            "alt_m": None if self.alt_m is None else round(self.alt_m, 2),
            "hdop": None if self.hdop is None else round(self.hdop, 2),
            "fix": self.fix,
            "age_s": round(self.age_s, 3),
        }


@dataclass(frozen=True)
class TimeCheck:
    """System wall clock versus GNSS UTC, measured at ``measured_mono_ns``."""

    skew_s: float  # wall_ns - gnss_utc (positive: system clock ahead)
    ok: bool
    measured_mono_ns: int


def _num(value: Any) -> float | None:
    if value in ("", None):
        return None
    return float(value)


class _Implausible(Exception):
    """A checksum-valid sentence whose fix is physically impossible."""


class FixState:
    """Folds GGA/RMC/GSA sentences into the latest fix. Not thread-safe by itself."""

    def __init__(self, clock: Clock, clock_tolerance_s: float, stats: GnssStats) -> None:
        self._clock = clock
        self._tol = clock_tolerance_s
        self._stats = stats
        self.fix: Location | None = None
        self.time_check: TimeCheck | None = None
        self.has_fix_now = False
        self._quality = 0
        self._mode = 1  # GSA navMode: 1 none, 2 2D, 3 3D
        self._gsa_hdop: float | None = None
        self._date: _dt.date | None = None
        self.last_refusal: str | None = None  # why the last implausible sentence was refused
        self._next_refusal_log_ns: int | None = None
        self._refusals_unlogged = 0

    def apply(self, sentence: bytes) -> None:
        from pynmeagps import VALCKSUM, NMEAReader

        fields = sentence.split(b"*", 1)[0].split(b",")
        address = fields[0][1:].decode("ascii")
        kind = address[-3:] if len(address) == 5 else ""
        if kind not in _MIN_FIELDS:
            self._stats.ignored += 1
            return
        if len(fields) - 1 < _MIN_FIELDS[kind]:
            self._stats.malformed += 1
            return
        try:
            msg = NMEAReader.parse(sentence + b"\r\n", validate=VALCKSUM)
            if kind == "GGA":
                self._gga(msg)
            elif kind == "RMC":
                self._rmc(msg)
            else:
                self._gsa(msg)
        except _Implausible as exc:
            self._stats.implausible += 1
            self.has_fix_now = False
            self._refused(f"{kind} refused: {exc}", sentence)
            return
        except Exception as exc:  # pynmeagps raises several types for bad content
            self._stats.malformed += 1
            log.debug("malformed NMEA %r: %s", sentence, exc)
            return
        self._stats.used += 1

    def _refused(self, why: str, sentence: bytes | None = None) -> None:
        """Remember and log a refusal: the first at once, then at most once a minute (with the count)."""
        self.last_refusal = why
        now = self._clock.monotonic_ns()
        if self._next_refusal_log_ns is not None and now < self._next_refusal_log_ns:
            self._refusals_unlogged += 1
            return
        more = f" ({self._refusals_unlogged} more since the last report)" if self._refusals_unlogged else ""
        log.warning("GNSS: %s%s%s", why, more, "" if sentence is None else f": {sentence[:120]!r}")
        self._refusals_unlogged = 0
        self._next_refusal_log_ns = now + _REFUSAL_LOG_INTERVAL_NS

    @staticmethod
    def _check_fix(lat: float, lon: float, alt_m: float | None, hdop: float | None) -> None:
        problem = location_problem(lat, lon, alt_m, hdop)
        if problem is not None:
            raise _Implausible(problem)

    def _fix_name(self) -> str:
        if self._quality in _QUALITY_NAMES:
            return _QUALITY_NAMES[self._quality]
        return {3: "3d", 2: "2d"}.get(self._mode, "gps")

    def _gga(self, msg: Any) -> None:
        quality = int(msg.quality) if msg.quality != "" else 0
        lat, lon = _num(msg.lat), _num(msg.lon)
        self._quality = quality
        if quality == 0 or lat is None or lon is None:
            self.has_fix_now = False
            return
        now = self._clock.monotonic_ns()
        utc = self._utc_ns(msg.time)
        prev = self.fix if self.fix is not None and utc is not None and self.fix.utc_ns == utc else None
        hdop = _num(msg.HDOP)
        hdop = hdop if hdop is not None else self._gsa_hdop
        alt = _num(msg.alt)
        self._check_fix(lat, lon, alt, hdop)
        sats = int(msg.numSV) if msg.numSV != "" else None
        self.fix = Location(
            lat=lat,
            lon=lon,
            alt_m=alt,
            hdop=hdop,
            fix=self._fix_name(),
            num_sats=sats,
            speed_mps=prev.speed_mps if prev else None,
            course_deg=prev.course_deg if prev else None,
            utc_ns=utc,
            received_mono_ns=now,
            age_s=0.0,
        )
        self.has_fix_now = True

    def _rmc(self, msg: Any) -> None:
        if isinstance(msg.date, _dt.date):
            self._date = msg.date
        utc = self._utc_ns(msg.time)
        now = self._clock.monotonic_ns()
        if utc is not None and msg.status == "A" and utc < GNSS_TIME_FLOOR_NS:
            # a cold-start date, a two-digit year read as 19xx, a week rollover: not a time to judge the
            # clock by (it still pairs this epoch's sentences: the receiver stamps them all alike)
            self._stats.implausible_time += 1
            self._refused(f"RMC time {_dt.datetime.fromtimestamp(utc / 1e9, _dt.UTC):%Y-%m-%d %H:%M:%S} is before "
                          f"{GNSS_TIME_FLOOR:%Y-%m-%d}: not used for the clock")
        elif utc is not None and msg.status == "A":
            skew = (self._clock.wall_ns() - utc) / 1e9
            self.time_check = TimeCheck(skew_s=skew, ok=abs(skew) <= self._tol, measured_mono_ns=now)
        # NMEA 4.1 navStatus 'V' means "no navigational status given" (u-blox sends it
        # always), not "invalid": validity is status A and a posMode other than N.
        valid = msg.status == "A" and getattr(msg, "posMode", "A") != "N"
        lat, lon = _num(msg.lat), _num(msg.lon)
        if not valid or lat is None or lon is None:
            self.has_fix_now = False
            return
        spd = _num(msg.spd)
        cog = _num(msg.cog)
        base = self.fix
        same_epoch = base is not None and base.utc_ns is not None and base.utc_ns == utc
        if same_epoch and base is not None:
            self._check_fix(lat, lon, base.alt_m, base.hdop)
        else:
            self._check_fix(lat, lon, None, self._gsa_hdop)
        self.fix = Location(
            lat=lat,
            lon=lon,
            alt_m=base.alt_m if same_epoch and base else None,
            hdop=base.hdop if same_epoch and base else self._gsa_hdop,
            fix=base.fix if same_epoch and base else self._fix_name(),
            num_sats=base.num_sats if same_epoch and base else None,
            speed_mps=None if spd is None else spd * KNOT_MPS,
            course_deg=cog,
            utc_ns=utc,
            received_mono_ns=now,
            age_s=0.0,
        )
        self.has_fix_now = True

    def _gsa(self, msg: Any) -> None:
        self._mode = int(msg.navMode) if msg.navMode != "" else 1
        hdop = _num(msg.HDOP)
        self._gsa_hdop = None
        if self._mode == 1:
            self.has_fix_now = False
        if hdop is not None and (problem := location_problem(0.0, 0.0, None, hdop)) is not None:
            raise _Implausible(problem)
        self._gsa_hdop = hdop

    def _utc_ns(self, t: Any) -> int | None:
        if not isinstance(t, _dt.time) or self._date is None:
            return None
        dt = _dt.datetime.combine(self._date, t.replace(tzinfo=None), tzinfo=_dt.UTC)
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


class LocationTracker:
    """Latest GNSS fix from a serial NMEA stream, read on a background thread.

    ``open_stream`` defaults to opening ``config.device`` with pyserial; tests and the
    simulator may pass another factory. ``feed()`` processes bytes synchronously
    (no thread needed).
    """

    def __init__(
        self,
        config: GnssConfig,
        clock: Clock,
        open_stream: Callable[[], ByteStream] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._open = open_stream or (
            lambda: open_serial(config.device, config.baudrate, config.read_timeout_s)
        )
        self._lock = threading.Lock()
        self._stats = GnssStats()
        self._framer = NmeaFramer(self._stats, config.max_line_bytes)
        self._state = FixState(clock, config.clock_tolerance_s, self._stats)
        self._last_data_mono_ns: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        self._connected = threading.Event()

    # -- reading -------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Process raw bytes from the receiver."""
        if not data:
            return
        with self._lock:
            self._last_data_mono_ns = self._clock.monotonic_ns()
            for sentence in self._framer.feed(data):
                self._state.apply(sentence)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gnss-reader", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> LocationTracker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        stream: ByteStream | None = None
        try:
            while not self._stop.is_set():
                if stream is None:
                    try:
                        stream = self._open()
                    except HardwareError as exc:
                        self._note_error(exc, "open_errors")
                        self._stop.wait(self._config.reopen_interval_s)
                        continue
                    self._connected.set()
                try:
                    data = stream.read_chunk()
                except HardwareError as exc:
                    self._note_error(exc, "read_errors")
                    self._connected.clear()
                    stream.close()
                    stream = None
                    self._stop.wait(self._config.reopen_interval_s)
                    continue
                self.feed(data)
        finally:
            self._connected.clear()
            if stream is not None:
                stream.close()

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait (real time) until the reader thread has the port open."""
        return self._connected.wait(timeout_s)

    def _note_error(self, exc: Exception, counter: str) -> None:
        with self._lock:
            setattr(self._stats, counter, getattr(self._stats, counter) + 1)
            first = self._last_error != str(exc)
            self._last_error = str(exc)
        if first:
            log.warning("GNSS: %s", exc)

    # -- queries (called from the loop) ---------------------------------------
    def latest(self) -> Location | None:
        """The most recent valid fix with ``age_s`` from the clock, or None if none yet."""
        with self._lock:
            fix = self._state.fix
        if fix is None:
            return None
        age = max(0, self._clock.monotonic_ns() - fix.received_mono_ns) / 1e9
        return dataclasses.replace(fix, age_s=age)

    def marker_location(self) -> dict[str, Any] | None:
        """``latest().to_marker_location()``, or None without a fix younger than max_fix_age_s."""
        fix = self.latest()
        if fix is None or fix.age_s > self._config.max_fix_age_s:
            return None
        return fix.to_marker_location()

    def time_check(self) -> TimeCheck | None:
        """System clock vs GNSS UTC from the last RMC with a valid time (None before one)."""
        with self._lock:
            return self._state.time_check

    def has_fix(self) -> bool:
        """Whether the receiver's last report was a valid fix."""
        with self._lock:
            return self._state.has_fix_now

    def silent_for_s(self) -> float | None:
        """Seconds since any byte arrived (None if nothing ever did)."""
        with self._lock:
            last = self._last_data_mono_ns
        return None if last is None else (self._clock.monotonic_ns() - last) / 1e9

    def stats(self) -> GnssStats:
        with self._lock:
            return dataclasses.replace(self._stats)

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    @property
    def last_refusal(self) -> str | None:
        """Why the last checksum-valid but implausible sentence was refused (None if none was)."""
        with self._lock:
            return self._state.last_refusal


class GnssLocation:
    """The GNSS receiver as the firmware's location part (``assemble``'s ``LocationSource``).

    ``location()`` is the marker's ``location``: the latest fix with its age, or None
    without one younger than ``max_fix_age_s``.
    """

    def __init__(self, tracker: LocationTracker, max_fix_age_s: float) -> None:
        self.tracker = tracker
        self.max_fix_age_s = max_fix_age_s
        self._refused: str | None = None  # the last fix a marker could not carry (logged once)

    def start(self) -> None:
        self.tracker.start()

    def location(self) -> MarkerLocation | None:
        from bodycam.device.uplink.markers import Location as MarkerLocation

        fix = self.tracker.latest()
        if fix is None or fix.age_s > self.max_fix_age_s:
            return None
        try:
            loc = MarkerLocation(**fix.to_marker_location())
        except MarkerError as exc:  # FixState refuses such fixes; never cost a marker if one slips through
            if self._refused != str(exc):
                log.error("GNSS fix not usable in markers: %s", exc)
            self._refused = str(exc)
            return None
        self._refused = None
        return loc

    def close(self) -> None:
        self.tracker.stop()
