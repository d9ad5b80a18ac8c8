"""Whether base has confirmed a recording: ``<recording>/offload.json``, outside the signed manifest.

The offload state is not in ``manifest.json``: that file is signed and the next recording links
its SHA-256, so it must never change once complete. ``offload.json`` is written (atomically) only
from base's confirmation, and it counts only while it names the SHA-256 of the ``manifest.json``
beside it: a manifest changed since (re-sealed, replaced) makes the recording not offloaded again.
It is not uploaded, and ``bodycam verify`` ignores it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bodycam.device.footage.recording import write_atomic
from bodycam.device.footage.seal import MANIFEST_FILE

OFFLOAD_FILE = "offload.json"


def manifest_sha256(rec_dir: Path) -> str | None:
    try:
        return hashlib.sha256((rec_dir / MANIFEST_FILE).read_bytes()).hexdigest()
    except OSError:
        return None


def offload_state(rec_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((rec_dir / OFFLOAD_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def is_offloaded(rec_dir: Path) -> bool:
    """Base confirmed this recording, with the manifest that is on the card now."""
    state = offload_state(rec_dir)
    if state is None or state.get("offloaded") is not True:
        return False
    have = manifest_sha256(rec_dir)
    return have is not None and state.get("manifest_sha256") == have


def mark_offloaded(rec_dir: Path, base: str, confirmed_utc: str, confirmation: dict[str, Any]) -> None:
    """Record base's confirmation (call only once it matched the manifest on the card)."""
    doc = {"offloaded": True, "manifest_sha256": confirmation["manifest_sha256"], "base": base,
           "confirmed_utc": confirmed_utc, "confirmation": confirmation}
    write_atomic(rec_dir / OFFLOAD_FILE, json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n")
