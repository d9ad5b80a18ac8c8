"""``bodycam-model build``: train, quantise, verify, check for the Edge TPU, write the contract."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bodycam.device.detect.events import EventConfig
from bodycam.device.errors import StorageError, UsageError
from bodycam.model_compile import dataset as ds
from bodycam.model_compile.batches import BatchSampler, WindowPool
from bodycam.model_compile.config import BuildConfig
from bodycam.model_compile.deps import import_tf, load_interpreter
from bodycam.model_compile.edgetpu import compile_for_edgetpu
from bodycam.model_compile.evaluate import evaluate_scores, pick_threshold, summarise, sweep_thresholds
from bodycam.model_compile.infer import Int8Runner
from bodycam.model_compile.report import pr_curve, write_report
from bodycam.model_compile.sidecar import sidecar_dict, write_sidecar
from bodycam.model_compile.tflite_info import macs

THRESHOLD_GRID = [round(0.05 * i, 2) for i in range(2, 20)] + [0.97, 0.98, 0.99]
CALIBRATION_WINDOWS = 400


@dataclass(frozen=True)
class BuildResult:
    model: Path
    sidecar: Path
    report_json: Path
    report_png: Path | None
    sidecar_data: dict[str, Any]


def model_base(out: Path) -> Path:
    """``models/NAME`` or ``models/NAME.tflite`` -> ``models/NAME`` (no suffix)."""
    return out.with_suffix("") if out.suffix == ".tflite" else out


def _split_clips(data: Path) -> dict[str, list[Path]]:
    splits = ds.find_splits(data)
    if not splits["train"]:
        raise UsageError(f"{data}: no training clips; fix: add clips to {data / 'train'}")
    if not splits["val"]:  # too few clips for a hash split: hold out the last fifth of train
        k = max(1, len(splits["train"]) // 5) if len(splits["train"]) > 1 else 0
        splits["val"] = splits["train"][len(splits["train"]) - k :] if k else list(splits["train"])
        splits["train"] = splits["train"][: len(splits["train"]) - k] if k else splits["train"]
    return splits


def build(
    data: Path | Sequence[Path], out: Path, cfg: BuildConfig, log: Callable[[str], None], model_version: str = "1.0.0",
    mix: Sequence[float] | None = None,
) -> BuildResult:
    """Train on ``data`` (one folder, or several: e.g. synthetic footage and a force's exported range
    footage); ``mix``: each folder's share of the training windows drawn (None: every window alike)."""
    t_start = time.monotonic()
    sources = [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
    if not sources:
        raise UsageError("no --data folder")
    if mix is not None and (len(mix) != len(sources) or any(not w > 0 for w in mix)):
        raise UsageError(f"--mix needs one weight > 0 per --data folder ({len(sources)}), got {list(mix)}")
    spec = cfg.input_spec()
    base = model_base(Path(out))
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{base.parent}: cannot create the output folder ({exc})") from exc
    size = (spec.width, spec.height)
    train_clips: list[ds.ClipData] = []
    val_clips: list[ds.ClipData] = []
    test_clips: list[ds.ClipData] = []
    train_src: list[int] = []
    for k, folder in enumerate(sources):
        splits = _split_clips(folder)
        share = "" if mix is None else f", {mix[k] / sum(mix) * 100:.0f} % of the training windows"
        log(f"data {folder}: {len(splits['train'])} train, {len(splits['val'])} val, {len(splits['test'])} test "
            f"clips{share}")
        loaded = ds.load_clips(splits["train"], size, log)
        train_clips += loaded
        train_src += [k] * len(loaded)
        val_clips += ds.load_clips(splits["val"], size, log)
        test_clips += ds.load_clips(splits["test"], size, log)
    train_pool = WindowPool(train_clips, spec, cfg.near_weight, sources=train_src, mix=mix)
    val_pool = WindowPool(val_clips, spec, cfg.near_weight)
    if len(train_pool.pos) == 0:
        raise UsageError(f"{data}: the training clips hold no shots; fix: add clips with shots (bodycam-sim make-dataset)")
    log(
        f"windows: train {len(train_pool)} ({len(train_pool.pos)} shots, {len(train_pool.hard)} hard), "
        f"val {len(val_pool)} ({len(val_pool.pos)} shots); decoded in {time.monotonic() - t_start:.0f} s"
    )

    tf = import_tf()
    from bodycam.model_compile.export import to_int8_tflite
    from bodycam.model_compile.train import predict_pool, train

    log(f"training {cfg.epochs} epochs x {cfg.steps_per_epoch} steps of {cfg.batch} (TensorFlow {tf.__version__})")
    result = train(tf, cfg, train_pool, val_pool, log)
    float_val = predict_pool(result.model, val_pool)

    calib = BatchSampler(train_pool, CALIBRATION_WINDOWS, cfg.seed + 11)
    calib_u8 = train_pool.windows_u8(calib.rows())
    from bodycam.model_compile.architecture import build_model

    fixed = build_model(tf, cfg, batch_size=1)
    fixed.set_weights(result.model.get_weights())
    flat = to_int8_tflite(tf, fixed, spec, calib_u8)
    model_path = base.with_suffix(".tflite")
    try:
        model_path.write_bytes(flat)
    except OSError as exc:
        raise StorageError(f"{model_path}: cannot write the model ({exc})") from exc
    log(f"wrote {model_path} ({len(flat) / 1024:.1f} KiB, full-integer int8)")

    interp = load_interpreter(model_path, num_threads=2)
    runner = Int8Runner(interp, spec)
    val_scores = [runner.frame_scores(c.frames) for c in val_clips]
    int8_val = np.concatenate([runner.window_scores(c.frames) for c in val_clips]) if val_clips else np.zeros(0, np.float32)
    ev_cfg = EventConfig()
    sweep = sweep_thresholds(val_clips, val_scores, ev_cfg, THRESHOLD_GRID)
    threshold = pick_threshold(sweep)
    agree = float(np.mean((float_val >= threshold) == (int8_val >= threshold))) if len(float_val) else 1.0
    mad = float(np.mean(np.abs(float_val - int8_val))) if len(float_val) else 0.0
    val_summary = summarise(evaluate_scores(val_clips, val_scores, ev_cfg, threshold))
    log(
        f"threshold {threshold}: val precision {val_summary['precision']} recall {val_summary['recall']}; "
        f"int8 vs float decisions agree on {agree * 100:.2f}% of {len(float_val)} val windows"
    )
    test_summary = None
    if test_clips:
        test_scores = [runner.frame_scores(c.frames) for c in test_clips]
        test_summary = summarise(evaluate_scores(test_clips, test_scores, ev_cfg, threshold))
        log(f"test: precision {test_summary['precision']} recall {test_summary['recall']} ({len(test_clips)} clips)")

    plain = load_interpreter(model_path, analysis=True)
    n_macs = macs(plain)
    edgetpu = compile_for_edgetpu(model_path, plain)
    log(f"MACs per frame {n_macs:,}; Edge TPU: {edgetpu['reason']}")
    all_clips = train_clips + val_clips + test_clips
    gen_seeds = sorted({c.truth.generator.seed for c in all_clips})
    provenance = {
        "dataset": str(sources[0]) if len(sources) == 1 else [str(d) for d in sources],
        "mix": None if mix is None else [float(w) for w in mix],
        "dataset_sha256": ds.dataset_hash(all_clips),
        "clips": {"train": len(train_clips), "val": len(val_clips), "test": len(test_clips)},
        "frames": {"train": int(sum(c.n_frames for c in train_clips)), "val": int(sum(c.n_frames for c in val_clips))},
        "shots": {"train": len(train_pool.pos), "val": len(val_pool.pos)},
        "generator_seeds": {"count": len(gen_seeds), "min": gen_seeds[0], "max": gen_seeds[-1]} if gen_seeds else None,
        "seed": cfg.seed,
        "config": cfg.as_dict(),
        "training_seconds": round(result.seconds, 1),
        "build_seconds": round(time.monotonic() - t_start, 1),
        "tensorflow": str(tf.__version__),
        "python": platform.python_version(),
        "built_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["bodycam-model", *sys.argv[1:]]) if sys.argv and "bodycam-model" in sys.argv[0] else None,
    }
    metrics = {
        "int8_float_agreement": round(agree, 5),
        "int8_float_mean_abs_diff": round(mad, 5),
        "val_windows": len(float_val),
        "val": {k: val_summary[k] for k in ("precision", "recall", "tp", "fp", "fn", "timing_error_frames")},
        "test": {k: test_summary[k] for k in ("precision", "recall", "tp", "fp", "fn", "timing_error_frames")}
        if test_summary
        else None,
    }
    data_out = sidecar_dict(
        model_path, interp, spec, version=model_version, threshold=threshold, macs_per_frame=n_macs,
        provenance=provenance, metrics=metrics, edgetpu=edgetpu,
    )  # fmt: skip
    write_sidecar(model_path, data_out)
    report = {
        "model": model_path.name,
        "threshold": threshold,
        "history": result.history,
        "pr_float": pr_curve(val_pool.y, float_val),
        "pr_int8": pr_curve(val_pool.y, int8_val),
        "threshold_sweep": sweep,
        "val": val_summary,
        "test": test_summary,
        "metrics": metrics,
        "provenance": provenance,
    }
    jpath, ppath = write_report(base, report)
    log(f"wrote {model_path.with_suffix('.json')}, {jpath}" + (f", {ppath}" if ppath else ""))
    log(f"build finished in {time.monotonic() - t_start:.0f} s (training {result.seconds:.0f} s)")
    return BuildResult(model_path, model_path.with_suffix(".json"), jpath, ppath, data_out)
