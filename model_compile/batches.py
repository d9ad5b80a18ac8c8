"""Balanced, augmented training batches drawn from decoded clips (numpy only).

Shots are rare (a few frames a minute), so every batch is drawn by stratum:
``pos_share`` positives, ``hard_share`` hard negatives (distractors, recoil tails, frames
next to a shot) and the rest from all windows. A window is built exactly as
:func:`bodycam.device.detect.preprocess.stack_windows` builds it (frames stacked on the
channel axis, oldest first) and handed to the float model as ``pixel / 255``, which
is what the int8 input (scale 1/255, zero point -128) dequantises to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bodycam.device.detect.preprocess import InputSpec, to_gray
from bodycam.model_compile.dataset import ClipData
from bodycam.model_compile.labels import WindowLabels, window_labels

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Augment:
    gain: tuple[float, float] = (0.7, 1.3)
    offset: float = 20.0
    noise_max: float = 4.0
    flip: bool = True


class WindowPool:
    """Every window of a set of clips, addressable by (clip, window) index."""

    def __init__(self, clips: list[ClipData], spec: InputSpec, near_weight: float = 0.3,
                 sources: Sequence[int] | None = None, mix: Sequence[float] | None = None) -> None:
        """``sources``: each clip's data source (0..k-1); ``mix``: each source's share of the drawn
        windows (None: every window alike, whatever its source)."""
        self.spec = spec
        self.frames = [c.frames if spec.colour == "rgb" else to_gray(c.frames) for c in clips]
        self.labels: list[WindowLabels] = [window_labels(c.truth, spec, near_weight) for c in clips]
        ci, wi = [], []
        for i, lab in enumerate(self.labels):
            ci.append(np.full(len(lab), i, dtype=np.int32))
            wi.append(np.arange(len(lab), dtype=np.int32))
        self.clip_idx = np.concatenate(ci) if ci else np.zeros(0, np.int32)
        self.win_idx = np.concatenate(wi) if wi else np.zeros(0, np.int32)
        self.y = np.concatenate([lab.y for lab in self.labels]) if self.labels else np.zeros(0, np.float32)
        self.w = np.concatenate([lab.weight for lab in self.labels]) if self.labels else np.zeros(0, np.float32)
        hard = np.concatenate([lab.hard for lab in self.labels]) if self.labels else np.zeros(0, bool)
        self.pos = np.flatnonzero(self.y > 0.5)
        self.hard = np.flatnonzero(hard | ((self.w < 1.0) & (self.y < 0.5)))
        # sampling weight of each window: a source's windows share its mix weight (None: uniform)
        self.mix: npt.NDArray[np.float64] | None = None
        self.source = np.zeros(len(self.clip_idx), np.int64)
        if mix is not None:
            if sources is None or len(sources) != len(clips):
                raise ValueError("a mix needs the source of every clip")
            if len(self.clip_idx):
                self.source = np.asarray(sources, dtype=np.int64)[self.clip_idx]
            self.mix = np.asarray(mix, dtype=np.float64)
        # sampling probabilities per subset drawn from (pos, hard, every window), computed once
        self._p: list[tuple[npt.NDArray[np.int64] | None, npt.NDArray[np.float64]]] = []

    def choose(self, rng: np.random.Generator, among: npt.NDArray[np.int64] | None, n: int) -> npt.NDArray[np.int64]:
        """``n`` rows drawn (with replacement) from ``among`` (None: every window); with a mix, each
        source's windows in ``among`` together get its share (sources with none there drop out)."""
        if self.mix is None:
            if among is None:
                return rng.integers(0, len(self), n)
            return rng.choice(among, n)
        rows = np.arange(len(self)) if among is None else among
        p = next((q for a, q in self._p if a is among), None)
        if p is None:
            src = self.source[rows]
            counts = np.bincount(src, minlength=len(self.mix)).astype(np.float64)
            p = self.mix[src] / np.maximum(counts[src], 1.0)
            p = p / p.sum()
            self._p.append((among, p))
        return rng.choice(rows, n, p=p)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def windows_u8(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """Windows ``rows`` of the pool as uint8 ``(B, H, W, C*N)``."""
        n = self.spec.frames
        out = [
            np.concatenate(list(self.frames[self.clip_idx[r]][self.win_idx[r] : self.win_idx[r] + n]), axis=-1)
            for r in rows
        ]
        return np.stack(out) if out else np.zeros((0, *self.spec.shape[1:]), dtype=np.uint8)


def to_float(u8: npt.NDArray[np.uint8]) -> F32:
    return (u8.astype(np.float32) * np.float32(1.0 / 255.0)).astype(np.float32)


def augment(u8: npt.NDArray[np.uint8], rng: np.random.Generator, aug: Augment) -> F32:
    """Photometric + flip augmentation of uint8 windows; returns ``pixel / 255`` floats."""
    x = u8.astype(np.float32)
    b = x.shape[0]
    gain = rng.uniform(aug.gain[0], aug.gain[1], size=(b, 1, 1, 1)).astype(np.float32)
    off = rng.uniform(-aug.offset, aug.offset, size=(b, 1, 1, 1)).astype(np.float32)
    x = x * gain + off
    if aug.noise_max > 0:
        sigma = rng.uniform(0, aug.noise_max, size=(b, 1, 1, 1)).astype(np.float32)
        x += rng.standard_normal(x.shape, dtype=np.float32) * sigma
    if aug.flip:
        flip = rng.random(b) < 0.5
        x[flip] = x[flip, :, ::-1]
    np.clip(x, 0.0, 255.0, out=x)
    return (x * np.float32(1.0 / 255.0)).astype(np.float32)


class BatchSampler:
    """Draws stratified batches ``(x, y, w)`` from a :class:`WindowPool`."""

    def __init__(
        self,
        pool: WindowPool,
        batch: int,
        seed: int,
        pos_share: float = 0.25,
        hard_share: float = 0.4,
        aug: Augment | None = None,
    ) -> None:
        if len(pool.pos) == 0:
            raise ValueError("no positive windows (no shots) in the training clips")
        self.pool = pool
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        self.n_pos = max(1, round(batch * pos_share))
        self.n_hard = round(batch * hard_share) if len(pool.hard) else 0
        self.aug = aug

    def rows(self) -> npt.NDArray[np.int64]:
        p = self.pool
        r = self.rng
        n_rand = self.batch - self.n_pos - self.n_hard
        parts = [p.choose(r, p.pos, self.n_pos), p.choose(r, None, n_rand)]
        if self.n_hard:
            parts.append(p.choose(r, p.hard, self.n_hard))
        return np.concatenate(parts).astype(np.int64)

    def draw(self) -> tuple[F32, F32, F32]:
        rows = self.rows()
        u8 = self.pool.windows_u8(rows)
        x = augment(u8, self.rng, self.aug) if self.aug is not None else to_float(u8)
        return x, self.pool.y[rows], self.pool.w[rows]
