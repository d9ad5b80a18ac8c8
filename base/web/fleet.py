"""The fleet: every device's state from its status, telemetry and markers; the fleet alerts.

**What a device shows** (:func:`fleet_views`): online/offline (its retained status; the Last Will
makes it ``offline``), last seen, and from its latest telemetry (``base/telemetry.py``) recording
state (or from its newest ``recording_start``/``recording_stop`` marker when that is newer, on the
device's own clock), battery, storage, temperature, outbox depth, clock sync and model. Telemetry older than
``stale_s`` is *stale* (shown, marked so); values past a threshold are *alarming* (highlighted).
Devices base has only quarantined messages from (an unknown or refused device, a bad payload)
are listed as **unknown**, with what was quarantined; nothing is left out.

**Fleet alerts** (:class:`FleetWatch`): low battery, storage full, clock unsynced and offline while
recording are *conditions*, evaluated by ``serve`` every ``check_s`` from the stored state. A
condition's *episode* is a row of ``web_conditions`` (primary key device + kind): when a condition
starts, the row and a ``web_alerts`` row are inserted in one transaction (``INSERT ... ON CONFLICT
DO NOTHING`` on the episode: one alert per episode, also with several ``serve`` instances); so the
banner, the acknowledgement and the audit are the gunshots' own. While the episode lasts no other
alert is raised, however many telemetry messages repeat it. When the condition ends (with
hysteresis: battery back above the threshold + 5 points, storage + 2 points) the episode row is
deleted and its alert, if still unacknowledged, is closed by ``system`` with an ``alert_cleared``
audit row; the next episode raises a new alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from bodycam.base.rules import DeviceRow
from bodycam.base.telemetry import StoredTelemetry
from bodycam.base.web.db import WebDb, audit
from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import StorageError
from bodycam.device.uplink.telemetry import Telemetry

_log = logging.getLogger(__name__)

CONDITIONS = ("low_battery", "storage_full", "clock_unsynced", "offline_while_recording")
ALERT_PREFIX = "fleet:"
SYSTEM = "system"


@dataclass(frozen=True)
class FleetConfig:
    """Thresholds of ``serve`` (``bodycam-base serve --battery-low-pct ...``)."""

    stale_s: float = 35.0  # telemetry older than this is stale (the firmware sends every 10 s)
    battery_low_pct: int = 15
    storage_low_pct: float = 5.0  # free space of the card, percent
    temperature_high_c: float = 80.0  # highlighted (the Pi throttles at 80-85 °C)
    queue_high: int = 100  # outbox depth highlighted above this
    clock_offset_ms: float = 1000.0  # a clock offset beyond this is highlighted
    check_s: float = 2.0  # how often the conditions are evaluated

    def __post_init__(self) -> None:
        if not 0 <= self.battery_low_pct <= 100 or not 0 <= self.storage_low_pct <= 100:
            raise ValueError("battery_low_pct and storage_low_pct are percentages (0..100)")
        if self.stale_s <= 0 or self.check_s <= 0:
            raise ValueError("stale_s and check_s must be > 0")


@dataclass
class DeviceView:
    device: str
    known: bool  # base has a devices row (stored markers, a status or telemetry); False: quarantine only
    state: str  # online | offline | unknown
    last_seen_ns: int
    row: DeviceRow | None
    tel: Telemetry | None = None
    tel_received_ns: int = 0
    stale: bool = False
    quarantined: int = 0
    last_quarantine: str = ""
    recording: bool | None = None  # the newer of the telemetry's and the last recording_start/stop marker's
    conditions: dict[str, str] = field(default_factory=dict)  # kind -> detail (active now)
    alarming: set[str] = field(default_factory=set)  # columns to highlight

    @property
    def online(self) -> bool:
        return self.state == "online"

    def to_json(self) -> dict[str, Any]:
        """For the map (``/map.json``): only values, never markup."""
        loc = None if self.tel is None or self.tel.location is None else self.tel.location.to_dict()
        return {
            "device": self.device, "state": self.state, "known": self.known, "stale": self.stale,
            "last_seen": rfc3339_ms(self.last_seen_ns) if self.last_seen_ns else None,
            "recording": self.recording,
            "battery_pct": None if self.tel is None else self.tel.battery_pct,
            "location": loc, "conditions": sorted(self.conditions),
        }


def _episode_active(active: set[tuple[str, str]], device: str, kind: str) -> bool:
    return (device, kind) in active


def conditions_of(v: DeviceView, cfg: FleetConfig, active: set[tuple[str, str]]) -> dict[str, str]:
    """The conditions holding for ``v`` now (an active episode ends only past its hysteresis)."""
    out: dict[str, str] = {}
    tel = v.tel
    if tel is None:
        return out
    d = v.device
    if tel.battery_pct is not None:
        limit = cfg.battery_low_pct + (5 if _episode_active(active, d, "low_battery") else 0)
        if tel.battery_pct <= limit:
            out["low_battery"] = f"battery {tel.battery_pct} %"
    free = tel.storage_free_pct
    limit_s = cfg.storage_low_pct + (2 if _episode_active(active, d, "storage_full") else 0)
    if tel.storage_alarm or (free is not None and free <= limit_s):
        what = "only protected footage left" if tel.storage_alarm else f"{free:.1f} % free"
        out["storage_full"] = f"storage: {what}"
    if tel.clock_synced is False:
        out["clock_unsynced"] = f"clock not synchronised (source {tel.clock_source})"
    if not v.online and v.known and v.recording:
        out["offline_while_recording"] = f"{v.state} while recording (last seen {rfc3339_ms(v.last_seen_ns)})"
    return out


def alarming_of(v: DeviceView, cfg: FleetConfig) -> set[str]:
    """Columns to highlight: every active condition's, plus high temperature, queue, clock offset."""
    out = set(v.conditions)
    tel = v.tel
    if tel is not None:
        if tel.temperature_c is not None and tel.temperature_c >= cfg.temperature_high_c:
            out.add("temperature")
        if tel.queue_depth > cfg.queue_high or tel.delivery_alarm:
            out.add("queue")
        if tel.clock_offset_ms is not None and abs(tel.clock_offset_ms) > cfg.clock_offset_ms:
            out.add("clock_unsynced")
        if tel.detector_alarm:
            out.add("model")
    if v.row is not None and (v.row.missing or v.row.chain_broken):
        out.add("markers")
    if v.quarantined:
        out.add("quarantine")
    if not v.known:
        out.add("unknown")
    return out


@dataclass(frozen=True)
class Unattributed:
    count: int
    last_ns: int


RecordingMarks = dict[str, tuple[bool, int]]  # device -> (recording, t_ns) of its newest recording_start/stop


def _load(db: WebDb) -> tuple[list[DeviceRow], list[StoredTelemetry], list[Any], set[tuple[str, str]], RecordingMarks]:
    store = db.store
    rows = store.devices()
    tel = store.telemetry()
    quarantine = db.rows("SELECT device, COUNT(*), MAX(received_ns) FROM quarantine GROUP BY device")
    reasons = db.rows(
        "SELECT q.device, q.kind FROM quarantine q WHERE q.n IN (SELECT MAX(n) FROM quarantine GROUP BY device)"
    )
    active = {(str(r[0]), str(r[1])) for r in db.rows("SELECT device, kind FROM web_conditions")}
    last_kind = {r[0]: str(r[1]) for r in reasons}
    qrows = [(r[0], int(r[1]), int(r[2]), last_kind.get(r[0], "")) for r in quarantine]
    marks = {
        str(r[0]): (r[1] == "recording_start", int(r[2]))
        for r in db.rows(
            "SELECT m.device, m.kind, m.t_ns FROM markers m JOIN (SELECT device, MAX(seq) AS seq FROM markers "
            "WHERE kind IN ('recording_start', 'recording_stop') GROUP BY device) x "
            "ON x.device = m.device AND x.seq = m.seq"
        )
    }
    return rows, tel, qrows, active, marks


def fleet_views(db: WebDb, cfg: FleetConfig, now_ns: int) -> tuple[list[DeviceView], Unattributed]:
    """Every device (known ones and quarantine-only ones), with its conditions evaluated now."""
    rows, tel, qrows, active, marks = _load(db)
    return build_views(rows, tel, qrows, active, cfg, now_ns, marks)


def watch_views(db: WebDb, cfg: FleetConfig, now_ns: int) -> list[DeviceView]:
    """What the conditions need, cheaply enough to run every ``check_s`` on a large fleet: the
    ``devices`` rows and the latest telemetry (no marker counts, no quarantine); the newest
    recording marker only of the devices that are offline while their telemetry says recording."""
    rows = [DeviceRow(str(r[0]), r[1], r[2], int(r[3]), 0, 0, 0, 0)
            for r in db.rows("SELECT device, state, status_t, last_seen_ns FROM devices")]
    tel = db.store.telemetry()
    active = {(str(r[0]), str(r[1])) for r in db.rows("SELECT device, kind FROM web_conditions")}
    offline = {r.device for r in rows if r.state != "online"}
    marks: RecordingMarks = {}
    for s in tel:
        d = s.telemetry.device
        if d in offline and s.telemetry.recording:
            found = db.rows(
                "SELECT kind, t_ns FROM markers WHERE device=? AND kind IN ('recording_start', 'recording_stop') "
                "ORDER BY seq DESC LIMIT 1", (d,))
            if found:
                marks[d] = (found[0][0] == "recording_start", int(found[0][1]))
    views, _ = build_views(rows, tel, [], active, cfg, now_ns, marks)
    return views


def build_views(
    rows: Sequence[DeviceRow], tel: Sequence[StoredTelemetry], qrows: Sequence[tuple[Any, int, int, str]],
    active: set[tuple[str, str]], cfg: FleetConfig, now_ns: int, marks: RecordingMarks | None = None,
) -> tuple[list[DeviceView], Unattributed]:
    latest = {s.telemetry.device: s for s in tel}
    views: dict[str, DeviceView] = {}
    for r in rows:
        v = DeviceView(r.device, True, r.state or "unknown", r.last_seen_ns, r)
        s = latest.get(r.device)
        if s is not None:
            v.tel, v.tel_received_ns = s.telemetry, s.received_ns
            v.stale = (now_ns - s.received_ns) > cfg.stale_s * 1e9
            v.recording = s.telemetry.recording
        mark = (marks or {}).get(r.device)
        if mark is not None and (v.tel is None or v.recording is None or mark[1] >= v.tel.t_ns):
            v.recording = mark[0]  # a recording_start/stop marker newer than the telemetry (same device clock)
        views[r.device] = v
    unattributed = Unattributed(0, 0)
    for device, count, last_ns, kind in qrows:
        if device is None:
            unattributed = Unattributed(count, last_ns)
            continue
        if str(device) not in views:
            views[str(device)] = DeviceView(str(device), False, "unknown", 0, None)
        v = views[str(device)]
        v.quarantined, v.last_quarantine = count, kind
        if not v.known:
            v.last_seen_ns = last_ns
    for v in views.values():
        v.conditions = conditions_of(v, cfg, active)
        v.alarming = alarming_of(v, cfg)
    order = sorted(views.values(), key=lambda v: (v.known, v.device))  # unknown devices first
    return order, unattributed


class FleetWatch:
    """Raises and clears the fleet alerts (see the module docstring); one per ``serve`` process."""

    def __init__(self, db: WebDb, cfg: FleetConfig, now_ns: Any) -> None:
        self.db = db
        self.cfg = cfg
        self.now_ns = now_ns
        self.raised = 0
        self.cleared = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def check(self, now_ns: int | None = None) -> tuple[list[str], list[str]]:
        """Evaluate every device once; returns the alert ids raised and the episodes cleared."""
        now = self.now_ns() if now_ns is None else now_ns
        views = watch_views(self.db, self.cfg, now)
        holding = {(v.device, k): detail for v in views for k, detail in v.conditions.items()}
        open_ = {(str(r[0]), str(r[1])): str(r[2]) for r in
                 self.db.rows("SELECT device, kind, alert_id FROM web_conditions")}
        raised, cleared = [], []
        for (device, kind), detail in sorted(holding.items()):
            if (device, kind) not in open_ and self._raise(device, kind, detail, now):
                raised.append(f"{ALERT_PREFIX}{kind}:{device}:{now}")
        for (device, kind), alert_id in sorted(open_.items()):
            if (device, kind) not in holding and self._clear(device, kind, alert_id, now):
                cleared.append(alert_id)
        self.raised += len(raised)
        self.cleared += len(cleared)
        return raised, cleared

    def _raise(self, device: str, kind: str, detail: str, now: int) -> bool:
        alert_id = f"{ALERT_PREFIX}{kind}:{device}:{now}"
        body = json.dumps({"detail": detail, "device": device, "kind": kind})
        with self.db.tx() as tx:
            if not tx.run(
                "INSERT INTO web_conditions(device, kind, since_ns, alert_id, detail) VALUES (?,?,?,?,?) "
                "ON CONFLICT (device, kind) DO NOTHING",
                (device, kind, now, alert_id, body),
            ):
                return False  # another serve instance raised it
            tx.run(
                "INSERT INTO web_alerts(marker_id, device, kind, t, received_ns) VALUES (?,?,?,?,?)",
                (alert_id, device, kind, rfc3339_ms(now), now),
            )
        _log.warning("fleet alert: %s %s (%s)", device, kind, detail)
        return True

    def _clear(self, device: str, kind: str, alert_id: str, now: int) -> bool:
        with self.db.tx() as tx:
            if not tx.run("DELETE FROM web_conditions WHERE device=? AND kind=? AND alert_id=?", (device, kind, alert_id)):
                return False
            row = tx.one("SELECT n FROM web_alerts WHERE marker_id=? AND acked_ns IS NULL", (alert_id,))
            if row is not None:
                tx.run("UPDATE web_alerts SET acked_by=?, acked_ns=? WHERE n=?", (SYSTEM, now, row[0]))
                audit(tx, now, SYSTEM, "alert_cleared", f"alert {row[0]}", f"{kind} on {device} ended", "serve")
        _log.info("fleet condition ended: %s %s", device, kind)
        return True

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await run_in_threadpool(self.check)
            except StorageError as exc:  # the alert hub shows the outage
                _log.debug("fleet check: %s", exc)
            except Exception:
                _log.exception("fleet check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.cfg.check_s)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fleet-watch")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task


def condition_detail(body: str) -> str | None:
    """The detail text stored with a fleet alert (for its banner)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    detail = doc.get("detail") if isinstance(doc, dict) else None
    return detail if isinstance(detail, str) else None
