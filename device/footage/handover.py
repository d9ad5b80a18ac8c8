"""The key hand-over: how a re-provisioned camera carries its old key's recordings into custody.

``bodycam provision --force`` (:func:`rotate_key`) makes the new key and, before the old one is replaced,
a **hand-over record** (``<data_dir>/handover/<old key id>.json``, schema :data:`SCHEMA`)::

    {"schema": "bodycam.key-handover/1", "device": "cam-01",
     "old_key": "<id>", "old_public_pem": "...", "new_key": "<id>", "new_public_pem": "...",
     "head": {"recording": "<id>", "manifest_sha256": "<sha256>"} | null,
     "made_utc": "2026-06-01T08:00:00.000Z",
     "former": {"<earlier key id>": {"recording": ..., "manifest_sha256": ...} | null, ...},
     "old_sig": "<base64>", "new_sig": "<base64>"}

``head`` is the tip of the chain the old key ends: the newest manifest on the card that the old key
signed (or, when it signed none, the head it had itself been handed). **Both keys sign** the RFC 8785
bytes of the record without ``old_sig``/``new_sig``: the old key says "this is my last manifest", the
new one "and I take over from there". The camera uploads the record to base at every dock until base
has it (``PUT /api/offload/v1/handover/<device>``), or the operator registers it (``bodycam-base keys
handover``); base then takes a recording signed with the retired old key only on the chain that ends at
``head`` (walking ``previous`` links backwards, ``base/chain_heads.py``). Someone who holds only the
retired key cannot make a hand-over (the new key signs it too) nor extend the chain (the head is fixed).

On the camera the hand-over also decides **what a new recording may link** as its ``previous``
(:func:`linkable_recording`): a manifest that verifies with the camera's current key, or exactly the
head of a hand-over to the current key, or a head that hand-over's ``former`` names (the keys and heads
the camera trusted when it was made, signed with it: :func:`former_heads`). A recording planted on the
card with a leaked old key is neither, nor is the head of a hand-over record planted with one: it is
not linked, and is reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bodycam.device import identity
from bodycam.device.footage.seal import MANIFEST_FILE
from bodycam.device.identity import IdentityError, Signer
from bodycam.device.safe_load import loads_untrusted
from bodycam.device.signed_doc import signature_problem, signed_bytes
from bodycam.device.uplink.offload_wire import RECORDING_RE

log = logging.getLogger(__name__)

SCHEMA = "bodycam.key-handover/1"
HANDOVER_DIR = "handover"
SIGS = ("old_sig", "new_sig")
#: a hand-over record is small; anything bigger is not one (the camera and base read at most this)
MAX_BYTES = 16 * 1024

Link = tuple[str, str]  # (recording id, SHA-256 of its manifest.json)
_REPORTED: set[tuple[str, str, str]] = set()  # ignored hand-over records already reported


class HandoverError(IdentityError):
    """A hand-over record is malformed, or a signature in it does not verify."""


def handover_bytes(doc: dict[str, Any]) -> bytes:
    """What both signatures cover: the record's RFC 8785 bytes without ``old_sig``/``new_sig``."""
    return signed_bytes(doc, SIGS)


def make_handover(device: str, old: Signer, new: Signer, head: Link | None, made_utc: str,
                  former: dict[str, Link | None] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": SCHEMA, "device": device,
        "old_key": old.key_id, "old_public_pem": old.public_pem().decode("ascii"),
        "new_key": new.key_id, "new_public_pem": new.public_pem().decode("ascii"),
        "head": None if head is None else {"recording": head[0], "manifest_sha256": head[1]},
        "made_utc": made_utc,
        "former": {k: None if v is None else {"recording": v[0], "manifest_sha256": v[1]}
                   for k, v in sorted((former or {}).items())},
    }
    body = handover_bytes(doc)
    return {**doc, "old_sig": old.sign(body), "new_sig": new.sign(body)}


@dataclass(frozen=True)
class Handover:
    device: str
    old_key: str
    new_key: str
    head: Link | None
    doc: dict[str, Any]


def parse_handover(doc: Any, where: str) -> Handover:
    """The record's fields (HandoverError naming ``where`` when it is not a hand-over record); the
    signatures are checked by :func:`handover_problem`."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise HandoverError(f"{where}: not a key hand-over record (schema {SCHEMA})")
    fields = ("device", "old_key", "new_key", "old_public_pem", "new_public_pem", "made_utc", *SIGS)
    bad = [f for f in fields if not isinstance(doc.get(f), str) or not doc.get(f)]
    if bad:
        raise HandoverError(f"{where}: missing or not a string: {', '.join(bad)}")
    head = doc.get("head")
    link: Link | None = None
    if head is not None:
        if not isinstance(head, dict) or not all(isinstance(head.get(k), str) for k in ("recording", "manifest_sha256")):
            raise HandoverError(f"{where}: head must be null or {{recording, manifest_sha256}}")
        link = (str(head["recording"]), str(head["manifest_sha256"]))
    if doc["old_key"] == doc["new_key"]:
        raise HandoverError(f"{where}: the old and the new key are the same key")
    return Handover(str(doc["device"]), str(doc["old_key"]), str(doc["new_key"]), link, doc)


def handover_problem(h: Handover, old: Ed25519PublicKey, new: Ed25519PublicKey) -> str | None:
    """Why ``h`` is not signed by both ``old`` and ``new`` (None when it is)."""
    if identity.key_id(old) != h.old_key or identity.key_id(new) != h.new_key:
        return "the keys given are not the record's old_key/new_key"
    for which, public in (("old", old), ("new", new)):
        problem = signature_problem(h.doc, {identity.key_id(public): public}, key_field=f"{which}_key",
                                    sig_field=f"{which}_sig", unsigned=SIGS, what=f"{which} key")
        if problem is not None:
            return problem
    return None


def _embedded(h: Handover, which: str) -> Ed25519PublicKey:
    return identity.parse_public(str(h.doc[f"{which}_public_pem"]).encode("ascii"), f"hand-over {which}_public_pem")


def read_handovers(data_dir: Path) -> list[Handover]:
    """Every readable hand-over record on the card whose two signatures verify with the keys it names
    (a bad file is logged and left out; trust in a record comes from :func:`former_heads`)."""
    folder = data_dir / HANDOVER_DIR
    out: list[Handover] = []
    try:
        files = sorted(p for p in folder.glob("*.json") if p.is_file())
    except OSError:
        return []
    for path in files:
        try:
            data = path.read_bytes()[:MAX_BYTES + 1]
            if len(data) > MAX_BYTES:
                raise HandoverError(f"{path}: more than {MAX_BYTES} bytes")
            h = parse_handover(loads_untrusted(data), str(path))
            problem = handover_problem(h, _embedded(h, "old"), _embedded(h, "new"))
            if problem is not None:
                raise HandoverError(f"{path}: {problem}")
        except (OSError, ValueError, IdentityError) as exc:
            log.error("ALARM hand-over record left out: %s", exc)
            continue
        out.append(h)
    return out


def _link(v: Any) -> Link | None:
    if isinstance(v, dict) and isinstance(v.get("recording"), str) and isinstance(v.get("manifest_sha256"), str):
        return str(v["recording"]), str(v["manifest_sha256"])
    return None


def former_heads(handovers: Iterable[Handover], current_key: str) -> dict[str, Link | None]:
    """The keys the camera held before ``current_key``, by id, with the head each handed over, as the
    current key vouches for them: a hand-over **to the current key** (its new signature is the current
    key's) names its old key and head, and in ``former`` the former keys and heads the camera trusted when
    it made it. Nothing else counts: a record planted on the card, even one signed by a leaked former key,
    is left out (and reported)."""
    found: dict[str, Link | None] = {}
    records = list(handovers)
    for h in records:
        if h.new_key != current_key or h.old_key == current_key:
            continue
        found.setdefault(h.old_key, h.head)
        former = h.doc.get("former")
        for key, head in (former.items() if isinstance(former, dict) else ()):
            if key != current_key:
                found.setdefault(str(key), _link(head))
    for h in records:
        if h.new_key != current_key and (h.old_key not in found or found[h.old_key] != h.head
                                         or (h.new_key not in found)) and \
                (h.old_key, h.new_key, current_key) not in _REPORTED:  # once per process (offload asks each round)
            _REPORTED.add((h.old_key, h.new_key, current_key))
            log.warning("ALARM hand-over record %s -> %s ignored: the hand-over to this camera's key %s does not "
                        "vouch for it (planted on the card?)", h.old_key, h.new_key, current_key)
    return found


def manifest_link(rec_dir: Path) -> tuple[Link, dict[str, Any]] | None:
    """(recording, SHA-256 of its manifest file) and the manifest; None when it cannot be read."""
    try:
        data = (rec_dir / MANIFEST_FILE).read_bytes()
        doc = loads_untrusted(data)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    return (rec_dir.name, hashlib.sha256(data).hexdigest()), doc


def signed_by(doc: dict[str, Any], public: Ed25519PublicKey) -> bool:
    """The manifest ``doc`` is signed by ``public`` (its ``key`` names it and ``sig`` verifies)."""
    return signature_problem(doc, {identity.key_id(public): public}, key_field="key") is None


def linkable_recording(root: Path, current: Ed25519PublicKey, heads: Iterable[Link | None], *,
                       complete_only: bool = False) -> tuple[Path | None, list[str]]:
    """The newest recording in ``root`` a new recording may link (see the module) and the newer ones it
    may not (each with why: planted, damaged, or signed by a key the camera does not know);
    ``complete_only``: an unfinished recording is passed over too (it is re-sealed when recovered)."""
    known = {h for h in heads if h is not None}
    refused: list[str] = []
    try:
        dirs = sorted((p for p in root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).exists()), reverse=True)
    except OSError:
        return None, []
    for d in dirs:
        got = manifest_link(d)
        if got is not None and (doc_id := got[1].get("recording")) != d.name:  # a copy under another name
            refused.append(f"{d.name}: its manifest is of recording {doc_id!r}, not of the directory it is in "
                           "(copied or renamed on the card)")
            continue
        if not RECORDING_RE.fullmatch(d.name):
            refused.append(f"{d.name}: not a recording id")
            continue
        if got is not None:
            link, doc = got
            if complete_only and doc.get("complete") is not True:
                refused.append(f"{d.name}: not complete (recovered and re-sealed at the next start)")
                continue
            if link in known or signed_by(doc, current):
                return d, refused
            why = (f"signed with key {doc.get('key')!r}, neither this camera's key {identity.key_id(current)} nor the "
                   "head of a hand-over it made")
        else:
            why = "its manifest cannot be read"
        refused.append(f"{d.name}: {why}")
    return None, refused


def newest_signed_by(root: Path, public: Ed25519PublicKey, heads: Iterable[Link | None]) -> Link | None:
    """The head a hand-over from ``public`` names: the newest complete recording it may link (see
    :func:`linkable_recording`), None when there is none."""
    found, passed = linkable_recording(root, public, heads, complete_only=True)
    for why in passed:
        log.warning("hand-over: passed over %s", why)
    if found is None:
        return None
    got = manifest_link(found)
    return None if got is None else got[0]


def write_handover(data_dir: Path, doc: dict[str, Any]) -> Path:
    """Write the record durably at ``<data_dir>/handover/<old key id>.json``."""
    from bodycam.device.footage.recording import write_atomic

    folder = data_dir / HANDOVER_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HandoverError(f"{folder}: cannot create ({exc.strerror or exc})") from exc
    path = folder / f"{doc['old_key']}.json"
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    return path


@dataclass(frozen=True)
class Rotated:
    provisioned: identity.Provisioned
    handover: Path | None  # None: no old key could be read (nothing to hand over)
    head: Link | None
    problem: str | None  # why there is no hand-over
    #: the key replaced came from an earlier ``provision --force`` (its hand-over's old key): base must hold
    #: it too (registered, then retired), or neither hand-over registers (unknown_key)
    replaced_from: str | None = None


def rotate_key(key_file: Path, device: str, data_dir: Path, made_utc: str, *, owner: str | None = None) -> Rotated:
    """``bodycam provision --force``: a new key, and (when the old key can be read) the hand-over record
    written *before* the old key is replaced, signed by both, with the old public key beside it
    (``<old key id>.pub``: run twice, base may never have registered the key in the middle)."""
    from bodycam.device.footage.recording import write_atomic

    problem: str | None = None
    try:
        old: Signer | None = identity.load_signer(key_file)
    except IdentityError as exc:
        old, problem = None, str(exc)
    private = Ed25519PrivateKey.generate()
    new = Signer(private)
    path: Path | None = None
    head: Link | None = None
    replaced_from: str | None = None
    if old is not None:
        handovers = read_handovers(data_dir)
        mine = former_heads(handovers, old.key_id)
        replaced_from = next((h.old_key for h in handovers if h.new_key == old.key_id), None)
        head = newest_signed_by(data_dir / "recordings", old.public, mine.values())
        path = write_handover(data_dir, make_handover(device, old, new, head, made_utc, former=mine))
        write_atomic(path.with_suffix(".pub"), old.public_pem())  # what base registers when it never had it
    made = identity.provision(key_file, device, owner=owner, force=True, private=private)
    return Rotated(made, path, head, problem, replaced_from)
