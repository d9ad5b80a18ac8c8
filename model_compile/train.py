"""Training loop of the float model (TensorFlow; imported lazily by the caller)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.model_compile.batches import Augment, BatchSampler, WindowPool, to_float
from bodycam.model_compile.config import BuildConfig


@dataclass
class TrainResult:
    model: Any
    history: dict[str, list[float]]
    seconds: float


def _val_set(pool: WindowPool, n: int, seed: int) -> tuple[npt.NDArray[np.float32], ...]:
    """A fixed, balanced sample of validation windows (no augmentation)."""
    sampler = BatchSampler(pool, n, seed)
    x, y, w = sampler.draw()
    return x, y, w


def _loss_and_grads(tf: Any, model: Any, loss_fn: Any, opt: Any) -> Any:
    @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
    def step(x: Any, y: Any, w: Any) -> Any:
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            loss = loss_fn(y[:, None], p, sample_weight=w)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return step


def train(
    tf: Any,
    cfg: BuildConfig,
    train_pool: WindowPool,
    val_pool: WindowPool,
    log: Callable[[str], None],
) -> TrainResult:
    from bodycam.model_compile.architecture import build_model

    keras = tf.keras
    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()  # same seed, same data -> same weights
    model = build_model(tf, cfg)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(1, total), alpha=0.05)
    opt = keras.optimizers.Adam(sched)
    loss_fn = keras.losses.BinaryCrossentropy()
    step = _loss_and_grads(tf, model, loss_fn, opt)
    sampler = BatchSampler(train_pool, cfg.batch, cfg.seed, aug=Augment())
    have_val = len(val_pool.pos) > 0
    vx, vy, vw = _val_set(val_pool, cfg.val_windows, cfg.seed + 7) if have_val else (None, None, None)
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    t0 = time.monotonic()
    for epoch in range(cfg.epochs):
        te = time.monotonic()
        losses: list[float] = []
        for i in range(cfg.steps_per_epoch):
            x, y, w = sampler.draw()
            losses.append(float(step(tf.constant(x), tf.constant(y), tf.constant(w))))
            if (i + 1) % 50 == 0 and i + 1 < cfg.steps_per_epoch:
                log(f"  epoch {epoch + 1}/{cfg.epochs} step {i + 1}/{cfg.steps_per_epoch} loss {np.mean(losses[-50:]):.4f}")
        history["loss"].append(float(np.mean(losses)))
        if vx is not None and vy is not None:
            pv = predict(model, vx)
            history["val_loss"].append(float(loss_fn(vy[:, None], pv[:, None], sample_weight=vw)))
        val = f" val_loss {history['val_loss'][-1]:.4f}" if history["val_loss"] else ""
        log(
            f"epoch {epoch + 1}/{cfg.epochs} loss {history['loss'][-1]:.4f}{val} "
            f"({time.monotonic() - te:.1f} s, {time.monotonic() - t0:.0f} s total)"
        )
    return TrainResult(model, history, time.monotonic() - t0)


def predict(model: Any, x: npt.NDArray[np.float32], batch: int = 256) -> npt.NDArray[np.float32]:
    """Float scores of windows ``x`` (``pixel / 255``)."""
    outs = [np.asarray(model(x[i : i + batch], training=False)).reshape(-1) for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros(0, np.float32)


def predict_pool(model: Any, pool: WindowPool, chunk: int = 512) -> npt.NDArray[np.float32]:
    """Float scores of every window of ``pool``, in pool order."""
    out = []
    for s in range(0, len(pool), chunk):
        rows = np.arange(s, min(len(pool), s + chunk), dtype=np.int64)
        out.append(predict(model, to_float(pool.windows_u8(rows))))
    return np.concatenate(out) if out else np.zeros(0, np.float32)
