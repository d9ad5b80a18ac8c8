"""The recorder: recordings started and stopped by the loop, footage through one path.

Fed every frame (its encoded packets, possibly none, and its sensor time). The footage
itself goes through one :class:`~bodycam.device.footage.footage_path.FootagePath`, the
same interface whichever camera: the camera's own files (picamera2 encodes, buffers and
writes them) or the loop's remux of encoded packets (pre-event buffer in RAM, segments on
disk). On ``start`` the pre-event footage becomes the start of the new recording (so a
detection-started recording holds the seconds before the shot). A storage error stops the
recording (what is on disk stays and is hashed, the manifest says what happened) and
raises the storage alarm without stopping the loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bodycam.device import identity
from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import BodycamError, StorageError
from bodycam.device.footage.atrest import SUFFIX, SegmentEncryption
from bodycam.device.footage.footage_path import CameraFootage, CameraFootagePath, FootagePath, PacketFootage
from bodycam.device.footage.handover import former_heads, linkable_recording, read_handovers
from bodycam.device.footage.recording import (
    PROTECTING_KINDS,
    MarkerRef,
    Recording,
    chapter_label,
    chapters_text,
    prepare_protection,
    protected_on_disk,
    write_atomic,
)
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.retention import Retention, RetentionResult
from bodycam.device.footage.seal import latest_recording
from bodycam.device.hw.frames import EncodedPacket, StreamInfo
from bodycam.device.safe_load import loads_untrusted
from bodycam.device.uplink.markers import MarkerSigner

log = logging.getLogger(__name__)


def recording_id_for(wall_ns: int) -> str:
    """``20261125T120000.123Z`` -> ``20261125T120000123Z``: sortable, filename-safe."""
    text = rfc3339_ms(wall_ns)
    return text.replace("-", "").replace(":", "").replace(".", "")


def next_recording_id(rid: str, latest: str | None) -> str:
    """The id of a new recording whose wall-clock id is ``rid``, after the newest one ``latest``.

    Recordings are ordered by name (the chain of manifests, retention's oldest-first, ``bodycam
    verify``), so a new name must sort after the newest even when the wall clock stepped back (an
    RTC-less Pi boots on fake-hwclock, then NTP or GNSS corrects it): then it is the newest's time
    with the next ``-NNNN`` suffix (the manifest's ``start_utc`` still says when it really began).
    """
    if latest is None or rid > latest:
        return rid
    stem, _, suffix = latest.partition("-")
    n = int(suffix) + 1 if suffix.isdigit() else 1
    while n <= 9999:
        name = f"{stem}-{n:04d}"
        if name > latest:  # an older firmware's "-2" sorts after "-0003": go on to a name after it
            return name
        n += 1
    raise StorageError(f"recording ids after {latest} are exhausted (wall clock far behind the footage)")


def _recover_markers(rec_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Bring ``marker_count``, ``protected`` and ``chapters.vtt`` in line with ``markers.jsonl``: a
    crash between appending a marker and rewriting the manifest (or the chapters) leaves them behind.
    A torn last line (the append itself interrupted) is cut off: that marker is still in the outbox.
    Returns what was repaired (for the manifest's ``error``)."""
    from bodycam.device.errors import MarkerError
    from bodycam.device.footage.seal import MARKERS_FILE
    from bodycam.device.uplink.markers import Marker

    path = rec_dir / MARKERS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [f"{MARKERS_FILE} unreadable ({exc.strerror or exc})"]
    notes = []
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    refs: list[MarkerRef] = []
    for line in lines:
        try:
            m = Marker.from_json(line)
        except MarkerError:
            continue  # not this function's business: verify names it
        refs.append(MarkerRef(m.kind, m.t_mono_ns, chapter_label(m.kind, m.confidence)))
    if tail:
        try:
            with path.open("r+b") as fh:
                fh.truncate(len(data) - len(tail))
                os.fsync(fh.fileno())
            notes.append(f"a marker line torn by the interruption was cut from {MARKERS_FILE}")
        except OSError as exc:
            notes.append(f"a torn marker line could not be cut from {MARKERS_FILE} ({exc.strerror or exc})")
    if manifest.get("marker_count") != len(refs):
        notes.append(f"{MARKERS_FILE} holds {len(refs)} marker(s), the manifest said {manifest.get('marker_count')}")
        manifest["marker_count"] = len(refs)
    if any(r.kind in PROTECTING_KINDS for r in refs):
        manifest["protected"] = True
    segments = manifest.get("segments")
    start = segments[0].get("start_mono_ns") if isinstance(segments, list) and segments and isinstance(
        segments[0], dict) else None
    if refs and isinstance(start, int):
        text = chapters_text(start, refs)
        try:
            old = (rec_dir / "chapters.vtt").read_bytes()
        except OSError:
            old = None
        if old != text:
            try:
                write_atomic(rec_dir / "chapters.vtt", text)
                notes.append("chapters.vtt rewritten from the markers")
            except StorageError as exc:
                notes.append(str(exc))
    return notes


def recover_interrupted(root: Path, signer: MarkerSigner | None = None) -> list[str]:
    """Close recordings that a crash or power cut left ``complete: false``.

    Their segments are fragmented MP4, so what reached the disk plays; each file is hashed
    into the manifest, which is marked ``complete`` with ``recovered: true`` and an error
    saying what happened. ``markers.jsonl`` is the truth for the marker count, the chapters
    and protection (a marker appended just before the crash); protection is never taken away, and
    the on-disk sentinel (``protection/<id>.ok``) protects it whatever the manifest said (retention
    may only delete unprotected recordings). Returns the recording ids repaired.
    """
    import json

    from bodycam.device.footage.seal import markers_sha256, seal, segment_files
    from bodycam.device.footage.segment_writer import sha256_of

    repaired = []
    for rec_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        path = rec_dir / "manifest.json"
        try:
            manifest = loads_untrusted(path.read_bytes())
        except (OSError, ValueError):
            continue  # unreadable: leave it (retention treats it as protected)
        if not isinstance(manifest, dict) or manifest.get("complete", True):
            continue
        known = {s.get("file"): s for s in manifest.get("segments", []) if isinstance(s, dict)}
        segments = []
        for i, f in enumerate(segment_files(rec_dir)):
            seg = dict(known.get(f.name, {"index": i, "file": f.name}))
            try:
                seg["sha256"], seg["bytes"] = sha256_of(f), f.stat().st_size
            except OSError:
                seg["sha256"] = None
            segments.append(seg)
        manifest["segments"] = segments
        notes = _recover_markers(rec_dir, manifest)
        if protected_on_disk(rec_dir):
            manifest["protected"] = True
        error = manifest.get("error") or "interrupted (power loss or crash); recovered at start-up"
        manifest.update(complete=True, recovered=True, markers_sha256=markers_sha256(rec_dir),
                        error="; ".join([error, *notes]))
        manifest = seal(manifest, signer)  # re-signed now: the manifest says it was recovered
        try:
            write_atomic(path, json.dumps(manifest, indent=2).encode("utf-8") + b"\n")
        except StorageError:
            continue
        log.warning("recording %s was interrupted; recovered %d segment(s)%s", rec_dir.name, len(segments),
                    "".join(f"; {n}" for n in notes))
        repaired.append(rec_dir.name)
    return repaired


class Recorder:
    def __init__(self, data_dir: Path, device: str, cfg: RecordingConfig,
                 mono_to_wall: Callable[[int], int], retention: Retention | None = None,
                 camera_footage: CameraFootage | None = None, signer: MarkerSigner | None = None,
                 encryption: SegmentEncryption | None = None) -> None:
        self.root = data_dir / "recordings"
        self.device = device
        self.cfg = cfg
        self.mono_to_wall = mono_to_wall
        self.retention = retention
        # one footage path, whichever camera: the camera's own files, or remuxed packets
        self.footage: FootagePath = (
            CameraFootagePath(camera_footage, cfg.pre_event_s, encryption) if camera_footage is not None
            else PacketFootage(cfg.pre_event_s, cfg.segment_s, encryption))
        self.encryption = encryption  # segments encrypted to base's key (footage/atrest.py); None: plain MP4
        self.info: StreamInfo | None = None
        self.active: Recording | None = None
        self.finished: list[Recording] = []
        self.errors: list[str] = []
        self.storage_alarm = False
        self.recovered: list[str] = []
        self.unlinked: list[str] = []  # newer recordings the chain does not link, with why (see _linkable)
        self.signer = signer  # seals every manifest (footage/seal.py)
        self._last_dir: Path | None = None  # the newest recording: the next one links its manifest
        # finished segments are hashed here, off the frame loop (see Recording._schedule_hash)
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="footage-hash")

    def begin(self, info: StreamInfo) -> None:
        self.info = info
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.root}: cannot create the recordings directory ({exc.strerror or exc})") from exc
        self.recovered = recover_interrupted(self.root, self.signer)
        self._last_dir = self._linkable()
        self.footage.begin(info)

    def _linkable(self) -> Path | None:
        """The recording the next one links (``previous``): with a device key, only one whose manifest
        verifies with it or is the head of a hand-over it made (``footage/handover.py``): a recording
        planted on the card with a leaked old key is not linked, and is reported (``unlinked``)."""
        public = getattr(self.signer, "public", None)
        if not isinstance(public, Ed25519PublicKey):  # unsigned footage: the newest, as before
            return latest_recording(self.root)
        heads = former_heads(read_handovers(self.root.parent), identity.key_id(public))
        found, self.unlinked = linkable_recording(self.root, public, heads.values())
        for why in self.unlinked:
            log.error("ALARM recording not linked into the chain (planted, damaged, or signed by a key this camera "
                      "did not hand over from): %s", why)
        return found

    def feed(self, packets: Iterable[EncodedPacket], t_ns: int | None = None) -> None:
        """Every frame: its encoded packets (none from a camera that writes its own files)."""
        rec = self.active
        try:
            self.footage.feed(packets, t_ns)
        except StorageError as exc:
            if rec is not None:
                self.fail(rec, str(exc))
            return
        if rec is not None:
            error = self.footage.footage_error()
            if error is not None:  # a full card: the alarm goes up at the next frame
                self.fail(rec, error)

    def start(self, reason: str, t_ns: int, include_buffer: bool = True) -> Recording | None:
        if self.active is not None:
            return self.active
        if self.info is None:
            raise RuntimeError("Recorder.begin() was not called")
        # retention is not run here: a detection must not wait for a directory scan (the
        # loop runs maintain() every few seconds)
        path = self.root / next_recording_id(recording_id_for(self.mono_to_wall(t_ns)),
                                             None if self._last_dir is None else self._last_dir.name)
        n = 1
        while path.exists():  # another recording took the name meanwhile (not this recorder's)
            n += 1
            path = self.root / next_recording_id(path.name, path.name)
        rec = Recording(self.root, path.name, self.device, reason, self.info, self.mono_to_wall,
                        exact_timing=self.footage.exact_timing, hasher=self._hasher,
                        signer=self.signer, previous=self._last_dir, encryption=self.encryption)
        try:
            path.mkdir(parents=True)
            rec.write_manifest()
            # protecting it later renames this sentinel (recording.PROTECTION_DIR): no new block on a full card
            prepare_protection(path)
        except (OSError, StorageError) as exc:
            self.fail(rec, f"{path}: cannot start a recording ({exc})")
            return None
        self._last_dir = path
        self.active = rec
        try:
            suffix = SUFFIX if self.encryption is not None else ""
            self.footage.start_recording(lambda i: path / f"segment-{i:05d}.mp4{suffix}", include_buffer, rec, t_ns)
        except (OSError, BodycamError) as exc:
            self.fail(rec, f"{path}: cannot start writing footage ({exc})")
            return None
        log.info("recording %s started (%s)%s", rec.recording_id, reason,
                 "" if self.footage.exact_timing else ", written by the camera")
        return rec

    def stop(self) -> Recording | None:
        rec, self.active = self.active, None
        if rec is None:
            return None
        try:
            self.footage.stop_recording()
            error = self.footage.footage_error()
            if error is not None:
                raise StorageError(error)
            rec.finish()
        except (StorageError, OSError) as exc:
            self._fail_stopped(rec, str(exc))
        if rec not in self.finished:
            self.finished.append(rec)
        log.info("recording %s stopped: %d segment(s), %d marker(s)%s", rec.recording_id, len(rec.segments),
                 len(rec.markers), ", protected" if rec.protected else "")
        return rec

    def close(self) -> None:
        """Stop any recording and wait until every finished segment is hashed into its manifest."""
        if self.active is not None:
            self.stop()
        self._hasher.shutdown(wait=True)

    def maintain(self) -> RetentionResult | None:
        if self.retention is None:
            return None
        try:
            result = self.retention.enforce(self.active.recording_id if self.active else None)
        except OSError as exc:
            self.errors.append(f"retention failed: {exc}")
            return None
        # short with only protected footage left, or footage deleted before base confirmed it
        self.storage_alarm = result.alarm or bool(result.lost)
        return result

    def fail(self, rec: Recording, message: str) -> None:
        """A storage error: stop writing (what is on disk stays and is hashed), raise the alarm."""
        if self.active is rec:
            try:  # e.g. the camera goes back to its pre-event buffer
                self.footage.abort()
            except (OSError, BodycamError) as exc:
                log.error("recording %s: the footage path did not stop cleanly: %s", rec.recording_id, exc)
            self.active = None
            self.finished.append(rec)
        self._fail_stopped(rec, message)

    def _fail_stopped(self, rec: Recording, message: str) -> None:
        log.error("recording %s failed: %s", rec.recording_id, message)
        self.errors.append(message)
        self.storage_alarm = True
        rec.fail(message)
