"""``bodycam-base export-dataset OUT [--since T] [--until T] [--device D] [--reviewed-only]`` (issue 15, item 2).

Turns reviewed range footage into a data set in the project's truth format (``bodycam.truth/1``, the
format ``bodycam-model build --data`` reads; ``hw_sim/truth.py``)::

    OUT/
        train/ val/ test/            one split per recording: sha256("<device>/<recording>"), as
                                     model_compile/dataset.py splits a flat folder (10 % test, 10 % val):
                                     stable across exports, so a recording is in the same split every time
            <device>_<rec>.mp4       the whole recording (its segments joined as for review: the camera's
            <device>_<rec>.truth.json  own H.264, remuxed, not re-encoded) and its shots
            <device>_<rec>_free-<a>-<b>.mp4 / .truth.json   each shot-free span (frames a..b), a clip with
                                     no shot (re-encoded: H.264 cuts only at keyframes without it)
        dataset.json                 provenance: every recording (manifest SHA-256, signing key, segment
                                     hashes), its labels in force with who and when, the reviewers, the
                                     models whose markers were reviewed, every file's SHA-256

Which recordings: those stored at base in the selection with labels in force. A recording is
*reviewed* when each detection has a verdict; ``--reviewed-only`` takes only those. Otherwise a
detection nobody decided counts as a shot at its own frame (the detector's word; ``dataset.json``
says so per recording). The shots of a clip: confirmed and moved detections, added shots.

Refused, before anything is written (``OUT`` appears only at the end, renamed from a temporary
folder beside it): a selection without labels in force; a stored file whose SHA-256 (or a decrypted
segment's plaintext hash) no longer matches its manifest, or a manifest that is not the one verified
on receipt; markers that do not pass ``bodycam verify``'s checks (``review_footage.MarkerCheck``: the
manifest's signature by the registered key, the markers file's hash as signed, each marker's device,
signature, order and chain), so a detection forged into stored evidence never becomes a shot; a label
outside its recording; footage base cannot decrypt; a clip whose frames are not on
the ``i / fps`` grid the truth format needs. Each exported recording gets an ``exported`` custody entry.
The clips are made afresh from the evidence just checked, never from base's cached working copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from bodycam.base.custody import StoredRecording
from bodycam.base.review import Review, progress, shot_frames
from bodycam.base.review_footage import FootageUnavailable, RecordingInfo
from bodycam.base.review_labels import Label, current
from bodycam.device.clock import rfc3339_ms
from bodycam.device.errors import BodycamError, UsageError
from bodycam.device.footage.seal import MANIFEST_FILE, MARKERS_FILE
from bodycam.device.footage.segment_writer import sha256_of

SCHEMA = "bodycam.dataset/1"
TRUTH_SCHEMA = "bodycam.truth/1"
GENERATOR = "bodycam-base"
GENERATOR_VERSION = "export-dataset/1"
SPLITS = ("train", "val", "test")
MAX_GRID_ERROR = 0.25  # frames: how far a frame's time may be from i / fps


class ExportRefused(BodycamError):
    """The export cannot be made as asked (the reason names the recording and the file)."""


@dataclass(frozen=True)
class DatasetExport:
    out: Path
    recordings: int
    clips: int
    shots: int
    negatives: int
    splits: dict[str, int]


def split_of(device: str, recording: str) -> str:
    """The split of a recording: the hash rule of model_compile's flat folders, on ``device/recording``."""
    bucket = int(hashlib.sha256(f"{device}/{recording}".encode()).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"



@dataclass
class _Chosen:
    stored: StoredRecording
    info: RecordingInfo
    labels: list[Label]  # in force
    history: list[Label]
    reviewed: bool


def _check_hashes(rv: Review, c: _Chosen) -> None:
    """The stored files are the ones the manifest signed and the manifest the one verified on receipt."""
    where = f"{c.stored.device}/{c.stored.recording}"
    with rv.evidence.open(c.stored.device, c.stored.recording, MANIFEST_FILE) as fh:
        if hashlib.sha256(fh.read()).hexdigest() != c.stored.manifest_sha256:
            raise ExportRefused(f"{where}: {MANIFEST_FILE} is not the manifest base verified on receipt "
                                "(its SHA-256 changed): refused")
    for seg in c.info.manifest.get("segments") or []:
        name = str(seg.get("file"))
        h = hashlib.sha256()
        with rv.evidence.open(c.stored.device, c.stored.recording, name) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != seg.get("sha256"):
            raise ExportRefused(f"{where}/{name}: its SHA-256 no longer matches the signed manifest "
                                "(the footage changed since it was verified): refused")
    markers = None
    if MARKERS_FILE in rv.evidence.files(c.stored.device, c.stored.recording):
        with rv.evidence.open(c.stored.device, c.stored.recording, MARKERS_FILE) as fh:
            markers = hashlib.sha256(fh.read()).hexdigest()
    if markers != c.info.manifest.get("markers_sha256"):
        raise ExportRefused(f"{where}/{MARKERS_FILE}: its SHA-256 no longer matches the signed manifest "
                            "(the markers changed since they were verified): refused")


def _probe(path: Path, fps: float) -> tuple[int, int, int, int, int | None]:
    """(frames, width, height, worst grid error in 1/1000 frame, audio sample rate) of a clip."""
    import av

    with av.open(str(path)) as c:
        vs: Any = c.streams.video[0]
        rate = c.streams.audio[0].sample_rate if c.streams.audio else None
        pts = sorted(int(p.pts) for p in c.demux(vs) if p.pts is not None)
        tb = vs.time_base
        width, height = vs.codec_context.width, vs.codec_context.height
    t0 = pts[0] if pts else 0
    worst = max((abs(float((p - t0) * tb) * fps - i) for i, p in enumerate(pts)), default=0.0)
    return len(pts), width, height, round(worst * 1000), rate


def truth_doc(clip: str, fps: float, frames: int, width: int, height: int, rate: int | None,
              shots: list[int]) -> dict[str, Any]:
    """A ``bodycam.truth/1`` object (``hw_sim/truth.py`` documents and reads the format; base does not
    import the simulator, so the fields are written here and checked against its reader in the tests)."""
    sr = rate or 48000
    return {
        "schema": TRUTH_SCHEMA, "clip": clip,
        "generator": {"name": GENERATOR, "version": GENERATOR_VERSION, "seed": 0, "scene": "range"},
        "video": {"width": width, "height": height, "fps": fps, "frames": frames, "duration_s": frames / fps},
        "audio": {"sample_rate": sr, "samples": round(frames / fps * sr) if rate else 0},
        "shots": [{"frame": f, "t_s": f / fps, "audio_sample": round(f / fps * sr), "muzzle_xy": None,
                   "shooter": "wearer", "flash_frames": 1, "intensity": 1.0, "occluded": False,
                   "weapon": "pistol"} for f in sorted(set(shots))],
        "distractors": [],
        "weapon": [],
    }


def _save(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def cut_span(src: Path, first: int, last: int, fps: float, out: Path) -> int:
    """Frames ``first..last`` of ``src`` (and their sound) re-encoded into ``out``; returns the frames."""
    import av
    import numpy as np

    rate = Fraction(fps).limit_denominator(1001)
    n = 0
    with av.open(str(src)) as inp, av.open(str(out), "w", format="mp4") as dst:
        vin: Any = inp.streams.video[0]
        t0 = int(vin.start_time or 0)
        vs = dst.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vs.options = {"crf": "16", "preset": "veryfast", "g": str(max(1, round(fps))), "x264-params": "bframes=0"}
        vs.codec_context.time_base = 1 / rate
        ain: Any = inp.streams.audio[0] if inp.streams.audio else None
        aus = None
        if ain is not None:
            aus = dst.add_stream("aac", rate=ain.sample_rate)
            aus.layout = "mono"
        inp.seek(t0 + int(first / fps / vin.time_base), stream=vin, backward=True)
        for frame in inp.decode(vin):
            i = round(float((int(frame.pts) - t0) * vin.time_base) * fps)
            if i > last:
                break
            if i < first:
                continue
            f = av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
            f.pts, f.time_base = n, 1 / rate
            for p in vs.encode(f):
                dst.mux(p)
            n += 1
        for p in vs.encode():
            dst.mux(p)
        if ain is not None and aus is not None:
            sr = ain.sample_rate
            a0, a1 = round(first / fps * sr), round((last + 1) / fps * sr)
            inp.seek(0)
            chunks = []
            for aframe in inp.decode(ain):
                if aframe.pts is None:
                    continue
                s0 = round(float(aframe.pts * aframe.time_base) * sr)
                data = aframe.to_ndarray()
                channels = len(aframe.layout.channels)
                mono = data.mean(axis=0) if aframe.format.is_planar else data.reshape(-1, channels).mean(axis=1)
                lo, hi = max(a0, s0), min(a1, s0 + mono.shape[0])
                if hi > lo:
                    chunks.append(mono[lo - s0:hi - s0].astype(np.float32))
                if s0 > a1:
                    break
            pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            for k in range(0, pcm.shape[0], 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[None, k:k + 1024]), format="fltp",
                                                layout="mono")
                af.sample_rate, af.pts, af.time_base = sr, k, Fraction(1, sr)
                for p in aus.encode(af):
                    dst.mux(p)
            for p in aus.encode():
                dst.mux(p)
    return n


def export_dataset(out: Path, rv: Review, *, actor: str, now_ns: int, device: str | None = None,
                   since: str | None = None, until: str | None = None, reviewed_only: bool = False) -> DatasetExport:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out}: exists and is not empty (a data set is written once)")
    held = [r for r in rv.custody.stored(device)
            if (since is None or r.recording >= since) and (until is None or r.recording < until)]
    chosen: list[_Chosen] = []
    all_labels = rv.labels.labels(device)
    for r in held:
        history = [lb for lb in all_labels if (lb.device, lb.recording) == (r.device, r.recording)]
        now = current(history)
        if not now:
            continue
        try:
            info = rv.info(r.device, r.recording)  # its markers checked as bodycam verify does
        except FootageUnavailable as exc:
            raise ExportRefused(f"{exc}: refused") from exc
        done = progress(info, history).reviewed
        if reviewed_only and not done:
            continue
        chosen.append(_Chosen(r, info, now, history, done))
    if not chosen:
        what = "reviewed recordings (every detection decided)" if reviewed_only else "reviewed labels"
        raise UsageError(f"no {what} in the selection ({len(held)} recording(s) held at base match it): "
                         "review them first (dashboard /review or its API); nothing written")
    for c in chosen:  # everything is checked before anything is written
        _check_hashes(rv, c)
        tl = c.info.timeline
        for lb in c.labels:
            for f in (lb.frame, lb.end_frame):
                if f is not None and not 0 <= f < tl.frames:
                    raise ExportRefused(f"{tl.device}/{tl.recording}: label {lb.n} ({lb.kind} at frame {f}) is "
                                        f"outside the recording (frames 0..{tl.frames - 1}): refused")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        result = _write(tmp, out, rv, chosen, actor=actor, now_ns=now_ns,
                        selection={"device": device, "since": since, "until": until, "reviewed_only": reviewed_only})
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with rv.custody.transaction() as tx:
        for c in chosen:
            rv.custody.append(tx, now_ns, actor, "exported", c.stored.device, c.stored.recording,
                              {"dataset": str(out), "split": split_of(c.stored.device, c.stored.recording)})
    return result


def _write(tmp: Path, out: Path, rv: Review, chosen: list[_Chosen], *, actor: str, now_ns: int,
           selection: dict[str, Any]) -> DatasetExport:
    recs: list[dict[str, Any]] = []
    counts = dict.fromkeys(SPLITS, 0)
    clips = shots_total = negatives = 0
    for c in chosen:
        d, r = c.stored.device, c.stored.recording
        tl = c.info.timeline
        split = split_of(d, r)
        counts[split] += 1
        folder = tmp / split
        folder.mkdir(exist_ok=True)
        stem = f"{d}_{r}"
        review_file = folder / f"{stem}.mp4"
        work = tmp / ".work"
        try:  # made afresh from the evidence just checked (decrypted segments checked against the manifest)
            rv.copies.build(c.info, work, review_file)
        except FootageUnavailable as exc:
            raise ExportRefused(f"{d}/{r}: {exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
        frames, width, height, grid, rate = _probe(review_file, tl.fps)
        if frames != tl.frames:
            raise ExportRefused(f"{d}/{r}: the footage has {frames} frames, its manifest says {tl.frames}: refused")
        if grid > MAX_GRID_ERROR * 1000:
            raise ExportRefused(f"{d}/{r}: frames are up to {grid / 1000:.2f} frame off the i/fps grid "
                                "(variable frame rate): the truth format cannot place them")
        clip_rows: list[dict[str, Any]] = []
        shots = shot_frames(c.info, c.labels, unreviewed_as_shots=not c.reviewed)
        _save(truth_doc(f"{stem}.mp4", tl.fps, frames, width, height, rate, shots), folder / f"{stem}.truth.json")
        clip_rows.append({"clip": f"{split}/{stem}.mp4", "kind": "recording", "frames": [0, frames - 1],
                          "shots": shots})
        shots_total += len(shots)
        for lb in sorted((lb for lb in c.labels if lb.kind == "shot_free"), key=lambda x: x.frame):
            assert lb.end_frame is not None
            name = f"{stem}_free-{lb.frame:06d}-{lb.end_frame:06d}"
            n = cut_span(review_file, lb.frame, lb.end_frame, tl.fps, folder / f"{name}.mp4")
            got, w2, h2, _, rate2 = _probe(folder / f"{name}.mp4", tl.fps)
            if got != n or n != lb.end_frame - lb.frame + 1:
                raise ExportRefused(f"{d}/{r}: the shot-free span {lb.frame}..{lb.end_frame} came out as {got} "
                                    "frames")
            _save(truth_doc(f"{name}.mp4", tl.fps, got, w2, h2, rate2, []), folder / f"{name}.truth.json")
            clip_rows.append({"clip": f"{split}/{name}.mp4", "kind": "shot_free", "frames": [lb.frame, lb.end_frame],
                              "label": lb.n, "shots": []})
            negatives += 1
        clips += len(clip_rows)
        decided = {lb.marker for lb in c.labels if lb.marker is not None}
        recs.append({
            "device": d, "recording": r, "split": split, "manifest_sha256": c.stored.manifest_sha256,
            "key": c.info.manifest.get("key"), "encrypted": c.info.encrypted,
            "segments": [{k: s.get(k) for k in ("file", "sha256", "plain_sha256") if k in s}
                         for s in c.info.manifest.get("segments") or []],
            "fps": tl.fps, "frames": tl.frames, "reviewed": c.reviewed,
            "undecided_detections_as_shots": [] if c.reviewed else
            [x.marker for x in tl.detections if x.marker not in decided],
            "reviewers": sorted({lb.by for lb in c.labels}),
            "models": sorted({x.model for x in tl.detections}),
            "labels": [lb.to_json() for lb in c.labels],
            "label_history": len(c.history),
            "clips": clip_rows,
        })
    files = {str(p.relative_to(tmp)): sha256_of(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    doc = {
        "schema": SCHEMA, "exported_by": actor, "exported_utc": rfc3339_ms(now_ns), "out": str(out),
        "selection": selection, "truth_schema": "bodycam.truth/1",
        "split_rule": "sha256('<device>/<recording>'): first 8 hex digits mod 10: 0 test, 1 val, else train",
        "splits": counts, "reviewers": sorted({x for rec in recs for x in rec["reviewers"]}),
        "models": sorted({x for rec in recs for x in rec["models"]}),
        "recordings": recs, "files": files,
    }
    (tmp / "dataset.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return DatasetExport(out, len(recs), clips, shots_total, negatives, counts)
