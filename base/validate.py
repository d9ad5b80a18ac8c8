"""What arrives at base: topic, size, JSON, and the marker rules the camera also applies.

The rules themselves live in the firmware (``bodycam.device.uplink.validate`` for values,
``bodycam.device.uplink.markers`` for fields): one validator for both sides, so the camera never
commits a marker that base would refuse. No JSON Schema library is needed at run time; the
schema file (``device/schema/marker.schema.json``) documents the same rules for other languages
and the tests check that it accepts every marker these rules accept.

Every problem is a :class:`Rejected` with a short ``reason`` (used as a counter name) and a
readable message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bodycam.device.errors import MarkerError
from bodycam.device.uplink.markers import Marker, parse_json
from bodycam.device.uplink.telemetry import Telemetry, read_telemetry
from bodycam.device.uplink.validate import (
    INT64_MAX,
    MAX_PAYLOAD,
    check_int,
    check_text,
    check_tree,
    is_device_id,
)

Reason = Literal["oversized", "bad_topic", "not_json", "invalid", "topic_mismatch",
                 # signatures (base/keys.py)
                 "unsigned", "unknown_key", "revoked_key", "retired_key", "bad_signature", "no_key"]
ACK_SCHEMA = "bodycam.ack/1"
CMD_SCHEMA = "bodycam.cmd/1"


class Rejected(MarkerError):
    """A message that base refuses; ``reason`` is the counter it is counted under."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: Reason = reason


@dataclass(frozen=True)
class Status:
    device: str
    state: Literal["online", "offline"]
    t: str | None


def split_topic(prefix: str, topic: str) -> tuple[str, str]:
    """``<prefix>/<device>/<leaf>`` -> (device, leaf); Rejected otherwise."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise Rejected("bad_topic", f"topic {topic[:200]!r} is not under {prefix!r}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 2 or not is_device_id(parts[0]):
        raise Rejected("bad_topic", f"topic {topic[:200]!r} is not {prefix}/<device>/<leaf>")
    return parts[0], parts[1]


def _parse(payload: bytes) -> Any:
    if len(payload) > MAX_PAYLOAD:
        raise Rejected("oversized", f"{len(payload)} bytes is more than {MAX_PAYLOAD}")
    try:
        doc = parse_json(payload)
    except MarkerError as exc:
        raise Rejected("not_json", str(exc)) from exc
    try:
        check_tree(doc, "message")
    except MarkerError as exc:
        raise Rejected("invalid", str(exc)) from exc
    return doc


def _leaf(prefix: str, topic: str, leaf: str) -> str:
    device, got = split_topic(prefix, topic)
    if got != leaf:
        raise Rejected("bad_topic", f"topic {topic[:200]!r} is not a {leaf} topic")
    return device


def validate_marker(prefix: str, topic: str, payload: bytes) -> Marker:
    """Check a message on ``<prefix>/<device>/marker`` completely; returns the Marker or raises Rejected."""
    device = _leaf(prefix, topic, "marker")
    data = _parse(payload)
    try:
        marker = Marker.from_dict(data)
    except MarkerError as exc:
        raise Rejected("invalid", str(exc)[:300]) from exc
    if marker.device != device:
        raise Rejected("topic_mismatch", f"topic device {device!r} != payload device {marker.device!r}")
    return marker


def validate_status(prefix: str, topic: str, payload: bytes) -> Status | None:
    """A ``status`` message; None for an empty payload (a cleared retained message)."""
    device = _leaf(prefix, topic, "status")
    if not payload:
        return None
    data = _parse(payload)
    if not isinstance(data, dict) or data.get("state") not in ("online", "offline"):
        raise Rejected("invalid", "status must be an object with state 'online' or 'offline'")
    if data.get("device", device) != device:
        raise Rejected("topic_mismatch", f"topic device {device!r} != payload device {data.get('device')!r:.80}")
    t = data.get("t")
    return Status(device, data["state"], t if isinstance(t, str) and len(t) <= 40 else None)


def validate_ack(prefix: str, topic: str, payload: bytes) -> tuple[str, int] | None:
    """An ``ack`` message (base's own, as the broker retained it): (device, seq); None when cleared."""
    device = _leaf(prefix, topic, "ack")
    if not payload:
        return None
    data = _parse(payload)
    try:
        if not isinstance(data, dict) or data.get("schema") != ACK_SCHEMA:
            raise MarkerError(f"ack: not a {ACK_SCHEMA} object")
        seq = check_int(data.get("seq"), "ack.seq", 1, INT64_MAX)
        check_text(str(data.get("device")), "ack.device")
    except MarkerError as exc:
        raise Rejected("invalid", str(exc)) from exc
    if data.get("device") != device:
        raise Rejected("topic_mismatch", f"topic device {device!r} != payload device {data.get('device')!r:.80}")
    return device, seq


def validate_telemetry(prefix: str, topic: str, payload: bytes) -> Telemetry:
    """A ``telemetry`` message, read by the firmware's own reader (``device/uplink/telemetry.py``)."""
    device = _leaf(prefix, topic, "telemetry")
    data = _parse(payload)
    try:
        tel = read_telemetry(data)
    except MarkerError as exc:
        raise Rejected("invalid", str(exc)[:300]) from exc
    if tel.device != device:
        raise Rejected("topic_mismatch", f"topic device {device!r} != payload device {tel.device!r}")
    return tel
