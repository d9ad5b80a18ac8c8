"""Clips with truth files: discovery, deterministic splits, decoded low-res frames.

A data folder is either split already (``train/``, ``val/``, ``test/`` sub-folders,
as ``bodycam-sim make-dataset`` writes them) or a flat folder of clips (a force's own
range footage), which is split deterministically by a hash of each clip's name.
Every clip ``NAME.mp4`` needs ``NAME.truth.json`` (``bodycam.truth/1``).

Frames are decoded exactly as the simulated camera does
(:func:`bodycam.hw_sim.clip_camera.read_lores`) and cached once per clip and size in
``.lores/NAME.WxH.npz`` next to the clip, keyed by the clip's size and mtime.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import ClipError, TruthError, UsageError
from bodycam.hw_sim.clip_camera import read_lores
from bodycam.hw_sim.truth import Truth, load_truth, truth_path_for

SPLITS = ("train", "val", "test")
HELDOUT = "heldout"  # clips of held-out families (make-dataset --families): never a training split
CLIP_SUFFIXES = (".mp4", ".mkv", ".mov")
CACHE_DIR = ".lores"
TRUTH_FIX = "write a bodycam.truth/1 file next to it (bodycam-sim make-clip writes one) or remove the clip"


@dataclass(frozen=True)
class ClipData:
    """One decoded clip: its truth, frame times and low-res RGB frames."""

    path: Path
    truth: Truth
    times_ns: npt.NDArray[np.int64]
    frames: npt.NDArray[np.uint8]  # (T, H, W, 3)
    sha256: str

    @property
    def fps(self) -> float:
        return self.truth.video.fps

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def _clips_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CLIP_SUFFIXES)


def _hash_split(name: str) -> str:
    bucket = int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def find_splits(root: Path) -> dict[str, list[Path]]:
    """Clips of each split under ``root`` (sub-folders, or a deterministic hash split)."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: data folder not found; fix: pass --data DIR with clips and truth files")
    if any((root / s).is_dir() for s in SPLITS):
        out = {s: (_clips_in(root / s) if (root / s).is_dir() else []) for s in SPLITS}
    else:
        out = {s: [] for s in SPLITS}
        for clip in _clips_in(root):
            out[_hash_split(clip.name)].append(clip)
    if not any(out.values()):
        raise UsageError(
            f"{root}: no clips ({'/'.join(CLIP_SUFFIXES)}) found, neither in the folder nor in "
            f"{'/'.join(SPLITS)}/ sub-folders; fix: make some with `bodycam-sim make-dataset {root}`"
        )
    return out


def clips_for(root: Path, split: str) -> list[Path]:
    """The clips of one split (``all``: every clip found)."""
    if split == HELDOUT:
        clips = _clips_in(Path(root) / HELDOUT) if (Path(root) / HELDOUT).is_dir() else []
        if not clips:
            raise UsageError(f"{root}: no {HELDOUT}/ clips; fix: make them with `bodycam-sim make-dataset --families`")
        return clips
    splits = find_splits(root)
    if split == "all":
        return [c for s in SPLITS for c in splits[s]]
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}, {HELDOUT} or all")
    if not splits[split]:
        raise UsageError(f"{root}: the {split} split has no clips; fix: add clips to {root / split} or pick another split")
    return splits[split]


def truth_for(clip: Path) -> Truth:
    tpath = truth_path_for(clip)
    if not tpath.is_file():
        raise TruthError(f"{clip}: no truth file {tpath.name} next to the clip; fix: {TRUTH_FIX}")
    return load_truth(tpath)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_path(clip: Path, size: tuple[int, int]) -> Path:
    return clip.parent / CACHE_DIR / f"{clip.stem}.{size[0]}x{size[1]}.npz"


def _read_cache(
    path: Path, stat: os.stat_result
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], str] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            key = z["key"]
            if int(key[0]) != stat.st_size or int(key[1]) != stat.st_mtime_ns:
                return None
            return z["times_ns"].astype(np.int64), z["frames"].astype(np.uint8), str(z["sha256"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _write_cache(path: Path, stat: os.stat_result, times: npt.NDArray[np.int64], frames: npt.NDArray[np.uint8], sha: str) -> None:
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, key=np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64), times_ns=times, frames=frames, sha256=np.array(sha))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only data folder: decode again next time


def load_clip(clip: Path, size: tuple[int, int]) -> ClipData:
    """Decode ``clip`` at ``size`` (W, H) (cached) and check it against its truth."""
    truth = truth_for(clip)
    try:
        stat = clip.stat()
    except OSError as exc:
        raise ClipError(f"{clip}: cannot read the clip ({exc})") from exc
    cpath = _cache_path(clip, size)
    cached = _read_cache(cpath, stat) if cpath.is_file() else None
    if cached is None:
        times, frames = read_lores(clip, size)
        sha = _sha256(clip)
        if frames.shape[0] == truth.video.frames:
            _write_cache(cpath, stat, times, frames, sha)
    else:
        times, frames, sha = cached
    if frames.shape[0] == 0:
        raise ClipError(f"{clip}: no decodable video frames; fix: re-generate or remove the clip")
    if frames.shape[0] != truth.video.frames:
        raise TruthError(
            f"{truth_path_for(clip)}: says {truth.video.frames} frames but {clip.name} decodes to "
            f"{frames.shape[0]}; the truth file belongs to another clip: fix: re-generate the pair"
        )
    return ClipData(clip, truth, times, frames, sha)


def load_clips(
    clips: list[Path], size: tuple[int, int], progress: Callable[[str], None] | None = None
) -> list[ClipData]:
    out: list[ClipData] = []
    for i, c in enumerate(clips):
        out.append(load_clip(c, size))
        if progress is not None and (i + 1) % 10 == 0:
            progress(f"decoded {i + 1}/{len(clips)} clips")
    return out


def dataset_hash(clips: list[ClipData]) -> str:
    """SHA-256 over the sorted (name, clip SHA-256, truth SHA-256) of every clip."""
    h = hashlib.sha256()
    for c in sorted(clips, key=lambda c: str(c.path)):
        h.update(c.path.name.encode())
        h.update(c.sha256.encode())
        h.update(_sha256(truth_path_for(c.path)).encode())
    return h.hexdigest()
