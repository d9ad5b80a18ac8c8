"""Payloads of the ``status`` and ``telemetry`` topics (building only, no I/O).

status    ``{"schema":"bodycam.status/1","state":"online"|"offline","device":..,"t":..[,"alarm":..]}``
          (retained; the Last Will is the offline one; ``alarm`` only while markers are not reaching base)
telemetry ``{"schema":"bodycam.telemetry/1","device":..,"t":..,"queue_depth":..,
          "telemetry_dropped":.., "delivery":{unconfirmed, confirmed_seq, in_memory, alarm, journal_error},
          **provider fields}``; the provider is a callable returning a flat
          JSON object (fps, inference_ms, temperature_c, storage_free_mb, battery_pct, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from bodycam.device.clock import Clock, rfc3339_ms
from bodycam.device.uplink.markers import JSON, canonical_json

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
