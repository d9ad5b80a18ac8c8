"""Review labels at base (issue 15, item 1): an instructor's verdicts on a recording, a layer of their own.

The markers a camera signed are never changed: a label only *refers* to one (by its id) or to frames of
the recording's timeline (frame 0 = the first frame of ``segment-00000``; the timeline of
``chapters.vtt``). One table, ``review_labels``, in the store's own database (SQLite or PostgreSQL,
beside ``custody_audit``), **append-only** like the custody log (triggers refuse UPDATE, DELETE and, on
PostgreSQL, TRUNCATE; on SQLite an INSERT replacing a row: ``custody.sqlite_guards``). Each row keeps who (``by``), when (``t_ns``, base's clock) and what it replaced
(``replaces``: the label it supersedes, each label superseded at most once -- a unique index, so two
reviewers changing the same label at once cannot both win). The current labels of a recording are the
rows nobody replaced, less the ``withdraw`` rows.

Kinds:

``confirm`` / ``reject``  a detection marker is / is not a shot (``frame``: the marker's frame)
``move``                  a detection marker is a shot, at ``frame`` (moved by the reviewer)
``add``                   a shot the detector missed, at ``frame``
``shot_free``             frames ``frame..end_frame`` (inclusive) hold no shot
``withdraw``              the label it replaces no longer holds (an added shot or span taken back)

Every label is checked at entry against its recording (:class:`Timeline`): a frame outside the
recording, a marker that is not a detection of this recording, an empty span, a verdict replacing a
label of another recording or one already replaced: :class:`LabelError` naming the problem, nothing
written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bodycam.base.custody import CustodyStore, by_recording, create_append_only_table
from bodycam.base.rules import Tx
from bodycam.device.errors import UsageError

KINDS = ("confirm", "reject", "move", "add", "shot_free", "withdraw")
MARKER_KINDS = frozenset({"confirm", "reject", "move"})  # a verdict on a detection marker
SHOT_KINDS = frozenset({"confirm", "move", "add"})  # the label says: a shot at ``frame``
MAX_NOTE = 500
_NOTE_BAD = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class LabelError(UsageError):
    """A label base will not take (outside its recording, on an unknown marker, a stale replace, ...)."""


def _tables(serial: str) -> tuple[str, ...]:
    return (
        f"CREATE TABLE IF NOT EXISTS review_labels (n {serial}, device TEXT NOT NULL, recording TEXT NOT NULL,"
        " kind TEXT NOT NULL, marker TEXT, frame BIGINT NOT NULL, end_frame BIGINT, replaces BIGINT,"
        " by_user TEXT NOT NULL, t_ns BIGINT NOT NULL, note TEXT NOT NULL DEFAULT '')",
        "CREATE INDEX IF NOT EXISTS review_labels_recording ON review_labels(device, recording, n)",
        "CREATE UNIQUE INDEX IF NOT EXISTS review_labels_replaces ON review_labels(replaces)",
    )


@dataclass(frozen=True)
class Detection:
    """A detection marker of a recording, on the recording's timeline."""

    marker: str
    kind: str
    frame: int
    confidence: float | None
    model: str  # "name version" of the model that made it
    t: str  # the marker's wall time


@dataclass(frozen=True)
class Timeline:
    """What a label is checked against: the recording's frames and its detection markers."""

    device: str
    recording: str
    fps: float
    frames: int
    detections: tuple[Detection, ...]

    def detection(self, marker: str) -> Detection | None:
        return next((d for d in self.detections if d.marker == marker), None)


@dataclass(frozen=True)
class Label:
    n: int
    device: str
    recording: str
    kind: str
    marker: str | None
    frame: int
    end_frame: int | None
    replaces: int | None
    by: str
    t_ns: int
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "device": self.device, "recording": self.recording, "kind": self.kind,
                "marker": self.marker, "frame": self.frame, "end_frame": self.end_frame, "replaces": self.replaces,
                "by": self.by, "t_ns": self.t_ns, "note": self.note}


@dataclass(frozen=True)
class NewLabel:
    """What a reviewer asks for (the API's JSON body)."""

    kind: str
    frame: int | None = None
    end_frame: int | None = None
    marker: str | None = None
    replaces: int | None = None
    note: str = ""

    @classmethod
    def from_json(cls, obj: Any) -> NewLabel:
        if not isinstance(obj, dict):
            raise LabelError("a label is a JSON object")
        unknown = sorted(set(obj) - {"kind", "frame", "end_frame", "marker", "replaces", "note"})
        if unknown:
            raise LabelError(f"unknown field(s) {', '.join(unknown)}")

        def opt_int(key: str) -> int | None:
            v = obj.get(key)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int) or not -(2**62) < v < 2**62:
                raise LabelError(f"{key}: expected an integer, got {v!r}")
            return v

        kind = obj.get("kind")
        if kind not in KINDS:
            raise LabelError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
        marker = obj.get("marker")
        if marker is not None and (not isinstance(marker, str) or not 0 < len(marker) <= 128):
            raise LabelError("marker: expected a marker id")
        note = obj.get("note", "")
        if not isinstance(note, str) or len(note) > MAX_NOTE or _NOTE_BAD.search(note):
            raise LabelError(f"note: at most {MAX_NOTE} characters of text")
        try:
            note.encode("utf-8")
        except UnicodeEncodeError:
            raise LabelError("note: not valid text") from None
        return cls(str(kind), opt_int("frame"), opt_int("end_frame"), marker, opt_int("replaces"), note)


def _row(r: Sequence[Any]) -> Label:
    return Label(int(r[0]), str(r[1]), str(r[2]), str(r[3]), None if r[4] is None else str(r[4]), int(r[5]),
                 None if r[6] is None else int(r[6]), None if r[7] is None else int(r[7]), str(r[8]), int(r[9]),
                 str(r[10]))


_COLUMNS = "n, device, recording, kind, marker, frame, end_frame, replaces, by_user, t_ns, note"


def current(labels: Sequence[Label]) -> list[Label]:
    """The labels in force: not replaced by a later one, and not withdrawals."""
    replaced = {lb.replaces for lb in labels if lb.replaces is not None}
    return [lb for lb in labels if lb.n not in replaced and lb.kind != "withdraw"]


class LabelStore:
    def __init__(self, store: CustodyStore) -> None:
        self._store = store
        create_append_only_table(store, _tables, "review_labels")

    def labels(self, device: str | None = None, recording: str | None = None) -> list[Label]:
        """Every label (history included), oldest first."""
        sql = f"SELECT {_COLUMNS} FROM review_labels"
        clause, args = by_recording(device, recording)
        sql += clause
        return [_row(r) for r in self._store.read(sql + " ORDER BY n", args)]

    def current(self, device: str, recording: str) -> list[Label]:
        return current(self.labels(device, recording))

    def add(self, tl: Timeline, new: NewLabel, *, by: str, t_ns: int) -> Label:
        """Check ``new`` against the recording and append it (one transaction); :class:`LabelError` if not."""
        refused: LabelError | None = None  # raised outside: the store turns errors inside into StorageError
        with self._store.transaction() as tx:
            try:
                label = self._checked(tx, tl, new, by, t_ns)
            except LabelError as exc:
                refused = exc
            row = None if refused else tx.one(f"INSERT INTO review_labels(device, recording, kind, marker, frame, end_frame, replaces,"
                         f" by_user, t_ns, note) VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING {_COLUMNS}",
                         (label.device, label.recording, label.kind, label.marker, label.frame, label.end_frame,
                          label.replaces, label.by, label.t_ns, label.note))
        if refused is not None:
            raise refused
        assert row is not None
        return _row(row)

    def _checked(self, tx: Tx, tl: Timeline, new: NewLabel, by: str, t_ns: int) -> Label:
        where = f"{tl.device}/{tl.recording}"
        last = tl.frames - 1

        def in_recording(frame: int | None, what: str) -> int:
            if frame is None:
                raise LabelError(f"{what}: a frame is required")
            if not 0 <= frame <= last:
                raise LabelError(f"{what} {frame} is outside recording {where} (frames 0..{last})")
            return frame

        replaces = new.replaces
        old: Label | None = None
        if replaces is not None:
            r = tx.one(f"SELECT {_COLUMNS} FROM review_labels WHERE n=?", (replaces,))
            if r is None:
                raise LabelError(f"replaces: there is no label {replaces}")
            old = _row(r)
            if (old.device, old.recording) != (tl.device, tl.recording):
                raise LabelError(f"replaces: label {replaces} is of another recording")
            if old.kind == "withdraw":
                raise LabelError(f"replaces: label {replaces} is a withdrawal")
        marker = new.marker
        end: int | None = None
        if new.kind in MARKER_KINDS:
            if marker is None:
                raise LabelError(f"{new.kind}: which detection marker (marker)?")
            det = tl.detection(marker)
            if det is None:
                raise LabelError(f"marker {marker} is not a detection of recording {where}")
            frame = det.frame if new.kind != "move" else in_recording(new.frame, "move: frame")
            if new.kind == "move" and frame == det.frame:
                raise LabelError("move: the frame is the marker's own (confirm it instead)")
            # a verdict on a marker replaces the verdict in force on it, if any
            in_force = [lb for lb in current(self._rows(tx, tl)) if lb.marker == marker]
            if in_force:
                if replaces is None:
                    replaces = in_force[0].n
                elif replaces != in_force[0].n:
                    raise LabelError(f"marker {marker}: the verdict in force is label {in_force[0].n}, not {replaces}")
            elif replaces is not None:
                raise LabelError(f"replaces: label {replaces} is not the verdict in force on marker {marker}")
        elif new.kind == "withdraw":
            if old is None:
                raise LabelError("withdraw: which label (replaces)?")
            if old.kind in MARKER_KINDS:
                raise LabelError("withdraw: a verdict on a marker is changed by another verdict, not withdrawn")
            marker, frame, end = None, old.frame, old.end_frame
        else:
            if marker is not None:
                raise LabelError(f"{new.kind}: names no marker")
            if old is not None and old.kind != new.kind:
                raise LabelError(f"replaces: label {replaces} is a {old.kind}, not a {new.kind}")
            frame = in_recording(new.frame, f"{new.kind}: frame")
            if new.kind == "shot_free":
                end = in_recording(new.end_frame, "shot_free: end_frame")
                if end < frame:
                    raise LabelError(f"shot_free: end_frame {end} is before frame {frame}")
        if replaces is not None and tx.one("SELECT n FROM review_labels WHERE replaces=?", (replaces,)) is not None:
            raise LabelError(f"label {replaces} was already replaced (reload: someone else changed it)")
        return Label(0, tl.device, tl.recording, new.kind, marker, frame, end, replaces, by, t_ns, new.note)

    def _rows(self, tx: Tx, tl: Timeline) -> list[Label]:
        return [_row(r) for r in tx.all(f"SELECT {_COLUMNS} FROM review_labels WHERE device=? AND recording=?"
                                        " ORDER BY n", (tl.device, tl.recording))]
