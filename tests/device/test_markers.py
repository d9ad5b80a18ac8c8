"""Markers: schema, canonical bytes, hash chain, validation."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import rfc8785

from bodycam.device import identity
from bodycam.device.clock import VirtualClock
from bodycam.device.errors import MarkerError
from bodycam.device.identity import Signer
from bodycam.device.uplink.markers import (
    GENESIS_PREV,
    Location,
    Marker,
    MarkerDraft,
    Media,
    ModelRef,
    build_marker,
    jcs,
    uuid7,
)

SHA = "ab" * 32
WALL = 1_764_072_000_123_456_789  # 2025-11-25T12:00:00.123Z


def _schema() -> dict[str, Any]:
    text = (resources.files("bodycam.device") / "schema" / "marker.schema.json").read_text("utf-8")
    return dict(json.loads(text))


def _validator() -> jsonschema.protocols.Validator:
    schema = _schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def gunshot(seq: int = 1, prev: str = GENESIS_PREV) -> Marker:
    draft = MarkerDraft(
        kind="gunshot",
        t_mono_ns=2_500_000_000,
        wall_ns=WALL,
        confidence=0.93127,
        media=Media("rec-1", 0, 2.5, 75),
        location=Location(52.5200066, 13.404954, 34.0, 0.9, "3d", 0.4),
        model=ModelRef("muzzle", "1.0.0", SHA),
        extra={"source": "camera", "note": "Schuss ü"},
    )
    return build_marker(draft, marker_id=uuid7(WALL), device="cam-01", seq=seq, prev=prev)


def test_full_marker_matches_json_schema_and_round_trips() -> None:
    m = gunshot()
    d = m.to_dict()
    _validator().validate(d)
    assert d["t"] == "2025-11-25T12:00:00.123Z"
    assert d["confidence"] == 0.9313
    assert "sig" not in d
    assert Marker.from_json(m.to_json()) == m


def test_manual_marker_omits_confidence_and_allows_nulls() -> None:
    m = build_marker(
        MarkerDraft(kind="manual", t_mono_ns=5, wall_ns=WALL),
        marker_id=uuid7(WALL),
        device="cam-01",
        seq=3,
        prev=SHA,
    )
    d = m.to_dict()
    assert "confidence" not in d and d["media"] is None and d["location"] is None and d["model"] is None
    _validator().validate(d)


def test_docs_copy_of_schema_is_identical() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "marker.schema.json"
    assert json.loads(docs.read_text("utf-8")) == _schema()


def test_canonical_bytes_are_defined_and_reproducible() -> None:
    m = gunshot()
    expected = rfc8785.dumps({k: v for k, v in m.to_dict().items() if k != "sig"})
    assert m.canonical_bytes() == expected
    assert "ü".encode() in m.canonical_bytes()
    assert m.digest() == hashlib.sha256(expected).hexdigest()
    # sig is excluded from the canonical bytes
    signed = Marker.from_dict({**m.to_dict(), "sig": "c2ln"})
    assert signed.canonical_bytes() == m.canonical_bytes()
    # a re-parse from the wire gives the same digest (what base verifies)
    assert Marker.from_json(m.to_json()).digest() == m.digest()


def test_uuid7_layout_and_time_order() -> None:
    a = uuid7(WALL, bytes(10))
    b = uuid7(WALL + 1_000_000, bytes(10))
    assert a[14] == "7" and a[19] in "89ab"
    assert a < b
    assert int(a.replace("-", "")[:12], 16) == WALL // 1_000_000
    assert len({uuid7(WALL) for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("seq"), "missing seq"),
        (lambda d: d.update(seq=0), "seq"),
        (lambda d: d.update(seq=True), "seq"),
        (lambda d: d.update(confidence=1.5), "confidence"),
        (lambda d: d.update(confidence=float("nan")), "finite"),
        (lambda d: d.pop("confidence"), "detection"),
        (lambda d: d.update(model=None), "detection"),
        (lambda d: d.update(t="2025-11-25 12:00:00"), "t"),
        (lambda d: d.update(t="2025-13-45T12:00:00.000Z"), "t"),
        (lambda d: d.update(prev="xyz"), "prev"),
        (lambda d: d.update(id="not-a-uuid"), "id"),
        (lambda d: d.update(schema="bodycam.marker/2"), "schema"),
        (lambda d: d.update(kind="Gun Shot"), "kind"),
        (lambda d: d.update(device="../etc"), "device"),
        (lambda d: d.update(Bogus=1), "field name"),
        (lambda d: d.update(bogus=float("nan")), "finite"),
        (lambda d: d["media"].update(frame=-1), "media.frame"),
        (lambda d: d["location"].update(lat=91), "location.lat"),
        (lambda d: d["location"].pop("fix"), "location"),
        (lambda d: d.update(extra=[1]), "extra"),
        (lambda d: d.update(extra={"x": "y" * 5000}), "extra"),
    ],
)
def test_from_dict_rejects_bad_markers_that_the_schema_also_rejects(mutate: Any, needle: str) -> None:
    d = json.loads(gunshot().to_json())
    mutate(d)
    with pytest.raises(MarkerError, match=needle):
        Marker.from_dict(d)
    # the schema cannot check calendar dates, the extra size or NaN (NaN never parses from the wire)
    if needle not in ("t", "extra", "finite"):
        with pytest.raises(jsonschema.ValidationError):
            _validator().validate(d)


def test_draft_rejects_bad_values_with_clear_errors() -> None:
    with pytest.raises(MarkerError, match="confidence"):
        MarkerDraft(kind="gunshot", t_mono_ns=0, wall_ns=0, confidence=-0.1, model=ModelRef("m", "1", SHA))
    with pytest.raises(MarkerError, match="needs confidence and model"):
        MarkerDraft(kind="gunshot", t_mono_ns=0, wall_ns=0, confidence=0.9)
    with pytest.raises(MarkerError, match="t_mono_ns"):
        MarkerDraft(kind="manual", t_mono_ns=-1, wall_ns=0)
    with pytest.raises(MarkerError, match="extra"):
        MarkerDraft(kind="manual", t_mono_ns=0, wall_ns=0, extra={"x": float("inf")})
    with pytest.raises(MarkerError, match="sha256"):
        ModelRef("m", "1", "ABC")


def test_from_json_rejects_non_json_and_nan() -> None:
    for raw in (b"\xff\xfe", b"{", b'{"seq": NaN}', b"[]", b"null"):
        with pytest.raises(MarkerError):
            Marker.from_json(raw)


def test_virtual_clock_markers_are_reproducible_except_id() -> None:
    clock = VirtualClock(wall_epoch_ns=WALL)
    d = MarkerDraft(kind="manual", t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns())
    a = build_marker(d, marker_id=uuid7(WALL, bytes(10)), device="cam-01", seq=1, prev=GENESIS_PREV)
    b = build_marker(d, marker_id=uuid7(WALL, bytes(10)), device="cam-01", seq=1, prev=GENESIS_PREV)
    assert a.canonical_bytes() == b.canonical_bytes()


def test_canonical_bytes_are_rfc8785_jcs() -> None:
    """Known answers of RFC 8785: ECMAScript numbers (12.0 -> 12, 1e-07 -> 1e-7), code-point key order."""
    assert jcs({"b": 12.0, "a": 1e-07, "é": "ü", "A": [0.93, -0.0, 1e21]}) == (
        '{"A":[0.93,0,1e+21],"a":1e-7,"b":12,"é":"ü"}'.encode()
    )
    # integers beyond 2^53 - 1 are canonicalised as the double any JCS implementation parses them to
    assert jcs({"t": 2**53 + 1}) == b'{"t":9007199254740992}'
    assert jcs({"t": 2**53 - 1}) == b'{"t":9007199254740991}'


def test_a_newer_firmwares_top_level_field_is_kept_signed_and_chained() -> None:
    """DESIGN section 4: fields are added compatibly and a consumer ignores what it does not know; an
    older base must store a newer camera's markers, and the field stays covered by chain and signature."""
    signer = Signer.generate()
    m = gunshot()
    d = {**m.to_dict(), "reason": "detection", "weather": {"rain": True, "temp_c": 3.5}}
    d.pop("sig", None)
    body = jcs(d)
    newer = Marker.from_dict(d)
    assert newer.others == {"reason": "detection", "weather": {"rain": True, "temp_c": 3.5}}
    assert newer.canonical_bytes() == body and newer.digest() == hashlib.sha256(body).hexdigest()
    assert Marker.from_json(newer.to_json()) == newer
    _validator().validate(json.loads(newer.to_json()))
    # signed: the signature covers the new field; change it and the signature fails
    signed = {**d, "key": signer.key_id}
    signed["sig"] = signer.sign(jcs(signed))
    wire = Marker.from_json(json.dumps(signed).encode())
    assert identity.verify(signer.public, wire.canonical_bytes(), wire.sig or "")
    tampered = Marker.from_dict({**signed, "reason": "button"})
    assert not identity.verify(signer.public, tampered.canonical_bytes(), signed["sig"])
    # the chain: the next marker's prev is the digest of the bytes with the new field
    assert newer.digest() != m.digest()
    with pytest.raises(MarkerError, match="known field"):
        Marker(**{**{f: getattr(m, f) for f in ("id", "device", "seq", "kind", "t", "t_mono_ns", "prev")},
                  "confidence": m.confidence, "model": m.model, "others": {"seq": 3}})


def test_a_signed_marker_names_its_key_and_verifies() -> None:
    signer = Signer.generate()
    draft = MarkerDraft(kind="manual", t_mono_ns=5, wall_ns=WALL)
    m = build_marker(draft, marker_id=uuid7(WALL), device="cam-01", seq=1, prev=GENESIS_PREV, signer=signer)
    assert m.key == signer.key_id and m.sig is not None
    assert '"key":"' + signer.key_id + '"' in m.canonical_bytes().decode()
    assert '"sig"' not in m.canonical_bytes().decode()
    wire = Marker.from_json(m.to_json())
    assert wire == m
    assert identity.verify(signer.public, wire.canonical_bytes(), wire.sig or "")
    # another key, or any changed field, does not verify
    assert not identity.verify(Signer.generate().public, wire.canonical_bytes(), wire.sig or "")
    changed = Marker.from_dict({**m.to_dict(), "seq": 2})
    assert not identity.verify(signer.public, changed.canonical_bytes(), m.sig or "")
    with pytest.raises(MarkerError, match="key"):
        Marker.from_dict({**m.to_dict(), "key": "not a key id"})


def test_evidence_is_optional_round_trips_and_is_checked() -> None:
    from bodycam.device.uplink.markers import Marker as _Marker
    from bodycam.device.uplink.markers import MarkerDraft as _Draft

    schema = json.loads((Path(__file__).resolve().parents[2] / "device" / "schema" / "marker.schema.json").read_text())
    base = {"schema": "bodycam.marker/1", "id": "01890a5d-ac96-774b-bcce-b302099a8057", "device": "cam-1", "seq": 1,
            "kind": "gunshot", "t": "2026-01-01T00:00:00.000Z", "t_mono_ns": 5, "media": None, "location": None,
            "model": {"name": "shotnet", "version": "1", "sha256": "0" * 64}, "prev": "0" * 64, "confidence": 0.9}
    old = _Marker.from_dict(dict(base))
    assert old.evidence is None and "evidence" not in old.to_dict()  # compatible: absent stays absent
    m = _Marker.from_dict({**base, "evidence": {"video": 0.981234, "audio": 0.99}})
    assert m.evidence == {"video": 0.9812, "audio": 0.99}
    assert _Marker.from_json(m.to_json()) == m
    jsonschema.validate(json.loads(m.to_json()), schema)
    for bad in ({}, {"radar": 0.5}, {"audio": 1.5}, {"audio": "high"}, None):
        with pytest.raises(MarkerError, match="evidence"):
            _Marker.from_dict({**base, "evidence": bad})
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**base, "evidence": bad}, schema)
    d = _Draft(kind="gunshot", t_mono_ns=1, wall_ns=1_800_000_000_000_000_000, confidence=0.9,
               model=m.model, evidence={"audio": 0.97})
    assert d.evidence == {"audio": 0.97}


def test_clock_is_a_top_level_optional_field_checked_like_the_schema() -> None:
    """DESIGN.md section 4: `clock` {synced, source, offset_ms}; absent on old markers; bad values refused."""
    from bodycam.device.uplink.markers import Marker as _Marker
    from bodycam.device.uplink.markers import MarkerDraft as _Draft

    schema = json.loads((Path(__file__).resolve().parents[2] / "device" / "schema" / "marker.schema.json").read_text())
    base = {"schema": "bodycam.marker/1", "id": "01890a5d-ac96-774b-bcce-b302099a8057", "device": "cam-1", "seq": 1,
            "kind": "manual", "t": "2026-01-01T00:00:00.000Z", "t_mono_ns": 5, "media": None, "location": None,
            "model": None, "prev": "0" * 64}
    old = _Marker.from_dict(dict(base))
    assert old.clock is None and "clock" not in old.to_dict()
    for good in ({"synced": True, "source": "gnss", "offset_ms": -12.5}, {"synced": False, "source": "none", "offset_ms": None}):
        m = _Marker.from_dict({**base, "clock": good})
        assert m.clock == good and m.to_dict()["clock"] == good
        assert _Marker.from_json(m.to_json()) == m
        jsonschema.validate(json.loads(m.to_json()), schema)
    bad_values: list[object] = [
        None, {}, {"synced": True, "source": "gnss"}, {"synced": "yes", "source": "gnss", "offset_ms": 0},
        {"synced": True, "source": "sundial", "offset_ms": 0}, {"synced": True, "source": "ntp", "offset_ms": "0"},
        {"synced": True, "source": "ntp", "offset_ms": 1e13}, {"synced": True, "source": "ntp", "offset_ms": 0, "x": 1},
    ]
    for bad in bad_values:
        with pytest.raises(MarkerError, match="clock"):
            _Marker.from_dict({**base, "clock": bad})
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**base, "clock": bad}, schema)
    d = _Draft(kind="manual", t_mono_ns=1, wall_ns=1_800_000_000_000_000_000,
               clock={"synced": True, "source": "ntp", "offset_ms": 0.0004})
    assert d.clock == {"synced": True, "source": "ntp", "offset_ms": 0.0}
