"""A data set of synthetic clips in train/val/test splits with an index file.

    DIR/train/clip-00000.mp4 (+ .truth.json) ... DIR/val/... DIR/test/...
    DIR/index.json: {"schema": "bodycam.dataset/1", "seed", "clips": [{"path", "truth", "split",
                     "seed", "scene", "shots", "shot_free", "duration_s", "frames"}], ...}

With families (:func:`plan_family_dataset`, ``make-dataset --families``) every clip is one draw of
named families (:mod:`bodycam.hw_sim.families`: scene, weather, flash style, frame rate, camera,
shooter distance, distractors); ``train/ val/ test/`` hold in-domain clips only (no held-out
family), ``heldout/`` clips each have at least one held-out family. Rows then also carry
``families``, ``held_out`` and ``look``; the index carries ``hold_out``.

Clip seeds derive deterministically from the data-set seed (``SeedSequence(seed)``), so the same
arguments give the same data set. About 25% of the clips are shot-free with many distractors.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bodycam.device.errors import StorageError, UsageError
from bodycam.hw_sim.families import DISTRACTOR_FAMILIES, HoldOut, Look, draw_families, draw_look
from bodycam.hw_sim.look_plan import LOOK_KINDS
from bodycam.hw_sim.timeline import ClipSpec

SPLITS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
HELDOUT_SPLIT = "heldout"
SHOT_FREE_SHARE = 0.25
MAX_WORKERS = 2


@dataclass(frozen=True)
class DatasetJob:
    path: str
    split: str
    spec: ClipSpec
    shot_free: bool
    look: Look | None = None
    held_out: bool = False


def plan_dataset(root: Path, clips: int, seed: int, base: ClipSpec) -> list[DatasetJob]:
    """Which clip goes where with which seed (pure; no files touched)."""
    if clips < 1:
        raise UsageError(f"clips {clips} must be >= 1")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    seeds = rng.integers(0, 2**32, size=clips, dtype=np.uint64)
    n_val = round(clips * SPLITS[1][1])
    n_test = round(clips * SPLITS[2][1])
    n_train = clips - n_val - n_test
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    shot_free = rng.random(clips) < SHOT_FREE_SHARE
    jobs = []
    for i in range(clips):
        sf = bool(shot_free[i])
        spec = replace(base, seed=int(seeds[i]), shots=0 if sf else None, distractor_rate=8.0 if sf else None)
        jobs.append(DatasetJob(str(root / splits[i] / f"clip-{i:05d}.mp4"), splits[i], spec, sf))
    return jobs


def _run_job(job: DatasetJob) -> dict[str, Any]:
    from bodycam.hw_sim.clipgen import generate_clip
    from bodycam.hw_sim.truth import truth_path_for

    truth = generate_clip(job.path, job.spec, look=job.look)
    extra: dict[str, Any] = {}
    if job.look is not None:
        extra = {"families": dict(job.look.families), "held_out": job.held_out, "look": job.look.as_dict()}
    return {
        **extra,
        "path": job.path,
        "truth": str(truth_path_for(job.path)),
        "split": job.split,
        "seed": job.spec.seed,
        "scene": truth.generator.scene,
        "shots": len(truth.shots),
        "shot_free": job.shot_free,
        "distractors": len(truth.distractors),
        "duration_s": truth.video.duration_s,
        "frames": truth.video.frames,
    }


def plan_family_dataset(
    root: Path, clips: int, seed: int, seconds: float, hold: HoldOut, held_out_clips: int,
    size: tuple[int, int] | None = None, shot_free: bool = False,
) -> list[DatasetJob]:
    """Domain-randomised jobs (pure): ``clips`` in-domain clips in train/val/test and
    ``held_out_clips`` in ``heldout/``; every clip's families and look from the data-set seed.
    ``size`` overrides the camera family's frame size (small false-alarm footage); ``shot_free``:
    no clip has shots, every one is distractor-heavy."""
    if clips < 3:
        raise UsageError(f"clips {clips} must be >= 3 (train, val and test)")
    if held_out_clips < 0:
        raise UsageError(f"held-out clips {held_out_clips} must be >= 0")
    c_seed, c_fam = np.random.SeedSequence(seed).spawn(2)
    total = clips + held_out_clips
    seeds = np.random.Generator(np.random.PCG64(c_seed)).integers(0, 2**32, size=total, dtype=np.uint64)
    rng = np.random.Generator(np.random.PCG64(c_fam))
    n_val = max(1, round(clips * SPLITS[1][1]))
    n_test = max(1, round(clips * SPLITS[2][1]))
    splits = ["train"] * (clips - n_val - n_test) + ["val"] * n_val + ["test"] * n_test + [HELDOUT_SPLIT] * held_out_clips
    jobs = []
    for i in range(total):
        held = splits[i] == HELDOUT_SPLIT
        fam = draw_families(rng, hold, held)
        look = draw_look(rng, fam)
        if size is not None:
            look = replace(look, width=size[0], height=size[1])
        sf = bool(rng.random() < SHOT_FREE_SHARE) or shot_free
        other = True if fam["distance"] == "far" and rng.random() < 0.6 else None
        n_shots = int(rng.integers(2, 7))  # shots are rare: 2-6 a clip (about half in no frame in daylight)
        force = tuple(k for k in DISTRACTOR_FAMILIES[fam["distractors"]] if k not in LOOK_KINDS)
        spec = ClipSpec(
            seconds=seconds, seed=int(seeds[i]), scene=fam["scene"], width=look.width, height=look.height,
            fps=look.fps, shots=0 if sf else min(n_shots, max(1, int(seconds / 1.5))), distractor_rate=8.0 if sf else None,
            force_distractors=force, other_shooter=None if sf else other,
        )  # fmt: skip
        spec.validate()
        jobs.append(DatasetJob(str(root / splits[i] / f"clip-{i:05d}.mp4"), splits[i], spec, sf, look, held))
    return jobs


def make_dataset(
    root: str | os.PathLike[str], clips: int, seed: int, base: ClipSpec, workers: int = 2,
    hold: HoldOut | None = None, held_out_clips: int = 0, size: tuple[int, int] | None = None,
    shot_free: bool = False,
) -> dict[str, Any]:
    """Generate the data set under ``root`` and write ``root/index.json``; return the index.
    With ``hold`` (families; may hold nothing out), a domain-randomised set (``base`` gives the
    clip length only)."""
    base.validate()
    rootp = Path(root)
    try:
        rootp.mkdir(parents=True, exist_ok=True)
        for name in [n for n, _ in SPLITS] + ([HELDOUT_SPLIT] if hold is not None and held_out_clips else []):
            (rootp / name).mkdir(exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{rootp}: cannot create data set directory: {exc.strerror or exc}") from exc
    if not os.access(rootp, os.W_OK):
        raise StorageError(f"{rootp}: not writable")
    if hold is None:
        jobs = plan_dataset(rootp, clips, seed, base)
    else:
        jobs = plan_family_dataset(rootp, clips, seed, base.seconds, hold, held_out_clips, size, shot_free)
    workers = max(1, min(MAX_WORKERS, workers, len(jobs)))
    if workers == 1:
        rows = [_run_job(j) for j in jobs]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            rows = pool.map(_run_job, jobs, chunksize=1)
    for r in rows:  # relative paths: the data set can be moved
        r["path"] = str(Path(r["path"]).relative_to(rootp))
        r["truth"] = str(Path(r["truth"]).relative_to(rootp))
    index = {
        "schema": "bodycam.dataset/1",
        "seed": seed,
        "clips": rows,
        "counts": {name: sum(1 for r in rows if r["split"] == name) for name in (*(n for n, _ in SPLITS), HELDOUT_SPLIT)},
        "shot_free": sum(1 for r in rows if r["shot_free"]),
        "size": [base.width, base.height],
        "fps": float(base.fps_fraction),
        "seconds": base.seconds,
    }
    if hold is not None:
        index["hold_out"] = hold.as_dict()
        index["size"] = None  # per clip (look)
        index["fps"] = None
    tmp = rootp / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, rootp / "index.json")
    return index
