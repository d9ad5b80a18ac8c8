"""A data set of synthetic clips in train/val/test splits with an index file.

    DIR/train/clip-00000.mp4 (+ .truth.json) ... DIR/val/... DIR/test/...
    DIR/index.json: {"schema": "bodycam.dataset/1", "seed", "clips": [{"path", "truth", "split",
                     "seed", "scene", "shots", "shot_free", "duration_s", "frames"}], ...}

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
from bodycam.hw_sim.timeline import ClipSpec

SPLITS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
SHOT_FREE_SHARE = 0.25
MAX_WORKERS = 2


@dataclass(frozen=True)
class DatasetJob:
    path: str
    split: str
    spec: ClipSpec
    shot_free: bool


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

    truth = generate_clip(job.path, job.spec)
    return {
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


def make_dataset(root: str | os.PathLike[str], clips: int, seed: int, base: ClipSpec, workers: int = 2) -> dict[str, Any]:
    """Generate the data set under ``root`` and write ``root/index.json``; return the index."""
    base.validate()
    rootp = Path(root)
    try:
        rootp.mkdir(parents=True, exist_ok=True)
        for name, _ in SPLITS:
            (rootp / name).mkdir(exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{rootp}: cannot create data set directory: {exc.strerror or exc}") from exc
    if not os.access(rootp, os.W_OK):
        raise StorageError(f"{rootp}: not writable")
    jobs = plan_dataset(rootp, clips, seed, base)
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
        "counts": {name: sum(1 for r in rows if r["split"] == name) for name, _ in SPLITS},
        "shot_free": sum(1 for r in rows if r["shot_free"]),
        "size": [base.width, base.height],
        "fps": float(base.fps_fraction),
        "seconds": base.seconds,
    }
    tmp = rootp / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, rootp / "index.json")
    return index
