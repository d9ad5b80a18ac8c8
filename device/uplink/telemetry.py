"""Payloads of the ``status`` and ``telemetry`` topics (building only, no I/O).

status    ``{"schema":"bodycam.status/1","state":"online"|"offline","device":..,"t":..[,"alarm":..]}``
          (retained; the Last Will is the offline one; ``alarm`` only while markers are not reaching base)
telemetry ``{"schema":"bodycam.telemetry/1","device":..,"t":..,"queue_depth":..,
          "telemetry_dropped":.., "delivery":{unconfirmed, confirmed_seq, in_memory, alarm, journal_error},
          **provider fields}``; the provider is a callable returning a JSON object. The firmware's
          (``device/assemble.py``) sends ``recording``, ``storage_alarm``, ``frames``,
          ``inference_ms_p50``, ``detector``, ``clock`` (as in markers), ``model`` (as in markers),
          ``location`` (as in markers, or null) and ``sources`` (``hw/telemetry_sources.py``:
          ``cpu_temp_c``, ``storage {free_bytes, total_bytes}``, ``battery {percent, status}``, ``absent``).

:func:`read_telemetry` is the one reader of that contract (base uses it): the fixed fields must be
right, the fields it knows must have their type (a battery of ``"<b>"`` is refused, not shown),
everything else is carried along unread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bodycam.device.clock import Clock, rfc3339_ms
from bodycam.device.errors import MarkerError
from bodycam.device.uplink.markers import (
    JSON,
    Location,
    ModelRef,
    _opt_num,
    _str,
    canonical_json,
    check_clock,
)
from bodycam.device.uplink.validate import check_device_id, check_int, check_time

STATUS_SCHEMA = "bodycam.status/1"
TELEMETRY_SCHEMA = "bodycam.telemetry/1"
TelemetryProvider = Callable[[], Mapping[str, JSON]]
_RESERVED = frozenset({"schema", "device", "t", "queue_depth", "telemetry_dropped", "delivery"})


def status_payload(
    device: str, state: Literal["online", "offline"], clock: Clock, *, alarm: str | None = None
) -> bytes:
    body: dict[str, JSON] = {
        "schema": STATUS_SCHEMA, "state": state, "device": device, "t": rfc3339_ms(clock.wall_ns())
    }
    if alarm is not None:
        body["alarm"] = alarm
    return canonical_json(body)


def telemetry_payload(
    device: str,
    clock: Clock,
    *,
    queue_depth: int,
    telemetry_dropped: int = 0,
    delivery: Mapping[str, JSON] | None = None,
    provider: TelemetryProvider | None = None,
) -> bytes:
    """One telemetry snapshot. Provider fields that clash with the fixed ones are prefixed with ``x_``."""
    body: dict[str, JSON] = {
        "schema": TELEMETRY_SCHEMA,
        "device": device,
        "t": rfc3339_ms(clock.wall_ns()),
        "queue_depth": queue_depth,
        "telemetry_dropped": telemetry_dropped,
    }
    if delivery is not None:
        body["delivery"] = dict(delivery)
    if provider is not None:
        for key, value in provider().items():
            body[f"x_{key}" if key in _RESERVED else str(key)] = value
    return canonical_json(body)


@dataclass(frozen=True)
class Telemetry:
    """What base reads from one telemetry message (None: not reported by this device)."""

    device: str
    t: str
    t_ns: int
    queue_depth: int
    unconfirmed: int | None = None
    delivery_alarm: str | None = None
    recording: bool | None = None
    storage_alarm: bool | None = None
    battery_pct: int | None = None
    battery_status: str | None = None
    temperature_c: float | None = None
    storage_free_bytes: int | None = None
    storage_total_bytes: int | None = None
    clock_synced: bool | None = None
    clock_source: str | None = None
    clock_offset_ms: float | None = None
    model: ModelRef | None = None
    location: Location | None = None
    detector: str | None = None
    detector_alarm: str | None = None

    @property
    def storage_free_pct(self) -> float | None:
        if self.storage_free_bytes is None or not self.storage_total_bytes:
            return None
        return 100.0 * self.storage_free_bytes / self.storage_total_bytes


def _opt_bool(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise MarkerError(f"{where}: expected true or false, got {value!r:.80}")


def _opt_str(value: Any, where: str, max_len: int = 200) -> str | None:
    return None if value is None else _str(value, where, max_len=max_len)


def _opt_obj(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MarkerError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def read_telemetry(doc: Any) -> Telemetry:
    """One parsed telemetry message (JSON already parsed and bounded) -> :class:`Telemetry`;
    MarkerError naming the field otherwise."""
    if not isinstance(doc, Mapping):
        raise MarkerError(f"telemetry: expected an object, got {type(doc).__name__}")
    if doc.get("schema") != TELEMETRY_SCHEMA:
        raise MarkerError(f"telemetry.schema: expected {TELEMETRY_SCHEMA!r}, got {doc.get('schema')!r:.80}")
    device = check_device_id(doc.get("device"), "telemetry.device")
    t = doc.get("t")
    t_ns = check_time(t, "telemetry.t")  # type: ignore[arg-type]
    queue_depth = check_int(doc.get("queue_depth"), "telemetry.queue_depth", 0)
    delivery = _opt_obj(doc.get("delivery"), "telemetry.delivery")
    unconfirmed = delivery.get("unconfirmed")
    sources = _opt_obj(doc.get("sources"), "telemetry.sources")
    battery = _opt_obj(sources.get("battery"), "telemetry.sources.battery")
    storage = _opt_obj(sources.get("storage"), "telemetry.sources.storage")
    percent = battery.get("percent")
    free, total = storage.get("free_bytes"), storage.get("total_bytes")
    clock = check_clock(doc.get("clock"))
    model, location = doc.get("model"), doc.get("location")
    return Telemetry(
        device=device,
        t=str(t),
        t_ns=t_ns,
        queue_depth=queue_depth,
        unconfirmed=None if unconfirmed is None else check_int(unconfirmed, "telemetry.delivery.unconfirmed", 0),
        delivery_alarm=_opt_str(delivery.get("alarm"), "telemetry.delivery.alarm"),
        recording=_opt_bool(doc.get("recording"), "telemetry.recording"),
        storage_alarm=_opt_bool(doc.get("storage_alarm"), "telemetry.storage_alarm"),
        battery_pct=None if percent is None else check_int(percent, "telemetry.sources.battery.percent", 0, 100),
        battery_status=_opt_str(battery.get("status"), "telemetry.sources.battery.status", 32),
        temperature_c=_opt_num(sources.get("cpu_temp_c"), "telemetry.sources.cpu_temp_c", -100, 300),
        storage_free_bytes=None if free is None else check_int(free, "telemetry.sources.storage.free_bytes", 0),
        storage_total_bytes=None if total is None else check_int(total, "telemetry.sources.storage.total_bytes", 0),
        clock_synced=None if clock is None else bool(clock["synced"]),
        clock_source=None if clock is None else str(clock["source"]),
        clock_offset_ms=None if clock is None or clock["offset_ms"] is None else float(clock["offset_ms"]),  # type: ignore[arg-type]
        model=None if model is None else ModelRef.from_dict(model),
        location=None if location is None else Location.from_dict(location),
        detector=_opt_str(doc.get("detector"), "telemetry.detector", 32),
        detector_alarm=_opt_str(doc.get("detector_alarm"), "telemetry.detector_alarm"),
    )
