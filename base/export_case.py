"""``bodycam-base export-case OUT --device D [--recording R ...] [--since T] [--until T]``: a case bundle.

The bundle is what an auditor or a defence expert receives, and ``bodycam verify OUT`` checks it
offline::

    OUT/
        recordings/<recording>/    the files exactly as the camera signed them and base verified them
        device.pub                 the public key registered at base for the device (the one that signed)
        custody.jsonl              the custody log of these recordings (received, verified, stored, ...,
                                   this export), one JSON object a line
        verification.json / .txt   the report of ``bodycam verify`` on the bundle itself, at export
        case.json                  what is in the bundle: device, key id, recordings with their manifest
                                   SHA-256, who exported it and when, every file's SHA-256
        README.txt                 how to verify

One device per bundle (``bodycam verify`` takes one key); a case with several cameras is several
bundles. Every exported recording gets an ``exported`` custody entry (who, when, where).
"""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bodycam.base.custody import CustodyLog, StoredRecording
from bodycam.base.evidence_store import EvidenceStore
from bodycam.base.keys import KeyRegistry
from bodycam.device import identity
from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import UsageError
from bodycam.device.footage.seal import MANIFEST_FILE
from bodycam.device.footage.segment_writer import sha256_of
from bodycam.device.verify import print_report, verify_path

README = """This folder is a bodycam case bundle exported by base.

Verify it offline (no network), with the key registered at base for the device:

    bodycam verify {out_name} --key {out_name}/device.pub       (add --json for a machine-readable report)

Compare the key id the report names ({key_id}) with the key registered at base for {device}.
verification.txt is the report made at export; custody.jsonl is the chain of custody at base.
"""


@dataclass(frozen=True)
class Exported:
    out: Path
    recordings: list[str]
    key_id: str
    ok: bool



def export_case(out: Path, device: str, evidence: EvidenceStore, custody: CustodyLog, keys: KeyRegistry, *,
                actor: str, now_ns: int, recordings: list[str] | None = None, since: str | None = None,
                until: str | None = None) -> Exported:
    chosen: list[StoredRecording] = [
        r for r in custody.stored(device)
        if (recordings is None or r.recording in recordings) and (since is None or r.recording >= since)
        and (until is None or r.recording < until)]
    if recordings is not None:
        missing = sorted(set(recordings) - {r.recording for r in chosen})
        if missing:
            raise UsageError(f"base holds no recording {', '.join(missing)} of {device}")
    if not chosen:
        raise UsageError(f"base holds no recording of {device} matching the selection")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out}: exists and is not empty (a bundle is written once)")
    # the key that signed them, as registered at base
    manifests = {}
    for r in chosen:
        with evidence.open(device, r.recording, MANIFEST_FILE) as fh:
            manifests[r.recording] = json.loads(fh.read())
    key_ids = sorted({str(m.get("key")) for m in manifests.values()})
    if len(key_ids) != 1:
        raise UsageError(f"the recordings are signed with several keys ({', '.join(key_ids)}): export them "
                         "in one bundle per key (--recording)")
    registered = [k for k in keys.keys(device) if k.key_id == key_ids[0]]
    if not registered:
        raise UsageError(f"key {key_ids[0]} is not registered for {device}")
    key = registered[0]
    (out / "recordings").mkdir(parents=True, exist_ok=True)
    for r in chosen:
        dest = out / "recordings" / r.recording
        dest.mkdir()
        for name in evidence.files(device, r.recording):
            with evidence.open(device, r.recording, name) as src, (dest / name).open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    (out / "device.pub").write_bytes(identity.public_pem(key.public()))
    with custody.transaction() as tx:
        for r in chosen:
            custody.append(tx, now_ns, actor, "exported", device, r.recording, {"bundle": str(out)})
    with (out / "custody.jsonl").open("w", encoding="utf-8") as fh:
        for r in chosen:
            for e in custody.entries(device=device, recording=r.recording):
                fh.write(json.dumps(e.to_json(), sort_keys=True) + "\n")
    report = verify_path(out, key.public(), f"device.pub: the key registered at base for {device}")
    (out / "verification.json").write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    text = io.StringIO()
    with redirect_stdout(text):
        print_report(report)
    (out / "verification.txt").write_text(text.getvalue(), encoding="utf-8")
    (out / "README.txt").write_text(README.format(out_name=out.name, key_id=key.key_id, device=device),
                                    encoding="utf-8")
    files = {str(p.relative_to(out)): sha256_of(p) for p in sorted(out.rglob("*")) if p.is_file()}
    case: dict[str, Any] = {
        "schema": "bodycam.case/1", "device": device, "key": key.key_id, "exported_by": actor,
        "exported_utc": rfc3339_ms(now_ns), "verified": report.ok,
        "recordings": [{"recording": r.recording, "manifest_sha256": r.manifest_sha256,
                        "stored_utc": rfc3339_ms(r.stored_ns)} for r in chosen],
        "files": files,
    }
    (out / "case.json").write_text(json.dumps(case, indent=2) + "\n", encoding="utf-8")
    return Exported(out, [r.recording for r in chosen], key.key_id, report.ok)
