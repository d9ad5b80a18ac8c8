"""Validation of what arrives at base: size, JSON, JSON Schema, marker rules, topic vs payload.

The JSON Schema is the package data of ``bodycam.device`` (``schema/marker.schema.json``),
the same file the firmware's tests check against. Every problem is a :class:`Rejected`
with a short ``reason`` (used as a counter name) and a readable message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import jsonschema

from bodycam.device.errors import MarkerError
from bodycam.device.uplink.markers import DEVICE_RE, Marker, parse_json

MAX_PAYLOAD = 64 * 1024
Reason = Literal["oversized", "bad_topic", "not_json", "schema", "invalid", "topic_mismatch"]


class Rejected(MarkerError):
    """A message that base refuses; ``reason`` is the counter it is counted under."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: Reason = reason


@lru_cache(maxsize=1)
def marker_schema() -> dict[str, Any]:
    text = (resources.files("bodycam.device") / "schema" / "marker.schema.json").read_text("utf-8")
    return dict(json.loads(text))


@lru_cache(maxsize=1)
def _validator() -> Any:
    schema = marker_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


@dataclass(frozen=True)
class Status:
    device: str
    state: Literal["online", "offline"]
    t: str | None


def split_topic(prefix: str, topic: str) -> tuple[str, str]:
    """``<prefix>/<device>/<leaf>`` -> (device, leaf); Rejected otherwise."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise Rejected("bad_topic", f"topic {topic!r} is not under {prefix!r}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 2 or not DEVICE_RE.match(parts[0]):
        raise Rejected("bad_topic", f"topic {topic!r} is not {prefix}/<device>/<leaf>")
    return parts[0], parts[1]


def _parse(payload: bytes) -> Any:
    if len(payload) > MAX_PAYLOAD:
        raise Rejected("oversized", f"{len(payload)} bytes is more than {MAX_PAYLOAD}")
    try:
        return parse_json(payload)
    except MarkerError as exc:
        raise Rejected("not_json", str(exc)) from exc


def validate_marker(prefix: str, topic: str, payload: bytes) -> Marker:
    """Check a message on ``<prefix>/<device>/marker`` completely; returns the Marker or raises Rejected."""
    device, leaf = split_topic(prefix, topic)
    if leaf != "marker":
        raise Rejected("bad_topic", f"topic {topic!r} is not a marker topic")
    data = _parse(payload)
    try:
        error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    except RecursionError as exc:
        raise Rejected("schema", "nested too deeply") from exc
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise Rejected("schema", f"{where}: {error.message[:200]}")
    try:
        marker = Marker.from_dict(data)
    except MarkerError as exc:
        raise Rejected("invalid", str(exc)) from exc
    if marker.device != device:
        raise Rejected("topic_mismatch", f"topic device {device!r} != payload device {marker.device!r}")
    return marker


def validate_status(prefix: str, topic: str, payload: bytes) -> Status | None:
    """A ``status`` message; None for an empty payload (a cleared retained message)."""
    device, leaf = split_topic(prefix, topic)
    if leaf != "status":
        raise Rejected("bad_topic", f"topic {topic!r} is not a status topic")
    if not payload:
        return None
    data = _parse(payload)
    if not isinstance(data, dict) or data.get("state") not in ("online", "offline"):
        raise Rejected("schema", "status must be an object with state 'online' or 'offline'")
    if data.get("device", device) != device:
        raise Rejected("topic_mismatch", f"topic device {device!r} != payload device {data.get('device')!r}")
    t = data.get("t")
    return Status(device, data["state"], t if isinstance(t, str) and len(t) <= 40 else None)
