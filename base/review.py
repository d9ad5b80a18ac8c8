"""Review at base (issue 15, item 1): stored recordings, their detections and an instructor's labels.

:class:`Review` is what the dashboard's review pages and JSON API (``base/web/review.py``) and the
data set export (``base/export_dataset.py``) call; it knows nothing of HTTP. It reads recordings from
the evidence store (``base/evidence_store.py``, never written here), keeps labels in
``review_labels`` (``base/review_labels.py``, append-only, who/when/what it replaced) and plays
footage from base's working copies (``base/review_footage.py``: decrypted and joined). Every file a
reviewer opens is audited ``viewed`` in the custody log, as on the evidence pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bodycam.base.custody import CustodyLog, StoredRecording
from bodycam.base.evidence_store import EvidenceStore
from bodycam.base.keys import KeyRegistry
from bodycam.base.review_footage import (
    FootageUnavailable,
    MarkerCheck,
    RecordingInfo,
    WorkingCopies,
    read_info,
)
from bodycam.base.review_labels import MARKER_KINDS, Label, LabelStore, NewLabel, current
from bodycam.device.errors import UsageError
from bodycam.device.uplink.offload_wire import RECORDING_RE
from bodycam.device.uplink.validate import is_device_id


class NoSuchRecording(UsageError):
    """Base holds no such recording."""


@dataclass(frozen=True)
class Progress:
    """How far the review of one recording is."""

    detections: int
    decided: int  # detections with a verdict in force
    added: int
    shot_free: int
    reviewers: tuple[str, ...]

    @property
    def reviewed(self) -> bool:
        """Every detection has a verdict and the recording has at least one label."""
        return self.decided == self.detections and (self.detections + self.added + self.shot_free) > 0

    def to_json(self) -> dict[str, Any]:
        return {"detections": self.detections, "decided": self.decided, "added": self.added,
                "shot_free": self.shot_free, "reviewers": list(self.reviewers), "reviewed": self.reviewed}


def progress(info: RecordingInfo, history: list[Label]) -> Progress:
    now = current(history)
    decided = {lb.marker for lb in now if lb.kind in MARKER_KINDS}
    return Progress(len(info.timeline.detections), sum(d.marker in decided for d in info.timeline.detections),
                    sum(lb.kind == "add" for lb in now), sum(lb.kind == "shot_free" for lb in now),
                    tuple(sorted({lb.by for lb in now})))


def shot_frames(info: RecordingInfo, labels_now: list[Label], *, unreviewed_as_shots: bool) -> list[int]:
    """The frames of the shots the labels say (confirmed, moved, added); detections without a verdict
    count as shots at their own frame when ``unreviewed_as_shots``."""
    frames = {lb.frame for lb in labels_now if lb.kind in ("confirm", "move", "add")}
    if unreviewed_as_shots:
        decided = {lb.marker for lb in labels_now if lb.kind in MARKER_KINDS}
        frames |= {d.frame for d in info.timeline.detections if d.marker not in decided}
    return sorted(frames)


class Review:
    def __init__(self, evidence: EvidenceStore, custody: CustodyLog, labels: LabelStore,
                 copies: WorkingCopies, keys: KeyRegistry) -> None:
        """``keys``: the devices' registered keys, which the stored markers must verify with (a recording
        whose markers do not is not reviewed or exported: ``MarkersUnverified``, with the reason)."""
        self.evidence = evidence
        self.custody = custody
        self.labels = labels
        self.copies = copies
        self.markers = MarkerCheck(keys)

    def held(self, device: str, recording: str) -> StoredRecording:
        if not is_device_id(device) or not RECORDING_RE.fullmatch(recording):
            raise NoSuchRecording(f"{device!r}/{recording!r} is not a recording id")
        found = self.custody.stored(device, recording)
        if not found:
            raise NoSuchRecording(f"base holds no recording {recording} of {device}")
        return found[0]

    def info(self, device: str, recording: str) -> RecordingInfo:
        self.held(device, recording)
        return read_info(self.evidence, device, recording, self.markers)

    def recordings(self) -> list[tuple[StoredRecording, Progress]]:
        out = []
        all_labels = self.labels.labels()
        for r in self.custody.stored():
            mine = [lb for lb in all_labels if (lb.device, lb.recording) == (r.device, r.recording)]
            try:
                info = read_info(self.evidence, r.device, r.recording, self.markers)
            except FootageUnavailable:  # no footage to review (the page says why)
                out.append((r, Progress(0, 0, 0, 0, tuple(sorted({lb.by for lb in current(mine)})))))
                continue
            out.append((r, progress(info, mine)))
        return out

    def state(self, device: str, recording: str) -> dict[str, Any]:
        """Everything the review page and the API show of one recording."""
        info = self.info(device, recording)
        history = self.labels.labels(device, recording)
        start = info.segments[0].start_mono_ns
        tl = info.timeline
        markers = []
        for m in info.markers:
            t = m.get("t_mono_ns")
            frame = min(tl.frames - 1, max(0, round((t - start) * tl.fps / 1e9))) if isinstance(t, int) else None
            markers.append({"id": m.get("id"), "kind": m.get("kind"), "t": m.get("t"), "frame": frame,
                            "confidence": m.get("confidence")})
        return {
            "device": device, "recording": recording, "fps": tl.fps, "frames": tl.frames,
            "encrypted": info.encrypted,
            "detections": [{"marker": d.marker, "kind": d.kind, "frame": d.frame, "confidence": d.confidence,
                            "model": d.model, "t": d.t} for d in tl.detections],
            "markers": markers,
            "labels": [lb.to_json() for lb in current(history)],
            "history": [lb.to_json() for lb in history],
            "progress": progress(info, history).to_json(),
        }

    def add_label(self, device: str, recording: str, new: NewLabel, *, by: str, t_ns: int) -> Label:
        info = self.info(device, recording)
        return self.labels.add(info.timeline, new, by=by, t_ns=t_ns)

    def video(self, device: str, recording: str) -> Path:
        """The playable file of a recording (raises FootageUnavailable with the reason)."""
        return self.copies.review_file(self.info(device, recording))

    def viewed(self, t_ns: int, user: str, device: str, recording: str, name: str) -> None:
        self.custody.record(t_ns, user, "viewed", device, recording, {"file": name, "for": "review"})
