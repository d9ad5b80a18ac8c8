"""``bodycam-model build-audio``: the audio shot detector, trained on synthetic sound with families held out.

Steps: make the scene sets (:mod:`~bodycam.model_compile.audio_data`), label feature windows,
train a small CNN (Keras; only Edge TPU-compatible operators: CONV_2D, AVERAGE_POOL_2D, RESHAPE,
FULLY_CONNECTED, LOGISTIC), convert to full-integer int8 with static shapes, check it in the
runtime interpreter, pick the threshold on the in-domain validation streams, write the sidecar
(read back through the firmware's loader), then evaluate held-out and in-domain streams through
the firmware's own detector. Deterministic for a seed (TensorFlow op determinism, fixed seeds,
one thread for the conversion).
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bodycam.device.detect.audio_features import FEATURES
from bodycam.device.detect.audio_model_spec import SCHEMA, TASK, load_audio_model_spec
from bodycam.device.detect.model_spec import sha256_file, sidecar_path
from bodycam.device.errors import ModelError, StorageError
from bodycam.model_compile.audio_data import (
    HELD_OUT,
    DataSpec,
    WindowSet,
    mine_negatives,
    scene_sets,
    windows,
)
from bodycam.model_compile.audio_eval import evaluate_sets, stream_scores
from bodycam.model_compile.deps import import_tf, load_interpreter
from bodycam.model_compile.edgetpu import compile_for_edgetpu
from bodycam.model_compile.export import _quiet
from bodycam.model_compile.tflite_info import io_tensors, macs

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class AudioBuildConfig:
    """The network and its training. Defaults: the shipped model's recipe (24 frames = 240 ms, target
    frames 10-11, three convolutions pooled over the whole map). With four ``filters`` the network
    pools over frequency only, so the time axis (where in the window the sound starts, what came
    before it: an earlier shot whose echo this may be) reaches the classifier."""

    frames: int = 24
    target: tuple[int, int] = (10, 12)
    filters: tuple[int, ...] = (16, 32, 32)  # three: global pooling; four: pooled over frequency only
    dense: int = 32
    epochs: int = 8
    #: go back to the epoch with the lowest in-domain validation loss (after training, after mining)
    keep_best: bool = False
    #: hard-negative mining after ``epochs``: the ``mine`` training-scene negatives the model rates
    #: highest join the training set for ``mine_epochs`` more epochs (0: none)
    mine: int = 0
    mine_epochs: int = 3
    batch: int = 128
    learning_rate: float = 0.003
    seed: int = 1


#: named build recipes: (network and training, data). ``shipped`` builds device/models/shotnet_audio;
#: the others are the wider-randomised candidates measured in docs/model.md (not shipped).
RECIPES: dict[str, tuple[AudioBuildConfig, DataSpec]] = {
    "shipped": (AudioBuildConfig(), DataSpec()),
    # half the training/validation scenes randomised (physics guns, recording path), 4000 scenes,
    # the 36-frame network pooled over frequency, best validation epoch, hard-negative mining
    "wide": (AudioBuildConfig(frames=36, target=(22, 24), filters=(24, 32, 48, 48), dense=64, keep_best=True,
                              mine=20000), DataSpec(train_scenes=4000, randomise=0.5)),
    # the same, every training/validation scene randomised
    "wide-all": (AudioBuildConfig(frames=36, target=(22, 24), filters=(24, 32, 48, 48), dense=64, keep_best=True,
                                  mine=20000), DataSpec(train_scenes=4000, randomise=1.0)),
    # half randomised, 4000 scenes, the shipped network, best validation epoch
    "wide-small": (AudioBuildConfig(keep_best=True), DataSpec(train_scenes=4000, randomise=0.5)),
    # wide-small, and half the randomised scenes' impulses physics-drawn non-gun sounds
    "wide-neg": (AudioBuildConfig(keep_best=True), DataSpec(train_scenes=4000, randomise=0.5, physics_impulses=True)),
    # two generators: the shipped recipe's scenes and the clip generator's in-domain sound tracks
    "multi": (AudioBuildConfig(keep_best=True), DataSpec(clip_scenes=600, clip_free_scenes=300)),
    # two generators, and the tails of shots and impulses (echoes, reverb, later bounces) as hard negatives
    "multi-tail": (AudioBuildConfig(keep_best=True), DataSpec(clip_scenes=600, clip_free_scenes=300, tail_s=0.6,
                                                              tails_per_scene=12)),
    # two generators and the wide randomisation of both shots and impulses (wide-neg's data)
    "multi-wide": (AudioBuildConfig(keep_best=True), DataSpec(train_scenes=4000, randomise=0.5, physics_impulses=True,
                                                              clip_scenes=600, clip_free_scenes=300)),
    # an experiment, not shippable as is (the sounds keep their packages' licences): the shipped recipe's
    # scenes and scenes of other people's sounds from the library's development sources
    "library-dev": (AudioBuildConfig(keep_best=True), DataSpec(library_scenes=1500, library_free_scenes=500)),
}


def build_audio_model(tf: Any, cfg: AudioBuildConfig, batch_size: int | None = None) -> Any:
    keras, layers = tf.keras, tf.keras.layers
    inp = keras.Input(shape=(cfg.frames, FEATURES.mels, 1), batch_size=batch_size, name="logmel")
    if len(cfg.filters) == 3:  # the first build's network: three convolutions, pooled over the whole map
        x = inp
        for k, (f, st) in enumerate(zip(cfg.filters, ((1, 2), 2, 2), strict=True)):
            x = layers.Conv2D(f, 3, strides=st, padding="same", activation="relu", name=f"c{k + 1}")(x)
        x = layers.AveragePooling2D(pool_size=(x.shape[1], x.shape[2]), name="pool")(x)
        x = layers.Flatten(name="flat")(x)
        x = layers.Dense(cfg.dense, activation="relu", name="fc")(x)
        return keras.Model(inp, layers.Dense(1, activation="sigmoid", name="shot")(x), name="shotnet_audio")
    f1, f2, f3, f4 = cfg.filters
    x = layers.Conv2D(f1, 3, strides=(1, 2), padding="same", activation="relu", name="c1")(inp)
    x = layers.Conv2D(f2, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = layers.Conv2D(f3, 3, strides=(1, 2), padding="same", activation="relu", name="c3")(x)
    x = layers.Conv2D(f4, 3, strides=(2, 1), padding="same", activation="relu", name="c4")(x)
    x = layers.AveragePooling2D(pool_size=(1, x.shape[2]), name="pool")(x)  # over frequency only
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(cfg.dense, activation="relu", name="fc")(x)
    out = layers.Dense(1, activation="sigmoid", name="shot")(x)
    return keras.Model(inp, out, name="shotnet_audio")


def _norm(ws: WindowSet) -> tuple[float, float]:
    """Feature scaling folded into the input quantisation: the data's 0.1%/99.9% range."""
    lo, hi = np.percentile(ws.x, [0.1, 99.9])
    return float(lo), float(hi)


def _fit(tf: Any, model: Any, cfg: AudioBuildConfig, train: WindowSet, val: WindowSet, epochs: int, first: int,
         best: _Best, log: Callable[[str], None]) -> None:
    pos = max(1.0, float(train.y.sum()))
    w = train.w * np.where(train.y > 0, (len(train.y) - pos) / pos * 0.25, 1.0).astype(np.float32)
    log(f"audio train: {len(train.y)} windows ({train.positives} shot onsets, {train.hard_negatives} hard "
        f"negatives), val {len(val.y)}; epochs {first + 1}-{first + epochs}")
    model.fit(train.x[..., None], train.y, sample_weight=w, batch_size=cfg.batch, epochs=first + epochs,
              initial_epoch=first, shuffle=True, verbose=0, validation_data=(val.x[..., None], val.y),
              callbacks=[_EpochLog(tf, log, best)])


def _joined(a: WindowSet, b: WindowSet) -> WindowSet:
    return WindowSet(np.concatenate([a.x, b.x]), np.concatenate([a.y, b.y]), np.concatenate([a.w, b.w]),
                     a.positives + b.positives, a.hard_negatives + b.hard_negatives)


def _train(tf: Any, cfg: AudioBuildConfig, train: WindowSet, val: WindowSet, scenes: list[Any],
           log: Callable[[str], None]) -> tuple[Any, int]:
    """Train (then mine hard negatives in ``scenes`` and train on); returns (model, windows mined).

    After each stage the model goes back to the weights of its epoch with the lowest loss on the
    in-domain validation windows (the only data that chooses anything here)."""
    tf.keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    model = build_audio_model(tf, cfg)
    model.compile(optimizer=tf.keras.optimizers.Adam(cfg.learning_rate), loss="binary_crossentropy",
                  weighted_metrics=[])
    best = _Best()
    _fit(tf, model, cfg, train, val, cfg.epochs, 0, best, log)
    if cfg.keep_best and best.weights is not None:
        model.set_weights(best.weights)
        log(f"kept epoch {best.epoch} (val_loss {best.loss:.4f})")
    if not cfg.mine or not cfg.mine_epochs:
        return model, 0

    def score(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.asarray(model.predict(x[..., None], batch_size=1024, verbose=0), np.float32).reshape(-1)

    t0 = time.monotonic()
    mined = mine_negatives(scenes, cfg.frames, cfg.target, score, cfg.mine)
    log(f"mined {len(mined.y)} hard negatives (scores {float(score(mined.x[:1])[0]) if len(mined.y) else 0:.3f}.. "
        f"in {time.monotonic() - t0:.0f} s)")
    model.optimizer.learning_rate.assign(cfg.learning_rate / 3)
    _fit(tf, model, cfg, _joined(train, mined), val, cfg.mine_epochs, cfg.epochs, best, log)
    if cfg.keep_best and best.weights is not None:
        model.set_weights(best.weights)
        log(f"kept epoch {best.epoch} (val_loss {best.loss:.4f})")
    return model, len(mined.y)


class _Best:
    """The weights of the epoch with the lowest in-domain validation loss so far (kept in memory)."""

    def __init__(self) -> None:
        self.loss = float("inf")
        self.epoch = 0
        self.weights: list[Any] | None = None

    def offer(self, epoch: int, loss: float, weights: list[Any]) -> None:
        if loss < self.loss:
            self.loss, self.epoch, self.weights = loss, epoch, weights


class _EpochLog:
    def __new__(cls, tf: Any, log: Callable[[str], None], best: _Best) -> Any:
        class CB(tf.keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                lg = logs or {}
                log(f"  epoch {epoch + 1}: loss {lg.get('loss', 0):.4f} val_loss {lg.get('val_loss', 0):.4f}")
                best.offer(epoch + 1, float(lg.get("val_loss", float("inf"))), self.model.get_weights())

        return CB()


def _representative(x: np.ndarray[Any, Any], lo: float, hi: float) -> Iterator[list[np.ndarray[Any, Any]]]:
    for i in range(min(len(x), 500)):
        w = x[i : i + 1, ..., None].astype(np.float32).copy()
        if i == 0:  # pin the input range to the data's percentiles
            w[0, 0, 0, 0], w[0, 0, 1, 0] = lo, hi
        yield [np.clip(w, lo, hi)]


def _to_int8(tf: Any, model: Any, calib: np.ndarray[Any, Any], lo: float, hi: float) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: _representative(calib, lo, hi)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings(), _quiet() as chatter:
        warnings.simplefilter("ignore")
        try:
            return bytes(conv.convert())
        except Exception as exc:
            raise ModelError(f"TFLite full-integer conversion failed: {exc}; {chatter.read()[-2000:]}") from exc


def _sidecar(path: Path, it: Any, cfg: AudioBuildConfig, threshold: float, provenance: dict[str, Any],
             metrics: dict[str, Any], edgetpu: dict[str, Any], version: str) -> dict[str, Any]:
    (i,), (o,) = io_tensors(it)
    want = (1, cfg.frames, FEATURES.mels, 1)
    if i.shape != want or i.dtype != "int8" or o.shape != (1, 1) or o.dtype != "int8":
        raise ModelError(f"{path}: tensors {i.shape} {i.dtype} -> {o.shape} {o.dtype}, expected {want} int8 -> [1, 1]")
    return {
        "schema": SCHEMA, "name": path.stem, "version": version, "task": TASK, "file": path.name,
        "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
        "input": {"shape": list(want), "dtype": "int8", "scale": i.scale, "zero_point": i.zero_point,
                  "features": FEATURES.as_dict(), "frames": cfg.frames, "target": list(cfg.target),
                  "stride": cfg.target[1] - cfg.target[0]},
        "output": {"shape": [1, 1], "dtype": "int8", "scale": o.scale, "zero_point": o.zero_point,
                   "labels": ["shot_onset"]},
        "threshold": threshold, "macs_per_hop": macs(it),
        "provenance": provenance, "metrics": metrics, "edgetpu": edgetpu,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write ({exc})") from exc


def _pick_threshold(model: Path, sets: dict[str, Any], log: Callable[[str], None]) -> tuple[float, list[Any]]:
    """The threshold with the best F1 on the in-domain validation streams (ties: the higher)."""
    sweep = []
    best = (-1.0, 0.5)
    scores = {"val": stream_scores(model, sets["val"])}
    for th in THRESHOLDS:
        r = evaluate_sets(model, {"val": sets["val"]}, threshold=th, scores=scores)["val"]
        p, rc = r["precision"] or 0.0, r["recall"] or 0.0
        f1 = 2 * p * rc / (p + rc) if p + rc else 0.0
        sweep.append({"threshold": th, "precision": p, "recall": rc, "f1": round(f1, 4)})
        if f1 >= best[0]:
            best = (f1, th)
    log(f"threshold {best[1]} (val F1 {best[0]:.3f})")
    return best[1], sweep


def build_audio(out: Path, cfg: AudioBuildConfig, data: DataSpec, log: Callable[[str], None],
                version: str = "1.0.0") -> dict[str, Any]:
    """Build ``out`` (``.../shotnet_audio.tflite``) + sidecar + ``.report.json``; returns the sidecar."""
    t0 = time.monotonic()
    out = out if out.suffix == ".tflite" else out.with_suffix(".tflite")
    out.parent.mkdir(parents=True, exist_ok=True)
    sets = scene_sets(data, log)
    train, val = (windows(sets[k], cfg.frames, cfg.target, data.seed + off, tail_s=data.tail_s,
                          tails_per_scene=data.tails_per_scene) for k, off in (("train", 11), ("val", 12)))
    t_data = time.monotonic() - t0
    log(f"data: {t_data:.0f} s")
    tf = import_tf()
    model, mined = _train(tf, cfg, train, val, sets["train"], log)
    twin = build_audio_model(tf, cfg, batch_size=1)
    twin.set_weights(model.get_weights())
    lo, hi = _norm(train)
    flat = _to_int8(tf, twin, train.x, lo, hi)
    out.write_bytes(flat)
    it = load_interpreter(out, analysis=True)
    edgetpu = compile_for_edgetpu(out, it)
    provisional = _sidecar(out, it, cfg, 0.5, {}, {}, edgetpu, version)
    _write_json(sidecar_path(out), provisional)
    threshold, sweep = _pick_threshold(out, sets, log)
    log("evaluating held-out and in-domain streams through the firmware's detector")
    order = ["held_out", "held_out_shot_free", "in_domain", "in_domain_shot_free"]
    metrics = evaluate_sets(out, {k: sets[k] for k in order}, threshold=threshold)
    metrics["threshold_sweep_val"] = sweep
    provenance = {
        "generator": "bodycam.hw_sim.audio_synth (families)" + (
            " + bodycam.hw_sim.clipgen (in-domain clip families)" if data.clip_scenes or data.clip_free_scenes else ""),
        "data": data.as_dict(), "held_out": HELD_OUT,
        "train_windows": len(train.y), "train_positives": train.positives,
        "train_hard_negatives": train.hard_negatives, "train_sha256": train.digest(), "mined_negatives": mined,
        "config": {**asdict(cfg), "target": list(cfg.target), "filters": list(cfg.filters)},
        "tensorflow": tf.__version__, "python": platform.python_version(),
    }
    side = _sidecar(out, it, cfg, threshold, provenance, metrics, edgetpu, version)
    _write_json(sidecar_path(out), side)
    load_audio_model_spec(out)  # read back through the firmware's loader
    _write_json(out.with_suffix(".report.json"), {"model": out.name, "build_s": round(time.monotonic() - t0, 1),
                                                  "data_s": round(t_data, 1), "metrics": metrics})
    log(f"built {out} ({out.stat().st_size} bytes, {side['macs_per_hop']} MACs per hop) in "
        f"{time.monotonic() - t0:.0f} s")
    return side


__all__ = ["RECIPES", "AudioBuildConfig", "build_audio", "build_audio_model"]
