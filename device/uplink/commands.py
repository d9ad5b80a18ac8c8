"""What base sends a camera: ``ack`` (what base has stored) and ``cmd/resend`` (a range it is missing).

The contract (docs/markers-and-mqtt.md):

* ``<prefix>/<device>/ack``, QoS 1, retained:
  ``{"schema":"bodycam.ack/1","device":"<id>","seq":N,"t":"<RFC3339>"}`` -- every marker of
  this device with ``seq <= N`` is durably stored at base.
* ``<prefix>/<device>/cmd/resend``, QoS 1, MQTT 5 message expiry:
  ``{"schema":"bodycam.cmd/1","verb":"resend","id":"<uuid>","from_seq":a,"to_seq":b,"t":"..."}``
  -- send again every marker still held with ``a <= seq <= b``.
* ``<prefix>/<device>/cmd/record``, QoS 1, MQTT 5 message expiry:
  ``{"schema":"bodycam.cmd/1","verb":"record","id":"<uuid>","device":"<target>","reason":"peer:<device>/<marker id>"
  | "base:<user>","t":"...","expires":"..."}`` -- start recording (with the pre-event buffer); the
  ``recording_start`` marker carries ``reason``. A command for another device is refused; one past
  ``expires`` by the camera's clock is ignored (the broker drops it first when MQTT 5 expiry applies).

Parsing only (no I/O); anything malformed is a :class:`CommandError` with a one-line reason, which
the publisher logs and ignores.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import BodycamError, MarkerError
from bodycam.device.uplink.markers import MAX_INT, canonical_json
from bodycam.device.uplink.validate import check_time, is_device_id

ACK_SCHEMA = "bodycam.ack/1"
CMD_SCHEMA = "bodycam.cmd/1"
MAX_COMMAND_BYTES = 4096


class CommandError(BodycamError):
    """A message from base that does not follow the ack/command contract."""


@dataclass(frozen=True)
class Resend:
    id: str
    from_seq: int
    to_seq: int


@dataclass(frozen=True)
class Record:
    """``cmd/record``: start recording; ``reason`` goes into the ``recording_start`` marker."""

    id: str
    device: str
    reason: str
    t_ns: int
    expires_ns: int


#: ``peer:<device>/<marker id>`` (another camera's shot) or ``base:<user>`` (an operator at base)
RECORD_REASON = re.compile(r"peer:(?P<device>[A-Za-z0-9][A-Za-z0-9._-]{0,63})/(?P<marker>[A-Za-z0-9-]{1,64})"
                           r"|base:[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def _object(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(f"{what}: {len(payload)} bytes, more than {MAX_COMMAND_BYTES}")
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandError(f"{what}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CommandError(f"{what}: not a JSON object")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _seq(data: dict[str, Any], key: str, what: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise CommandError(f"{what}: {key} must be an integer 0..2^63-1, got {value!r}")
    return value


def parse_ack(payload: bytes, device: str) -> int:
    """The ``seq`` base confirms for ``device``."""
    data = _object(payload, "ack")
    if data.get("schema") != ACK_SCHEMA:
        raise CommandError(f"ack: schema must be {ACK_SCHEMA!r}, got {data.get('schema')!r}")
    if data.get("device") != device:
        raise CommandError(f"ack: for device {data.get('device')!r}, not {device!r}")
    return _seq(data, "seq", "ack")


def parse_resend(payload: bytes) -> Resend:
    data = _object(payload, "cmd/resend")
    if data.get("schema") != CMD_SCHEMA or data.get("verb") != "resend":
        raise CommandError(
            f"cmd/resend: need schema {CMD_SCHEMA!r} and verb 'resend', got "
            f"{data.get('schema')!r}/{data.get('verb')!r}"
        )
    cid = _cmd_id(data, "cmd/resend")
    a, b = _seq(data, "from_seq", "cmd/resend"), _seq(data, "to_seq", "cmd/resend")
    if a > b:
        raise CommandError(f"cmd/resend: from_seq {a} > to_seq {b}")
    return Resend(cid, a, b)


def _cmd_id(data: dict[str, Any], what: str) -> str:
    cid = data.get("id")
    if not isinstance(cid, str) or not 1 <= len(cid) <= 64 or not cid.isascii() or not cid.isprintable():
        raise CommandError(f"{what}: id must be 1-64 printable ASCII characters, got {cid!r}")
    return cid


def _time(data: dict[str, Any], key: str, what: str) -> int:
    try:
        return check_time(data.get(key), key)  # type: ignore[arg-type]
    except MarkerError as exc:
        raise CommandError(f"{what}: {exc}") from None


def parse_record(payload: bytes) -> Record:
    """A ``cmd/record`` (schema, verb, id, device, reason, t, expires); checking the target and the
    expiry against the camera's own id and clock is the caller's (:class:`.mqtt_publisher.MqttPublisher`)."""
    what = "cmd/record"
    data = _object(payload, what)
    if data.get("schema") != CMD_SCHEMA or data.get("verb") != "record":
        raise CommandError(f"{what}: need schema {CMD_SCHEMA!r} and verb 'record', got "
                           f"{str(data.get('schema'))[:60]!r}/{str(data.get('verb'))[:60]!r}")
    cid = _cmd_id(data, what)
    device = data.get("device")
    if not is_device_id(device):
        raise CommandError(f"{what}: device must be a device id, got {str(device)[:80]!r}")
    reason = data.get("reason")
    if not isinstance(reason, str) or RECORD_REASON.fullmatch(reason) is None:
        raise CommandError(f"{what}: reason must be 'peer:<device>/<marker id>' or 'base:<user>', got "
                           f"{str(reason)[:100]!r}")
    t_ns, expires_ns = _time(data, "t", what), _time(data, "expires", what)
    if expires_ns < t_ns:
        raise CommandError(f"{what}: expires {data['expires']} is before t {data['t']}")
    assert isinstance(device, str)
    return Record(cid, device, reason, t_ns, expires_ns)


def record_payload(cmd_id: str, device: str, reason: str, wall_ns: int, expiry_s: int) -> bytes:
    """A ``cmd/record`` as base publishes it."""
    return canonical_json({"schema": CMD_SCHEMA, "verb": "record", "id": cmd_id, "device": device,
                           "reason": reason, "t": rfc3339_ms(wall_ns),
                           "expires": rfc3339_ms(wall_ns + expiry_s * 1_000_000_000)})


def ack_payload(device: str, seq: int, wall_ns: int) -> bytes:
    """An ``ack`` as base publishes it (used by base stand-ins in tests and benches)."""
    return canonical_json({"schema": ACK_SCHEMA, "device": device, "seq": seq, "t": rfc3339_ms(wall_ns)})


def resend_payload(cmd_id: str, from_seq: int, to_seq: int, wall_ns: int) -> bytes:
    return canonical_json({"schema": CMD_SCHEMA, "verb": "resend", "id": cmd_id, "from_seq": from_seq,
                           "to_seq": to_seq, "t": rfc3339_ms(wall_ns)})
