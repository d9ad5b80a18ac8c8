"""Telemetry at base: the storage rules of ``<prefix>/<device>/telemetry``, written once for both stores.

A message is validated by :func:`bodycam.base.validate.validate_telemetry` (the firmware's own reader,
``bodycam.device.uplink.telemetry.read_telemetry``) before it gets here. Per device, base keeps:

* ``telemetry_latest``: the last message received (by base's receive time: a camera sends what it
  queued while offline first, then the current snapshot, so the last received is the newest);
* ``telemetry``: a bounded history, the newest :data:`HISTORY_PER_DEVICE` messages of each device
  (older rows are deleted in the same transaction);
* ``devices.last_seen_ns``: telemetry is a sign of life, as a marker or a live status is;
* the device's position (``devices.pos_*``, ``rules.POSITION_COLUMNS``) when the message has a location
  newer than the one base has (an idle camera is placed too: peer activation, ``base/peer.py``); "newer"
  by the camera's clock, unless that is more than ``rules.CLOCK_AHEAD_MAX_S`` ahead of base's receive time
  (then by the receive time: ``rules.position_t_ns``), so one message from a wrong clock cannot pin it.

Both stores call :func:`add_telemetry` inside their own transaction, devices in sorted order (so a
telemetry batch and a marker batch, which locks ``devices`` rows in sorted order on PostgreSQL, cannot
deadlock).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bodycam.base import rules
from bodycam.base.rules import Tx
from bodycam.device.errors import MarkerError
from bodycam.device.uplink.markers import parse_json
from bodycam.device.uplink.telemetry import Telemetry, read_telemetry

#: rows of history kept per device (one hour at the firmware's default 10 s interval)
HISTORY_PER_DEVICE = 360


def schema(*, serial: str) -> tuple[str, ...]:
    return (
        "CREATE TABLE IF NOT EXISTS telemetry_latest (device TEXT PRIMARY KEY, t TEXT NOT NULL,"
        " t_ns BIGINT NOT NULL, received_ns BIGINT NOT NULL, body TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS telemetry (n {serial}, device TEXT NOT NULL, t_ns BIGINT NOT NULL,"
        " received_ns BIGINT NOT NULL, body TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS telemetry_device_n ON telemetry(device, n)",
    )


@dataclass(frozen=True)
class TelemetryIn:
    """One validated message: what was read, the JSON text as received, when base received it."""

    telemetry: Telemetry
    body: str
    received_ns: int


@dataclass(frozen=True)
class StoredTelemetry:
    telemetry: Telemetry
    received_ns: int


# the device's row in one statement: made if new, last seen raised, the position taken if the message has
# a newer one than the row (rules.SET_POSITION's rule); SET expressions read the row as it was
_NEWER_POS = ("excluded.pos_t_ns IS NOT NULL AND (devices.pos_t_ns IS NULL OR devices.pos_t_ns <= excluded.pos_t_ns "
              f"OR devices.pos_t_ns > devices.pos_received_ns + {rules.CLOCK_AHEAD_MAX_NS})")
_UPSERT_DEVICE = (
    "INSERT INTO devices(device, last_seen_ns, max_seq, contig_seq, pos_lat, pos_lon, pos_t_ns, pos_received_ns) "
    "VALUES (?, ?, 0, 0, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET "
    "last_seen_ns = CASE WHEN excluded.last_seen_ns > devices.last_seen_ns THEN excluded.last_seen_ns "
    "ELSE devices.last_seen_ns END, "
    + ", ".join(f"{c} = CASE WHEN {_NEWER_POS} THEN excluded.{c} ELSE devices.{c} END"
                for c in ("pos_lat", "pos_lon", "pos_t_ns", "pos_received_ns"))
)


def add_telemetry(tx: Tx, items: Sequence[TelemetryIn], *, history: int = HISTORY_PER_DEVICE) -> None:
    """Store a batch (inside the caller's transaction): history, latest, the device's row (last seen and,
    from a located message newer than the position it has, its position); prune the history. One
    ``executemany`` per statement (four), rows in device order."""
    ordered = [item for _, item in sorted(enumerate(items), key=lambda p: (p[1].telemetry.device, p[0]))]
    rows = [(item.telemetry, item.received_ns, rules.safe_text(item.body)) for item in ordered]
    devices = sorted({tel.device for tel, _, _ in rows})
    tx.many("INSERT INTO telemetry(device, t_ns, received_ns, body) VALUES (?,?,?,?)",
            [(tel.device, tel.t_ns, rx, body) for tel, rx, body in rows])
    tx.many(
        "INSERT INTO telemetry_latest(device, t, t_ns, received_ns, body) VALUES (?,?,?,?,?) "
        "ON CONFLICT (device) DO UPDATE SET t=excluded.t, t_ns=excluded.t_ns, "
        "received_ns=excluded.received_ns, body=excluded.body "
        "WHERE excluded.received_ns >= telemetry_latest.received_ns",
        [(tel.device, tel.t, tel.t_ns, rx, body) for tel, rx, body in rows],
    )
    tx.many(_UPSERT_DEVICE, [(tel.device, rx, *((tel.location.lat, tel.location.lon, rules.position_t_ns(tel.t_ns, rx), rx)
                                                  if tel.location is not None else (None, None, None, None)))
                             for tel, rx, _ in rows])
    tx.many(
        "DELETE FROM telemetry WHERE device=? AND n < ("
        "SELECT n FROM telemetry WHERE device=? ORDER BY n DESC LIMIT 1 OFFSET ?)",
        [(device, device, history - 1) for device in devices],
    )


def _read(body: Any) -> Telemetry | None:
    """A stored body read back by the same reader (None if a newer reader no longer accepts it)."""
    try:
        return read_telemetry(parse_json(str(body)))
    except MarkerError:
        return None


def latest_rows(rows: Sequence[Sequence[Any]]) -> list[StoredTelemetry]:
    """Rows of ``SELECT body, received_ns``."""
    out = []
    for body, rx in rows:
        tel = _read(body)
        if tel is not None:
            out.append(StoredTelemetry(tel, int(rx)))
    return out


LATEST_QUERY = "SELECT body, received_ns FROM telemetry_latest"
HISTORY_QUERY = "SELECT body, received_ns FROM telemetry WHERE device=? ORDER BY n DESC LIMIT ?"
