"""Offload at base: receive uploads, verify them on receipt, store them, confirm (issue 13, item 5).

:class:`Receiver` is what the HTTP routes (``base/offload_api.py``) call; it knows nothing of HTTP.
Uploads arrive chunk by chunk into a staging directory (``<evidence root>/incoming/<device>/<recording>/``,
see :mod:`bodycam.device.uplink.offload_wire` for the protocol). On ``confirm``, :meth:`Receiver.accept`
takes the received files and **verifies, then stores**:

1. the manifest names a key registered at base for this device: active, or *retired* (routine
   rotation) with the recording on the chain that ends at the key's hand-over head
   (:meth:`Receiver._key_for`, ``base/chain_heads.py``; while base cannot tell yet, 409
   ``awaiting_successor``, kept staged and audited ``held``); never a revoked one;
2. ``bodycam verify``'s own checks (:func:`bodycam.device.verify.verify_recording`, not a second
   verifier): manifest signature, schema, recording id, complete, every segment's size and SHA-256,
   no unlisted segment, the markers file's hash and count, each marker's signature, order, gaps and
   chain, the chapters;
3. the link to the previous recording, when base holds it (same device): its manifest's SHA-256;

then moves the files into the evidence store, indexes them (with the ``previous`` link of the
manifest), and writes ``received``, ``verified`` and ``stored`` to the custody log
(``base/custody.py``). Every confirmation base answers (``confirm``, and ``status`` of a stored
recording) is signed with base's custody key (``signer``; ``offload_wire.sign_confirmation``): the
camera deletes footage only on a confirmation it can verify. Anything that fails is refused with the
codes and the reason, logged, audited (``refused``), and the files are kept aside in
``<evidence root>/refused/`` for inspection; nothing refused is ever stored as evidence.

Footage encrypted at rest (issue 13, item 6) is verified and stored as received (the ciphertext the
manifest signs is the evidence original); ``on_stored`` lets base decrypt it afterwards into a working
copy for review (``base/review_footage.py``, ``serve --age-key``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from bodycam.base.chain_evidence import link_source
from bodycam.base.chain_heads import ChainHeads, ChainRefused, LinkOf, place
from bodycam.base.custody import CustodyLog, StoredRecording
from bodycam.base.evidence_store import EvidenceStore
from bodycam.base.keys import DeviceKey, KeyRegistry
from bodycam.device import identity
from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import BodycamError, StorageError
from bodycam.device.footage.handover import signed_by
from bodycam.device.footage.seal import MANIFEST_FILE
from bodycam.device.identity import Signer
from bodycam.device.safe_load import loads_untrusted
from bodycam.device.uplink.offload_wire import (
    AWAITING_SUCCESSOR,
    FILE_RE,
    MAX_CHUNK,
    RECORDING_RE,
    request_bytes,
    sha256_hex,
    sign_confirmation,
)
from bodycam.device.uplink.validate import is_device_id
from bodycam.device.verify import verify_recording

log = logging.getLogger(__name__)

MAX_FILE = 64 * 1024 * 1024 * 1024
#: refused uploads kept aside per device for inspection, at most (one copy per manifest)
REFUSED_CAP = 16 * 1024 * 1024 * 1024


class Refused(BodycamError):
    """An upload or request base will not take; ``status`` is the HTTP status that says so."""

    def __init__(self, status: int, codes: list[str], reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.codes = codes
        self.reason = reason
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"refused": self.codes, "reason": self.reason, **self.extra}


@dataclass(frozen=True)
class Confirmation:
    device: str
    recording: str
    manifest_sha256: str
    markers_sha256: str | None
    segments: dict[str, str]
    key: str
    stored_ns: int

    def to_json(self) -> dict[str, Any]:
        """The confirmation's content (what base signs: :meth:`Receiver.signed`)."""
        return {"confirmed": True, "device": self.device, "recording": self.recording,
                "manifest_sha256": self.manifest_sha256, "markers_sha256": self.markers_sha256,
                "segments": self.segments, "key": self.key, "stored_ns": self.stored_ns}


def _manifest_of(path: Path) -> tuple[bytes, dict[str, Any]]:
    data = (path / MANIFEST_FILE).read_bytes()
    doc = loads_untrusted(data)
    if not isinstance(doc, dict):
        raise ValueError("the manifest is not a JSON object")
    return data, doc


def _confirmation(device: str, recording: str, data: bytes, doc: dict[str, Any], stored_ns: int) -> Confirmation:
    segs = {str(s.get("file")): str(s.get("sha256")) for s in doc.get("segments") or [] if isinstance(s, dict)}
    return Confirmation(device, recording, hashlib.sha256(data).hexdigest(), doc.get("markers_sha256"), segs,
                        str(doc.get("key")), stored_ns)


class Receiver:
    def __init__(self, evidence: EvidenceStore, custody: CustodyLog, keys: KeyRegistry, *, signer: Signer,
                 now_ns: Callable[[], int] = time.time_ns,
                 on_stored: Callable[[str, str], None] | None = None, chain: ChainHeads | None = None,
                 refused_cap_bytes: int = REFUSED_CAP) -> None:
        """``signer``: base's custody key, which signs every confirmation. ``on_stored(device, recording)``:
        called after a recording is stored (e.g. base's working copy for review: decrypted, joined); its
        failure is logged, never a refusal."""
        self.signer = signer
        self.refused_cap_bytes = refused_cap_bytes
        self.on_stored = on_stored
        self.evidence = evidence
        self.custody = custody
        self.keys = keys
        self.chain = chain if chain is not None else ChainHeads(custody.store, custody, keys)
        self.now_ns = now_ns
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def signed(self, conf: Confirmation) -> dict[str, Any]:
        """The confirmation as base answers it: signed with the custody key."""
        return sign_confirmation(conf.to_json(), self.signer)

    # -- who is asking --------------------------------------------------------------------------------
    def authenticate(self, device: str, key_id: str | None, sig: str | None, method: str, target: str,
                     body_sha256: str) -> None:
        """Refused (401/403) unless the request is signed by a key registered for ``device`` and trusted now."""
        if not is_device_id(device):
            raise Refused(400, ["bad_device"], f"{device!r} is not a device id")
        if not key_id or not sig:
            raise Refused(401, ["unsigned"], "the request is not signed (X-Bodycam-Key, X-Bodycam-Signature)")
        found = [k for k in self.keys.keys(device) if k.key_id == key_id]
        if not found:
            raise Refused(401, ["unknown_key"], f"key {key_id} is not registered for device {device} "
                                                "(bodycam-base keys add)")
        state = found[0].state_at(self.now_ns())
        if state != "active":  # a retired key signs nothing new: the camera signs its requests with its new key
            raise Refused(403, [f"{state}_key"], f"key {key_id} of device {device} is {state}")
        if not identity.verify(found[0].public(), request_bytes(method, target, body_sha256, device, key_id), sig):
            raise Refused(401, ["bad_signature"], f"the request's signature does not verify with key {key_id}")

    def register_handover(self, device: str, doc: Any) -> dict[str, Any]:
        """A camera's key hand-over (``device/footage/handover.py``), checked with the keys registered for
        ``device`` and kept (``base/chain_heads.py``); Refused (422, 409 for a conflict) says why not."""
        try:
            h, new = self.chain.register_handover(device, doc, f"device:{device}", self.now_ns())
        except ChainRefused as exc:
            log.warning("offload: hand-over of %s refused: %s", device, exc)
            raise Refused(exc.status, [exc.code], str(exc)) from exc
        if new:
            log.info("offload: %s: key %s hands over to key %s, its chain ends at %s", device, h.old_key, h.new_key,
                     h.head[0] if h.head else "nothing")
        return {"registered": True, "new": new, "old_key": h.old_key, "new_key": h.new_key,
                "head": None if h.head is None else h.head[0]}

    # -- staging --------------------------------------------------------------------------------------
    def _lock(self, device: str, recording: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((device, recording), threading.Lock())

    def _staging(self, device: str, recording: str) -> Path:
        if not RECORDING_RE.fullmatch(recording):
            raise Refused(400, ["bad_recording"], f"{recording!r} is not a recording id")
        return self.evidence.staging / device / recording

    def status(self, device: str, recording: str) -> dict[str, Any]:
        stage = self._staging(device, recording)
        done = self.custody.stored(device, recording)
        if done:
            data, doc = self._stored_manifest(device, recording)
            conf = _confirmation(device, recording, data, doc, done[0].stored_ns)
            return {"state": "stored", "files": {}, "confirmation": self.signed(conf)}
        files = {p.name: p.stat().st_size for p in stage.iterdir() if p.is_file()} if stage.is_dir() else {}
        out: dict[str, Any] = {"state": "partial" if files else "none", "files": files}
        refused = self._standing_refusal(device, recording)
        if refused is not None:
            out["refused"] = refused
        return out

    def _standing_refusal(self, device: str, recording: str) -> dict[str, Any] | None:
        """Base's last refusal of this recording when it stands for its manifest whatever the upload holds
        (its key: ``retired_key`` while the key's heads are unchanged, ``bad_signature``): the camera does
        not send that manifest's recording again (review-handover R3)."""
        try:
            last = self.custody.last_entry(device, recording)
        except StorageError:
            return None
        if last is None or last.action != "refused" or not isinstance(last.detail.get("manifest"), dict):
            return None
        manifest = last.detail["manifest"]
        if "heads" in manifest and manifest["heads"] != len(self.chain.heads(device, str(manifest.get("key")))):
            return None  # a new head (hand-over, operator's word) may place it now: try again
        return {"manifest_sha256": manifest.get("sha256"), "codes": last.detail.get("codes"),
                "reason": last.detail.get("reason")}

    def write_chunk(self, device: str, recording: str, name: str, offset: int, data: bytes, sha256: str) -> int:
        """Write ``data`` at ``offset`` of file ``name`` (durably); returns the bytes base now holds."""
        if not FILE_RE.fullmatch(name):
            raise Refused(400, ["bad_file"], f"{name!r} is not a file of a recording")
        if len(data) > MAX_CHUNK:
            raise Refused(413, ["chunk_too_large"], f"a chunk is at most {MAX_CHUNK} bytes")
        if offset < 0 or offset + len(data) > MAX_FILE:
            raise Refused(400, ["bad_offset"], f"offset {offset} is out of range")
        if sha256_hex(data) != sha256:
            raise Refused(400, ["chunk_hash"], "the chunk's SHA-256 is not the one signed (damaged on the way)")
        stage = self._staging(device, recording)
        with self._lock(device, recording):
            if self.custody.stored(device, recording):
                raise Refused(409, ["already_stored"], f"{device}/{recording} is already stored at base")
            path = stage / name
            have = path.stat().st_size if path.is_file() else 0
            if offset > have:
                raise Refused(409, ["offset"], f"offset {offset} is past the {have} bytes base holds", received=have)
            if offset < have:  # a retransmission, a late request of a killed uploader, or a restarted file
                overlap = min(have - offset, len(data))
                try:
                    with path.open("rb") as fh:
                        fh.seek(offset)
                        same = fh.read(overlap) == data[:overlap]
                except OSError as exc:
                    raise Refused(500, ["base_write"], f"base cannot read the upload ({exc.strerror or exc})") from exc
                if same:  # nothing base holds is cut: only what is new is written
                    if offset + len(data) <= have:
                        return have
                    data, offset = data[overlap:], have
                # else the bytes differ (the camera's file is another one now): base takes it from ``offset``
            if not self.evidence.room_for(len(data)):
                raise Refused(507, ["base_full"], "base's evidence store is full: nothing taken, try later")
            try:
                stage.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    os.ftruncate(fd, offset)
                    os.lseek(fd, offset, os.SEEK_SET)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, offset)  # what was taken stays exactly what was confirmed
                    raise
                finally:
                    os.close(fd)
            except OSError as exc:
                status = 507 if exc.errno in (28, 122) else 500  # ENOSPC, EDQUOT
                raise Refused(status, ["base_write"], f"base cannot write the upload ({exc.strerror or exc})") from exc
            return offset + len(data)

    # -- confirm: verify, then store --------------------------------------------------------------------
    def confirm(self, device: str, recording: str) -> Confirmation:
        stage = self._staging(device, recording)
        with self._lock(device, recording):
            done = self.custody.stored(device, recording)
            if done:
                data, doc = self._stored_manifest(device, recording)
                if stage.is_dir() and (stage / MANIFEST_FILE).is_file() and \
                        sha256_hex((stage / MANIFEST_FILE).read_bytes()) != hashlib.sha256(data).hexdigest():
                    self._refuse(device, recording, stage, Refused(
                        409, ["conflict"], f"base already holds a different {recording} of {device}"))
                return _confirmation(device, recording, data, doc, done[0].stored_ns)
            if self.evidence.has(device, recording):  # base stopped between storing (verified) and indexing
                return self._index_stored(device, recording)
            if not (stage / MANIFEST_FILE).is_file():
                raise Refused(409, ["incomplete_upload"], "no manifest.json received yet")
            return self.accept(device, recording, stage)

    def accept(self, device: str, recording: str, files: Path) -> Confirmation:
        """Verify the received ``files`` (a directory named after the recording) and store them.

        Raises :class:`Refused` (422) naming every check that failed; the files then go aside."""
        actor = f"device:{device}"
        now = self.now_ns()
        try:
            data, doc = _manifest_of(files)
        except (OSError, ValueError) as exc:
            unreadable: Refused | None = Refused(422, ["manifest_unreadable"], f"manifest: {exc}")
        else:
            unreadable = None
            verdict = self._key_for(device, recording, data, doc, now)
            if isinstance(verdict, Refused) and verdict.status == 409:  # not yet: kept staged, audited ``held``
                log.info("offload: %s/%s waits: %s", device, recording, verdict.reason)
                self._held(device, recording, data, doc, verdict, now)
                raise verdict
        sizes = {p.name: p.stat().st_size for p in files.iterdir() if p.is_file()}
        self.custody.record(now, actor, "received", device, recording,
                            {"files": len(sizes), "bytes": sum(sizes.values())})
        if unreadable is not None:
            self._refuse(device, recording, files, unreadable)
        if isinstance(verdict, Refused):
            self._refuse(device, recording, files, verdict)
        key = verdict
        report, _ = verify_recording(files, key.public())
        fails = [f for f in report.findings if f.level == "fail"]
        if doc.get("device") != device:
            self._refuse(device, recording, files, Refused(
                422, ["manifest_device"], f"the manifest is of device {doc.get('device')!r}, uploaded by {device}"))
        if fails:
            codes = sorted({f.code for f in fails})
            reason = "; ".join(f"{f.code} {f.where}: {f.message}" for f in fails[:5])
            self._refuse(device, recording, files, Refused(422, codes, reason))
        self._check_previous(device, recording, doc, files)
        conf = _confirmation(device, recording, data, doc, now)
        self.custody.record(now, actor, "verified", device, recording,
                            {"key": key.key_id, "manifest_sha256": conf.manifest_sha256, "segments": report.segments,
                             "markers": report.markers,
                             "notes": [f"{f.code}: {f.message}" for f in report.findings if f.level == "note"]})
        try:
            location = self.evidence.put(device, recording, files)
        except StorageError as exc:
            raise Refused(507, ["base_store"], str(exc)) from exc
        with self.custody.transaction() as tx:
            self.custody.add_stored(tx, StoredRecording(device, recording, conf.manifest_sha256, now, location,
                                                        sum(sizes.values()), report.segments, report.markers))
            self.custody.add_link(tx, device, recording, doc.get("previous"))
            self.custody.append(tx, now, actor, "stored", device, recording,
                                {"location": location, "manifest_sha256": conf.manifest_sha256})
        log.info("offload: stored %s/%s (%d segment(s), %d marker(s)), verified with key %s%s", device, recording,
                 report.segments, report.markers, key.key_id,
                 " (retired: on the chain its hand-over ends)" if not key.trusted_at(now) else "")
        if self.on_stored is not None:
            try:
                self.on_stored(device, recording)
            except Exception:  # the evidence is stored and confirmed whatever a follower does
                log.exception("offload: after storing %s/%s", device, recording)
        return conf

    def _stored_manifest(self, device: str, recording: str) -> tuple[bytes, dict[str, Any]]:
        with self.evidence.open(device, recording, MANIFEST_FILE) as fh:
            data = fh.read()
        doc = json.loads(data)
        return data, doc

    def _index_stored(self, device: str, recording: str) -> Confirmation:
        data, doc = self._stored_manifest(device, recording)
        now = self.now_ns()
        conf = _confirmation(device, recording, data, doc, now)
        segs = len(conf.segments)
        with self.custody.transaction() as tx:
            self.custody.add_stored(tx, StoredRecording(device, recording, conf.manifest_sha256, now,
                                                        self.evidence.location(device, recording), -1, segs,
                                                        int(doc.get("marker_count") or 0)))
            self.custody.add_link(tx, device, recording, doc.get("previous"))
            self.custody.append(tx, now, f"device:{device}", "stored", device, recording,
                                {"manifest_sha256": conf.manifest_sha256, "indexed_after_restart": True})
        return conf

    def _key_for(self, device: str, recording: str, data: bytes, doc: dict[str, Any], now: int) -> DeviceKey | Refused:
        """The registered key the manifest is verified with, or why not (a refusal, not raised).

        Active key: taken. Revoked (compromised): refused, 422 ``revoked_key``. **Retired** (routine
        rotation): taken only when the recording is on the chain that ends at a head registered for that key
        (``base/chain_heads.py``): the camera's hand-over, signed by the old and the new key at ``bodycam
        provision --force`` and naming the old key's last manifest, or an operator's ``keys accept-chain``.
        The head is taken; a recording before it when a stored recording of the chain links its manifest's
        exact SHA-256, and so on backwards. A recording base cannot place yet (no head for the key, or base
        does not hold the recordings between it and the head): 409 ``awaiting_successor``, kept staged,
        audited ``held``; one the chain has gone past, or newer than the head: 422 ``retired_key``. The
        recording's signed times decide nothing (they are the signer's claim: a thief holding the retired
        key backdates, a genuine camera still recording at the retirement does not), and a link from a
        recording of another key pins nothing (the camera's link is no vouching: a card it does not
        control can hold anything)."""
        kid = doc.get("key")
        if doc.get("sig") is None or kid is None:
            return Refused(422, ["unsigned"], "the manifest is not signed")
        found = [k for k in self.keys.keys(device) if k.key_id == kid]
        if not found:
            return Refused(422, ["unknown_key"], f"the manifest is signed with key {kid!r}, not registered for {device}")
        key = found[0]
        state = key.state_at(now)
        if state == "revoked":
            return Refused(422, ["revoked_key"], f"key {kid} of {device} is revoked")
        sha = hashlib.sha256(data).hexdigest()
        signed = signed_by(doc, key.public())
        if signed and doc.get("recording") == recording and doc.get("device") == device:
            # its signed word on the chain, kept whatever becomes of the recording (not a copy under another name)
            try:
                self.chain.seen.add(device, recording, sha, str(kid), doc.get("previous"), now)
            except StorageError as exc:
                log.error("offload: cannot keep the signed manifest of %s/%s: %s", device, recording, exc)
        if not signed and state != "active":  # checked before any chain walk: an unsigned claim costs base nothing more
            return Refused(422, ["bad_signature"], f"the manifest's signature does not verify with key {kid}",
                           manifest={"sha256": sha, "key": kid})
        if state == "active":
            return key
        assert key.retired_ns is not None
        retired = rfc3339_ms(key.retired_ns)
        heads = [h.link for h in self.chain.heads(device, str(kid)) if h.link is not None]
        if not heads:
            return Refused(409, [AWAITING_SUCCESSOR], f"key {kid} of {device} was retired at {retired} and base holds "
                                                      "no hand-over for it: the camera uploads the one 'bodycam "
                                                      "provision --force' made at its next dock, or an operator "
                                                      "registers it (bodycam-base keys handover) or vouches for the "
                                                      "chain (bodycam-base keys accept-chain)", waiting_for="handover")
        where, why = place(heads, recording, sha, self._link_of(device))
        if where == "on":
            return key
        if where == "maybe":
            return Refused(409, [AWAITING_SUCCESSOR], f"key {kid} of {device} was retired at {retired}: {why}; offload "
                                                      "the camera's newer recordings first", waiting_for="successor")
        return Refused(422, ["retired_key"], f"key {kid} of {device} was retired at {retired} and this recording is not "
                                             f"on its chain: {why}; the retired key signs nothing new",
                       manifest={"sha256": sha, "key": kid, "heads": len(self.chain.heads(device, str(kid)))})

    def _link_of(self, device: str) -> LinkOf:
        """The ``previous`` link of a manifest base holds (stored, or signed and refused/held), for a chain walk."""
        def stored_previous(recording: str) -> Any:
            try:  # stored before evidence_links existed: its manifest says
                return self._stored_manifest(device, recording)[1].get("previous")
            except (OSError, ValueError, StorageError):
                return "absent"
        return link_source(device, self.custody, self.chain.seen, stored_previous)

    def _held(self, device: str, recording: str, data: bytes, doc: dict[str, Any], why: Refused, now: int) -> None:
        """Audit a 409 (``held``), once until its reason changes (the camera asks again at every dock)."""
        detail = {"codes": why.codes, "reason": why.reason, "key": doc.get("key"),
                  "manifest_sha256": hashlib.sha256(data).hexdigest(), **why.extra}
        try:
            last = self.custody.last_entry(device, recording)
            if last is None or last.action != "held" or last.detail != detail:
                self.custody.record(now, f"device:{device}", "held", device, recording, detail)
        except StorageError as exc:
            log.error("offload: cannot audit that %s/%s is held: %s", device, recording, exc)

    def _check_previous(self, device: str, recording: str, doc: dict[str, Any], files: Path) -> None:
        link = doc.get("previous")
        if not isinstance(link, dict) or not isinstance(link.get("recording"), str):
            return
        held = self.custody.stored(device, link["recording"])
        if not held:
            return
        have = held[0].manifest_sha256
        if have != link.get("manifest_sha256"):
            self._refuse(device, recording, files, Refused(
                422, ["previous"], f"the previous recording {link['recording']} base holds is not the one this "
                                   "recording's manifest links (a recording of the chain was replaced)"))

    def _refuse(self, device: str, recording: str, files: Path, refusal: Refused) -> NoReturn:
        now = self.now_ns()
        kept = self._keep_refused(device, recording, files, now)
        try:
            self.custody.record(now, f"device:{device}", "refused", device, recording,
                                {"codes": refusal.codes, "reason": refusal.reason, **kept, **refusal.extra})
        except StorageError as exc:
            log.error("offload: cannot audit the refusal of %s/%s: %s", device, recording, exc)
        log.warning("offload: REFUSED %s/%s: %s (%s)", device, recording, ", ".join(refusal.codes), refusal.reason)
        raise refusal

    def _keep_refused(self, device: str, recording: str, files: Path, now: int) -> dict[str, Any]:
        """Move a refused upload aside for inspection (``refused/<device>/<recording>.<ns>``): one copy per
        manifest (a camera offering the same one again adds nothing) and at most ``refused_cap_bytes`` per
        device; what is not kept is dropped from base (it was never evidence, and the camera keeps its
        original until base confirms it)."""
        folder = self.evidence.root / "refused" / device
        try:
            mine = sha256_hex((files / MANIFEST_FILE).read_bytes()) if (files / MANIFEST_FILE).is_file() else None
            same = [p for p in folder.glob(f"{recording}.*") if mine is not None and (p / MANIFEST_FILE).is_file()
                    and sha256_hex((p / MANIFEST_FILE).read_bytes()) == mine] if folder.is_dir() else []
            if same:
                shutil.rmtree(files)
                return {"kept": str(same[0]), "copy": "already kept"}
            used = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
            size = sum(f.stat().st_size for f in files.rglob("*") if f.is_file())
            if used + size > self.refused_cap_bytes:
                shutil.rmtree(files)
                return {"kept": None, "copy": f"not kept: base keeps at most {self.refused_cap_bytes} bytes of "
                                              f"refused uploads of {device}"}
            aside = folder / f"{recording}.{now}"
            folder.mkdir(parents=True, exist_ok=True)
            os.rename(files, aside)
        except OSError as exc:
            log.error("offload: cannot move the refused upload %s aside: %s", files, exc)
            return {"kept": str(files)}
        return {"kept": str(aside)}
