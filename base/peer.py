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

**Positions** (:class:`PositionSource`): each device's last known position, kept on its ``devices`` row
by ingest (``rules.POSITION_COLUMNS``: the newest, by the camera's own clock, of the locations in its
markers and its telemetry, every 10 s from a camera, so an idle camera is placed too; a marker resent
from an outbox does not move it back), learnt no longer than ``position_max_age_s`` ago by base's
receive time. :class:`DevicePositions` reads the online devices inside the shot's bounding box in one
query (a few thousand rows at most, whatever the history), so the cost of a shot does not grow with
the fleet's markers; the exact great-circle distance is then checked here.

**Only verified shots start anyone** (:mod:`bodycam.base.provenance`): a gunshot whose signature does
not verify against a key registered for its device (by default, a device without a registered key has
its markers stored unverified) starts no one: whoever holds a broker identity could otherwise order
every camera near any point to record. Its dashboard alert is still raised, marked unverified. Each
such shot is claimed as below with the outcome ``unverified:<reason>`` (the audit) and logged (at most
once a minute per device).

**At most** ``max_per_minute`` **activations per shooting device** in any 60 s (by base's clock, across
every instance: counted from ``peer_claims`` in the claim's transaction, serialised per device on
PostgreSQL by an advisory lock), so a registered but compromised camera cannot command the fleet
without end. A shot over the limit is claimed with the outcome ``rate_limited`` and logged (at most
once a minute per device); the cameras its first shots started are recording already.

**Stale shots do nothing**: a marker whose time ``t`` is more than ``max_shot_age_s`` from base's
clock (a camera's outbox that held it while offline, or a camera whose clock is wrong) starts no one;
this is logged once per device.

Every command sent is a row of ``peer_commands`` (id, target, reason, marker, distance, who, when,
expiry): the dashboard shows them, and an operator's command (``base:<user>``) is stored there too.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bodycam.base.keys import SignaturePolicy
from bodycam.base.provenance import Provenance
from bodycam.base.rules import CLOCK_AHEAD_MAX_S, add_column, chunks
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
    max_shot_age_s: float = float(CLOCK_AHEAD_MAX_S)  # a gunshot marker further than this from base's clock starts no one
    max_per_minute: int = 10  # activations per shooting device in any 60 s (every instance together)
    enabled: bool = True

    def __post_init__(self) -> None:
        if not (self.radius_m > 0 and math.isfinite(self.radius_m)):
            raise ValueError(f"peer radius {self.radius_m} m must be a positive number")
        if not 1 <= self.expiry_s <= 86400:
            raise ValueError(f"peer command expiry {self.expiry_s} s must be 1..86400")
        if not 1 <= self.max_per_minute <= 10_000:
            raise ValueError(f"peer activations per device and minute {self.max_per_minute} must be 1..10000")


@dataclass(frozen=True)
class Position:
    device: str
    lat: float
    lon: float
    received_ns: int  # when base learnt it
    source: str  # "marker", "telemetry"


class PositionSource(Protocol):
    def around(self, points: Sequence[tuple[float, float]], radius_m: float, since_ns: int) -> list[Position]:
        """The last known position of every online device that may be within ``radius_m`` of one of the
        (lat, lon) ``points`` (a superset is fine: the caller checks the distance), learnt at or after
        ``since_ns``."""
        ...


def bounding_box(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float] | None:
    """(south, west, north, east) in degrees holding every point within ``radius_m`` of (lat, lon) (1 %
    margin); None when the box would reach a pole or cross the antimeridian (then: every position)."""
    dlat = math.degrees(radius_m * 1.01 / EARTH_RADIUS_M)
    south, north = lat - dlat, lat + dlat
    if south <= -90.0 or north >= 90.0:
        return None
    dlon = dlat / math.cos(math.radians(max(abs(south), abs(north))))
    west, east = lon - dlon, lon + dlon
    if west < -180.0 or east > 180.0:
        return None
    return south, west, north, east


class DevicePositions:
    """Positions from the ``devices`` rows (kept by ingest: markers and telemetry with a location)."""

    def __init__(self, store: _Store) -> None:
        self.store = store

    def around(self, points: Sequence[tuple[float, float]], radius_m: float, since_ns: int) -> list[Position]:
        """One query per 100 points (a batch's shots): the union of their bounding boxes."""
        sql = ("SELECT device, pos_lat, pos_lon, pos_received_ns FROM devices "
               "WHERE state='online' AND pos_received_ns >= ?")
        boxes = [bounding_box(lat, lon, radius_m) for lat, lon in dict.fromkeys(points)]
        if not boxes:
            return []
        queries: list[tuple[str, list[float | int]]] = [(sql, [since_ns])]  # a box at a pole or the antimeridian: all
        if all(b is not None for b in boxes):
            queries = []
            for i in range(0, len(boxes), 100):
                part = [b for b in boxes[i:i + 100] if b is not None]
                cond = " OR ".join(["(pos_lat BETWEEN ? AND ? AND pos_lon BETWEEN ? AND ?)"] * len(part))
                queries.append((f"{sql} AND ({cond})", [since_ns, *(v for b in part for v in (b[0], b[2], b[1], b[3]))]))
        found: dict[str, Position] = {}
        for q, args in queries:
            for r in self.store.read(q, tuple(args)):
                found[str(r[0])] = Position(str(r[0]), float(r[1]), float(r[2]), int(r[3]), "device")
        return list(found.values())


def _schema(serial: str) -> tuple[str, ...]:
    return (
        "CREATE TABLE IF NOT EXISTS peer_claims (marker_id TEXT PRIMARY KEY, device TEXT NOT NULL,"
        " instance TEXT NOT NULL, t_ns BIGINT NOT NULL, targets INTEGER NOT NULL DEFAULT 0,"
        f" outcome TEXT NOT NULL DEFAULT '{ACTIVATED}')",
        f"CREATE TABLE IF NOT EXISTS peer_commands (n {serial}, id TEXT NOT NULL UNIQUE, device TEXT NOT NULL,"
        " reason TEXT NOT NULL, marker_id TEXT, distance_m DOUBLE PRECISION, issued_by TEXT NOT NULL,"
        " t_ns BIGINT NOT NULL, expires_ns BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS peer_commands_device ON peer_commands(device, n)",
    )


#: ``peer_claims.outcome``: the shot started the cameras near it (``targets`` of them); else
#: ``unverified:<reason>`` (:mod:`bodycam.base.provenance`) or :data:`RATE_LIMITED`
ACTIVATED = "activated"
RATE_LIMITED = "rate_limited"
RATE_WINDOW_NS = 60 * NS
# the claims' index for the rate limit; made after the outcome column (an older table gets it first)
_CLAIMS_INDEX = "CREATE INDEX IF NOT EXISTS peer_claims_device ON peer_claims(device, t_ns)"


def _rate_lock(device: str) -> int:
    """The PostgreSQL advisory lock serialising one shooting device's claims (a signed 64-bit number)."""
    return int.from_bytes(hashlib.sha256(b"bodycam-peer-rate:" + device.encode()).digest()[:8], "big", signed=True)


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
        # a database from before the outcome column: its claims were activations
        add_column(tx, "peer_claims", "outcome", f"TEXT NOT NULL DEFAULT '{ACTIVATED}'", postgres=pg)
        tx.run(_CLAIMS_INDEX)


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
        tx.many(
            "INSERT INTO peer_commands(id, device, reason, marker_id, distance_m, issued_by, t_ns, expires_ns)"
            " VALUES (?,?,?,?,?,?,?,?)",
            [(c.id, c.device, c.reason, marker_id, c.distance_m, issued_by, now_ns, now_ns + expiry_s * NS)
             for c in commands],
        )


class PeerActivation:
    """The consumer's hook (:meth:`__call__` after every stored batch); see the module docstring."""

    def __init__(self, store: MarkerStore, cfg: PeerConfig, *, prefix: str, instance: str,
                 clock: Clock | None = None, sources: Sequence[PositionSource] | None = None,
                 provenance: Provenance | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(store, _Store):
            raise StorageError(f"peer activation needs a SQLite or PostgreSQL store, not {type(store).__name__}")
        ensure_tables(store)
        self.store = store
        self.cfg = cfg
        self.prefix = prefix
        self.instance = instance
        self.clock = clock or SystemClock()
        self.sources: list[PositionSource] = (
            list(sources) if sources is not None else [DevicePositions(store)])
        # whether a shot is verified: the consumer's own signature rule (base/provenance.py)
        self.provenance = provenance if provenance is not None else Provenance(store)
        self.sent = 0
        self.refused: dict[str, int] = {}  # outcome (unverified:<reason>, rate_limited) -> shots this instance claimed
        self._stale_logged: set[str] = set()
        self._monotonic = monotonic
        self._refusal_logged: dict[tuple[str, str], float] = {}  # (device, outcome) -> when last logged

    def __call__(self, markers: Sequence[Marker], publish: Publish) -> None:
        self.activate_all([m for m in markers if self.cfg.enabled and m.kind == "gunshot" and m.location is not None],
                          publish)

    def nearby(self, m: Marker, now_ns: int, positions: Sequence[Position] | None = None) -> list[tuple[str, float]]:
        """Online devices (not ``m``'s) whose last position is within the radius: (device, metres), nearest
        first. ``positions``: what :meth:`positions` returned for a batch holding ``m`` (else read now)."""
        assert m.location is not None
        lat, lon = m.location.lat, m.location.lon
        if positions is None:
            positions = self.positions([m], now_ns)
        box = bounding_box(lat, lon, self.cfg.radius_m)
        if box is not None:  # a batch's positions are near any of its shots: the box first, cheaply
            positions = [p for p in positions if box[0] <= p.lat <= box[2] and box[1] <= p.lon <= box[3]]
        near = [(p.device, great_circle_m(lat, lon, p.lat, p.lon)) for p in positions if p.device != m.device]
        return sorted(((d, dist) for d, dist in near if dist <= self.cfg.radius_m), key=lambda x: (x[1], x[0]))

    def positions(self, shots: Sequence[Marker], now_ns: int) -> list[Position]:
        """The newest known position of the online devices near any of ``shots`` (one query per source)."""
        points = [(m.location.lat, m.location.lon) for m in shots if m.location is not None]
        since = now_ns - int(self.cfg.position_max_age_s * NS)
        newest: dict[str, Position] = {}
        for source in self.sources:
            for p in source.around(points, self.cfg.radius_m, since):
                if p.device not in newest or p.received_ns > newest[p.device].received_ns:
                    newest[p.device] = p
        return list(newest.values())

    def _claim(self, shots: Sequence[Marker], unverified: dict[str, str], now_ns: int) -> dict[str, str]:
        """Claim the shots (one transaction): marker id -> outcome, for the ids whose claim row this call
        made. ``unverified``: marker id -> why it is not verified. A verified shot is an activation
        unless its device had ``max_per_minute`` of them in the last 60 s (then ``rate_limited``)."""
        from bodycam.base.store_pg import PostgresStore

        ordered = sorted({m.id: m for m in shots}.values(), key=lambda m: m.id)  # uuid7: in time order
        with self.store.transaction() as tx:
            if isinstance(self.store, PostgresStore):  # one device's claims, one instance at a time
                for device in sorted({m.device for m in ordered}):
                    tx.one("SELECT pg_advisory_xact_lock(?)", (_rate_lock(device),))
            made: set[str] = set()
            for part in chunks(ordered):
                values = ",".join("(?,?,?,?,?)" for _ in part)
                args = [v for m in part for v in (m.id, m.device, self.instance, now_ns,
                                                  f"unverified:{unverified[m.id]}" if m.id in unverified else ACTIVATED)]
                rows = tx.all(f"INSERT INTO peer_claims(marker_id, device, instance, t_ns, outcome) VALUES {values} "
                              "ON CONFLICT (marker_id) DO NOTHING RETURNING marker_id", args)
                made.update(str(r[0]) for r in rows)
            mine: dict[str, str] = {m.id: f"unverified:{unverified[m.id]}" for m in ordered if m.id in made and m.id in unverified}
            candidates = [m for m in ordered if m.id in made and m.id not in unverified]
            limited: list[str] = []
            for device in sorted({m.device for m in candidates}):
                ids = [m.id for m in candidates if m.device == device]
                row = tx.one("SELECT COUNT(*) FROM peer_claims WHERE device=? AND outcome=? AND t_ns > ?",
                             (device, ACTIVATED, now_ns - RATE_WINDOW_NS))
                before = int(row[0]) - len(ids) if row is not None else 0  # without this batch's own rows
                allowed = max(0, self.cfg.max_per_minute - before)
                mine.update((i, ACTIVATED) for i in ids[:allowed])
                limited.extend(ids[allowed:])
            mine.update((i, RATE_LIMITED) for i in limited)
            for some in chunks(limited):
                tx.run(f"UPDATE peer_claims SET outcome=? WHERE marker_id IN ({','.join('?' * len(some))})",
                       (RATE_LIMITED, *some))
        return mine

    def _refusal(self, m: Marker, outcome: str) -> None:
        """Count and log (once a minute per device and outcome) a claimed shot that starts no one."""
        self.refused[outcome] = self.refused.get(outcome, 0) + 1
        key, now = (m.device, outcome), self._monotonic()
        if now - self._refusal_logged.get(key, -1e9) < 60.0:
            return
        if len(self._refusal_logged) < 10_000:
            self._refusal_logged[key] = now
        if outcome == RATE_LIMITED:
            _log.warning("gunshot %s of %s: no peer activation, the device's limit of %d activations a minute "
                         "is spent (peer_claims outcome %s; logged once a minute)", m.id, m.device,
                         self.cfg.max_per_minute, outcome)
        else:
            _log.warning("gunshot %s of %s: no peer activation, its signature is not verified (%s; register the "
                         "device's key: bodycam-base keys add) (peer_claims outcome %s; logged once a minute)",
                         m.id, m.device, outcome.split(":", 1)[1], outcome)

    def activate(self, m: Marker, publish: Publish) -> list[Command]:
        """Claim ``m`` and send ``cmd/record`` to the cameras near it; [] if another instance has it."""
        return self.activate_all([m], publish).get(m.id, [])

    def activate_all(self, shots: Sequence[Marker], publish: Publish) -> dict[str, list[Command]]:
        """:meth:`activate` for the gunshots of one batch: one transaction claims them all, one logs every
        command (a burst of shots costs two commits, not three per shot). Returns marker id -> commands."""
        now = self.clock.wall_ns()
        fresh = []
        for m in shots:
            age_s = (now - check_time(m.t)) / NS
            if abs(age_s) <= self.cfg.max_shot_age_s:
                fresh.append(m)
            elif m.device not in self._stale_logged:
                self._stale_logged.add(m.device)
                _log.warning("gunshot %s of %s is %.0f s %s base's clock (limit %.0f s): no peer activation "
                             "(logged once per device)", m.id, m.device, abs(age_s),
                             "behind" if age_s > 0 else "ahead of", self.cfg.max_shot_age_s)
        if not fresh:
            return {}
        unverified = {m.id: why for m in fresh if (why := self.provenance.unverified(m, now)) is not None}
        mine = self._claim(fresh, unverified, now)
        by_id = {m.id: m for m in fresh}
        for mid, outcome in mine.items():
            if outcome != ACTIVATED:
                self._refusal(by_id[mid], outcome)
        claimed = [by_id[mid] for mid, outcome in mine.items() if outcome == ACTIVATED]
        positions = self.positions(claimed, now) if claimed else []
        out: dict[str, list[Command]] = {}
        for m in claimed:
            reason = f"peer:{m.device}/{m.id}"
            out[m.id] = [record_command(self.prefix, d, reason, now, self.cfg.expiry_s, dist)
                         for d, dist in self.nearby(m, now, positions)]
        if any(out.values()):
            with self.store.transaction() as tx:
                tx.many(
                    "INSERT INTO peer_commands(id, device, reason, marker_id, distance_m, issued_by, t_ns, expires_ns)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    [(c.id, c.device, c.reason, mid, c.distance_m, self.instance, now, now + self.cfg.expiry_s * NS)
                     for mid, cs in out.items() for c in cs],
                )
                tx.many("UPDATE peer_claims SET targets=? WHERE marker_id=?",
                        [(len(cs), mid) for mid, cs in out.items() if cs])
        for mid, commands in out.items():
            for c in commands:
                if publish(c.topic, c.payload, self.cfg.expiry_s):
                    self.sent += 1
                    _log.warning("peer activation: %s asked to record (%.0f m from %s's shot %s)",
                                 c.device, c.distance_m or 0.0, by_id[mid].device, mid)
                else:
                    _log.error("peer activation: cmd/record to %s not sent (no broker connection)", c.device)
        return out


def hooks_for(store: MarkerStore, cfg: PeerConfig, *, prefix: str, instance: str,
              signatures: SignaturePolicy | None = None) -> list[PeerActivation]:
    """``listen``'s consumer hooks: peer activation when enabled and the store is SQL (a test's stand-in is not).
    ``signatures``: the consumer's policy (its cache of keys is shared)."""
    if not cfg.enabled or not isinstance(store, _Store):
        return []
    return [PeerActivation(store, cfg, prefix=prefix, instance=instance, provenance=Provenance(store, signatures))]


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
    p.add_argument("--peer-max-per-minute", type=int, default=d.max_per_minute,
                   help=f"at most this many peer activations per shooting camera in any 60 s, all instances "
                   f"together (default {d.max_per_minute}); only verified gunshots activate peers")


def config_from_args(args: argparse.Namespace) -> PeerConfig:
    try:
        return PeerConfig(radius_m=args.peer_radius_m or 1.0, expiry_s=args.peer_expiry_s,
                          position_max_age_s=args.peer_position_age_s, max_per_minute=args.peer_max_per_minute,
                          enabled=args.peer_radius_m != 0)
    except ValueError as exc:
        raise UsageError(f"--peer-*: {exc}") from None
