"""Signed recording manifests: what makes a recording directory evidence.

A sealed ``manifest.json`` (``bodycam.recording/1``) carries, besides the segments with their
SHA-256:

* ``markers_sha256``: SHA-256 of ``markers.jsonl`` as written (null while it has no marker);
* ``previous``: ``{"recording": <id>, "manifest_sha256": <SHA-256 of its manifest.json file>}`` of
  the recording before it on this card (null for the first), a chain across recordings;
* ``key``: the id of the device key (``bodycam.device.identity``);
* ``sig``: base64 Ed25519 signature over the RFC 8785 (JCS) canonical bytes of the manifest
  without ``sig`` (the same canonical form as markers: ``markers.jcs``; ``signed_doc.py``).

The manifest is re-sealed at every rewrite (segment hashed, marker added, end), so the file on
disk is always signed. ``bodycam verify`` (``bodycam.device.verify``) checks all of it offline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from bodycam.device import signed_doc
from bodycam.device.footage.segment_writer import sha256_of
from bodycam.device.safe_load import loads_untrusted
from bodycam.device.uplink.markers import MarkerSigner

MANIFEST_FILE = "manifest.json"
MARKERS_FILE = "markers.jsonl"


def signed_bytes(doc: dict[str, Any]) -> bytes:
    """The bytes a manifest's ``sig`` covers: JCS of the manifest without ``sig``."""
    return signed_doc.signed_bytes(doc)


def seal(doc: dict[str, Any], signer: MarkerSigner | None) -> dict[str, Any]:
    """``doc`` with ``key`` and ``sig`` (without a signer: both removed, plainly unsigned)."""
    if signer is None:
        return {k: v for k, v in doc.items() if k not in ("key", "sig")}
    return signed_doc.sign_document(doc, signer, key_field="key")


def markers_sha256(rec_dir: Path) -> str | None:
    """SHA-256 of ``markers.jsonl`` (None when there is none yet)."""
    try:
        return sha256_of(rec_dir / MARKERS_FILE)
    except FileNotFoundError:
        return None


def previous_link(prev_dir: Path | None) -> tuple[dict[str, str] | None, bool]:
    """The link to the previous recording and whether it is final (that manifest says complete).

    (None, True) when there is no previous recording; (None, False) while its manifest cannot be read.
    """
    if prev_dir is None:
        return None, True
    path = prev_dir / MANIFEST_FILE
    try:
        data = path.read_bytes()
    except OSError:
        return None, False
    digest = hashlib.sha256(data).hexdigest()
    try:
        complete = bool(loads_untrusted(data).get("complete", False))
    except (ValueError, AttributeError):
        complete = False
    return {"recording": prev_dir.name, "manifest_sha256": digest}, complete


def latest_recording(root: Path, before: str | None = None) -> Path | None:
    """The newest recording directory in ``root`` (ids sort by time), optionally older than ``before``."""
    try:
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).exists())
    except OSError:
        return None
    if before is not None:
        names = [n for n in names if n < before]
    return root / names[-1] if names else None


def segment_files(rec_dir: Path) -> list[Path]:
    """The segment files in a recording directory: ``segment-*.mp4``, or ``segment-*.mp4.age``
    encrypted at rest (both when base has decrypted beside the ciphertext), sorted."""
    return sorted(p for p in rec_dir.glob("segment-*.mp4*") if p.name.endswith((".mp4", ".mp4.age")))
