"""Signed JSON documents: one Ed25519 signature (or several) over the RFC 8785 bytes of the rest.

Every JSON document the project signs has the same shape: a JSON object, a field naming the key
that signed it (``key_id``, or ``key`` in a recording manifest) and a field with the signature
(``sig``: standard base64 of the 64-byte Ed25519 signature, ``bodycam.device.identity``) over the
RFC 8785 (JCS) canonical bytes of the object without its signature field(s) (``markers.jcs``, the
canonical form of markers), so any language can verify it:

* model packages (``model_package.py``, ``key_id``/``sig``);
* base's offload confirmations (``uplink/offload_wire.py``, ``key_id``/``sig``);
* recording manifests (``footage/seal.py``, ``key``/``sig``);
* key hand-over records (``footage/handover.py``): two signatures, ``old_sig`` and ``new_sig``, over
  the same bytes (the record without either), the keys named by ``old_key`` and ``new_key``.

What a document *means* (its ``schema``, its fields) is each caller's to check; this module only
signs and checks signatures. :func:`signature_problem` returns why a document is not signed by a
trusted key as text (None when it is), for each caller to put in its own error with its own context.
Markers are signed over the same canonical bytes but are dataclasses with their own checks
(``Marker.canonical_bytes``, ``base/keys.py``, ``device/verify.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from bodycam.device.errors import MarkerError
from bodycam.device.identity import TrustedKeys, verify
from bodycam.device.uplink.markers import MarkerSigner, jcs

#: the signature field, and the field naming the key, unless a document says otherwise
SIG = "sig"
KEY_ID = "key_id"


def signed_bytes(doc: Mapping[str, Any], unsigned: Collection[str] = (SIG,)) -> bytes:
    """What the signature(s) cover: the RFC 8785 bytes of ``doc`` without the fields in ``unsigned``
    (its signature fields); MarkerError when ``doc`` is not canonical JSON."""
    return jcs({k: v for k, v in doc.items() if k not in unsigned})


def sign_document(doc: Mapping[str, Any], signer: MarkerSigner, *, key_field: str = KEY_ID,
                  sig_field: str = SIG) -> dict[str, Any]:
    """A copy of ``doc`` signed by ``signer``: any ``key_field`` and ``sig_field`` in ``doc`` are dropped,
    then ``key_field`` (the signer's key id) and ``sig_field`` (the signature over :func:`signed_bytes`,
    which covers ``key_field``) are added last, in that order."""
    out = {k: v for k, v in doc.items() if k not in (key_field, sig_field)}
    out[key_field] = signer.key_id
    out[sig_field] = signer.sign(signed_bytes(out, (sig_field,)))
    return out


def signature_problem(doc: Any, trusted: TrustedKeys, *, key_field: str = KEY_ID, sig_field: str = SIG,
                      unsigned: Collection[str] | None = None, what: str = "signing key") -> str | None:
    """Why ``doc`` is not signed by a key in ``trusted`` (None when it is): not a JSON object, no
    ``key_field``/``sig_field`` strings, a key not in ``trusted``, not canonical JSON, or a signature
    that does not verify over :func:`signed_bytes` (without ``unsigned``, default: ``sig_field``).
    ``what`` names the kind of key in the text (``"custody key"``)."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    kid, sig = doc.get(key_field), doc.get(sig_field)
    if not isinstance(kid, str) or not isinstance(sig, str):
        return f"not signed (no {key_field}/{sig_field})"
    public = trusted.get(kid)
    if public is None:
        known = ", ".join(sorted(trusted)) or "none"
        return f"signed by key {kid}, which this camera does not trust as a {what} (trusted: {known})"
    try:
        data = signed_bytes(doc, (sig_field,) if unsigned is None else unsigned)
    except MarkerError as exc:
        return str(exc)  # "not canonical JSON: ..."
    if not verify(public, data, sig):
        return (f"the signature does not verify with {what} {kid} (altered after signing, or signed by "
                "another key)")
    return None


__all__ = ["KEY_ID", "SIG", "sign_document", "signature_problem", "signed_bytes"]
