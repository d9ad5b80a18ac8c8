"""The storage rules of base, written once for both stores (SQLite and PostgreSQL).

A store opens a transaction, wraps its cursor in a :class:`Tx` (SQL written with ``?``
placeholders; the PostgreSQL adapter turns them into ``%s``) and calls :func:`add_markers` for a
batch (the same outcome as one marker at a time, with a few statements per batch: see there). The
rules, per marker:

1. **duplicate**: the same ``id`` with the same content is already stored -> nothing changes;
2. **id conflict**: the same ``id`` with *other* content -> not stored; kept in ``quarantine``
   (kind ``id_conflict``) with the stored marker's id in the reason;
3. **seq conflict**: another marker already holds this ``(device, seq)`` -> not stored; kept in
   ``quarantine`` (kind ``seq_conflict``). ``markers(device, seq)`` is also a unique index;
4. **chain**: ``prev`` is checked against the stored digest of ``seq - 1`` (``ok`` / ``broken`` /
   ``unknown`` while the predecessor is missing); storing a marker **settles** a waiting successor;
5. **gap**: a seq beyond the device's highest seq + 1 reports the seqs newly known to be missing;
6. **contiguous** (what base acknowledges): the highest seq N such that every seq from the
   device's first stored seq up to N is stored; it only grows.

The caller's transaction makes these atomic. PostgreSQL serialises writers per device by locking
the ``devices`` row first (see ``store_pg``); SQLite has one writer at a time (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from bodycam.device.uplink.markers import GENESIS_PREV, Marker
from bodycam.device.uplink.validate import INT64_MAX

T = TypeVar("T")
Chain = Literal["ok", "broken", "unknown"]
Area = tuple[float, float, float, float]  # south, west, north, east (degrees)
Conflict = Literal["id_conflict", "seq_conflict"]


class Tx(Protocol):
    """A cursor inside an open transaction; SQL uses ``?`` placeholders."""

    def one(self, sql: str, args: Sequence[Any] = ()) -> Sequence[Any] | None: ...

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]: ...

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Execute; returns the number of rows changed."""
        ...

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Execute once per row (one round trip where the driver can); returns the rows changed in all."""
        ...


@dataclass(frozen=True)
class AddResult:
    stored: bool  # False: a duplicate id, or a conflict (then ``conflict`` says which)
    chain: Chain
    gap: tuple[int, int] | None  # seqs first..last newly known to be missing before this one
    conflict: Conflict | None = None
    first: bool = False  # the first marker of this device in this database


@dataclass(frozen=True)
class Quarantined:
    """Something that reached base and could not be stored as a marker; kept for inspection."""

    received_ns: int
    topic: str
    device: str | None
    kind: str  # id_conflict, seq_conflict, unstorable, rejected_<reason>
    reason: str
    payload: bytes


@dataclass(frozen=True)
class QuarantineRow:
    n: int
    item: Quarantined


@dataclass(frozen=True)
class Progress:
    """Per device: what base can acknowledge and the first hole above it."""

    device: str
    contiguous: int  # 0: nothing stored yet
    max_seq: int
    next_stored: int | None  # lowest stored seq above ``contiguous`` (None: none)

    @property
    def hole(self) -> tuple[int, int] | None:
        """The first range of missing seqs above ``contiguous``, if any."""
        if self.contiguous == 0 or self.next_stored is None:
            return None
        return (self.contiguous + 1, self.next_stored - 1)


# -- schema ---------------------------------------------------------------------------------------
# Column types differ (BLOB/BYTEA, the quarantine counter); the rest is shared.
def schema(*, blob: str, serial: str) -> tuple[str, ...]:
    """``CREATE`` statements of both stores (one statement each)."""
    return (
        "CREATE TABLE IF NOT EXISTS markers ("
        " id TEXT PRIMARY KEY, device TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,"
        " t TEXT NOT NULL, t_ns BIGINT NOT NULL, received_ns BIGINT NOT NULL,"
        " digest TEXT NOT NULL, prev TEXT NOT NULL, chain TEXT NOT NULL, body TEXT NOT NULL,"
        " lat DOUBLE PRECISION, lon DOUBLE PRECISION)",
        "CREATE INDEX IF NOT EXISTS markers_device_seq ON markers(device, seq)",
        "CREATE INDEX IF NOT EXISTS markers_t ON markers(t_ns)",
        "CREATE TABLE IF NOT EXISTS devices ("
        " device TEXT PRIMARY KEY, state TEXT, status_t TEXT, status_received_ns BIGINT,"
        " last_seen_ns BIGINT NOT NULL, max_seq BIGINT NOT NULL DEFAULT 0)",
        # (the migration adds contig_seq and the position columns POSITION_COLUMNS to every database)
        f"CREATE TABLE IF NOT EXISTS quarantine (n {serial}, received_ns BIGINT NOT NULL,"
        f" topic TEXT NOT NULL, device TEXT, kind TEXT NOT NULL, reason TEXT NOT NULL, payload {blob} NOT NULL)",
        "CREATE INDEX IF NOT EXISTS quarantine_kind ON quarantine(kind, n)",
        # one row, written by ``ping``: proof that the database takes writes (not only reads)
        "CREATE TABLE IF NOT EXISTS store_ping (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)",
    )


def add_column(tx: Tx, table: str, column: str, decl: str, *, postgres: bool) -> None:
    """Add ``column`` (``decl``: its type and constraints) to ``table`` unless it has it: an older database
    upgraded in place (PostgreSQL: call under the schema lock)."""
    if postgres:
        tx.run(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {decl}")
    elif not any(str(r[1]) == column for r in tx.all(f"PRAGMA table_info({table})")):
        tx.run(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


def ping(tx: Tx) -> None:
    """A real write (committed by the caller): a read-only database (a PostgreSQL standby after a
    failover, ``default_transaction_read_only``), a revoked privilege or a locked SQLite file refuse it."""
    tx.run("INSERT INTO store_ping(id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = 1 - store_ping.n")


#: columns ``migrate`` adds to ``devices`` and ``markers`` (a database without one of them is not current)
MIGRATED_COLUMNS = frozenset({"contig_seq", "pos_t_ns"})
#: a device's last known position (its newest by the camera's own time, from a marker or telemetry with a
#: location; ``pos_received_ns``: when base learnt it), kept on its ``devices`` row so peer activation
#: finds the cameras near a shot with one query (``base/peer.py``)
POSITION_COLUMNS = (("pos_lat", "DOUBLE PRECISION"), ("pos_lon", "DOUBLE PRECISION"), ("pos_t_ns", "BIGINT"),
                    ("pos_received_ns", "BIGINT"))
#: how far a camera's clock may run ahead of base's for its time to order positions: a position dated
#: further ahead of base's receive time (an RTC reset, a GNSS glitch: telemetry's ``t`` may be as late as
#: 2262) is ordered by base's receive time instead (:func:`position_t_ns`), so one such message cannot pin
#: a device's position against every later one; the same bound as a gunshot's for peer activation
#: (``base/peer.py`` ``max_shot_age_s``)
CLOCK_AHEAD_MAX_S = 120
CLOCK_AHEAD_MAX_NS = CLOCK_AHEAD_MAX_S * 1_000_000_000


def position_t_ns(t_ns: int, received_ns: int) -> int:
    """The time a position is ordered by: the camera's ``t_ns``, unless it is more than
    :data:`CLOCK_AHEAD_MAX_S` ahead of base's ``received_ns`` (then ``received_ns``)."""
    return t_ns if t_ns <= received_ns + CLOCK_AHEAD_MAX_NS else received_ns


#: a stored position whose time is too far ahead of its receive time (written before
#: :func:`position_t_ns` existed) is replaced by any new one
PINNED_POSITION = f"pos_t_ns > pos_received_ns + {CLOCK_AHEAD_MAX_NS}"
#: set a device's position unless the one it has is newer (by the camera's time, :func:`position_t_ns`);
#: args: lat, lon, t_ns, received_ns, device, t_ns
SET_POSITION = ("UPDATE devices SET pos_lat=?, pos_lon=?, pos_t_ns=?, pos_received_ns=? "
                f"WHERE device=? AND (pos_t_ns IS NULL OR pos_t_ns <= ? OR {PINNED_POSITION})")
MIGRATED_MARKER_COLUMNS = frozenset({"lat", "lon"})


def migrate(tx: Tx, columns: set[str], *, unique_index: bool, marker_columns: set[str] | None = None) -> None:
    """Bring an older database up to date (``columns``: the current columns of ``devices``;
    ``unique_index``: whether ``markers_device_seq_unique`` exists; ``marker_columns``: of ``markers``).

    Adds ``markers.lat``/``lon`` (the marker's location, for the map and the area search), filled
    from the stored bodies.

    Adds ``devices.contig_seq`` (computed from what is stored) and the unique ``(device, seq)``
    index; markers that an older version stored twice for one ``(device, seq)`` move to the
    quarantine (kind ``seq_conflict``), the first received one stays.

    Adds the position columns (:data:`POSITION_COLUMNS`), filled from each device's newest located
    marker (telemetry places the device again within its interval).
    """
    if not unique_index:
        _unique_seqs(tx)
    if marker_columns is not None and "lat" not in marker_columns:
        tx.run("ALTER TABLE markers ADD COLUMN lat DOUBLE PRECISION")
        tx.run("ALTER TABLE markers ADD COLUMN lon DOUBLE PRECISION")
        last = ""
        while rows := tx.all("SELECT id, body FROM markers WHERE id > ? ORDER BY id LIMIT 1000", (last,)):
            for marker_id, body in rows:
                loc = Marker.from_json(str(body)).location
                if loc is not None:
                    tx.run("UPDATE markers SET lat=?, lon=? WHERE id=?", (loc.lat, loc.lon, marker_id))
            last = str(rows[-1][0])
    if "pos_t_ns" not in columns:
        for name, kind in POSITION_COLUMNS:
            tx.run(f"ALTER TABLE devices ADD COLUMN {name} {kind}")
        rows = tx.all("SELECT m.device, m.lat, m.lon, m.t_ns, m.received_ns FROM markers m JOIN ("
                      "SELECT device, MAX(t_ns) AS t FROM markers WHERE lat IS NOT NULL GROUP BY device) x "
                      "ON m.device=x.device AND m.t_ns=x.t WHERE m.lat IS NOT NULL")
        timed = [(r, position_t_ns(int(r[3]), int(r[4]))) for r in rows]
        tx.many(SET_POSITION, [(r[1], r[2], t, r[4], r[0], t) for r, t in timed])
    if "contig_seq" not in columns:
        tx.run("ALTER TABLE devices ADD COLUMN contig_seq BIGINT NOT NULL DEFAULT 0")
        for (device,) in tx.all("SELECT device FROM devices"):
            first = tx.one("SELECT MIN(seq) FROM markers WHERE device=?", (device,))
            if first is not None and first[0] is not None:
                contig = _advance(tx, str(device), int(first[0]))
                tx.run("UPDATE devices SET contig_seq=? WHERE device=?", (contig, device))


def _unique_seqs(tx: Tx) -> None:
    dupes = tx.all(
        "SELECT m.id, m.device, m.seq, m.received_ns, m.body FROM markers m WHERE EXISTS ("
        "SELECT 1 FROM markers o WHERE o.device=m.device AND o.seq=m.seq AND "
        "(o.received_ns < m.received_ns OR (o.received_ns = m.received_ns AND o.id < m.id)))"
    )
    for marker_id, device, seq, received_ns, body in dupes:
        _quarantine(
            tx,
            Quarantined(
                int(received_ns),
                "",
                str(device),
                "seq_conflict",
                f"seq {seq} stored twice by an older version; this one (id {marker_id}) moved here",
                str(body).encode("utf-8"),
            ),
        )
        tx.run("DELETE FROM markers WHERE id=?", (marker_id,))
    tx.run("CREATE UNIQUE INDEX IF NOT EXISTS markers_device_seq_unique ON markers(device, seq)")


# -- writes ---------------------------------------------------------------------------------------
_CHUNK = 400  # rows per prefetch query (SQLite and PostgreSQL both take this many placeholders)
_INSERT = (
    "INSERT INTO markers(id, device, seq, kind, t, t_ns, received_ns, digest, prev, chain, body, lat, lon) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)


class ConcurrentIdConflict(Exception):
    """Another transaction stored one of this batch's ids for another device between the batch's read
    and its insert (PostgreSQL, two consumers): the batch rolls back and is stored again one marker
    per transaction, where the conflict is then seen and quarantined."""


def add_marker(tx: Tx, m: Marker, received_ns: int) -> AddResult:
    """Store one marker by the rules of this module (inside the caller's transaction)."""
    return add_markers(tx, [(m, received_ns)])[0]


@dataclass
class _Dev:
    max_seq: int
    contig: int
    last_seen: int
    db_max: int  # max_seq before this batch: no stored seq of the device is above it
    stored: bool = False
    pos_t_ns: int | None = None  # the device's position's time (the camera's clock)
    pos: tuple[float, float, int, int] | None = None  # a newer position from this batch: lat, lon, t_ns, received_ns


def add_markers(tx: Tx, items: Sequence[tuple[Marker, int]]) -> list[AddResult]:
    """Store (marker, received_ns) pairs in order by the rules of this module, as if one by one, with a
    few statements per batch instead of several per marker: what the batch needs from the database
    (ids, the neighbours ``seq - 1``/``seq + 1`` of each marker, the devices' rows) is read first, the
    rules run in memory, then the rows are written with one ``executemany`` per table."""
    if not items:
        return []
    known_ids: dict[str, str] = {}
    for ids in in_chunks(sorted({m.id for m, _ in items})):
        for row in tx.all(f"SELECT id, body FROM markers WHERE id IN ({','.join('?' * len(ids))})", ids):
            known_ids[str(row[0])] = str(row[1])
    wanted = sorted({(m.device, m.seq + d) for m, _ in items for d in (-1, 0, 1) if 0 < m.seq + d <= INT64_MAX})
    # (device, seq) -> [id, digest, prev, chain, pending row or None (stored before this batch)]
    at: dict[tuple[str, int], list[Any]] = {}
    for pairs in in_chunks(wanted):
        values = ",".join("(?,?)" for _ in pairs)
        args = [v for pair in pairs for v in pair]
        for row in tx.all(f"SELECT device, seq, id, digest, prev, chain FROM markers WHERE (device, seq) IN "
                          f"(VALUES {values})", args):
            at[(str(row[0]), int(row[1]))] = [str(row[2]), str(row[3]), str(row[4]), str(row[5]), None]
    devs: dict[str, _Dev] = {}
    for names in in_chunks(sorted({m.device for m, _ in items})):
        for row in tx.all(f"SELECT device, max_seq, contig_seq, last_seen_ns, pos_t_ns, {PINNED_POSITION} "
                          f"FROM devices WHERE device IN ({','.join('?' * len(names))})", names):
            devs[str(row[0])] = _Dev(int(row[1]), int(row[2]), int(row[3]), int(row[1]),
                                     pos_t_ns=None if row[4] is None or row[5] else int(row[4]))
    pending: list[list[Any]] = []
    settle: list[tuple[str, str, int]] = []  # (chain, device, seq) of successors stored before the batch

    def flush() -> None:
        if pending:
            inserted = tx.many(_INSERT, pending)
            if inserted != len(pending):
                raise ConcurrentIdConflict(f"{len(pending) - inserted} id(s) of this batch were stored meanwhile "
                                           "for another device")
            for row in pending:  # in the database now: settling them is an UPDATE
                at[(row[1], row[2])][4] = None
            pending.clear()

    out: list[AddResult] = []
    for m, received_ns in items:
        body = m.to_json().decode("utf-8")
        stored_body = known_ids.get(m.id)
        if stored_body is not None:
            if stored_body == body:
                out.append(AddResult(False, "unknown", None))
            else:
                out.append(_conflict(tx, m, received_ns, "id_conflict", f"id {m.id} is already stored with other content"))
            continue
        held = at.get((m.device, m.seq))
        if held is not None:
            out.append(_conflict(tx, m, received_ns, "seq_conflict",
                                 f"seq {m.seq} of {m.device} is already stored as id {held[0]}"))
            continue
        digest = m.digest()
        if m.seq == 1:
            chain: Chain = "ok" if m.prev == GENESIS_PREV else "broken"
        else:
            before = at.get((m.device, m.seq - 1))
            chain = "unknown" if before is None else ("ok" if before[1] == m.prev else "broken")
        loc = m.location
        row = [m.id, m.device, m.seq, m.kind, m.t, m.t_ns, received_ns, digest, m.prev, chain, body,
               None if loc is None else loc.lat, None if loc is None else loc.lon]
        pending.append(row)
        known_ids[m.id] = body
        at[(m.device, m.seq)] = [m.id, digest, m.prev, chain, row]
        after = at.get((m.device, m.seq + 1)) if m.seq < INT64_MAX else None
        if after is not None and after[3] == "unknown":  # settle the successor that waited for this marker
            after[3] = "ok" if after[2] == digest else "broken"
            if after[4] is not None:
                after[4][9] = after[3]
            else:
                settle.append((after[3], m.device, m.seq + 1))
        d = devs.setdefault(m.device, _Dev(0, 0, 0, 0))
        d.stored = True
        gap = (d.max_seq + 1, m.seq - 1) if m.seq > d.max_seq + 1 else None
        first = d.contig == 0
        if first or m.seq == d.contig + 1:
            if d.db_max > m.seq:  # stored seqs above this one may continue the run: ask the database
                flush()
                d.contig = _advance(tx, m.device, m.seq)
            else:
                d.contig = m.seq
                while (m.device, d.contig + 1) in at and d.contig < INT64_MAX:
                    d.contig += 1
        d.max_seq = max(d.max_seq, m.seq)
        d.last_seen = max(d.last_seen, received_ns)
        pos_t = position_t_ns(m.t_ns, received_ns)
        if loc is not None and (d.pos_t_ns is None or pos_t >= d.pos_t_ns):
            d.pos_t_ns = pos_t
            d.pos = (loc.lat, loc.lon, pos_t, received_ns)
        out.append(AddResult(True, chain, gap, first=first))
    flush()
    if settle:
        tx.many("UPDATE markers SET chain=? WHERE device=? AND seq=? AND chain='unknown'", settle)
    touched = sorted((name, d) for name, d in devs.items() if d.stored)
    if touched:
        tx.many("INSERT INTO devices(device, last_seen_ns, max_seq, contig_seq) VALUES (?, 0, 0, 0) "
                "ON CONFLICT (device) DO NOTHING", [(name,) for name, _ in touched])
        tx.many("UPDATE devices SET last_seen_ns=?, max_seq=?, contig_seq=? WHERE device=?",
                [(d.last_seen, d.max_seq, d.contig, name) for name, d in touched])
        tx.many(SET_POSITION, [(*d.pos, name, d.pos[2]) for name, d in touched if d.pos is not None])
    return out


def chunks(values: Sequence[T]) -> list[list[T]]:
    """``values`` in lists of at most ``_CHUNK`` (placeholders per statement)."""
    return [list(values[i:i + _CHUNK]) for i in range(0, len(values), _CHUNK)]


_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, _CHUNK)


def in_chunks(values: Sequence[T]) -> list[list[T]]:
    """:func:`chunks` for ``IN (...)`` lists, each padded with its last value to one of a few lengths:
    a list of a new length is a new statement, which psycopg (and SQLite's statement cache) would
    convert and plan again; a repeated value changes nothing in an ``IN`` list."""
    out = []
    for part in chunks(values):
        size = next(n for n in _SIZES if n >= len(part))
        out.append(part + [part[-1]] * (size - len(part)))
    return out


def ensure_device(tx: Tx, device: str) -> None:
    tx.run(
        "INSERT INTO devices(device, last_seen_ns, max_seq, contig_seq) VALUES (?, 0, 0, 0) "
        "ON CONFLICT (device) DO NOTHING",
        (device,),
    )


def set_status(tx: Tx, device: str, state: str, t: str | None, received_ns: int, *, retained: bool) -> None:
    """A device's status; a retained status (replayed by the broker at subscription) is not "seen"."""
    ensure_device(tx, device)
    if retained:
        tx.run("UPDATE devices SET state=?, status_t=? WHERE device=?", (state, t, device))
        return
    tx.run(
        "UPDATE devices SET state=?, status_t=?, status_received_ns=?, "
        "last_seen_ns=CASE WHEN last_seen_ns < ? THEN ? ELSE last_seen_ns END WHERE device=?",
        (state, t, received_ns, received_ns, received_ns, device),
    )


#: the quarantine keeps at most about this many of the newest rows (each holds a payload of up to the
#: broker's message size): a flood of bad messages cannot fill base's disk
QUARANTINE_KEEP = 100_000


def quarantine(tx: Tx, items: Sequence[Quarantined], keep: int = QUARANTINE_KEEP) -> None:
    """Keep ``items``; rows older than the newest ``keep`` are dropped (by row number: one indexed delete)."""
    for q in items:
        _quarantine(tx, q)
    tx.run("DELETE FROM quarantine WHERE n <= (SELECT MAX(n) FROM quarantine) - ?", (keep,))


def _quarantine(tx: Tx, q: Quarantined) -> None:
    tx.run(
        "INSERT INTO quarantine(received_ns, topic, device, kind, reason, payload) VALUES (?,?,?,?,?,?)",
        (q.received_ns, safe_text(q.topic), None if q.device is None else safe_text(q.device),
         safe_text(q.kind), safe_text(q.reason), q.payload),
    )


def _conflict(tx: Tx, m: Marker, received_ns: int, kind: Conflict, reason: str) -> AddResult:
    _quarantine(tx, Quarantined(received_ns, "", m.device, kind, reason, m.to_json()))
    return AddResult(False, "unknown", None, kind)


def _advance(tx: Tx, device: str, start: int) -> int:
    """The highest seq N >= ``start`` such that ``start``..N are all stored (``start`` is)."""
    contig = start
    while True:
        rows = tx.all(
            "SELECT DISTINCT seq FROM markers WHERE device=? AND seq>? ORDER BY seq LIMIT 1000", (device, contig)
        )
        for (seq,) in rows:
            if int(seq) != contig + 1:
                return contig
            contig += 1
        if len(rows) < 1000:
            return contig


def safe_text(text: str) -> str:
    """Text any database accepts: lone surrogates escaped, NUL replaced."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


# -- queries --------------------------------------------------------------------------------------
def marker_query(
    device_order: str,
    *,
    device: str | None,
    since_ns: int | None,
    kind: str | None,
    limit: int,
    newest_first: bool = False,
    until_ns: int | None = None,
    offset: int = 0,
    area: Area | None = None,
) -> tuple[str, tuple[Any, ...]]:
    """The ``markers`` query of both stores: by device and seq, or newest (by ``t``) first;
    ``since_ns <= t < until_ns``; ``offset``: skip that many (paging); ``area``: located inside
    (south, west, north, east), degrees; west > east crosses the antimeridian."""
    conditions: list[tuple[str, Any]] = [("device=?", device), ("t_ns>=?", since_ns), ("t_ns<?", until_ns),
                                         ("kind=?", kind)]
    if area is not None:
        conditions += [("lat>=?", area[0]), ("lat<=?", area[2])]
    where, args = _where(conditions)
    if area is not None:
        lon = "(lon>=? AND lon<=?)" if area[1] <= area[3] else "(lon>=? OR lon<=?)"
        where, args = f"{where} AND {lon}", [*args, area[1], area[3]]
    sql = "SELECT body, received_ns, chain FROM markers" + where
    order = f"t_ns DESC, {device_order}, seq DESC" if newest_first else f"{device_order}, seq"
    return f"{sql} ORDER BY {order} LIMIT ? OFFSET ?", (*args, limit, offset)


def devices_query(device_order: str) -> str:
    """The per-device summary query of both stores."""
    return (
        "SELECT d.device, d.state, d.status_t, d.last_seen_ns, "
        "(SELECT COUNT(*) FROM markers m WHERE m.device=d.device), d.max_seq, "
        "(SELECT COUNT(DISTINCT seq) FROM markers m WHERE m.device=d.device), "
        "(SELECT COUNT(*) FROM markers m WHERE m.device=d.device AND chain='broken'), d.contig_seq, "
        "(SELECT COUNT(*) FROM quarantine q WHERE q.device=d.device) "
        f"FROM devices d ORDER BY {device_order}"
    )


@dataclass(frozen=True)
class DeviceRow:
    device: str
    state: str | None
    status_t: str | None
    last_seen_ns: int  # 0: never seen live (only a retained status)
    markers: int
    max_seq: int
    missing: int
    chain_broken: int
    acked: int = 0  # the highest contiguous seq (what base acknowledges)
    quarantined: int = 0


def device_row(r: Sequence[Any]) -> DeviceRow:
    return DeviceRow(
        str(r[0]), r[1], r[2], int(r[3]), int(r[4]), int(r[5]), int(r[5]) - int(r[6]), int(r[7]), int(r[8]),
        int(r[9]),
    )


def progress_query(devices: Sequence[str] | None) -> tuple[str, tuple[Any, ...]]:
    sql = (
        "SELECT d.device, d.contig_seq, d.max_seq, "
        "(SELECT MIN(m.seq) FROM markers m WHERE m.device=d.device AND m.seq>d.contig_seq) FROM devices d"
    )
    if devices is None:
        return sql + " WHERE d.contig_seq > 0", ()
    return sql + " WHERE d.device IN (" + ",".join("?" * len(devices)) + ")", tuple(devices)


def progress_rows(rows: Sequence[Sequence[Any]]) -> list[Progress]:
    return [Progress(str(r[0]), int(r[1]), int(r[2]), None if r[3] is None else int(r[3])) for r in rows]


def quarantine_query(*, kind: str | None, device: str | None, limit: int) -> tuple[str, tuple[Any, ...]]:
    where, args = _where((("kind=?", kind), ("device=?", device)))
    sql = "SELECT n, received_ns, topic, device, kind, reason, payload FROM quarantine" + where
    return sql + " ORDER BY n DESC LIMIT ?", (*args, limit)


def _where(conditions: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """`` WHERE a=? AND b=?`` of the conditions whose value is not None, and their values."""
    used = [(cond, value) for cond, value in conditions if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in used), [v for _, v in used]


def quarantine_rows(rows: Sequence[Sequence[Any]]) -> list[QuarantineRow]:
    return [
        QuarantineRow(int(r[0]), Quarantined(int(r[1]), str(r[2]), r[3], str(r[4]), str(r[5]), bytes(r[6])))
        for r in rows
    ]
