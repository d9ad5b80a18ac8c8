"""DESIGN section 4: new marker fields are added compatibly and a consumer ignores what it does not
know. A base of this version stores a newer camera's signed markers that carry a top-level field it
has never heard of, verifies their signature and chain over it, and keeps the field as sent."""

from __future__ import annotations

import json
from pathlib import Path

from test_signatures import TOPIC, WALL, setup, signed_markers

from bodycam.base.store import MarkerStore
from bodycam.device.identity import Signer
from bodycam.device.uplink.markers import Marker, MarkerDraft, build_marker, jcs, uuid7


def test_a_newer_cameras_new_field_is_stored_verified_and_chained(store: MarkerStore, tmp_path: Path) -> None:
    consumer, registry, alerts, _ = setup(store)
    signer = Signer.generate()
    registry.add("cam-01", signer.public_pem(), WALL)
    (first,) = signed_markers(tmp_path, signer, 1)
    # what a newer firmware would send: the same marker with a field this version does not know
    doc = {**first.to_dict(), "weather": {"rain": True}, "reason": "detection"}
    doc.pop("sig")
    doc["sig"] = signer.sign(jcs(doc))
    newer = Marker.from_dict(doc)
    after = build_marker(MarkerDraft(kind="manual", t_mono_ns=first.t_mono_ns + 1, wall_ns=WALL + 10**9),
                         marker_id=uuid7(WALL + 10**9), device="cam-01", seq=2, prev=newer.digest(), signer=signer)
    assert consumer.handle(TOPIC, json.dumps(doc).encode()) == "stored"
    assert consumer.handle(TOPIC, after.to_json()) == "stored"
    got = {s.marker.seq: s for s in store.markers(device="cam-01")}
    assert [got[1].chain, got[2].chain] == ["ok", "ok"]
    assert got[1].marker.others == {"weather": {"rain": True}, "reason": "detection"}
    assert not [a for a in alerts if a.startswith("ALERT")]
    # the new field is signed: changing it is a forgery
    forged = {**doc, "reason": "button"}
    assert consumer.handle(TOPIC, json.dumps(forged).encode()) == "rejected_bad_signature"
