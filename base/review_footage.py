"""A recording as a reviewer and the data set export see it: its timeline and one playable file.

The evidence store keeps the files exactly as the camera signed them (``base/evidence_store.py``);
nothing here writes there. Derived files live in base's **working area**,
``<evidence root>/working/<device>/<recording>/``:

* with footage encrypted at rest (``segment-NNNNN.mp4.age``, ``docs/encryption-at-rest.md``), each
  segment decrypted with base's age identity into ``segment-NNNNN.mp4`` and checked against the
  signed manifest's ``plain_sha256``/``plain_bytes`` before anything uses it (the received ciphertext
  stays the evidence original);
* ``review.mp4``: the segments joined into one file on the recording's timeline (frame 0 = the first
  frame of segment 0; each segment placed at its ``start_mono_ns``), remuxed without re-encoding, its
  index at the front (``faststart``) so a browser seeks it with range requests.

Both are made once (a temporary name, then a rename) and can be deleted at any time: they are made
again from the evidence. A recording base cannot decrypt (no identity for its recipient, a segment
that fails authentication or its plaintext hash) raises :class:`FootageUnavailable` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bodycam.base.evidence_store import EvidenceStore
from bodycam.base.keys import KeyRegistry
from bodycam.base.review_labels import Detection, Timeline
from bodycam.device.errors import BodycamError, StorageError
from bodycam.device.footage.atrest import DecryptError, decrypt_stream, format_recipient, plaintext_name
from bodycam.device.footage.seal import MANIFEST_FILE, MARKERS_FILE
from bodycam.device.uplink.markers import DETECTION_KINDS
from bodycam.device.verify import verify_markers

log = logging.getLogger(__name__)

REVIEW_FILE = "review.mp4"


class FootageUnavailable(BodycamError):
    """Base cannot play this recording (encrypted to a key it lacks, a segment that fails its check...)."""


@dataclass(frozen=True)
class Segment:
    index: int
    file: str  # as stored (``.mp4`` or ``.mp4.age``)
    start_mono_ns: int
    frames: int
    plain_sha256: str | None
    plain_bytes: int | None


@dataclass(frozen=True)
class RecordingInfo:
    """What the signed manifest and markers say about a stored recording."""

    device: str
    recording: str
    manifest: dict[str, Any]
    segments: tuple[Segment, ...]
    markers: tuple[dict[str, Any], ...]
    timeline: Timeline

    @property
    def encrypted(self) -> bool:
        return self.manifest.get("encryption") is not None

    @property
    def recipient(self) -> str | None:
        enc = self.manifest.get("encryption")
        return str(enc.get("recipient")) if isinstance(enc, dict) else None

    @property
    def has_audio(self) -> bool:
        video = self.manifest.get("video")
        return bool(video.get("audio")) if isinstance(video, dict) else False


def _int(v: Any, default: int = 0) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


class MarkersUnverified(FootageUnavailable):
    """The stored ``markers.jsonl`` does not pass ``bodycam verify``'s checks: its detections are neither
    shown for review nor exported."""


class MarkerCheck:
    """``bodycam verify``'s checks of a stored recording's markers (``device/verify.py``'s
    ``verify_markers``): the manifest signed by the key registered at base for the device and naming this
    device and recording, the markers file's SHA-256 and count as that manifest signed, each marker of
    this device, signed by that key, in order, chained. A result is kept for the exact bytes checked (the
    SHA-256 of the manifest and of the markers file), so the list page does not verify every signature
    on every view."""

    MAX_CACHED = 20_000

    def __init__(self, keys: KeyRegistry) -> None:
        self.keys = keys
        self._ok: set[tuple[str, str, str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, device: str, recording: str, manifest_bytes: bytes, manifest: dict[str, Any],
                 markers: bytes | None) -> None:
        """Raises :class:`MarkersUnverified` with the reasons."""
        seen = (device, recording, hashlib.sha256(manifest_bytes).hexdigest(),
                "" if markers is None else hashlib.sha256(markers).hexdigest())
        with self._lock:
            if seen in self._ok:
                return
        where = f"{device}/{recording}"
        if manifest.get("device") != device:
            raise MarkersUnverified(f"{where}: the manifest names device {manifest.get('device')!r}: its markers "
                                    "are not used")
        kid = manifest.get("key")
        found = [k for k in self.keys.keys(device) if k.key_id == kid]
        if not found:
            raise MarkersUnverified(f"{where}: the manifest is signed by key {kid!r}, which is not registered at "
                                    f"base for {device}: its markers are not used")
        rep, _ = verify_markers(recording, manifest, markers, found[0].public())
        if not rep.ok:
            fails = [f for f in rep.findings if f.level == "fail"]
            codes = ", ".join(sorted({f.code for f in fails}))
            raise MarkersUnverified(f"{where}: {MARKERS_FILE} does not verify ({codes}; {fails[0].where}: "
                                    f"{fails[0].message}): its detections are not used")
        with self._lock:
            if len(self._ok) >= self.MAX_CACHED:
                self._ok.clear()
            self._ok.add(seen)


def read_info(evidence: EvidenceStore, device: str, recording: str, check: MarkerCheck) -> RecordingInfo:
    """The stored manifest and markers of a recording and its timeline; the markers only when they pass
    ``check`` (else :class:`MarkersUnverified`)."""
    with evidence.open(device, recording, MANIFEST_FILE) as fh:
        mbytes = fh.read()
    manifest = _manifest(device, recording, mbytes)
    data: bytes | None = None
    if MARKERS_FILE in evidence.files(device, recording):
        with evidence.open(device, recording, MARKERS_FILE) as fh:
            data = fh.read()
    check(device, recording, mbytes, manifest, data)
    markers: list[dict[str, Any]] = []
    for line in (data or b"").decode("utf-8").splitlines():
        if line.strip():
            markers.append(json.loads(line))
    return _info(device, recording, manifest, markers)


def read_footage(evidence: EvidenceStore, device: str, recording: str) -> RecordingInfo:
    """The stored manifest's footage only, without markers: what a working copy is made from."""
    with evidence.open(device, recording, MANIFEST_FILE) as fh:
        manifest = _manifest(device, recording, fh.read())
    return _info(device, recording, manifest, [])


def _manifest(device: str, recording: str, data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise FootageUnavailable(f"{device}/{recording}: the stored manifest is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise FootageUnavailable(f"{device}/{recording}: the stored manifest is not a JSON object")
    return doc


def _info(device: str, recording: str, manifest: dict[str, Any], markers: list[dict[str, Any]]) -> RecordingInfo:
    segs = tuple(
        Segment(_int(s.get("index")), str(s.get("file")), _int(s.get("start_mono_ns")), _int(s.get("frames")),
                s.get("plain_sha256") if isinstance(s.get("plain_sha256"), str) else None,
                s.get("plain_bytes") if isinstance(s.get("plain_bytes"), int) else None)
        for s in manifest.get("segments") or [] if isinstance(s, dict))
    video: dict[str, Any] = manifest["video"] if isinstance(manifest.get("video"), dict) else {}
    fps = float(video.get("fps") or 0.0)
    frames = sum(s.frames for s in segs)
    if not segs or fps <= 0 or frames <= 0:
        raise FootageUnavailable(f"{device}/{recording}: the manifest has no footage (segments, fps, frames)")
    start = segs[0].start_mono_ns
    dets = []
    for m in markers:
        if m.get("kind") not in DETECTION_KINDS or not isinstance(m.get("t_mono_ns"), int):
            continue
        frame = min(frames - 1, max(0, round((m["t_mono_ns"] - start) * fps / 1e9)))
        model: dict[str, Any] = m["model"] if isinstance(m.get("model"), dict) else {}
        conf = m.get("confidence")
        dets.append(Detection(str(m.get("id")), str(m.get("kind")), frame,
                              float(conf) if isinstance(conf, int | float) else None,
                              f"{model.get('name', '?')} {model.get('version', '?')}", str(m.get("t", ""))))
    tl = Timeline(device, recording, fps, frames, tuple(dets))
    return RecordingInfo(device, recording, manifest, segs, tuple(markers), tl)


class WorkingCopies:
    """Decrypted segments and the joined review file of stored recordings (see the module's doc)."""

    def __init__(self, evidence: EvidenceStore, identities: Sequence[X25519PrivateKey] = ()) -> None:
        self.evidence = evidence
        self.root = evidence.root / "working"
        self._keys = {format_recipient(k.public_key()): k for k in identities}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, device: str, recording: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((device, recording), threading.Lock())

    def dir(self, device: str, recording: str) -> Path:
        return self.root / device / recording

    def review_file(self, info: RecordingInfo) -> Path:
        """The joined, playable file of ``info`` (made on first use); :class:`FootageUnavailable` if it cannot be."""
        d = self.dir(info.device, info.recording)
        out = d / REVIEW_FILE
        if out.is_file():
            return out
        with self._lock(info.device, info.recording):
            if not out.is_file():
                self.build(info, d, out)
                log.info("review: %s/%s joined into %s", info.device, info.recording, out)
            return out

    def build(self, info: RecordingInfo, work: Path, out: Path) -> int:
        """Make the joined file ``out`` afresh from the evidence (decrypted segments, checked, go to ``work``);
        returns its frames. Several processes may build at once: each writes a name of its own, then renames."""
        try:
            work.mkdir(parents=True, exist_ok=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            sources = [self._plaintext(info, s, work) for s in info.segments]
            tmp = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.part")
            try:
                frames = join_segments(sources, [s.start_mono_ns - info.segments[0].start_mono_ns
                                                 for s in info.segments], tmp)
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"working copy of {info.device}/{info.recording}: {exc.strerror or exc}") from exc
        return frames

    def prepare(self, device: str, recording: str) -> None:
        """After a recording is stored (base decrypts on receipt): make its working copy, log why not."""
        try:
            self.review_file(read_footage(self.evidence, device, recording))
        except (FootageUnavailable, StorageError) as exc:
            log.warning("review: %s/%s is not playable at base: %s", device, recording, exc)

    def _plaintext(self, info: RecordingInfo, seg: Segment, work: Path) -> Path | BinaryIO:
        if not info.encrypted:
            try:
                return self.evidence.open(info.device, info.recording, seg.file)
            except StorageError as exc:
                raise FootageUnavailable(str(exc)) from exc
        recipient = info.recipient or "?"
        key = self._keys.get(recipient)
        where = f"{info.device}/{info.recording}"
        if key is None:
            raise FootageUnavailable(
                f"{where} is encrypted at rest to {recipient} and base has no private key for it "
                "(bodycam-base serve --age-key FILE, the key whose public half the cameras hold)")
        if seg.plain_sha256 is None:
            raise FootageUnavailable(f"{where}/{seg.file}: the manifest has no plaintext hash for it "
                                     "(a segment recovered after a power cut): it cannot be checked after decryption")
        dst = work / plaintext_name(seg.file)
        part = dst.with_name(f"{dst.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            with self.evidence.open(info.device, info.recording, seg.file) as src, part.open("wb") as out:
                got = decrypt_stream(src, out, key, seg.file)
                out.flush()
                os.fsync(out.fileno())
        except DecryptError as exc:
            part.unlink(missing_ok=True)
            raise FootageUnavailable(f"{where}: {exc}") from exc
        if got.plain_sha256 != seg.plain_sha256 or got.plain_bytes != seg.plain_bytes:
            part.unlink(missing_ok=True)
            raise FootageUnavailable(f"{where}/{seg.file}: decrypts to footage that differs from the plaintext "
                                     "hash the manifest signed")
        os.replace(part, dst)
        return dst

    def remove(self, device: str, recording: str) -> None:
        shutil.rmtree(self.dir(device, recording), ignore_errors=True)


def join_segments(sources: Sequence[Path | BinaryIO], offsets_ns: Sequence[int], out: Path) -> int:
    """Remux ``sources`` (fragmented MP4 segments) into one MP4 at ``out``, segment ``i`` starting at
    ``offsets_ns[i]``; returns the number of video frames. No re-encoding."""
    import av

    frames = 0
    try:
        with av.open(str(out), "w", format="mp4", options={"movflags": "faststart"}) as dst:
            streams: dict[str, Any] = {}
            last_dts: dict[str, int] = {}
            for src, offset in zip(sources, offsets_ns, strict=True):
                with av.open(src if not isinstance(src, Path) else str(src), "r") as inp:
                    for kind in ("video", "audio"):
                        ins = getattr(inp.streams, kind)
                        if ins and kind not in streams:
                            streams[kind] = dst.add_stream_from_template(ins[0])
                    for packet in inp.demux():
                        kind = packet.stream.type
                        if packet.dts is None or kind not in streams:
                            continue
                        tb = packet.time_base
                        shift = offset * tb.denominator // (tb.numerator * 1_000_000_000)
                        dts = int(packet.dts) + shift
                        pts = int(packet.pts) + shift if packet.pts is not None else dts
                        if kind in last_dts and dts <= last_dts[kind]:
                            dts = last_dts[kind] + 1
                            pts = max(pts, dts)
                        last_dts[kind] = dts
                        packet.dts, packet.pts = dts, pts
                        packet.stream = streams[kind]
                        dst.mux(packet)
                        frames += kind == "video"
                if not isinstance(src, Path):
                    src.close()
    except av.error.FFmpegError as exc:
        out.unlink(missing_ok=True)
        raise FootageUnavailable(f"cannot join the segments into one file: {exc}") from exc
    return frames
