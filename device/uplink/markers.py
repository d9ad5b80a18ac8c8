"""Event markers of schema ``bodycam.marker/1`` (DESIGN.md section 4).

A :class:`MarkerDraft` is what the firmware loop knows about an event; the
:class:`~bodycam.device.uplink.outbox.Outbox` turns it into a :class:`Marker` by
assigning ``id`` (UUIDv7), ``seq``, ``prev`` and ``t`` in one durable
transaction.

Canonical bytes (what ``prev`` hashes and ``sig`` signs, reproducible in any language): the
marker without ``sig``, serialised by RFC 8785 (JSON Canonicalization Scheme, JCS) through the
``rfc8785`` package: keys sorted by UTF-16 code units at every level, no whitespace, text as
raw UTF-8 with JCS escaping, numbers as ECMAScript prints an IEEE 754 double (``0.93``, ``12``,
``1e-7``). JCS numbers are doubles, so an integer beyond 2^53 - 1 (a ``t_mono_ns`` after 104
days of uptime) is canonicalised as the nearest double, exactly as every other JCS
implementation does after parsing it; the wire form keeps the exact integer.
Floats are rounded when a marker is built (confidence 4 decimals, offset_s 3,
lat/lon 7, alt_m 2, hdop 2, age_s 3) so their text is short and stable.
``digest()`` is the lowercase hex SHA-256 of the canonical bytes; the next marker's ``prev`` is
that digest; the first marker of a device has ``prev`` = 64 zeros. ``key`` (the id of the device
key, see ``bodycam.device.identity``) is covered; ``sig`` is the base64 Ed25519 signature over
the canonical bytes.

Every marker, built on the camera (``build_marker``, before the outbox commits it) or parsed at
base (``Marker.from_json``), passes the same rules: the value rules of
:mod:`bodycam.device.uplink.validate` (int64, time window, valid text, depth, size, full-match
patterns, the device-id rule) and the field rules below. The JSON Schema in
``schema/marker.schema.json`` describes the same for other languages; tests check that it
accepts every marker these rules accept.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import rfc8785

from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import MarkerError
from bodycam.device.uplink.validate import (
    DEVICE_RE,
    FIX_RE,
    HEX64_RE,
    INT64_MAX,
    KIND_RE,
    MAX_DEPTH,
    MAX_EXTRA_BYTES,
    MAX_PAYLOAD,
    T_RE,
    UUID7_RE,
    check_device_id,
    check_int,
    check_text,
    check_time,
    check_tree,
    check_wall_ns,
)

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"

SCHEMA = "bodycam.marker/1"
GENESIS_PREV = "0" * 64
#: kinds that are detector outputs: they carry ``confidence`` and ``model``
DETECTION_KINDS = frozenset({"gunshot"})
__all__ = ["DEVICE_RE", "FIX_RE", "HEX64_RE", "KIND_RE", "MAX_EXTRA_BYTES", "MAX_INT", "T_RE", "UUID7_RE"]
#: kinds the firmware emits today (others matching KIND_RE are accepted)
KNOWN_KINDS = frozenset(
    {"gunshot", "manual", "holster_draw", "holster_return", "recording_start", "recording_stop",
     "recording_stop_requested", "dismissed", "dismiss_refused", "boot", "footage_deleted", "holster_flapping"}
)
#: recommended GNSS fix values (any short lowercase token is accepted)
FIX_VALUES = ("none", "2d", "3d", "dgps", "rtk", "dr")

MAX_INT = INT64_MAX
#: a key id (``bodycam.device.identity.key_id``: 16 hex digits; other ids allowed for rotation schemes)
KEY_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_SAFE_INT = 2**53 - 1


class MarkerSigner(Protocol):
    """Signs a marker's canonical bytes (``bodycam.device.identity.Signer``)."""

    @property
    def key_id(self) -> str: ...

    def sign(self, data: bytes) -> str: ...


def uuid7(wall_ns: int, rand: bytes | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, variant 10, 74 random bits."""
    ms = (wall_ns // 1_000_000) & ((1 << 48) - 1)
    r = int.from_bytes(os.urandom(10) if rand is None else rand[:10], "big")
    rand_a = r >> 68 & 0xFFF
    rand_b = r & ((1 << 62) - 1)
    value = ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _num(value: Any, where: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MarkerError(f"{where}: expected a number, got {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise MarkerError(f"{where}: must be finite, got {value!r}")
    if (lo is not None and f < lo) or (hi is not None and f > hi):
        raise MarkerError(f"{where}: {f} is outside {lo}..{hi}")
    return f


def _opt_num(value: Any, where: str, lo: float | None = None, hi: float | None = None) -> float | None:
    return None if value is None else _num(value, where, lo, hi)


def _int(value: Any, where: str, lo: int = 0) -> int:
    return check_int(value, where, lo)


def _str(value: Any, where: str, pattern: re.Pattern[str] | None = None, max_len: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise MarkerError(
            f"{where}: expected a non-empty string of at most {max_len} characters, got {value!r:.80}"
        )
    check_text(value, where)
    if pattern is not None and not pattern.fullmatch(value):
        raise MarkerError(f"{where}: {value!r} does not match {pattern.pattern}")
    return value


def _obj(
    value: Any, where: str, required: set[str], optional: frozenset[str] | set[str] = frozenset(),
    *, allow_unknown: bool = False,
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MarkerError(f"{where}: expected an object, got {type(value).__name__}")
    keys = set(value)
    if missing := required - keys:
        raise MarkerError(f"{where}: missing {', '.join(sorted(missing))}")
    if not allow_unknown and (unknown := keys - required - optional):
        raise MarkerError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    return value


FIELD_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _check_others(others: Any) -> None:
    """Top-level fields a newer firmware added (DESIGN section 4: added compatibly, a consumer ignores
    what it does not know): kept verbatim, so the chain and the signature still cover them."""
    if others is None:
        return
    if not isinstance(others, Mapping) or not others:
        raise MarkerError("others: expected a non-empty object or None")
    for name in others:
        _str(name, "a field name", FIELD_RE, 64)
        if name in _REQUIRED or name in _OPTIONAL:
            raise MarkerError(f"{name}: a known field cannot be kept as an unknown one")
    check_tree(dict(others), "marker", max_depth=MAX_DEPTH - 1)
    try:
        size = len(json.dumps(others, allow_nan=False, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise MarkerError(f"unknown fields: not plain JSON ({exc})") from exc
    if size > MAX_EXTRA_BYTES:
        raise MarkerError(f"unknown fields: {size} bytes is more than {MAX_EXTRA_BYTES}")


@dataclass(frozen=True)
class Media:
    """Where in the footage the event is."""

    recording: str
    segment: int
    offset_s: float
    frame: int

    def __post_init__(self) -> None:
        _str(self.recording, "media.recording", max_len=128)
        _int(self.segment, "media.segment")
        object.__setattr__(self, "offset_s", round(_num(self.offset_s, "media.offset_s", 0.0), 3))
        _int(self.frame, "media.frame")

    def to_dict(self) -> dict[str, JSON]:
        return {
            "recording": self.recording,
            "segment": self.segment,
            "offset_s": self.offset_s,
            "frame": self.frame,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Media:
        d = _obj(d, "media", {"recording", "segment", "offset_s", "frame"})
        return cls(d["recording"], d["segment"], d["offset_s"], d["frame"])


#: the ranges a marker's ``location`` must lie in (:class:`Location`); the GNSS parser refuses fixes outside
#: them (``bodycam.device.hw.gnss``), so a physically impossible fix never reaches a marker
LAT_RANGE = (-90.0, 90.0)
LON_RANGE = (-180.0, 180.0)
ALT_M_RANGE = (-1000.0, 100000.0)
HDOP_MIN = 0.0
#: ``clock.offset_ms`` must lie in -CLOCK_OFFSET_MS_MAX .. CLOCK_OFFSET_MS_MAX (about 31.7 years)
CLOCK_OFFSET_MS_MAX = 1e12


def location_problem(lat: Any, lon: Any, alt_m: Any, hdop: Any) -> str | None:
    """Why these values cannot be a marker's ``location`` (the rules of :class:`Location`), or None."""
    try:
        _num(lat, "location.lat", *LAT_RANGE)
        _num(lon, "location.lon", *LON_RANGE)
        _opt_num(alt_m, "location.alt_m", *ALT_M_RANGE)
        _opt_num(hdop, "location.hdop", HDOP_MIN)
    except MarkerError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Location:
    """A GNSS position. ``fix`` is a short lowercase token: ``none``, ``2d``, ``3d``, ``dgps``, ``rtk``, ``dr``.

    ``alt_m`` and ``hdop`` may be None when unknown; ``age_s`` is the age of the fix at the event.
    """

    lat: float
    lon: float
    alt_m: float | None
    hdop: float | None
    fix: str
    age_s: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "lat", round(_num(self.lat, "location.lat", *LAT_RANGE), 7))
        object.__setattr__(self, "lon", round(_num(self.lon, "location.lon", *LON_RANGE), 7))
        alt = _opt_num(self.alt_m, "location.alt_m", *ALT_M_RANGE)
        object.__setattr__(self, "alt_m", None if alt is None else round(alt, 2))
        hdop = _opt_num(self.hdop, "location.hdop", HDOP_MIN)
        object.__setattr__(self, "hdop", None if hdop is None else round(hdop, 2))
        _str(self.fix, "location.fix", FIX_RE, 16)
        object.__setattr__(self, "age_s", round(_num(self.age_s, "location.age_s", 0), 3))

    def to_dict(self) -> dict[str, JSON]:
        return {
            "lat": self.lat,
            "lon": self.lon,
            "alt_m": self.alt_m,
            "hdop": self.hdop,
            "fix": self.fix,
            "age_s": self.age_s,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Location:
        d = _obj(d, "location", {"lat", "lon", "alt_m", "hdop", "fix", "age_s"})
        return cls(d["lat"], d["lon"], d["alt_m"], d["hdop"], d["fix"], d["age_s"])


@dataclass(frozen=True)
class ModelRef:
    """The detector model that produced a detection."""

    name: str
    version: str
    sha256: str

    def __post_init__(self) -> None:
        _str(self.name, "model.name", max_len=64)
        _str(self.version, "model.version", max_len=64)
        _str(self.sha256, "model.sha256", HEX64_RE)

    def to_dict(self) -> dict[str, JSON]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: Any) -> ModelRef:
        d = _obj(d, "model", {"name", "version", "sha256"})
        return cls(d["name"], d["version"], d["sha256"])


def _check_extra(extra: Any) -> None:
    if extra is None:
        return
    if not isinstance(extra, Mapping):
        raise MarkerError(f"extra: expected an object, got {type(extra).__name__}")
    check_tree(extra, "extra", max_depth=MAX_DEPTH - 1)  # before json.dumps: depth, text, int64
    try:
        size = len(json.dumps(extra, allow_nan=False, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise MarkerError(f"extra: not plain JSON ({exc})") from exc
    if size > MAX_EXTRA_BYTES:
        raise MarkerError(f"extra: {size} bytes is more than {MAX_EXTRA_BYTES}")


EVIDENCE_SOURCES = ("video", "audio")


def _evidence(value: Any) -> dict[str, float] | None:
    """``evidence``: which detectors fired for a detection and their confidences (rounded like confidence)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise MarkerError("evidence: expected a non-empty object like {\"video\": 0.98, \"audio\": 0.99}")
    out: dict[str, float] = {}
    for k, v in value.items():
        if k not in EVIDENCE_SOURCES:
            raise MarkerError(f"evidence: unknown source {k!r} (expected {', '.join(EVIDENCE_SOURCES)})")
        out[k] = round(_num(v, f"evidence.{k}", 0, 1), 4)
    return out


CLOCK_SOURCES = ("ntp", "gnss", "rtc", "none")


def check_clock(value: Any) -> dict[str, JSON] | None:
    """``clock``: whether the wall clock behind ``t`` was synchronised, by what, and its offset.

    ``{"synced": bool, "source": "ntp"|"gnss"|"rtc"|"none", "offset_ms": number|null}``;
    ``offset_ms`` is system time minus the reference (GNSS) when one is known.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"synced", "source", "offset_ms"}:
        raise MarkerError('clock: expected {"synced": bool, "source": str, "offset_ms": number or null}')
    synced, source, offset = value["synced"], value["source"], value["offset_ms"]
    if not isinstance(synced, bool):
        raise MarkerError("clock.synced: expected true or false")
    if source not in CLOCK_SOURCES:
        raise MarkerError(f"clock.source: expected one of {', '.join(CLOCK_SOURCES)}")
    if offset is not None:
        offset = round(_num(offset, "clock.offset_ms", -CLOCK_OFFSET_MS_MAX, CLOCK_OFFSET_MS_MAX), 3)
    return {"synced": synced, "source": source, "offset_ms": offset}


def _present(d: Mapping[str, Any], key: str) -> Any:
    """An optional field's value; present means not null (the schema has no null for it)."""
    if key in d and d[key] is None:
        raise MarkerError(f"{key}: null is not allowed (leave the field out)")
    return d.get(key)


def _check_semantics(kind: str, confidence: float | None, model: ModelRef | None) -> None:
    if kind in DETECTION_KINDS and (confidence is None or model is None):
        raise MarkerError(f"a {kind!r} marker is a detection: it needs confidence and model")


@dataclass(frozen=True)
class MarkerDraft:
    """What the loop knows about an event; the outbox completes it into a :class:`Marker`."""

    kind: str
    t_mono_ns: int
    wall_ns: int
    confidence: float | None = None
    media: Media | None = None
    location: Location | None = None
    model: ModelRef | None = None
    extra: dict[str, JSON] | None = None
    evidence: dict[str, float] | None = None
    clock: dict[str, JSON] | None = None

    def __post_init__(self) -> None:
        _str(self.kind, "kind", KIND_RE)
        _int(self.t_mono_ns, "t_mono_ns")
        check_wall_ns(self.wall_ns, "wall_ns")
        object.__setattr__(self, "evidence", _evidence(self.evidence))
        object.__setattr__(self, "clock", check_clock(self.clock))
        if self.confidence is not None:
            object.__setattr__(self, "confidence", round(_num(self.confidence, "confidence", 0, 1), 4))
        _check_semantics(self.kind, self.confidence, self.model)
        _check_extra(self.extra)


_REQUIRED = {"schema", "id", "device", "seq", "kind", "t", "t_mono_ns", "media", "location", "model", "prev"}
_OPTIONAL = {"confidence", "extra", "sig", "key", "evidence", "clock"}


@dataclass(frozen=True)
class Marker:
    """One complete marker; validated on construction (MarkerError)."""

    id: str
    device: str
    seq: int
    kind: str
    t: str
    t_mono_ns: int
    prev: str
    confidence: float | None = None
    media: Media | None = None
    location: Location | None = None
    model: ModelRef | None = None
    extra: dict[str, JSON] | None = None
    sig: str | None = None
    key: str | None = None
    schema: str = SCHEMA
    evidence: dict[str, float] | None = None
    clock: dict[str, JSON] | None = None
    # top-level fields this version does not know (a newer firmware's): kept, signed, chained, not read
    others: dict[str, JSON] | None = None

    def __post_init__(self) -> None:
        if self.schema != SCHEMA:
            raise MarkerError(f"schema: expected {SCHEMA!r}, got {self.schema!r}")
        _str(self.id, "id", UUID7_RE, 36)
        check_device_id(self.device)
        _int(self.seq, "seq", 1)
        _str(self.kind, "kind", KIND_RE)
        check_time(self.t)
        _int(self.t_mono_ns, "t_mono_ns")
        _str(self.prev, "prev", HEX64_RE)
        if self.confidence is not None:
            object.__setattr__(self, "confidence", round(_num(self.confidence, "confidence", 0, 1), 4))
        for name, tp in (("media", Media), ("location", Location), ("model", ModelRef)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tp):
                raise MarkerError(f"{name}: expected {tp.__name__} or None")
        _check_semantics(self.kind, self.confidence, self.model)
        _check_extra(self.extra)
        object.__setattr__(self, "evidence", _evidence(self.evidence))
        object.__setattr__(self, "clock", check_clock(self.clock))
        if self.sig is not None:
            _str(self.sig, "sig", max_len=512)
        if self.key is not None:
            _str(self.key, "key", KEY_RE, 64)
        _check_others(self.others)

    def to_dict(self) -> dict[str, JSON]:
        """The marker as a JSON object (``confidence``, ``extra``, ``evidence``, ``clock``, ``sig`` only when set)."""
        d: dict[str, JSON] = {
            "schema": self.schema,
            "id": self.id,
            "device": self.device,
            "seq": self.seq,
            "kind": self.kind,
            "t": self.t,
            "t_mono_ns": self.t_mono_ns,
            "media": None if self.media is None else self.media.to_dict(),
            "location": None if self.location is None else self.location.to_dict(),
            "model": None if self.model is None else self.model.to_dict(),
            "prev": self.prev,
        }
        if self.confidence is not None:
            d["confidence"] = self.confidence
        if self.extra is not None:
            d["extra"] = self.extra
        if self.key is not None:
            d["key"] = self.key
        if self.evidence is not None:
            d["evidence"] = dict(self.evidence)
        if self.clock is not None:
            d["clock"] = dict(self.clock)
        if self.sig is not None:
            d["sig"] = self.sig
        if self.others is not None:
            d.update(self.others)
        return d

    def canonical_bytes(self) -> bytes:
        """The bytes ``prev`` and signatures cover: see the module docstring. Excludes ``sig``."""
        return self._canonical

    @functools.cached_property
    def _canonical(self) -> bytes:
        # computed once per (immutable) marker: base verifies the signature and hashes the same bytes
        d = self.to_dict()
        d.pop("sig", None)
        return jcs(d)

    def digest(self) -> str:
        """Lowercase hex SHA-256 of :meth:`canonical_bytes`."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def to_json(self) -> bytes:
        """The wire form (canonical JSON including ``sig`` when present)."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> Marker:
        """Build and validate a marker from its JSON object; MarkerError on anything wrong."""
        d = _obj(d, "marker", _REQUIRED, _OPTIONAL, allow_unknown=True)
        others = {k: v for k, v in d.items() if k not in _REQUIRED and k not in _OPTIONAL}
        for name in ("extra", "sig", "key"):  # optional means absent, not null (the wire form would change)
            if name in d and d[name] is None:
                raise MarkerError(f"{name}: null is not allowed (leave the field out)")
        try:
            return cls(
                id=d["id"],
                device=d["device"],
                seq=d["seq"],
                kind=d["kind"],
                t=d["t"],
                t_mono_ns=d["t_mono_ns"],
                prev=d["prev"],
                confidence=_num(d["confidence"], "confidence", 0, 1) if "confidence" in d else None,
                media=None if d["media"] is None else Media.from_dict(d["media"]),
                location=None if d["location"] is None else Location.from_dict(d["location"]),
                model=None if d["model"] is None else ModelRef.from_dict(d["model"]),
                extra=d.get("extra"),
                sig=d.get("sig"),
                key=d.get("key"),
                schema=d["schema"],
                evidence=_present(d, "evidence"),
                clock=_present(d, "clock"),
                others=others or None,
            )
        except MarkerError:
            raise
        except (TypeError, ValueError, KeyError, RecursionError) as exc:
            raise MarkerError(f"marker: {exc}") from exc

    @classmethod
    def from_json(cls, data: bytes | str) -> Marker:
        """Parse wire bytes (UTF-8 JSON, no NaN, at most MAX_PAYLOAD bytes) into a validated marker."""
        doc = parse_json(data)
        check_tree(doc)
        return cls.from_dict(doc)

    @property
    def t_ns(self) -> int:
        """``t`` as exact nanoseconds since the epoch (fits int64: see ``validate``)."""
        return check_time(self.t)

    def check_wire(self) -> bytes:
        """The wire bytes, checked as base checks them (size, text, depth): MarkerError if base would refuse."""
        body = self.to_json()
        if len(body) > MAX_PAYLOAD:
            raise MarkerError(f"marker: {len(body)} bytes is more than {MAX_PAYLOAD}")
        return body


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, raw UTF-8, no NaN: the project's canonical JSON."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise MarkerError(f"not canonical JSON: {exc}") from exc


def _doubles(value: Any) -> Any:
    """Integers beyond 2^53 - 1 as the double every JCS implementation reads them as."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value) if abs(value) > _SAFE_INT else value
    if isinstance(value, Mapping):
        return {k: _doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_doubles(v) for v in value]
    return value


def _plain(value: Any) -> bool:
    """Whether ``json.dumps(sort_keys=True, ensure_ascii=False)`` writes ``value`` exactly as RFC 8785 does:
    plain ``dict``/``list``/``str``/``int``/``float``/``bool``/``None`` only, ASCII keys (code point order =
    UTF-16 order), integers within +-(2^53 - 1) and floats that ECMAScript writes as Python's ``repr``
    does (not integral, 1e-4 <= |x| < 1e16: shortest round-trip digits, no exponent). Strings need no
    check: both escape only ``"``, ``\\`` and U+0000..U+001F, the same way. At most 10,000 nodes."""
    stack = [value]
    budget = 10_000
    while stack:
        budget -= 1
        if budget < 0:
            return False
        v = stack.pop()
        t = type(v)
        if t is str or v is None or t is bool:
            continue
        if t is int:
            if not -_SAFE_INT <= v <= _SAFE_INT:
                return False
        elif t is float:
            if not 1e-4 <= abs(v) < 1e16 or v.is_integer():  # NaN and infinities fail the range too
                return False
        elif t is dict:
            for k in v:
                if type(k) is not str or not k.isascii():
                    return False
            stack.extend(v.values())
        elif t is list:
            stack.extend(v)
        else:
            return False
    return True


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical bytes of a JSON value (what ``prev`` hashes and signatures cover).

    Values :func:`_plain` accepts (every marker the firmware makes) take the C JSON encoder, ~10x faster
    than the pure-Python ``rfc8785`` (base canonicalises every marker it receives); the rest take
    ``rfc8785``. Both give the same bytes (tests/device/test_markers_jcs.py)."""
    try:
        if _plain(value):
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
        return rfc8785.dumps(_doubles(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        raise MarkerError(f"not canonical JSON: {exc}") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def parse_json(data: bytes | str) -> Any:
    """Strict JSON parse (UTF-8, no NaN/Infinity, at most MAX_PAYLOAD bytes); MarkerError on failure."""
    if len(data) > MAX_PAYLOAD:
        raise MarkerError(f"{len(data)} bytes is more than {MAX_PAYLOAD}")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        return json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MarkerError(f"not valid JSON: {exc}") from exc


def build_marker(draft: MarkerDraft, *, marker_id: str, device: str, seq: int, prev: str,
                 signer: MarkerSigner | None = None) -> Marker:
    """Complete a draft: used by the outbox inside its transaction, before it commits.

    With a ``signer`` the marker names its key (``key``) and carries ``sig`` over its canonical bytes.

    The result passed the same rules base applies (``validate``), including the wire size, so a
    committed marker is never one that base would refuse.
    """
    marker = Marker(
        id=marker_id,
        device=device,
        seq=seq,
        kind=draft.kind,
        t=rfc3339_ms(draft.wall_ns),
        t_mono_ns=draft.t_mono_ns,
        prev=prev,
        confidence=draft.confidence,
        media=draft.media,
        location=draft.location,
        model=draft.model,
        extra=draft.extra,
        key=None if signer is None else signer.key_id,
        evidence=draft.evidence,
        clock=draft.clock,
    )
    if signer is not None:
        marker = dataclasses.replace(marker, sig=signer.sign(marker.canonical_bytes()))
    marker.check_wire()
    return marker
