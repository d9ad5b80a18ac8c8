"""device/signed_doc.py: sign a JSON document, and say why one is not signed by a trusted key (real Ed25519 keys)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bodycam.device.errors import MarkerError
from bodycam.device.identity import Signer
from bodycam.device.signed_doc import sign_document, signature_problem, signed_bytes
from bodycam.device.uplink.markers import jcs

DOC = {"schema": "bodycam.test/1", "device": "cam-01", "n": 3, "nested": {"b": [1, 2.5, None], "a": "é"}}


def trusted(*signers: Signer) -> dict[str, Ed25519PublicKey]:
    return {s.key_id: s.public for s in signers}


def test_sign_then_verify() -> None:
    signer = Signer.generate()
    doc = sign_document(DOC, signer)
    assert list(doc) == [*DOC, "key_id", "sig"] and doc["key_id"] == signer.key_id
    assert signature_problem(doc, trusted(signer)) is None
    assert signature_problem(doc, trusted(Signer.generate(), signer)) is None  # among other trusted keys
    # the signature is over the RFC 8785 bytes of the document without sig, key_id included
    raw = base64.b64decode(doc["sig"], validate=True)
    signer.public.verify(raw, jcs({**DOC, "key_id": signer.key_id}))
    assert signed_bytes(doc) == jcs({**DOC, "key_id": signer.key_id})
    assert DOC == {"schema": "bodycam.test/1", "device": "cam-01", "n": 3,
                   "nested": {"b": [1, 2.5, None], "a": "é"}}  # the input is not changed


def test_signing_is_deterministic_and_replaces_an_earlier_key_and_signature() -> None:
    private = Ed25519PrivateKey.generate()
    a, b = Signer(private), Signer(private)
    first = sign_document(DOC, a)
    assert sign_document(DOC, b) == first  # Ed25519 is deterministic: same bytes, same signature
    other = Signer.generate()
    again = sign_document({"sig": "x", "key_id": "y", **first}, other)
    assert list(again) == [*DOC, "key_id", "sig"] and again["key_id"] == other.key_id
    assert signature_problem(again, trusted(other)) is None


def test_a_tampered_field_does_not_verify() -> None:
    signer = Signer.generate()
    doc = sign_document(DOC, signer)
    for changed in ({**doc, "n": 4}, {**doc, "nested": {"b": [1, 2.5], "a": "é"}}, {**doc, "extra": True},
                    {k: v for k, v in doc.items() if k != "device"}):
        problem = signature_problem(changed, trusted(signer))
        assert problem is not None and "signature does not verify" in problem and signer.key_id in problem


def test_missing_or_malformed_signature_or_key_id() -> None:
    signer = Signer.generate()
    doc = sign_document(DOC, signer)
    keys = trusted(signer)
    for bad in ({k: v for k, v in doc.items() if k != "sig"}, {k: v for k, v in doc.items() if k != "key_id"},
                {**doc, "sig": None}, {**doc, "sig": 1}, {**doc, "key_id": 7}):
        assert signature_problem(bad, keys) == "not signed (no key_id/sig)"
    for garbage in ("", "AAAA", "!!not base64!!", base64.b64encode(b"\0" * 64).decode(), doc["sig"] + "=="):
        problem = signature_problem({**doc, "sig": garbage}, keys)
        assert problem is not None and "does not verify" in problem


def test_a_key_id_not_trusted_is_named_with_the_trusted_ones() -> None:
    signer, other = Signer.generate(), Signer.generate()
    doc = sign_document(DOC, signer)
    problem = signature_problem(doc, trusted(other), what="custody key")
    assert problem == (f"signed by key {signer.key_id}, which this camera does not trust as a custody key "
                       f"(trusted: {other.key_id})")
    assert signature_problem(doc, {}) == (f"signed by key {signer.key_id}, which this camera does not trust as a "
                                          "signing key (trusted: none)")
    # a key id that names a trusted key, but the document was signed by another key
    assert signature_problem({**doc, "key_id": other.key_id}, trusted(signer, other)) is not None


def test_a_signature_over_the_same_body_by_another_key_does_not_verify() -> None:
    signer, other = Signer.generate(), Signer.generate()
    doc = sign_document(DOC, signer)
    forged = {**doc, "sig": other.sign(signed_bytes(doc))}  # another key's signature, naming the signer's key
    problem = signature_problem(forged, trusted(signer, other))
    assert problem is not None and f"does not verify with signing key {signer.key_id}" in problem
    # the same body honestly signed by the other key verifies as the other key's
    assert signature_problem(sign_document(doc, other), trusted(signer, other)) is None


@pytest.mark.parametrize("value", [None, [], ["sig"], "doc", 3, 1.5, True])
def test_not_a_json_object(value: Any) -> None:
    assert signature_problem(value, trusted(Signer.generate())) == "not a JSON object"


def test_not_canonical_json_is_a_problem_not_an_exception() -> None:
    signer = Signer.generate()
    doc = sign_document(DOC, signer)
    problem = signature_problem({**doc, "device": "\ud800"}, trusted(signer))  # a lone surrogate: no UTF-8
    assert problem is not None and problem.startswith("not canonical JSON")
    with pytest.raises(MarkerError):
        sign_document({"x": float("nan")}, signer)


def test_other_field_names_and_several_signatures() -> None:
    """A recording manifest names its key ``key``; a hand-over record carries two signatures over the same
    bytes (without either), so each is checked with both left out."""
    signer = Signer.generate()
    manifest = sign_document({"recording": "r1", "key": "old"}, signer, key_field="key")
    assert manifest["key"] == signer.key_id and "key_id" not in manifest
    assert signature_problem(manifest, trusted(signer), key_field="key") is None
    assert signature_problem(manifest, trusted(signer)) == "not signed (no key_id/sig)"

    old, new = Signer.generate(), Signer.generate()
    record: dict[str, Any] = {"old_key": old.key_id, "new_key": new.key_id, "head": None}
    body = signed_bytes(record, ("old_sig", "new_sig"))
    record = {**record, "old_sig": old.sign(body), "new_sig": new.sign(body)}
    sigs = ("old_sig", "new_sig")
    assert signed_bytes(record, sigs) == body
    assert signature_problem(record, trusted(old), key_field="old_key", sig_field="old_sig", unsigned=sigs) is None
    assert signature_problem(record, trusted(new), key_field="new_key", sig_field="new_sig", unsigned=sigs) is None
    # without ``unsigned`` the other signature would be covered too: it does not verify
    assert signature_problem(record, trusted(old), key_field="old_key", sig_field="old_sig") is not None
    swapped = {**record, "old_sig": record["new_sig"], "new_sig": record["old_sig"]}
    assert signature_problem(swapped, trusted(old), key_field="old_key", sig_field="old_sig", unsigned=sigs)
