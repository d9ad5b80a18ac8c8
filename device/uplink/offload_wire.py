"""The offload wire protocol, shared by the camera (``offload.py``) and base (``base/offload_api.py``).

HTTPS (base's server certificate, checked against the CA the camera is configured with), JSON
answers, under ``/api/offload/v1``:

* ``GET  /recordings/<device>/<recording>``: what base has: ``{"state": "none"|"partial"|"stored",
  "files": {name: bytes received}, "confirmation": {...} (when stored)}``;
* ``PUT  /recordings/<device>/<recording>/<file>?offset=N``: one chunk (at most
  :data:`MAX_CHUNK` bytes) written at byte ``N`` of the file. ``N`` must not be past what base holds
  (409 with ``received``); base checks the chunk's SHA-256, truncates the file to ``N``, writes and
  fsyncs, then answers ``{"received": N + len}``. A chunk cut on the way is not kept: the camera
  asks again (``GET``) and resumes from what base holds, so a cut at any byte costs at most a chunk;
* ``POST /recordings/<device>/<recording>/confirm``: base verifies what it received (every segment's
  SHA-256, the manifest's signature and fields, each marker's signature and the chain, with the key
  registered for the device, and the link to the previous recording it holds), stores it in the
  evidence store and answers the confirmation naming the hashes it verified; or refuses (422) with
  ``{"refused": [codes], "reason": "..."}``. Confirming a stored recording again answers the same
  confirmation (the camera may have missed the first answer). A recording signed with a *retired*
  device key that base cannot yet place on the key's chain is answered 409 ``awaiting_successor``
  (with ``waiting_for``: ``handover`` or ``successor``; kept staged, audited ``held``: the camera asks
  again later in the round and at the next dock); one that is not on it, 422 ``retired_key``
  (``base/receive.py``, ``base/chain_heads.py``);
* ``PUT  /handover/<device>``: the body is a key hand-over record (``footage/handover.py``, made by
  ``bodycam provision --force``, signed by the old and the new key); base checks both signatures with
  the keys registered for the device and keeps it: ``{"registered": true, "new": bool, "old_key",
  "new_key", "head"}``; refused 422 (bad record, unknown or revoked key) or 409 (base holds another
  hand-over of that key). The camera sends its records at the start of every round until base has them.

**Confirmations are signed by base** (schema :data:`CONFIRMATION_SCHEMA`), with base's *custody key*
(``bodycam-base custody keygen``; ``serve --custody-key``), whose public half every camera is given at
provisioning (``bodycam offload trust``, ``[offload] trusted_keys_dir``)::

    {"schema": "bodycam.offload-confirmation/1", "confirmed": true, "device": "cam-01",
     "recording": "20260301T100000000Z", "manifest_sha256": "...", "markers_sha256": "..." | null,
     "segments": {"segment-00000.mp4": "<sha256>", ...}, "key": "<device key id of the manifest>",
     "stored_ns": 1772359200000000000, "key_id": "<custody key id>", "sig": "<base64 Ed25519>"}

``sig`` covers the RFC 8785 bytes of the rest (the canonical form of markers, manifests and model
packages). The camera lets retention delete a recording only on a confirmation whose signature
verifies under a trusted custody key and whose content names this device, this recording and its
hashes (``footage/offload_state.py``): TLS alone would let anyone who answers as base (any public
CA's certificate for base's name when ``offload.ca_file`` is empty, a compromised TLS terminator)
make cameras delete evidence base never stored. ``schema`` keeps the signature's meaning apart from
every other document base signs: a model package (``bodycam.model-package/1``) signed by the same key
is no confirmation, and a confirmation is no model package. No time or nonce is signed: replaying a
genuine confirmation names only the recording base did store.

**Authentication: every request is signed with the device's Ed25519 key** (the key that signs its
markers and manifests, registered at base with ``bodycam-base keys add``): headers
``X-Bodycam-Device``, ``X-Bodycam-Key`` (key id), ``X-Bodycam-Content-Sha256`` (of the body) and
``X-Bodycam-Signature`` (base64 Ed25519 over :func:`request_bytes`). Why not mutual TLS: the upload
routes live in the one base web app that browsers use without client certificates, and uvicorn
does not hand the peer certificate to the application, so the certificate's CN could not be bound
to the device named in the URL. Why not a per-device token: it would be one more secret to issue,
store and rotate, while base already holds each device's public key and its revocation time.
Every request is idempotent (a chunk names its offset and its hash), so a replayed request
changes nothing; no timestamp is signed (a camera's clock may be unsynced when it docks).
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from bodycam.device.identity import Signer, TrustedKeys
from bodycam.device.signed_doc import sign_document, signature_problem

PREFIX = "/api/offload/v1"
PROTOCOL = "bodycam-offload/1"
CONFIRMATION_SCHEMA = "bodycam.offload-confirmation/1"
#: the refusal code (409) of a recording signed with a retired device key that base holds back until it has
#: the recording after it (``base/receive.py``)
AWAITING_SUCCESSOR = "awaiting_successor"
#: the refusal code (422) of a recording signed with a retired device key that is not on the key's chain
RETIRED_KEY = "retired_key"
MAX_CHUNK = 8 * 1024 * 1024
#: the files of a recording that are uploaded (the camera's ``offload.json`` stays on the camera)
#: (``\A``...``\Z``: the whole string, so ``match`` and ``fullmatch`` agree and a trailing newline is refused)
FILE_RE = re.compile(r"\A(segment-\d{5}\.mp4(\.age)?|markers\.jsonl|chapters\.vtt|manifest\.json)\Z")
RECORDING_RE = re.compile(r"\A\d{8}T\d{9}Z(-\d{1,4})?\Z")

H_DEVICE = "x-bodycam-device"
H_KEY = "x-bodycam-key"
H_SHA = "x-bodycam-content-sha256"
H_SIG = "x-bodycam-signature"


def request_bytes(method: str, target: str, body_sha256: str, device: str, key_id: str) -> bytes:
    """What a request's signature covers: method, path with query, body hash, device and key."""
    return "\n".join((PROTOCOL, method.upper(), target, body_sha256, device, key_id)).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sign_confirmation(body: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """``body`` (base's confirmation of one recording) with ``schema``, ``key_id`` and ``sig`` (base's side)."""
    out = {k: v for k, v in body.items() if k != "schema"}
    out["schema"] = CONFIRMATION_SCHEMA
    return sign_document(out, signer)  # drops any key_id/sig in body, adds them after schema


def confirmation_signature_problem(conf: Any, trusted: TrustedKeys) -> str | None:
    """Why ``conf`` is not a confirmation signed by a key in ``trusted`` (None when it is); the content is
    checked against the recording by ``footage/offload_state.confirmation_problem``."""
    if not isinstance(conf, dict):
        return "the confirmation is not a JSON object"
    if conf.get("schema") != CONFIRMATION_SCHEMA:
        return f"schema is {conf.get('schema')!r}, not {CONFIRMATION_SCHEMA!r} (not a confirmation)"
    return signature_problem(conf, trusted, what="custody key")
