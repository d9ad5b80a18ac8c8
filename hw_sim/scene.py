"""Per-clip panorama of the scene (range, street, indoor, night).

A clip's world is a cylindrical panorama 4 frame-widths around (so 90 degrees of
horizontal field of view per frame) and a little taller than a frame (room for bob,
pitch and recoil jerk). It is painted once per clip with perspective cues (a ground
plane whose texture compresses toward the horizon, lines converging on vanishing
points, objects scaled by distance) and then only *sampled* per frame by the renderer
with index arrays. Other people who shoot are painted in as silhouettes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from bodycam.hw_sim.sprites import (
    F32,
    U8,
    box_blur_x,
    colour_of_temperature,
    ellipse_mask,
    fractal_noise,
    poly_mask,
    value_noise,
)

BLUR_WIDTHS = (1, 7, 17, 37)  # motion-blur levels (horizontal box widths in pixels)


@dataclass(frozen=True)
class Figure:
    """Another person in the scene, holding a pistol; positions in panorama pixels."""

    world_x: float  # centre column
    foot_row: float
    height: float
    facing: int  # +1: gun to the right, -1: to the left

    @property
    def muzzle(self) -> tuple[float, float]:
        return (self.world_x + self.facing * 0.42 * self.height, self.foot_row - 0.74 * self.height)


@dataclass(frozen=True)
class Lamp:
    world_x: float
    row: float
    radius: float
    colour: tuple[float, float, float]


@dataclass
class Panorama:
    """The painted world: ``levels[k]`` is the padded panorama blurred horizontally by
    ``BLUR_WIDTHS[k]``, flattened to (rows*cols, 3) for ``np.take``."""

    width: int  # Wp: columns in 360 degrees
    height: int  # Hp
    pad: int  # extra columns on the left (and W+pad on the right) for wrap-free sampling
    horizon: int  # panorama row of the horizon
    margin: int  # rows above the frame's top at neutral pitch
    levels: list[U8] = field(default_factory=list)
    lamps: list[Lamp] = field(default_factory=list)
    padded_width: int = 0
    mean_level: float = 0.0


def _blend(img: F32, y0: int, x0: int, cov: F32, colour: npt.ArrayLike, wrap: bool = True) -> None:
    """Paint ``colour`` (RGB, or an h x w x 3 array) with coverage ``cov`` at (y0, x0); wraps in x."""
    H, W = img.shape[:2]
    h, w = cov.shape
    col = np.asarray(colour, np.float32)
    for dx in (-W, 0, W) if wrap else (0,):
        xa, ya = x0 + dx, y0
        xs0, ys0 = max(0, -xa), max(0, -ya)
        xs1, ys1 = min(w, W - xa), min(h, H - ya)
        if xs1 <= xs0 or ys1 <= ys0:
            continue
        c = cov[ys0:ys1, xs0:xs1, None]
        cc = col[ys0:ys1, xs0:xs1] if col.ndim == 3 else col
        region = img[ya + ys0 : ya + ys1, xa + xs0 : xa + xs1]
        region[:] = region * (1 - c) + cc * c


def _rect(img: F32, x0: float, y0: float, x1: float, y1: float, colour: npt.ArrayLike) -> None:
    xi0, yi0 = round(x0), round(y0)
    w, h = max(1, round(x1 - x0)), max(1, round(y1 - y0))
    _blend(img, yi0, xi0, np.ones((h, w), np.float32), colour)


def _ground(
    img: F32, hz: int, base: npt.ArrayLike, var: float, rng: np.random.Generator, cell: float = 6.0
) -> None:
    """Perspective ground: a texture indexed by (depth, lateral position*depth)."""
    Hp, Wp = img.shape[:2]
    rows = np.arange(hz, Hp, dtype=np.float32)
    depth = 60.0 / (rows - hz + 2.0)  # far at the horizon
    tex = fractal_noise((256, 1024), cell * 4, rng, 4)
    ty = (np.log(depth + 0.2) * 60.0).astype(np.int64) % 256
    cols = np.arange(Wp, dtype=np.float32)
    tx = ((cols[None, :] - Wp / 2) / (rows[:, None] - hz + 2.0) * 40.0).astype(np.int64) % 1024
    t = tex[ty[:, None], tx]
    fade = np.clip((rows - hz) / (Hp - hz), 0.0, 1.0)[:, None, None] * 0.5 + 0.5
    img[hz:] = (np.asarray(base, np.float32)[None, None, :] * (1 + var * t[:, :, None])) * fade + img[hz:] * 0


def _converging_lines(
    img: F32, hz: int, vps: list[float], slopes: list[float], colour: npt.ArrayLike, width: float, alpha: float
) -> None:
    Hp, Wp = img.shape[:2]
    rows = np.arange(hz + 1, Hp, dtype=np.float32)[:, None]
    dy = rows - hz
    col = np.asarray(colour, np.float32)
    for vx in vps:
        x0 = int(vx - 1.5 * Wp / 4)
        xs = np.arange(x0, x0 + int(3 * Wp / 4), dtype=np.float32)[None, :]
        acc = np.zeros((rows.shape[0], xs.shape[1]), np.float32)
        for s in slopes:
            d = np.abs(xs - vx - s * dy)
            lw = width * (0.3 + dy / 60.0)
            acc = np.maximum(acc, np.clip(lw - d, 0.0, 1.0))
        acc *= alpha
        _blend(img, hz + 1, x0, acc, col)


def _figure(img: F32, fig: Figure, colour: npt.ArrayLike, skin: npt.ArrayLike) -> None:
    h = fig.height
    bw = int(h * 1.2) + 4
    bh = int(h * 1.05) + 4
    ox, oy = int(fig.world_x - bw / 2), int(fig.foot_row - h)
    cx, top = bw / 2.0, 0.0
    f = fig.facing
    body = [
        (cx - 0.14 * h, top + 0.18 * h),
        (cx + 0.14 * h, top + 0.18 * h),
        (cx + 0.12 * h, top + 0.55 * h),
        (cx + 0.10 * h, top + h),
        (cx + 0.02 * h, top + h),
        (cx, top + 0.6 * h),
        (cx - 0.02 * h, top + h),
        (cx - 0.10 * h, top + h),
        (cx - 0.12 * h, top + 0.55 * h),
    ]
    arm = [
        (cx, top + 0.22 * h),
        (cx + f * 0.40 * h, top + 0.24 * h),
        (cx + f * 0.40 * h, top + 0.31 * h),
        (cx, top + 0.34 * h),
    ]
    gun = [
        (cx + f * 0.34 * h, top + 0.22 * h),
        (cx + f * 0.44 * h, top + 0.24 * h),
        (cx + f * 0.44 * h, top + 0.28 * h),
        (cx + f * 0.36 * h, top + 0.34 * h),
    ]
    _blend(img, oy, ox, poly_mask(bh, bw, body), colour)
    _blend(img, oy, ox, poly_mask(bh, bw, arm), colour)
    _blend(img, oy, ox, poly_mask(bh, bw, gun), (20, 20, 22))
    _blend(img, oy, ox, ellipse_mask(bh, bw, cx, top + 0.1 * h, 0.075 * h, 0.09 * h), skin)


def _sky(img: F32, hz: int, top: npt.ArrayLike, bottom: npt.ArrayLike, rng: np.random.Generator, clouds: float) -> None:
    Wp = img.shape[1]
    t = np.linspace(0, 1, max(hz, 1), dtype=np.float32)[:, None, None]
    grad = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    img[:hz] = grad
    if clouds > 0:
        n = np.clip(fractal_noise((hz, Wp), 90, rng, 4) * 1.6 + 0.1, 0, 1)[:, :, None]
        img[:hz] = img[:hz] * (1 - clouds * n) + 235 * clouds * n


def build_panorama(
    scene: str, W: int, H: int, rng: np.random.Generator, figures: list[Figure], horizon_frac: float
) -> Panorama:
    """Paint the panorama for ``scene``; ``figures`` are painted in place."""
    margin = round(0.14 * H)
    Hp, Wp0 = H + 2 * margin, 4 * W
    seam = W // 2  # painted beyond 360 degrees, then cross-faded so the wrap has no seam
    Wp = Wp0 + seam
    hz = margin + round(H * horizon_frac)
    img = np.zeros((Hp, Wp, 3), np.float32)
    lamps: list[Lamp] = []
    vp0 = float(rng.uniform(0, Wp / 4))
    vps = [vp0 + k * Wp0 / 4 for k in range(4)]
    u = H / 360.0  # scale unit

    if scene == "range":
        _sky(img, hz, (90, 140, 205), (200, 215, 230), rng, float(rng.uniform(0.1, 0.5)))
        _ground(img, hz, rng.uniform([150, 130, 95], [190, 165, 120]), 0.25, rng)
        _converging_lines(img, hz, vps, [-3.0, -1.5, 0.0, 1.5, 3.0], (235, 232, 220), 1.2 * u, 0.8)
        # berms
        bh = (0.10 + 0.08 * value_noise((1, Wp), 200, rng)[0]) * H
        rows = np.arange(Hp, dtype=np.float32)[:, None]
        berm = (rows < hz) & (rows > hz - bh[None, :])
        bcol = rng.uniform([105, 85, 55], [140, 115, 80])
        btex = fractal_noise((Hp, Wp), 12, rng, 3)
        img[berm] = (bcol[None, :] * (1 + 0.2 * btex[berm][:, None])).astype(np.float32)
        # target stands in lanes
        for vx in vps:
            for _k in range(int(rng.integers(3, 7))):
                dist = rng.uniform(0.3, 1.0)
                tw, th = 26 * u * dist, 40 * u * dist
                x = vx + rng.uniform(-1.1, 1.1) * W / 2
                y = hz + 6 * u * dist
                _rect(img, x - 2 * u * dist, y - th * 0.2, x - u * dist, y, (90, 70, 40))
                _rect(img, x + u * dist, y - th * 0.2, x + 2 * u * dist, y, (90, 70, 40))
                paper = (225, 222, 210) if rng.random() < 0.6 else (200, 170, 120)
                _rect(img, x - tw / 2, y - th * 1.15, x + tw / 2, y - th * 0.15, paper)
                sil_w, sil_h = int(tw * 0.7) + 2, int(th * 0.9) + 2
                sil = ellipse_mask(sil_h, sil_w, sil_w / 2, sil_h * 0.25, sil_w * 0.18, sil_h * 0.16)
                sil = np.maximum(sil, ellipse_mask(sil_h, sil_w, sil_w / 2, sil_h * 0.75, sil_w * 0.45, sil_h * 0.38))
                _blend(img, int(y - th * 1.1), int(x - sil_w / 2), sil, (30, 30, 30))
        exposure = 1.0
    elif scene in ("street", "night"):
        _sky(img, hz, (100, 150, 210), (210, 220, 230), rng, float(rng.uniform(0.0, 0.4)))
        _ground(img, hz, rng.uniform([70, 70, 72], [105, 105, 108]), 0.2, rng, 4.0)
        _converging_lines(img, hz, vps, [-2.2, 2.2], (220, 215, 170), 1.5 * u, 0.9)
        _converging_lines(img, hz, vps, [-6.0, 6.0], (170, 168, 160), 3.0 * u, 0.6)
        x = 0.0
        while x < Wp:
            bw = float(rng.uniform(0.25, 0.7)) * W
            top = hz - float(rng.uniform(0.15, 0.5)) * H
            base_col = rng.choice(
                [[150, 80, 60], [175, 170, 160], [120, 125, 130], [200, 190, 160], [90, 100, 115]]
            ).astype(np.float32)
            ftex = 1 + 0.12 * fractal_noise((int(hz - top) + 1, int(bw) + 1), 10, rng, 2)[:, :, None]
            _blend(img, int(top), int(x), np.ones(ftex.shape[:2], np.float32), base_col[None, None, :] * ftex)
            win_w, win_h = 12 * u, 16 * u
            for wy in np.arange(top + 10 * u, hz - 30 * u, 28 * u):
                for wx in np.arange(x + 10 * u, x + bw - win_w - 5 * u, 24 * u):
                    lit = rng.random() < 0.3
                    c = (235, 200, 120) if (scene == "night" and lit) else (55, 65, 80) if not lit else (140, 160, 190)
                    _rect(img, wx, wy, wx + win_w, wy + win_h, c)
            _rect(img, x + bw * 0.4, hz - 30 * u, x + bw * 0.4 + 16 * u, hz, (60, 45, 35))
            _rect(img, x, hz - 2 * u, x + bw, hz + 3 * u, (150, 150, 145))  # kerb
            x += bw
        for _ in range(int(rng.integers(3, 8))):
            cw = float(rng.uniform(0.18, 0.32)) * W
            ch = cw * 0.38
            cx = float(rng.uniform(0, Wp))
            cy = hz + float(rng.uniform(0.02, 0.1)) * H
            ccol = rng.choice([[160, 20, 20], [30, 30, 35], [200, 200, 205], [40, 60, 120], [140, 140, 140]])
            h_i, w_i = int(ch) + 2, int(cw) + 2
            body = poly_mask(h_i, w_i, [(0, ch * 0.45), (cw * 0.2, ch * 0.4), (cw * 0.32, 0), (cw * 0.72, 0),
                                        (cw * 0.85, ch * 0.4), (cw, ch * 0.45), (cw, ch * 0.85), (0, ch * 0.85)])
            _blend(img, int(cy - ch), int(cx), body, ccol)
            glass = poly_mask(h_i, w_i, [(cw * 0.25, ch * 0.4), (cw * 0.35, ch * 0.08), (cw * 0.7, ch * 0.08),
                                         (cw * 0.8, ch * 0.4)])
            _blend(img, int(cy - ch), int(cx), glass, (60, 75, 90))
            for wx in (0.2, 0.8):
                _blend(img, int(cy - ch), int(cx), ellipse_mask(h_i, w_i, cw * wx, ch * 0.85, ch * 0.17, ch * 0.17), (15, 15, 15))
        exposure = 1.0
        if scene == "night":
            img *= 0.13
            img[:hz] = img[:hz] * 0.5 + np.array([4, 6, 14], np.float32)
            # lit windows stay brighter
            for _k in range(int(rng.integers(4, 9))):
                lx = float(rng.uniform(0, Wp))
                lrow = hz - float(rng.uniform(0.15, 0.35)) * H
                temp = 2000.0 if rng.random() < 0.6 else 4500.0
                lc = tuple(float(v) for v in colour_of_temperature(temp) * 255)
                _rect(img, lx - 1.5 * u, lrow, lx + 1.5 * u, hz + 0.1 * H, (25, 25, 28))
                r = 5 * u
                lamps.append(Lamp(lx, lrow, r, (lc[0], lc[1], lc[2])))
                # pool of light on the ground and halo
                pool = ellipse_mask(int(0.3 * H), int(0.5 * W), 0.25 * W, 0.05 * H, 0.22 * W, 0.05 * H)
                py = np.arange(pool.shape[0], dtype=np.float32)[:, None] - 0.05 * H
                px = np.arange(pool.shape[1], dtype=np.float32)[None, :] - 0.25 * W
                pool = pool * np.exp(-(px / (0.12 * W)) ** 2 - (py / (0.03 * H)) ** 2) * 0.35
                _blend(img, int(hz + 0.05 * H), int(lx - 0.25 * W), pool, np.array(lc) * 0.5)
                halo_r = int(r * 9)
                ax = np.arange(-halo_r, halo_r + 1, dtype=np.float32)
                g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * (r * 2.5) ** 2)).astype(np.float32)
                _blend(img, int(lrow - halo_r), int(lx - halo_r), g * 0.6, lc)
                _blend(img, int(lrow - r), int(lx - r), ellipse_mask(int(2 * r) + 1, int(2 * r) + 1, r, r, r, r * 0.7), (255, 250, 235))
            exposure = 1.0
    elif scene == "indoor":
        ceil = hz - int(H * rng.uniform(0.28, 0.4))
        ceil = max(ceil, 4)
        img[:ceil] = np.array(rng.uniform([180, 180, 175], [225, 222, 215]), np.float32)
        wall_cols = [rng.uniform([150, 140, 120], [220, 210, 195]) for _ in range(4)]
        for k, vx in enumerate(vps):
            x0 = int(vx - Wp0 / 8)
            wtex = 1 + 0.06 * fractal_noise((hz - ceil, Wp0 // 4 + 1), 30, rng, 3)[:, :, None]
            _blend(img, ceil, x0, np.ones(wtex.shape[:2], np.float32), wall_cols[k][None, None, :] * wtex)
            _rect(img, x0 - 2 * u, ceil, x0 + 2 * u, hz, (90, 85, 80))  # corner
            for _ in range(int(rng.integers(1, 3))):
                dw = 55 * u
                dx = float(vx + rng.uniform(-0.8, 0.6) * Wp0 / 8)
                dcol = rng.choice([[120, 80, 50], [150, 150, 155], [90, 60, 40], [200, 200, 195]])
                _rect(img, dx - 4 * u, hz - 0.42 * H - 4 * u, dx + dw + 4 * u, hz, (60, 55, 50))
                _rect(img, dx, hz - 0.42 * H, dx + dw, hz, dcol)
                _rect(img, dx + dw * 0.8, hz - 0.2 * H, dx + dw * 0.88, hz - 0.18 * H, (200, 190, 120))
            for lx in np.arange(vx - Wp0 / 8, vx + Wp0 / 8, 0.3 * W):
                _rect(img, lx, ceil * 0.4, lx + 40 * u, ceil * 0.4 + 6 * u, (250, 250, 245))
        _ground(img, hz, rng.uniform([110, 95, 80], [170, 160, 150]), 0.15, rng, 3.0)
        _converging_lines(img, hz, vps, [-4.0, -2.0, 0.0, 2.0, 4.0], (70, 65, 60), 1.0 * u, 0.5)
        exposure = 1.0
    else:  # pragma: no cover - validated by caller
        raise ValueError(scene)

    img *= exposure
    w = np.linspace(0.0, 1.0, seam, dtype=np.float32)[None, :, None]
    img[:, :seam] = img[:, :seam] * w + img[:, Wp0:] * (1 - w)
    img = np.ascontiguousarray(img[:, :Wp0])
    Wp = Wp0
    fig_col = rng.choice([[40, 45, 60], [25, 25, 28], [70, 75, 60], [90, 40, 35]])
    fig_skin = rng.uniform([120, 80, 60], [220, 170, 140])
    for fig in figures:
        c = fig_col * (0.3 if scene == "night" else 1.0)
        s = fig_skin * (0.3 if scene == "night" else 1.0)
        _figure(img, fig, c, s)

    # fine grain so the texture never looks flat
    img += 6.0 * value_noise((Hp, Wp), 2.0, rng)[:, :, None]
    base = np.clip(img, 0, 255).astype(np.uint8)
    pad = math.ceil(0.12 * W) + 2
    padded = np.concatenate([base[:, Wp - pad :], base, base[:, : W + pad]], axis=1)
    pano = Panorama(width=Wp, height=Hp, pad=pad, horizon=hz, margin=margin, lamps=lamps)
    pano.padded_width = padded.shape[1]
    for bw in BLUR_WIDTHS:
        lvl = padded if bw == 1 else box_blur_x(padded, bw)
        pano.levels.append(np.ascontiguousarray(lvl).reshape(-1, 3))
    pano.mean_level = float(base.mean())
    return pano
