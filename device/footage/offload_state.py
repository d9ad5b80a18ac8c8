"""Whether base has confirmed a recording: ``<recording>/offload.json``, outside the signed manifest.

The offload state is not in ``manifest.json``: that file is signed and the next recording links
its SHA-256, so it must never change once complete. ``offload.json`` is written (atomically) only
from base's confirmation, kept whole with base's signature, and it counts (:func:`is_offloaded`:
retention may then delete the recording, the offload thread does not upload it again) only while
:func:`confirmation_problem` finds nothing wrong with it: signed by a custody key the camera trusts
(``offload_wire.confirmation_signature_problem``) and naming this device, this recording, the
SHA-256 of the ``manifest.json`` beside it, every segment's SHA-256 and the markers file's. A
manifest changed since (re-sealed, replaced), a confirmation written by an older firmware (unsigned),
a key no longer trusted: the recording is not offloaded, and the offload thread asks base again.
It is not uploaded, and ``bodycam verify`` ignores it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bodycam.device.footage.recording import write_atomic
from bodycam.device.footage.seal import MANIFEST_FILE
from bodycam.device.identity import TrustedKeys
from bodycam.device.safe_load import loads_untrusted
from bodycam.device.uplink.offload_wire import confirmation_signature_problem

OFFLOAD_FILE = "offload.json"


def manifest_sha256(rec_dir: Path) -> str | None:
    try:
        return hashlib.sha256((rec_dir / MANIFEST_FILE).read_bytes()).hexdigest()
    except OSError:
        return None


def offload_state(rec_dir: Path) -> dict[str, Any] | None:
    try:
        doc = loads_untrusted((rec_dir / OFFLOAD_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def confirmation_problem(rec_dir: Path, conf: Any, trusted: TrustedKeys) -> str | None:
    """Why ``conf`` does not confirm the recording ``rec_dir`` as it is on the card (None when it does):
    base's signature under a trusted custody key, then the content: confirmed, this recording, the
    device of its signed manifest, the manifest's SHA-256, every segment's and the markers file's."""
    problem = confirmation_signature_problem(conf, trusted)
    if problem is not None:
        return problem
    try:
        data = (rec_dir / MANIFEST_FILE).read_bytes()
        manifest = loads_untrusted(data)
    except (OSError, ValueError) as exc:
        return f"the manifest on the card cannot be read ({exc})"
    if not isinstance(manifest, dict):
        return "the manifest on the card is not a JSON object"
    want = {s.get("file"): s.get("sha256") for s in manifest.get("segments") or [] if isinstance(s, dict)}
    named = {
        "confirmed": (conf.get("confirmed"), True),
        "recording": (conf.get("recording"), rec_dir.name),
        "device": (conf.get("device"), manifest.get("device")),
        "manifest_sha256": (conf.get("manifest_sha256"), hashlib.sha256(data).hexdigest()),
        "segments": (conf.get("segments"), want),
        "markers_sha256": (conf.get("markers_sha256"), manifest.get("markers_sha256")),
    }
    wrong = [k for k, (got, expected) in named.items() if got != expected]
    if wrong:
        return f"it does not name this recording ({', '.join(wrong)} differ)"
    return None


def is_offloaded(rec_dir: Path, trusted: TrustedKeys) -> bool:
    """Base confirmed this recording, with the manifest that is on the card now, in a confirmation signed
    by a custody key in ``trusted`` (none trusted: nothing is offloaded)."""
    state = offload_state(rec_dir)
    if state is None or state.get("offloaded") is not True:
        return False
    return confirmation_problem(rec_dir, state.get("confirmation"), trusted) is None


def mark_offloaded(rec_dir: Path, base: str, confirmed_utc: str, confirmation: dict[str, Any]) -> None:
    """Record base's confirmation, signature included (call only once :func:`confirmation_problem` found
    nothing: it is checked again at every read)."""
    doc = {"offloaded": True, "manifest_sha256": confirmation["manifest_sha256"], "base": base,
           "confirmed_utc": confirmed_utc, "confirmation": confirmation}
    write_atomic(rec_dir / OFFLOAD_FILE, json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n")
