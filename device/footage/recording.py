"""Footage on disk (DESIGN.md section 5): recordings, segments, markers, chapters, manifest.

::

    <data_dir>/recordings/<recording_id>/
        segment-00000.mp4 ...   H.264 (+AAC) segments starting at keyframes
        markers.jsonl           every marker of this recording, in order
        chapters.vtt            the markers as WebVTT chapters (recording timeline)
        manifest.json           segments with start/end UTC and SHA-256, marker count, protected flag

The manifest is replaced atomically (write, fsync, rename) whenever a segment
closes, a marker is added or the recording ends, so a crash leaves a valid
manifest describing everything finished so far. ``markers.jsonl`` is appended
and fsynced per marker.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import StorageError
from bodycam.device.footage.atrest import SegmentEncryption
from bodycam.device.footage.seal import markers_sha256, previous_link, seal
from bodycam.device.footage.segment_writer import sha256_of
from bodycam.device.hw.frames import StreamInfo
from bodycam.device.uplink.markers import MarkerSigner

MANIFEST_SCHEMA = "bodycam.recording/1"
PROTECTING_KINDS = frozenset({"gunshot"})
# Protection on disk that a full card cannot refuse. The sentinels live beside ``recordings/``, in
# ``<data_dir>/protection/`` (a recording's directory holds its evidence only): every recording starts
# with an empty ``<id>.no`` there; protecting it renames that to ``<id>.ok`` (same length: no new block,
# no new inode) before the manifest is rewritten. Recovery and retention honour ``<id>.ok`` whatever
# the manifest says, so a manifest write refused by a full card cannot lose the protection.
PROTECTION_DIR = "protection"


def sentinels(rec_dir: Path) -> tuple[Path, Path]:
    """(unprotected, protected) sentinel paths of the recording in ``rec_dir``."""
    d = rec_dir.parent.parent / PROTECTION_DIR
    return d / f"{rec_dir.name}.no", d / f"{rec_dir.name}.ok"


def prepare_protection(rec_dir: Path) -> None:
    """At the start of a recording, while the card has room: its ``.no`` sentinel (OSError if not)."""
    no, _ = sentinels(rec_dir)
    no.parent.mkdir(exist_ok=True)
    os.close(os.open(no, os.O_WRONLY | os.O_CREAT, 0o644))


def protected_on_disk(rec_dir: Path) -> bool:
    """True when the recording's protection sentinel says so (see ``PROTECTION_DIR``)."""
    return sentinels(rec_dir)[1].exists()


def forget_protection(rec_dir: Path) -> None:
    """The recording is gone (retention deleted it): its sentinels go too."""
    for path in sentinels(rec_dir):
        with contextlib.suppress(OSError):
            path.unlink()


def mark_protected(rec_dir: Path) -> None:
    """Make ``rec_dir``'s protection durable (StorageError if even that fails)."""
    no, yes = sentinels(rec_dir)
    try:
        try:
            os.replace(no, yes)
        except FileNotFoundError:  # a recording from before the sentinels, or its start could not make one
            yes.parent.mkdir(exist_ok=True)
            os.close(os.open(yes, os.O_WRONLY | os.O_CREAT, 0o644))
        fsync_dir(yes.parent)
    except OSError as exc:
        raise StorageError(f"{yes}: cannot mark the recording protected ({exc.strerror or exc})") from exc


@dataclass
class SegmentInfo:
    index: int
    file: str
    start_mono_ns: int
    end_mono_ns: int
    frames: int
    bytes: int
    sha256: str | None  # None while being written; of the file as on the card (encrypted or not)
    plain_sha256: str | None = None  # encrypted at rest: the plaintext's, from the encrypting writer
    plain_bytes: int | None = None


@dataclass
class MarkerRef:
    kind: str
    t_mono_ns: int
    label: str


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (the directory entry itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def vtt_time(ns: int) -> str:
    ms_total = max(0, ns) // 1_000_000
    h, rem = divmod(ms_total, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def chapter_label(kind: str, confidence: float | None) -> str:
    """A marker's chapter title: ``gunshot (0.97)`` for a detection, the kind otherwise."""
    return kind if confidence is None else f"{kind} ({confidence:.2f})"


def chapters_text(start_mono_ns: int, markers: list[MarkerRef]) -> bytes:
    """``chapters.vtt`` for ``markers`` on the recording timeline (from the start of segment 0)."""
    lines = ["WEBVTT", "", "NOTE bodycam markers; times are from the start of segment-00000.mp4", ""]
    # markers at the same instant (recording_start + gunshot) share one chapter
    groups: dict[int, list[str]] = {}
    for ref in sorted(markers, key=lambda m: m.t_mono_ns):
        groups.setdefault(max(0, ref.t_mono_ns - start_mono_ns), []).append(ref.label)
    times = sorted(groups)
    for i, begin in enumerate(times, 1):
        end = begin + 1_000_000_000
        if i < len(times):
            end = min(end, times[i])
        lines += [str(i), f"{vtt_time(begin)} --> {vtt_time(end)}", "; ".join(groups[begin]), ""]
    return "\n".join(lines).encode("utf-8")


@dataclass
class Recording:
    """One recording directory being written (or finished).

    Threads and ``_lock``: two threads touch a recording. The frame loop writes packets,
    opens and closes segments, adds markers and finishes it; the recorder's hasher thread
    (``hasher``) reads each closed segment back, stores its ``sha256``/``bytes``, counts
    ``_pending_hashes`` down, sets ``complete`` and rewrites the manifest. ``_lock`` (an
    ``RLock``: ``write_manifest`` is also called with it held) guards everything the hasher
    reads or writes: the ``segments`` list and every :class:`SegmentInfo` in it (the loop
    appends and updates end times and frame counts under it, so a manifest is never
    serialised from a half-updated segment), ``_pending_hashes``, ``_finish_requested``,
    ``complete`` and ``error``, and the manifest file itself (one writer at a time).
    ``markers`` belong to the loop alone and are not guarded.

    The files themselves are written by the recorder's footage path (``footage_path.py``:
    remuxed packets or the camera's own files), which reports them through the
    :class:`~bodycam.device.footage.footage_path.SegmentSink` methods below.
    """

    root: Path
    recording_id: str
    device: str
    started_by: str
    info: StreamInfo
    mono_to_wall: Callable[[int], int]
    segments: list[SegmentInfo] = field(default_factory=list)
    markers: list[MarkerRef] = field(default_factory=list)
    protected: bool = False
    complete: bool = False
    error: str | None = None
    exact_timing: bool = True  # False: the camera wrote the files and reported approximate times
    hasher: Executor | None = None  # hashes finished segments off the frame loop; None: inline
    signer: MarkerSigner | None = None  # seals the manifest (footage/seal.py); None: unsigned
    previous: Path | None = None  # the recording before this one (its manifest hash is linked)
    encryption: SegmentEncryption | None = None  # segments encrypted at rest (footage/atrest.py)
    _prev_link: dict[str, str] | None = None
    _prev_final: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _pending_hashes: int = 0
    _finish_requested: bool = False

    @property
    def path(self) -> Path:
        return self.root / self.recording_id

    @property
    def start_mono_ns(self) -> int | None:
        return self.segments[0].start_mono_ns if self.segments else None

    # -- segments, as the footage path reports them (SegmentSink) ---------------------------
    def segment_opened(self, index: int, file: str, start_ns: int) -> None:
        """A segment file was started at sensor time ``start_ns`` (again: its start was corrected)."""
        with self._lock:
            if index >= len(self.segments):
                self.segments.append(SegmentInfo(index, file, start_ns, start_ns, 0, 0, None))
                return
            seg = self.segments[index]
            moved = seg.start_mono_ns != start_ns
            seg.file, seg.start_mono_ns = file, start_ns
            seg.end_mono_ns = max(seg.end_mono_ns, start_ns)
        if index == 0 and moved and self.markers:
            self.write_chapters()  # the chapters are timed from segment 0's start: they move with it

    def segment_update(self, index: int, end_ns: int, frames: int) -> None:
        with self._lock:
            seg = self.segments[index]
            seg.end_mono_ns, seg.frames = end_ns, frames

    def segment_closed(self, index: int) -> None:
        """The file is complete: hash it (off the loop)."""
        with self._lock:
            seg = self.segments[index]
        self._schedule_hash(seg)

    def _schedule_hash(self, seg: SegmentInfo) -> None:
        """Hash a closed segment on the hasher thread (a 60 s segment is tens of MB: reading it
        back on the frame loop would stall it); the manifest is rewritten when it is done."""
        with self._lock:
            self._pending_hashes += 1
        if self.hasher is None:
            self._hash(seg)
        else:
            self.hasher.submit(self._hash, seg)

    def _hash(self, seg: SegmentInfo) -> None:
        path = self.path / seg.file
        digest: str | None = None
        size = 0
        problem = None
        try:
            digest = sha256_of(path)
            size = path.stat().st_size
        except OSError as exc:
            problem = f"{path}: cannot read back the segment ({exc.strerror or exc})"
        plain = self.encryption.take(path) if self.encryption is not None else None
        with self._lock:
            seg.sha256, seg.bytes = digest, size
            if plain is not None:
                seg.plain_sha256, seg.plain_bytes = plain
            if problem is not None and self.error is None:
                self.error = problem
            self._pending_hashes -= 1
            if self._pending_hashes == 0 and self._finish_requested:
                self.complete = True
            try:
                self.write_manifest()
            except StorageError as exc:
                if self.error is None:
                    self.error = str(exc)

    # -- markers --------------------------------------------------------------------
    def media_for(self, t_ns: int) -> tuple[int, float, int] | None:
        """(segment index, offset in that segment in s, frame within it) for sensor time ``t_ns``."""
        for seg in reversed(self.segments):
            if seg.start_mono_ns <= t_ns:
                offset_ns = t_ns - seg.start_mono_ns
                frame = round(offset_ns * self.info.fps / 1e9) if self.info.fps > 0 else 0
                return seg.index, round(offset_ns / 1e9, 6), frame
        return None

    def protect(self) -> None:
        """Mark as protected now (a detection is on its way into this recording): first the sentinel
        (durable even on a full card), then the manifest. StorageError if either fails."""
        if not self.protected:
            self.protected = True
            mark_protected(self.path)
            self.write_manifest()

    def add_marker(self, kind: str, t_mono_ns: int, line: bytes, label: str) -> None:
        """Append one marker (its canonical JSON line) and update chapters and manifest."""
        try:
            with (self.path / "markers.jsonl").open("ab") as fh:
                fh.write(line.rstrip(b"\n") + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise StorageError(f"{self.path / 'markers.jsonl'}: cannot append marker ({exc.strerror or exc})") from exc
        self.markers.append(MarkerRef(kind, t_mono_ns, label))
        if kind in PROTECTING_KINDS and not self.protected:
            self.protected = True
            mark_protected(self.path)
        self.write_chapters()
        self.write_manifest()

    def write_chapters(self) -> None:
        start = self.start_mono_ns
        if start is None:
            return
        write_atomic(self.path / "chapters.vtt", chapters_text(start, self.markers))

    # -- manifest -------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        segs: list[dict[str, Any]] = []
        for s in self.segments:
            segs.append({
                "index": s.index,
                "file": s.file,
                "start_utc": rfc3339_ms(self.mono_to_wall(s.start_mono_ns)),
                "end_utc": rfc3339_ms(self.mono_to_wall(s.end_mono_ns)),
                "start_mono_ns": s.start_mono_ns,
                "end_mono_ns": s.end_mono_ns,
                "frames": s.frames,
                "bytes": s.bytes,
                "sha256": s.sha256,
            })
            if self.encryption is not None:  # docs/encryption-at-rest.md: what the manifest signs
                segs[-1].update(plain_sha256=s.plain_sha256, plain_bytes=s.plain_bytes)
        first = self.segments[0] if self.segments else None
        last = self.segments[-1] if self.segments else None
        return {
            "schema": MANIFEST_SCHEMA,
            "recording": self.recording_id,
            "device": self.device,
            "started_by": self.started_by,
            "start_utc": rfc3339_ms(self.mono_to_wall(first.start_mono_ns)) if first else None,
            "end_utc": rfc3339_ms(self.mono_to_wall(last.end_mono_ns)) if last else None,
            "complete": self.complete,
            "error": self.error,
            "protected": self.protected,
            "marker_count": len(self.markers),
            # camera-written footage: segment times are the sensor times of the first and last
            # frames seen by the loop; the pre-event part starts at the buffer's keyframe, about
            # pre_event_s earlier (picamera2 does not report it)
            "timing": "exact" if self.exact_timing else "approximate",
            "video": {"width": self.info.width, "height": self.info.height, "fps": self.info.fps,
                      "audio": self.info.has_audio},
            "segments": segs,
            "encryption": self.encryption.manifest_entry() if self.encryption is not None else None,
            "markers_sha256": markers_sha256(self.path),
            "previous": self._previous(),
        }

    def _previous(self) -> dict[str, str] | None:
        """The previous recording's manifest hash, followed until that manifest is final."""
        if not self._prev_final:
            link, self._prev_final = previous_link(self.previous)
            self._prev_link = link or self._prev_link
        return self._prev_link

    def write_manifest(self) -> None:
        with self._lock:
            doc = seal(self.manifest(), self.signer)
            data = json.dumps(doc, indent=2, sort_keys=False).encode("utf-8") + b"\n"
            write_atomic(self.path / "manifest.json", data)

    def finish(self) -> None:
        """The footage path closed its files; the recording is ``complete`` once every one is hashed."""
        with self._lock:
            if self._finish_requested:
                return
            self._finish_requested = True
            if self._pending_hashes == 0:
                self.complete = True
            self.write_manifest()

    def fail(self, message: str) -> None:
        """After a storage error (the footage path has stopped and reported what is on disk):
        keep it and say so in the manifest."""
        with self._lock:
            self.error = message
            self._finish_requested = True
            if self._pending_hashes == 0:
                self.complete = True
            with contextlib.suppress(StorageError):
                self.write_manifest()
