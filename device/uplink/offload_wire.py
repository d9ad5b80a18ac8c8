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
  confirmation (the camera may have missed the first answer).

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

PREFIX = "/api/offload/v1"
PROTOCOL = "bodycam-offload/1"
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
