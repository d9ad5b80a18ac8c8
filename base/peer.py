"""Peer activation: a gunshot marker with a location starts every online camera near it.

When a ``gunshot`` marker with a ``location`` reaches base, base publishes ``<prefix>/<device>/cmd/record``
(QoS 1, MQTT 5 message expiry ``expiry_s``; payload in :mod:`bodycam.device.uplink.commands`) to every
camera that is ``online`` (its retained/live status) and whose last known position is within
``radius_m`` (great-circle distance) of the shot. The camera starts recording with its pre-event buffer
and emits ``recording_start`` with ``reason = "peer:<shooter's device>/<marker id>"``.

**Exactly one base instance acts per marker**, however many ``listen`` instances share the broker
group and however often the marker arrives (camera resends, a broker redelivery after a crash): the
instance that processes it first *claims* it by inserting the marker's id into ``peer_claims``
(primary key; ``ON CONFLICT DO NOTHING``, one transaction) and acts only when its insert made the
row. The claim is tried for stored markers and for duplicates alike, so a base killed between
storing a marker and claiming it leaves the claim to whichever instance gets the redelivery. What
is not covered: a base killed after the claim and before the publish (the commands are then lost;
``peer_commands`` shows the claim without commands).

**Positions** (:class:`PositionSource`): the location of each device's newest marker that has one
(:class:`MarkerPositions`) and of its latest telemetry (:class:`TelemetryPositions`, every 10 s from
a camera, so an idle camera is placed too), no older than ``position_max_age_s`` by base's receive
time; the newest of the two wins.

**Stale shots do nothing**: a marker whose time ``t`` is more than ``max_shot_age_s`` from base's
clock (a camera's outbox that held it while offline, or a camera whose clock is wrong) starts no one;
this is logged once per device.

Every command sent is a row of ``peer_commands`` (id, target, reason, marker, distance, who, when,
expiry): the dashboard shows them, and an operator's command (``base:<user>``) is stored there too.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bodycam.base.store import MarkerStore, _Store
from bodycam.device.clock import Clock, SystemClock
from bodycam.device.errors import StorageError, UsageError
from bodycam.device.uplink.commands import record_payload
from bodycam.device.uplink.markers import Marker, uuid7
from bodycam.device.uplink.mqtt_config import topic
from bodycam.device.uplink.validate import check_time

_log = logging.getLogger(__name__)
EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
NS = 1_000_000_000

#: publish(topic, payload, expiry_s) -> True when handed to the MQTT client
Publish = Callable[[str, bytes, int], bool]


def great_circle_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in metres on a sphere of the mean Earth radius (error < 0.5 % vs WGS-84)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class PeerConfig:
    radius_m: float = 300.0
    expiry_s: int = 60  # MQTT 5 message expiry and the command's ``expires``
    position_max_age_s: float = 900.0  # a camera's last position older than this is not used
    max_shot_age_s: float = 120.0  # a gunshot marker older than this (by its t) starts no one
    enabled: bool = True

    def __post_init__(self) -> None:
        if not (self.radius_m > 0 and math.isfinite(self.radius_m)):
            raise ValueError(f"peer radius {self.radius_m} m must be a positive number")
        if not 1 <= self.expiry_s <= 86400:
            raise ValueError(f"peer command expiry {self.expiry_s} s must be 1..86400")


@dataclass(frozen=True)
class Position:
    device: str
    lat: float
    lon: float
    received_ns: int  # when base learnt it
    source: str  # "marker", "telemetry"


class PositionSource(Protocol):
    def positions(self, devices: Sequence[str], since_ns: int) -> list[Position]:
        """The newest known position of each of ``devices`` learnt at or after ``since_ns``."""
        ...


class MarkerPositions:
    """Positions from each device's newest stored marker that carries a location."""

    def __init__(self, store: _Store, scan: int = 50) -> None:
        self.store = store
        self.scan = scan

    def positions(self, devices: Sequence[str], since_ns: int) -> list[Position]:
        out: list[Position] = []
        for device in devices:
            rows = self.store.read(
                "SELECT body, received_ns FROM markers WHERE device=? AND received_ns >= ? ORDER BY seq DESC LIMIT ?",
                (device, since_ns, self.scan),
            )
            for body, received_ns in rows:
                loc = json.loads(body).get("location")
                if isinstance(loc, dict) and isinstance(loc.get("lat"), int | float) and isinstance(loc.get("lon"), int | float):
                    out.append(Position(device, float(loc["lat"]), float(loc["lon"]), int(received_ns), "marker"))
                    break
        return out


class TelemetryPositions:
    """Positions from each device's latest telemetry (``location``, as in markers; ``base/telemetry.py``)."""

    def __init__(self, store: _Store) -> None:
        self.store = store

    def positions(self, devices: Sequence[str], since_ns: int) -> list[Position]:
        want = set(devices)
        out: list[Position] = []
        for st in self.store.telemetry():
            loc = st.telemetry.location
            if st.telemetry.device in want and st.received_ns >= since_ns and loc is not None:
                out.append(Position(st.telemetry.device, loc.lat, loc.lon, st.received_ns, "telemetry"))
        return out


def _schema(serial: str) -> tuple[str, ...]:
    return (
        "CREATE TABLE IF NOT EXISTS peer_claims (marker_id TEXT PRIMARY KEY, device TEXT NOT NULL,"
        " instance TEXT NOT NULL, t_ns BIGINT NOT NULL, targets INTEGER NOT NULL DEFAULT 0)",
        f"CREATE TABLE IF NOT EXISTS peer_commands (n {serial}, id TEXT NOT NULL UNIQUE, device TEXT NOT NULL,"
        " reason TEXT NOT NULL, marker_id TEXT, distance_m DOUBLE PRECISION, issued_by TEXT NOT NULL,"
        " t_ns BIGINT NOT NULL, expires_ns BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS peer_commands_device ON peer_commands(device, n)",
    )


def ensure_tables(store: MarkerStore | _Store) -> None:
    """``peer_claims`` and ``peer_commands`` in the store's database (a non-SQL stand-in has none)."""
    if not isinstance(store, _Store):
        return
    from bodycam.base.store_pg import _SCHEMA_LOCK, PostgresStore

    pg = isinstance(store, PostgresStore)
    with store.transaction() as tx:
        if pg:
            tx.one("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
        for stmt in _schema("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY" if pg else "INTEGER PRIMARY KEY AUTOINCREMENT"):
            tx.run(stmt)


@dataclass(frozen=True)
class Command:
    id: str
    device: str
    reason: str
    payload: bytes
    topic: str
    distance_m: float | None


def record_command(prefix: str, device: str, reason: str, now_ns: int, expiry_s: int,
                   distance_m: float | None = None) -> Command:
    cid = uuid7(now_ns)
    return Command(cid, device, reason, record_payload(cid, device, reason, now_ns, expiry_s),
                   topic(prefix, device, "cmd/record"), distance_m)


def log_commands(store: _Store, commands: Sequence[Command], marker_id: str | None, issued_by: str,
                 now_ns: int, expiry_s: int) -> None:
    with store.transaction() as tx:
        for c in commands:
            tx.run(
                "INSERT INTO peer_commands(id, device, reason, marker_id, distance_m, issued_by, t_ns, expires_ns)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (c.id, c.device, c.reason, marker_id, c.distance_m, issued_by, now_ns, now_ns + expiry_s * NS),
            )


class PeerActivation:
    """The consumer's hook (:meth:`__call__` after every stored batch); see the module docstring."""

    def __init__(self, store: MarkerStore, cfg: PeerConfig, *, prefix: str, instance: str,
                 clock: Clock | None = None, sources: Sequence[PositionSource] | None = None) -> None:
        if not isinstance(store, _Store):
            raise StorageError(f"peer activation needs a SQLite or PostgreSQL store, not {type(store).__name__}")
        ensure_tables(store)
        self.store = store
        self.cfg = cfg
        self.prefix = prefix
        self.instance = instance
        self.clock = clock or SystemClock()
        self.sources: list[PositionSource] = (
            list(sources) if sources is not None else [MarkerPositions(store), TelemetryPositions(store)])
        self.sent = 0
        self._stale_logged: set[str] = set()

    def __call__(self, markers: Sequence[Marker], publish: Publish) -> None:
        for m in markers:
            if self.cfg.enabled and m.kind == "gunshot" and m.location is not None:
                self.activate(m, publish)

    def nearby(self, m: Marker, now_ns: int) -> list[tuple[str, float]]:
        """Online devices (not ``m``'s) whose last position is within the radius: (device, metres), nearest first."""
        assert m.location is not None
        online = [str(r[0]) for r in self.store.read("SELECT device FROM devices WHERE state='online'")
                  if str(r[0]) != m.device]
        if not online:
            return []
        since = now_ns - int(self.cfg.position_max_age_s * NS)
        newest: dict[str, Position] = {}
        for source in self.sources:
            for p in source.positions(online, since):
                if p.device not in newest or p.received_ns > newest[p.device].received_ns:
                    newest[p.device] = p
        near = [(d, great_circle_m(m.location.lat, m.location.lon, p.lat, p.lon)) for d, p in newest.items()]
        return sorted(((d, dist) for d, dist in near if dist <= self.cfg.radius_m), key=lambda x: (x[1], x[0]))

    def _claim(self, m: Marker, now_ns: int) -> bool:
        with self.store.transaction() as tx:
            return bool(tx.run(
                "INSERT INTO peer_claims(marker_id, device, instance, t_ns) VALUES (?,?,?,?) "
                "ON CONFLICT (marker_id) DO NOTHING",
                (m.id, m.device, self.instance, now_ns),
            ))

    def activate(self, m: Marker, publish: Publish) -> list[Command]:
        """Claim ``m`` and send ``cmd/record`` to the cameras near it; [] if another instance has it."""
        now = self.clock.wall_ns()
        age_s = (now - check_time(m.t)) / NS
        if abs(age_s) > self.cfg.max_shot_age_s:
            if m.device not in self._stale_logged:
                self._stale_logged.add(m.device)
                _log.warning("gunshot %s of %s is %.0f s %s base's clock (limit %.0f s): no peer activation "
                             "(logged once per device)", m.id, m.device, abs(age_s),
                             "behind" if age_s > 0 else "ahead of", self.cfg.max_shot_age_s)
            return []
        if not self._claim(m, now):
            return []
        reason = f"peer:{m.device}/{m.id}"
        commands = [record_command(self.prefix, d, reason, now, self.cfg.expiry_s, dist) for d, dist in self.nearby(m, now)]
        if commands:
            log_commands(self.store, commands, m.id, self.instance, now, self.cfg.expiry_s)
            with self.store.transaction() as tx:
                tx.run("UPDATE peer_claims SET targets=? WHERE marker_id=?", (len(commands), m.id))
        for c in commands:
            if publish(c.topic, c.payload, self.cfg.expiry_s):
                self.sent += 1
                _log.warning("peer activation: %s asked to record (%.0f m from %s's shot %s)",
                             c.device, c.distance_m or 0.0, m.device, m.id)
            else:
                _log.error("peer activation: cmd/record to %s not sent (no broker connection)", c.device)
        return commands


def hooks_for(store: MarkerStore, cfg: PeerConfig, *, prefix: str, instance: str) -> list[PeerActivation]:
    """``listen``'s consumer hooks: peer activation when enabled and the store is SQL (a test's stand-in is not)."""
    if not cfg.enabled or not isinstance(store, _Store):
        return []
    return [PeerActivation(store, cfg, prefix=prefix, instance=instance)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``listen``'s peer-activation options."""
    d = PeerConfig()
    p.add_argument("--peer-radius-m", type=float, default=d.radius_m,
                   help=f"a gunshot with a location starts online cameras within this many metres (default "
                   f"{d.radius_m:g}; 0: no peer activation)")
    p.add_argument("--peer-expiry-s", type=int, default=d.expiry_s,
                   help=f"cmd/record expires after this many seconds (MQTT 5 expiry and 'expires'; default {d.expiry_s})")
    p.add_argument("--peer-position-age-s", type=float, default=d.position_max_age_s,
                   help=f"a camera's last position older than this is not used (default {d.position_max_age_s:g})")


def config_from_args(args: argparse.Namespace) -> PeerConfig:
    try:
        return PeerConfig(radius_m=args.peer_radius_m or 1.0, expiry_s=args.peer_expiry_s,
                          position_max_age_s=args.peer_position_age_s, enabled=args.peer_radius_m != 0)
    except ValueError as exc:
        raise UsageError(f"--peer-*: {exc}") from None
