"""Simulated GNSS receiver: a route written as NMEA 0183 into a real pseudo-terminal.

The firmware's own pyserial code opens :attr:`PtyPort.device` exactly as it opens
``/dev/serial0`` on a Pi. :class:`GnssSimulator` turns a :class:`Route` (timed
waypoints, linearly interpolated) into RMC + GGA + GSA epochs with correct
checksums, optionally injecting garbage (random bytes, corrupted checksums,
truncated sentences) at a seeded rate, and counts what it injected.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import pty
import random
import threading
import tty
from collections.abc import Sequence
from dataclasses import dataclass, field

from bodycam.device.clock import Clock
from bodycam.device.errors import ConfigError
from bodycam.device.hw.gnss import nmea_sentence

EARTH_RADIUS_M = 6_371_000.0
KNOT_MPS = 1852.0 / 3600.0


@dataclass(frozen=True)
class Waypoint:
    t_s: float
    lat: float
    lon: float
    alt_m: float = 50.0


@dataclass(frozen=True)
class RoutePoint:
    lat: float
    lon: float
    alt_m: float
    speed_mps: float
    course_deg: float


class Route:
    """Timed waypoints; positions between them are interpolated linearly."""

    def __init__(self, waypoints: Sequence[Waypoint]) -> None:
        if not waypoints:
            raise ConfigError("gnss route: needs at least one waypoint")
        for i, w in enumerate(waypoints):
            if not (-90 <= w.lat <= 90 and -180 <= w.lon <= 180) or not math.isfinite(w.t_s):
                raise ConfigError(f"gnss route[{i}]: invalid waypoint {w}")
            if i and w.t_s <= waypoints[i - 1].t_s:
                raise ConfigError(f"gnss route[{i}]: times must increase ({w.t_s} after {waypoints[i - 1].t_s})")
        self.waypoints = list(waypoints)

    def at(self, t_s: float) -> RoutePoint:
        wps = self.waypoints
        if len(wps) == 1 or t_s <= wps[0].t_s:
            a, b, f = wps[0], wps[min(1, len(wps) - 1)], 0.0
        elif t_s >= wps[-1].t_s:
            a, b, f = wps[-2], wps[-1], 1.0
        else:
            i = next(k for k in range(1, len(wps)) if wps[k].t_s >= t_s)
            a, b = wps[i - 1], wps[i]
            f = (t_s - a.t_s) / (b.t_s - a.t_s)
        lat = a.lat + (b.lat - a.lat) * f
        lon = a.lon + (b.lon - a.lon) * f
        alt = a.alt_m + (b.alt_m - a.alt_m) * f
        north = math.radians(b.lat - a.lat) * EARTH_RADIUS_M
        east = math.radians(b.lon - a.lon) * EARTH_RADIUS_M * math.cos(math.radians((a.lat + b.lat) / 2))
        dist = math.hypot(north, east)
        moving = a is not b and 0.0 <= f < 1.0 and dist > 0
        speed = dist / (b.t_s - a.t_s) if moving else 0.0
        course = math.degrees(math.atan2(east, north)) % 360.0 if dist > 0 else 0.0
        return RoutePoint(lat, lon, alt, speed, course)


def _lat(v: float) -> tuple[str, str]:
    a = abs(v)
    d = int(a)
    return f"{d:02d}{(a - d) * 60:08.5f}", "N" if v >= 0 else "S"


def _lon(v: float) -> tuple[str, str]:
    a = abs(v)
    d = int(a)
    return f"{d:03d}{(a - d) * 60:08.5f}", "E" if v >= 0 else "W"


def epoch_sentences(
    utc_ns: int,
    point: RoutePoint | None,
    *,
    hdop: float = 0.9,
    sats: int = 9,
    quality: int = 1,
    talker: str = "GN",
) -> list[bytes]:
    """RMC, GGA, GSA for one epoch; ``point=None`` reports "no fix"."""
    dt = _dt.datetime.fromtimestamp(utc_ns // 1_000_000_000, tz=_dt.UTC)
    hhmmss = dt.strftime("%H%M%S") + f".{(utc_ns // 10_000_000) % 100:02d}"
    ddmmyy = dt.strftime("%d%m%y")
    if point is None:
        return [
            nmea_sentence(f"{talker}RMC,{hhmmss},V,,,,,,,{ddmmyy},,,N,V"),
            nmea_sentence(f"{talker}GGA,{hhmmss},,,,,0,00,99.99,,,,,,"),
            nmea_sentence(f"{talker}GSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99,1"),
        ]
    la, ns = _lat(point.lat)
    lo, ew = _lon(point.lon)
    knots = point.speed_mps / KNOT_MPS
    svs = ",".join(f"{i + 1:02d}" if i < sats else "" for i in range(12))
    return [
        nmea_sentence(f"{talker}RMC,{hhmmss},A,{la},{ns},{lo},{ew},{knots:.3f},{point.course_deg:.2f},{ddmmyy},,,A,V"),
        nmea_sentence(
            f"{talker}GGA,{hhmmss},{la},{ns},{lo},{ew},{quality},{sats:02d},{hdop:.2f},{point.alt_m:.1f},M,47.0,M,,"
        ),
        nmea_sentence(f"{talker}GSA,A,3,{svs},{hdop * 1.6:.2f},{hdop:.2f},{hdop * 1.3:.2f},1"),
    ]


class PtyPort:
    """A real pseudo-terminal pair: the simulator writes the master, firmware opens ``device``."""

    def __init__(self) -> None:
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.device = os.ttyname(self._slave)
        self._lock = threading.Lock()
        self._closed = False

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                raise OSError("pty closed")
            view = memoryview(data)
            while view:
                n = os.write(self._master, view)
                view = view[n:]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._master)
                os.close(self._slave)

    def __enter__(self) -> PtyPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Injected:
    garbage_bursts: int = 0
    bad_checksums: int = 0
    truncated: int = 0
    epochs: int = 0
    sentences: int = 0  # good sentences written


@dataclass
class GnssSimulator:
    """Writes ``route`` as NMEA epochs into ``port``.

    ``garbage_rate`` is the probability per sentence of one injected fault (chosen
    from garbage burst / bad checksum / truncation), drawn from ``random.Random(seed)``.
    ``no_fix_until_s``: epochs before that report "no fix"; ``silent_after_s``: the
    receiver stops writing (tests of a receiver that goes quiet).
    """

    port: PtyPort
    route: Route
    start_utc_ns: int
    rate_hz: float = 1.0
    garbage_rate: float = 0.0
    seed: int = 0
    talker: str = "GN"
    no_fix_until_s: float = 0.0
    silent_after_s: float = math.inf
    injected: Injected = field(default_factory=Injected)

    def __post_init__(self) -> None:
        if not (0.0 <= self.garbage_rate <= 1.0):
            raise ConfigError(f"gnss sim: garbage_rate must be 0..1, got {self.garbage_rate}")
        if not (0.1 <= self.rate_hz <= 20.0):
            raise ConfigError(f"gnss sim: rate_hz must be 0.1..20, got {self.rate_hz}")
        self._rng = random.Random(self.seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def epoch_bytes(self, t_s: float) -> bytes:
        """One epoch at route time ``t_s`` (with injected faults), counting what it holds."""
        if t_s >= self.silent_after_s:
            return b""
        point = None if t_s < self.no_fix_until_s else self.route.at(t_s)
        utc = self.start_utc_ns + round(t_s * 1e9)
        out = bytearray()
        self.injected.epochs += 1
        for s in epoch_sentences(utc, point, talker=self.talker):
            if self._rng.random() < self.garbage_rate:
                fault = self._rng.randrange(3)
                if fault == 0:
                    self.injected.garbage_bursts += 1
                    burst = bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(1, 40)))
                    out += burst.replace(b"$", b"#").replace(b"\n", b" ") + b"\r\n"
                    self.injected.sentences += 1
                    out += s
                elif fault == 1:
                    self.injected.bad_checksums += 1
                    i = self._rng.randrange(7, len(s) - 5)
                    ch = b"0" if s[i : i + 1] != b"0" else b"1"
                    out += s[:i] + ch + s[i + 1 :]
                else:
                    self.injected.truncated += 1
                    out += s[: self._rng.randrange(2, len(s) - 4)]
            else:
                self.injected.sentences += 1
                out += s
        return bytes(out)

    def write_epoch(self, t_s: float) -> None:
        data = self.epoch_bytes(t_s)
        if data:
            self.port.write(data)

    # -- following a clock on a thread (for the simulator runtime) -------------
    def start(self, clock: Clock, t0_ns: int | None = None, poll_s: float = 0.01) -> None:
        """Write an epoch each time ``clock`` passes the next epoch time (virtual or real)."""
        base = clock.monotonic_ns() if t0_ns is None else t0_ns

        def run() -> None:
            k = 0
            while not self._stop.is_set():
                while (clock.monotonic_ns() - base) / 1e9 >= k / self.rate_hz:
                    try:
                        self.write_epoch(k / self.rate_hz)
                    except OSError:
                        return
                    k += 1
                self._stop.wait(poll_s)

        self._stop.clear()
        self._thread = threading.Thread(target=run, name="gnss-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
