"""``bodycam verify``: check recordings offline, as an auditor or a defence expert would.

PATH is one recording directory, a folder of recordings (``<data_dir>/recordings``) or a data
directory holding ``recordings/``. Nothing here uses the network. For each recording:

* the manifest's Ed25519 signature (``footage/seal.py``), and that it names the trusted key;
* every listed segment: present, same size, same SHA-256; no unlisted segment file;
* ``markers.jsonl``: its SHA-256 and marker count as signed; each marker valid, of this device,
  signed by the trusted key; ``seq`` strictly increasing with no gap; each ``prev`` equal to the
  SHA-256 of the previous marker's canonical (JCS) bytes;
* ``chapters.vtt`` equal to the chapters the markers give;
* ``previous``: the previous recording's manifest hash, when that recording is present; for a folder,
  that a present previous recording is the one just before it (nothing inserted, nothing reordered).
  A previous recording that is not here is a gap: a note (``previous_absent``), not a failure.

The trusted public key comes from ``--key`` (the key registered at base); without it, a
``device.pub`` found beside the footage is used and the report says so (an independent key is
what makes the result evidence). Exit status 0 only when nothing failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bodycam.device import identity
from bodycam.device.errors import BodycamError, MarkerError, UsageError
from bodycam.device.footage.atrest import DecryptError, decrypt_stream, load_identity, plaintext_name
from bodycam.device.footage.recording import MANIFEST_SCHEMA, MarkerRef, chapter_label, chapters_text
from bodycam.device.footage.seal import MANIFEST_FILE, MARKERS_FILE, segment_files, signed_bytes
from bodycam.device.footage.segment_writer import sha256_of
from bodycam.device.safe_load import loads_untrusted
from bodycam.device.uplink.markers import Marker

Level = Literal["fail", "note"]


@dataclass(frozen=True)
class Finding:
    level: Level  # fail: does not verify; note: worth knowing, verifies
    code: str
    where: str
    message: str


@dataclass
class RecordingReport:
    recording: str
    path: str
    segments: int = 0
    markers: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.level == "fail" for f in self.findings)

    def fail(self, code: str, where: str, message: str) -> None:
        self.findings.append(Finding("fail", code, where, message))

    def note(self, code: str, where: str, message: str) -> None:
        self.findings.append(Finding("note", code, where, message))


@dataclass
class Report:
    path: str
    key_id: str
    key_source: str
    recordings: list[RecordingReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # across recordings (the chain of manifests)
    took_s: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.recordings) and all(r.ok for r in self.recordings) and \
            not any(f.level == "fail" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "path": self.path,
            "key": {"id": self.key_id, "source": self.key_source},
            "recordings": [{**asdict(r), "ok": r.ok} for r in self.recordings],
            "findings": [asdict(f) for f in self.findings],
            "took_s": round(self.took_s, 3),
        }


# -- the trusted key ------------------------------------------------------------------------------
def find_key(path: Path) -> Path | None:
    """A ``device.pub`` beside the footage: in a bundle, ``<data_dir>/identity`` or (the simulator's)
    ``<data_dir>/state/identity``."""
    for base in (path, *list(path.parents)[:3]):
        for candidate in (base / "device.pub", base / "identity" / "device.pub",
                          base / "state" / "identity" / "device.pub"):
            if candidate.is_file():
                return candidate
    return None


def recordings_in(path: Path) -> list[Path]:
    if (path / MANIFEST_FILE).is_file():
        return [path]
    root = path / "recordings" if (path / "recordings").is_dir() else path
    if not root.is_dir():
        raise UsageError(f"{path}: no such directory")
    found = sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).exists())
    if not found:
        raise UsageError(f"{path}: no recording here (a recording directory holds {MANIFEST_FILE})")
    return found


# -- one recording --------------------------------------------------------------------------------
def _check_manifest_signature(manifest: dict[str, Any], rep: RecordingReport, public: Ed25519PublicKey,
                              trusted: str) -> None:
    try:
        problem = _sig_problem(public, trusted, manifest.get("key"), manifest.get("sig"), signed_bytes(manifest))
    except MarkerError as exc:
        problem = f"not canonical JSON ({exc})"
    if problem is not None:
        rep.fail("manifest_signature", MANIFEST_FILE, f"manifest {problem}")


def _sig_problem(public: Ed25519PublicKey, trusted_id: str, key: Any, sig: Any, data: bytes) -> str | None:
    if sig is None:
        return "not signed"
    if key != trusted_id:
        return f"signed with key {key!r}, not the trusted key {trusted_id}"
    if not isinstance(sig, str) or not identity.verify(public, data, sig):
        return f"the signature does not verify with key {trusted_id} (changed after signing, or forged)"
    return None


def verify_recording(rec_dir: Path, public: Ed25519PublicKey,
                     decrypt: X25519PrivateKey | None = None) -> tuple[RecordingReport, dict[str, Any] | None]:
    trusted = identity.key_id(public)
    rep = RecordingReport(rec_dir.name, str(rec_dir))
    mpath = rec_dir / MANIFEST_FILE
    try:
        manifest = loads_untrusted(mpath.read_bytes())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        rep.fail("manifest_unreadable", MANIFEST_FILE, f"cannot read the manifest ({exc})")
        return rep, None
    _check_manifest_signature(manifest, rep, public, trusted)
    if manifest.get("schema") != MANIFEST_SCHEMA:
        rep.fail("manifest_schema", MANIFEST_FILE, f"schema {manifest.get('schema')!r} is not {MANIFEST_SCHEMA}")
    if manifest.get("recording") != rec_dir.name:
        rep.fail("manifest_recording", MANIFEST_FILE,
                 f"the manifest is of recording {manifest.get('recording')!r}, not {rec_dir.name!r} (replaced?)")
    if manifest.get("complete") is not True:
        rep.fail("incomplete", MANIFEST_FILE, "the recording is not complete (still being written, or "
                                              "interrupted and not recovered yet)")
    if manifest.get("recovered"):
        rep.note("recovered", MANIFEST_FILE, f"recovered after an interruption: {manifest.get('error')}")
    _check_segments(rec_dir, manifest, rep, decrypt)
    refs = _check_markers(rec_dir, manifest, rep, public, trusted)
    _check_chapters(rec_dir, manifest, refs, rep)
    return rep, manifest


def _check_segments(rec_dir: Path, manifest: dict[str, Any], rep: RecordingReport,
                    decrypt: X25519PrivateKey | None = None) -> None:
    segments = manifest.get("segments")
    if not isinstance(segments, list):
        rep.fail("manifest_segments", MANIFEST_FILE, "the manifest lists no segments")
        return
    encryption = manifest.get("encryption")
    if encryption is not None:
        recipient = encryption.get("recipient") if isinstance(encryption, dict) else None
        how = ("decrypted with --decrypt-key and checked against the signed plaintext hashes" if decrypt is not None
               else "ciphertext checked; pass --decrypt-key (base's key) to check the plaintext too")
        rep.note("encrypted", MANIFEST_FILE, f"footage encrypted at rest to {recipient}: {how}")
    listed: set[str] = set()
    for i, seg in enumerate(segments):
        if not isinstance(seg, dict) or not isinstance(seg.get("file"), str):
            rep.fail("manifest_segments", MANIFEST_FILE, f"segment entry {i} is malformed")
            continue
        name = seg["file"]
        plain_name = plaintext_name(name) if encryption is not None else name
        listed.update((name, plain_name))
        if seg.get("index") != i:
            rep.fail("segment_order", name, f"listed at position {i} with index {seg.get('index')!r}")
        path = rec_dir / name
        plain_path = rec_dir / plain_name
        if Path(name).name != name or not (path.is_file() or plain_path.is_file()):
            rep.fail("segment_missing", name, "the segment is missing (deleted or renamed)")
            continue
        if path.is_file():
            if seg.get("sha256") is None:
                rep.fail("segment_unhashed", name, "the manifest has no hash for this segment")
                continue
            _check_file(path, seg.get("bytes"), seg["sha256"], rep, name)
            if encryption is not None and decrypt is not None:
                _check_decrypted(path, seg, decrypt, rep)
        if encryption is not None and plain_path.is_file():  # decrypted at base (beside or instead of it)
            if seg.get("plain_sha256") is None:
                rep.fail("segment_unhashed", plain_name, "the manifest has no plaintext hash for this segment "
                                                         "(recovered after an interruption): the decrypted file "
                                                         "cannot be checked; check the encrypted one")
            else:
                _check_file(plain_path, seg.get("plain_bytes"), seg["plain_sha256"], rep, plain_name, "plaintext ")
        rep.segments += 1
    for extra in (p.name for p in segment_files(rec_dir)):
        if extra not in listed:
            rep.fail("segment_unlisted", extra, "a segment file the signed manifest does not list (inserted?)")


def _check_file(path: Path, size_want: Any, sha_want: str, rep: RecordingReport, name: str, what: str = "") -> None:
    size = path.stat().st_size
    if size_want != size:
        rep.fail("segment_size", name, f"{size} bytes, the signed manifest says {size_want} ({what}size)")
    if sha256_of(path) != sha_want:
        rep.fail("segment_hash", name, f"{what}SHA-256 differs from the signed manifest (the footage was changed)")


def _check_decrypted(path: Path, seg: dict[str, Any], key: X25519PrivateKey, rep: RecordingReport) -> None:
    try:
        with path.open("rb") as fh:
            got = decrypt_stream(fh, None, key, path.name)
    except DecryptError as exc:
        rep.fail("segment_decrypt", path.name, str(exc))
        return
    if seg.get("plain_sha256") is None:
        rep.note("segment_plain_unhashed", path.name, "decrypts, but the manifest has no plaintext hash "
                                                      "(recovered after an interruption)")
    elif got.plain_sha256 != seg["plain_sha256"] or got.plain_bytes != seg.get("plain_bytes"):
        rep.fail("segment_plaintext_hash", path.name, "the decrypted footage differs from the plaintext hash the "
                                                      "manifest signed (encrypted by someone else?)")


def verify_markers(recording: str, manifest: dict[str, Any], data: bytes | None,
                   public: Ed25519PublicKey) -> tuple[RecordingReport, list[MarkerRef]]:
    """``bodycam verify``'s checks of a recording's markers, on bytes (for stores that are not a folder):
    the manifest's signature by ``public`` (it vouches for the markers' hash), the markers file's SHA-256
    and count as signed, and each marker's validity, device, signature, order and chain. ``data`` is
    None when there is no markers file."""
    rep = RecordingReport(recording, recording)
    trusted = identity.key_id(public)
    _check_manifest_signature(manifest, rep, public, trusted)
    if manifest.get("recording") != recording:
        rep.fail("manifest_recording", MANIFEST_FILE,
                 f"the manifest is of recording {manifest.get('recording')!r}, not {recording!r} (replaced?)")
    refs = _check_marker_bytes(data, manifest, rep, public, trusted)
    return rep, refs


def _check_markers(rec_dir: Path, manifest: dict[str, Any], rep: RecordingReport, public: Ed25519PublicKey,
                   trusted: str) -> list[MarkerRef]:
    path = rec_dir / MARKERS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = None
    except OSError as exc:
        rep.fail("markers_unreadable", MARKERS_FILE, f"cannot read ({exc.strerror or exc})")
        return []
    return _check_marker_bytes(data, manifest, rep, public, trusted)


def _check_marker_bytes(data: bytes | None, manifest: dict[str, Any], rep: RecordingReport,
                        public: Ed25519PublicKey, trusted: str) -> list[MarkerRef]:
    want = manifest.get("markers_sha256")
    have = None if data is None else hashlib.sha256(data).hexdigest()
    if have != want:
        what = "missing" if data is None else "different from what the manifest signed"
        rep.fail("markers_file_hash", MARKERS_FILE, f"the markers file is {what} (markers changed, added or removed)")
    lines = [] if data is None else data.splitlines()
    if manifest.get("marker_count") != len(lines):
        rep.fail("marker_count", MARKERS_FILE, f"{len(lines)} marker(s), the manifest says {manifest.get('marker_count')}")
    refs: list[MarkerRef] = []
    seen: list[tuple[str, Marker]] = []
    for n, line in enumerate(lines, 1):
        where = f"{MARKERS_FILE}:{n}"
        try:
            m = Marker.from_json(line)
        except BodycamError as exc:
            rep.fail("marker_invalid", where, f"not a valid marker ({exc})")
            continue
        rep.markers += 1
        where = f"{where} (seq {m.seq}, {m.kind})"
        refs.append(MarkerRef(m.kind, m.t_mono_ns, chapter_label(m.kind, m.confidence)))
        if m.device != manifest.get("device"):
            rep.fail("marker_device", where, f"device {m.device!r}, the recording's is {manifest.get('device')!r}")
        problem = _sig_problem(public, trusted, m.key, m.sig, m.canonical_bytes())
        if problem is not None:
            rep.fail("marker_signature", where, f"marker {problem}")
        if seen and m.seq <= seen[-1][1].seq:
            rep.fail("marker_order", where, f"seq {m.seq} after seq {seen[-1][1].seq} (markers reordered or duplicated)")
        seen.append((where, m))
    by_seq = {m.seq: m for _, m in seen}
    for where, m in sorted(seen, key=lambda wm: wm[1].seq):
        before = by_seq.get(m.seq - 1)
        if before is not None and before is not m and m.prev != before.digest():
            rep.fail("marker_chain", where, f"prev does not match seq {before.seq}'s digest (chain broken)")
        if before is None and by_seq and m.seq > min(by_seq):
            lower = max(s for s in by_seq if s < m.seq)
            missing = f"{lower + 1}" if m.seq == lower + 2 else f"{lower + 1}..{m.seq - 1}"
            rep.fail("marker_gap", where, f"seq {missing} missing before it (marker(s) removed)")
    return refs


def _check_chapters(rec_dir: Path, manifest: dict[str, Any], refs: list[MarkerRef], rep: RecordingReport) -> None:
    segments = manifest.get("segments")
    if not refs or not isinstance(segments, list) or not segments or not isinstance(segments[0], dict):
        return
    start = segments[0].get("start_mono_ns")
    if not isinstance(start, int):
        return
    try:
        text = (rec_dir / "chapters.vtt").read_bytes()
    except OSError:
        rep.fail("chapters", "chapters.vtt", "missing: the markers have no chapters")
        return
    if text != chapters_text(start, refs):
        rep.fail("chapters", "chapters.vtt", "the chapters do not match the markers (edited, or markers changed)")


# -- several recordings ---------------------------------------------------------------------------
def verify_path(path: Path, public: Ed25519PublicKey, key_source: str,
                decrypt: X25519PrivateKey | None = None) -> Report:
    t0 = time.perf_counter()
    rec_dirs = recordings_in(path)
    report = Report(str(path), identity.key_id(public), key_source)
    manifests: dict[str, dict[str, Any] | None] = {}
    for d in rec_dirs:
        rep, manifest = verify_recording(d, public, decrypt)
        report.recordings.append(rep)
        manifests[d.name] = manifest
    _check_links(rec_dirs, manifests, report)
    report.took_s = time.perf_counter() - t0
    return report


def _check_links(rec_dirs: list[Path], manifests: dict[str, dict[str, Any] | None], report: Report) -> None:
    """Each recording's ``previous`` against the folder (names sort in the order recordings were made).

    * It names a recording that is here: that must be the one just before it (else one was inserted or
      the order changed), and its manifest must be the one linked.
    * It names one that is not here (a gap: not exported, never offloaded, deleted on the card): a note,
      the link is not checked; but the absent one must fall between the recording before it here and
      this one (else the one before it here is not of this chain: inserted).
    * It names none: only the first recording here may.
    """
    names = [d.name for d in rec_dirs]
    index = {n: i for i, n in enumerate(names)}
    by_name = {r.recording: r for r in report.recordings}
    for i, d in enumerate(rec_dirs):
        manifest = manifests[d.name]
        if manifest is None:
            continue
        rep = by_name[d.name]
        before = names[i - 1] if i > 0 else None
        link = manifest.get("previous")
        if link is None:
            if before is not None:
                rep.fail("previous", MANIFEST_FILE, f"names no previous recording, but {before} is before it")
            continue
        if (not isinstance(link, dict) or not isinstance(link.get("recording"), str)
                or Path(link["recording"]).name != link["recording"] or link["recording"] in ("", ".", "..")):
            rep.fail("previous", MANIFEST_FILE, "malformed link to the previous recording")
            continue
        prev_name = link["recording"]
        if prev_name not in index:
            if prev_name >= d.name or (before is not None and prev_name <= before):
                rep.fail("previous", MANIFEST_FILE, f"follows {prev_name}, which is not here, but the recording "
                                                    f"before it here is {before or 'none'} (a recording was added, "
                                                    "or the order changed)")
            else:
                rep.note("previous_absent", MANIFEST_FILE, f"the previous recording {prev_name} is not here (a gap: "
                                                           "not exported, not offloaded, or deleted on the camera): "
                                                           "link not checked")
            continue
        if index[prev_name] != i - 1:
            rep.fail("previous", MANIFEST_FILE, f"follows {prev_name}, but the recording before it here is "
                                                f"{before or 'none'} (a recording was added, or the order changed)")
            continue
        prev_path = d.parent / prev_name / MANIFEST_FILE
        try:
            prev_hash = hashlib.sha256(prev_path.read_bytes()).hexdigest()
        except OSError as exc:
            rep.fail("previous", MANIFEST_FILE, f"the manifest of the previous recording {prev_name} cannot be read "
                                                f"({exc.strerror or exc})")
            continue
        if prev_hash != link.get("manifest_sha256"):
            rep.fail("previous", MANIFEST_FILE, f"the manifest of the previous recording {prev_name} is not the "
                                                "one this recording linked (replaced or re-signed)")


# -- command line (the parser is in evidence_cli) ----------------------------------------------------
def run(args: argparse.Namespace) -> int:
    path: Path = args.path
    if args.key is not None:
        public, source = identity.load_public(args.key), f"--key {args.key}"
    else:
        found = find_key(path)
        if found is None:
            raise UsageError(f"{path}: no device.pub beside the footage: pass --key PUBKEY (the device's public key)")
        public = identity.load_public(found)
        source = f"{found} (found beside the footage: compare its id with the key registered at base)"
    decrypt_key: Path | None = getattr(args, "decrypt_key", None)
    report = verify_path(path, public, source, load_identity(decrypt_key) if decrypt_key is not None else None)
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        print_report(report)
    return 0 if report.ok else 1


def print_report(report: Report) -> None:
    print(f"key {report.key_id} from {report.key_source}")
    for r in report.recordings:
        state = "OK" if r.ok else "FAILED"
        print(f"recording {r.recording}: {state} ({r.segments} segment(s), {r.markers} marker(s))")
        for f in _sorted(r.findings):
            print(f"  {f.level.upper():4} {f.code:20} {f.where}: {f.message}")
    for f in _sorted(report.findings):
        print(f"  {f.level.upper():4} {f.code:20} {f.where}: {f.message}")
    failed = sum(1 for r in report.recordings if not r.ok)
    verdict = "everything verifies" if report.ok else "DOES NOT VERIFY"
    print(f"{len(report.recordings)} recording(s), {failed} failed, {report.took_s:.2f} s: {verdict}")


def _sorted(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: f.level != "fail")
