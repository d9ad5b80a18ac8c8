"""The recorder: pre-event buffer while idle, segments on disk while recording.

Fed the encoded packets of every frame. While idle they go into the
:class:`PreEventBuffer`; on ``start`` the buffered footage becomes the start of
the new recording (so a detection-started recording holds the seconds before
the shot), and live packets follow. A storage error stops the recording (what
is on disk stays, the manifest says what happened) without stopping the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import BodycamError, StorageError
from bodycam.device.footage.prebuffer import PreEventBuffer
from bodycam.device.footage.recording import Recording
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.retention import Retention, RetentionResult
from bodycam.device.hw.frames import EncodedPacket, StreamInfo

log = logging.getLogger(__name__)


class CameraFootage(Protocol):
    """A camera that encodes and writes footage itself (picamera2 with CircularOutput2)."""

    def start_recording(self, path_factory: Callable[[int], Path], include_buffer: bool = True) -> None: ...

    def stop_recording(self) -> None: ...

    def footage_error(self) -> str | None:
        """The first write error of the current recording (polled every frame), or None."""
        ...


def recording_id_for(wall_ns: int) -> str:
    """``20261125T120000.123Z`` -> ``20261125T120000123Z``: sortable, filename-safe."""
    text = rfc3339_ms(wall_ns)
    return text.replace("-", "").replace(":", "").replace(".", "")


def recover_interrupted(root: Path) -> list[str]:
    """Close recordings that a crash or power cut left ``complete: false``.

    Their segments are fragmented MP4, so what reached the disk plays; each file is hashed
    into the manifest, which is marked ``complete`` with ``recovered: true`` and an error
    saying what happened. Protection is kept as it was (retention may only delete them if
    unprotected). Returns the recording ids repaired.
    """
    import json

    from bodycam.device.footage.recording import write_atomic
    from bodycam.device.footage.segment_writer import sha256_of

    repaired = []
    for rec_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        path = rec_dir / "manifest.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable: leave it (retention treats it as protected)
        if not isinstance(manifest, dict) or manifest.get("complete", True):
            continue
        known = {s.get("file"): s for s in manifest.get("segments", []) if isinstance(s, dict)}
        segments = []
        for i, f in enumerate(sorted(rec_dir.glob("segment-*.mp4"))):
            seg = dict(known.get(f.name, {"index": i, "file": f.name}))
            try:
                seg["sha256"], seg["bytes"] = sha256_of(f), f.stat().st_size
            except OSError:
                seg["sha256"] = None
            segments.append(seg)
        manifest.update(segments=segments, complete=True, recovered=True,
                        error=manifest.get("error") or "interrupted (power loss or crash); recovered at start-up")
        try:
            write_atomic(path, json.dumps(manifest, indent=2).encode("utf-8") + b"\n")
        except StorageError:
            continue
        log.warning("recording %s was interrupted; recovered %d segment(s)", rec_dir.name, len(segments))
        repaired.append(rec_dir.name)
    return repaired


class Recorder:
    def __init__(self, data_dir: Path, device: str, cfg: RecordingConfig,
                 mono_to_wall: Callable[[int], int], retention: Retention | None = None,
                 camera_footage: CameraFootage | None = None) -> None:
        self.root = data_dir / "recordings"
        self.device = device
        self.cfg = cfg
        self.mono_to_wall = mono_to_wall
        self.retention = retention
        self.buffer = PreEventBuffer(cfg.pre_event_s)
        self.info: StreamInfo | None = None
        self.active: Recording | None = None
        self.finished: list[Recording] = []
        self.errors: list[str] = []
        self.storage_alarm = False
        self.camera_footage = camera_footage
        self.recovered: list[str] = []
        # finished segments are hashed here, off the frame loop (see Recording._schedule_hash)
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="footage-hash")

    def begin(self, info: StreamInfo) -> None:
        self.info = info
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.root}: cannot create the recordings directory ({exc.strerror or exc})") from exc
        self.recovered = recover_interrupted(self.root)



    def feed(self, packets: Iterable[EncodedPacket], t_ns: int | None = None) -> None:
        rec = self.active
        if rec is not None and rec.external:
            if t_ns is not None:
                rec.note_time(t_ns)
            error = self.camera_footage.footage_error() if self.camera_footage is not None else None
            if error is not None:  # a full card: the alarm goes up at the next frame
                self.fail(rec, error)
            return
        if rec is None:
            for p in packets:
                self.buffer.push(p)
            return
        try:
            for p in packets:
                rec.write(p)
        except StorageError as exc:
            self.fail(rec, str(exc))

    def start(self, reason: str, t_ns: int, include_buffer: bool = True) -> Recording | None:
        if self.active is not None:
            return self.active
        if self.info is None:
            raise RuntimeError("Recorder.begin() was not called")
        # retention is not run here: a detection must not wait for a directory scan (the
        # loop runs maintain() every few seconds)
        rid = recording_id_for(self.mono_to_wall(t_ns))
        path = self.root / rid
        n = 1
        while path.exists():
            n += 1
            path = self.root / f"{rid}-{n}"
        rec = Recording(self.root, path.name, self.device, reason, self.info,
                        int(self.cfg.segment_s * 1e9), self.mono_to_wall, hasher=self._hasher)
        try:
            path.mkdir(parents=True)
            rec.write_manifest()
        except (OSError, StorageError) as exc:
            self.fail(rec, f"{path}: cannot start a recording ({exc})")
            return None
        self.active = rec
        if self.camera_footage is not None:
            try:
                self.camera_footage.start_recording(lambda i: path / f"segment-{i:05d}.mp4", include_buffer)
            except (OSError, BodycamError) as exc:
                self.fail(rec, f"{path}: the camera cannot start recording ({exc})")
                return None
            rec.begin_external(t_ns - int(self.cfg.pre_event_s * 1e9) if include_buffer else t_ns)
            log.info("recording %s started (%s), written by the camera", rec.recording_id, reason)
            return rec
        buffered = self.buffer.drain() if include_buffer else []
        if not include_buffer:
            self.buffer.clear()
        self.feed(buffered)
        log.info("recording %s started (%s), %d buffered packets", rec.recording_id, reason, len(buffered))
        return rec

    def stop(self) -> Recording | None:
        rec, self.active = self.active, None
        if rec is None:
            return None
        try:
            if rec.external and self.camera_footage is not None:
                self.camera_footage.stop_recording()
                error = self.camera_footage.footage_error()
                if error is not None:
                    raise StorageError(error)
            rec.finish()
        except (StorageError, OSError) as exc:
            self.fail(rec, str(exc))
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
        self.storage_alarm = result.alarm
        return result

    def fail(self, rec: Recording, message: str) -> None:
        log.error("recording %s failed: %s", rec.recording_id, message)
        self.errors.append(message)
        self.storage_alarm = True
        if rec.external and self.camera_footage is not None and self.active is rec:
            try:  # the camera goes back to its pre-event buffer; what it wrote stays on disk
                self.camera_footage.stop_recording()
            except (OSError, BodycamError) as exc:
                log.error("recording %s: the camera did not stop recording: %s", rec.recording_id, exc)
        rec.fail(message)
        if self.active is rec:
            self.active = None
            self.finished.append(rec)
