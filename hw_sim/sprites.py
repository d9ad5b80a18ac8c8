"""Pre-rendered sprites and small raster helpers (numpy only).

Everything here runs once per clip (weapon/hands sprites, glow kernels) or once per
event (flash shapes), never over a whole frame per frame. Sprites are float32 RGB plus
a float32 alpha in 0..1; the renderer composites them on small regions only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


def value_noise(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> F32:
    """Smooth noise in -1..1: a coarse random grid bilinearly upsampled to ``shape``."""
    h, w = shape
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.uniform(-1.0, 1.0, (gh, gw)).astype(np.float32)
    ys = np.linspace(0, gh - 1.001, h, dtype=np.float32)
    xs = np.linspace(0, gw - 1.001, w, dtype=np.float32)
    y0 = ys.astype(np.int32)
    x0 = xs.astype(np.int32)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    # smoothstep for less grid-like look
    fy = fy * fy * (3 - 2 * fy)
    fx = fx * fx * (3 - 2 * fx)
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    out = (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
    res: F32 = out.astype(np.float32)
    return res


def fractal_noise(shape: tuple[int, int], cell: float, rng: np.random.Generator, octaves: int = 3) -> F32:
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        out += amp * value_noise(shape, max(1.5, cell), rng)
        total += amp
        amp *= 0.5
        cell /= 2.0
    return (out / total).astype(np.float32)


def poly_mask(h: int, w: int, pts: list[tuple[float, float]], ss: int = 2) -> F32:
    """Coverage (0..1) of polygon ``pts`` (pixel coords, x right, y down) on an h x w grid,
    antialiased by ``ss`` x ``ss`` supersampling (even-odd rule)."""
    ys = (np.arange(h * ss, dtype=np.float32) + 0.5) / ss
    xs = (np.arange(w * ss, dtype=np.float32) + 0.5) / ss
    X = xs[None, :]
    Y = ys[:, None]
    inside = np.zeros((h * ss, w * ss), dtype=bool)
    n = len(pts)
    for i in range(n):
        x1, y1 = pts[i]
        x2, y2 = pts[(i + 1) % n]
        if y1 == y2:
            continue
        cond = (min(y1, y2) < Y) & (max(y1, y2) >= Y)
        xint = x1 + (Y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cond & (xint > X)
    cov = inside.reshape(h, ss, w, ss).mean(axis=(1, 3))
    res: F32 = cov.astype(np.float32)
    return res


def ellipse_mask(h: int, w: int, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> F32:
    """Antialiased filled ellipse coverage on an h x w grid."""
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5 - cy
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5 - cx
    ca, sa = math.cos(angle), math.sin(angle)
    u = (xs * ca + ys * sa) / max(rx, 1e-3)
    v = (-xs * sa + ys * ca) / max(ry, 1e-3)
    d = np.sqrt(u * u + v * v)
    edge = 1.0 / max(1.0, min(rx, ry))
    return np.clip((1.0 - d) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def gaussian_blob(radius: float) -> F32:
    """Square array with a normalised Gaussian glow (peak 1) of sigma ``radius/2.5``."""
    r = max(1, math.ceil(radius))
    ax = np.arange(-r, r + 1, dtype=np.float32)
    s = max(radius / 2.5, 0.5)
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * s * s))
    res: F32 = g.astype(np.float32)
    return res


_K_TABLE = (
    (1800.0, (255.0, 120.0, 25.0)),
    (2500.0, (255.0, 168.0, 70.0)),
    (3000.0, (255.0, 190.0, 110.0)),
    (4000.0, (255.0, 215.0, 165.0)),
    (5000.0, (255.0, 232.0, 205.0)),
)


def colour_of_temperature(kelvin: float) -> npt.NDArray[np.float32]:
    """Approximate RGB (0..1) of a black body at ``kelvin`` (1800..5000 K)."""
    ks = [k for k, _ in _K_TABLE]
    k = min(max(kelvin, ks[0]), ks[-1])
    rgb = [np.interp(k, ks, [c[i] for _, c in _K_TABLE]) for i in range(3)]
    return (np.array(rgb, np.float32) / 255.0).astype(np.float32)


def box_blur_x(img: U8, width: int) -> U8:
    """Horizontal box blur (wrap-around) of an H x W x 3 uint8 image, via cumulative sums."""
    if width <= 1:
        return img.copy()
    w = img.shape[1]
    half = width // 2
    pad = np.concatenate([img[:, w - half - 1 :], img, img[:, : half + 1]], axis=1).astype(np.int32)
    cs = np.cumsum(pad, axis=1)
    out = (cs[:, width:] - cs[:, :-width])[:, :w] // width
    return out.astype(np.uint8)


# ----------------------------------------------------------------------------- weapon sprite


@dataclass(frozen=True)
class Sprite:
    """An RGB sprite with alpha and an anchor point (the muzzle for weapons), in sprite pixels."""

    rgb: F32  # h x w x 3, 0..255
    alpha: F32  # h x w, 0..1
    anchor: tuple[float, float]

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.alpha.shape[0]), int(self.alpha.shape[1]))


def _rot(pts: list[tuple[float, float]], pivot: tuple[float, float], ang: float) -> list[tuple[float, float]]:
    ca, sa = math.cos(ang), math.sin(ang)
    px, py = pivot
    return [(px + (x - px) * ca - (y - py) * sa, py + (x - px) * sa + (y - py) * ca) for x, y in pts]


def _paint(rgb: F32, alpha: F32, tex: F32, cov: F32, colour: npt.NDArray[np.float32], shade: float = 18.0) -> None:
    col = colour[None, None, :] + shade * tex[:, :, None]
    rgb[:] = rgb * (1 - cov[:, :, None]) + col * cov[:, :, None]
    alpha[:] = np.maximum(alpha, cov)


def weapon_sprites(
    kind: str, frame_h: int, rng: np.random.Generator, tilts: tuple[float, ...] = (0.0, 0.05, 0.11)
) -> list[Sprite]:
    """The officer's own weapon held in both hands, seen from a chest camera, one sprite per
    recoil tilt (radians of muzzle flip). ``kind`` is ``pistol`` or ``carbine``."""
    sh = int(frame_h * (0.62 if kind == "pistol" else 0.8))
    sw = int(frame_h * 0.95)
    sleeve = np.array(rng.choice([[30, 34, 44], [22, 22, 26], [44, 48, 40], [55, 58, 66]]), np.float32)
    gloves = bool(rng.random() < 0.3)
    skin_base = rng.uniform([120, 80, 60], [200, 150, 120]).astype(np.float32)
    skin = np.array([30, 30, 32], np.float32) if gloves else skin_base
    metal = np.array(rng.choice([[28, 28, 30], [45, 44, 42], [70, 66, 58]]), np.float32)
    tex_rng = np.random.default_rng(rng.integers(2**31))
    tex = fractal_noise((sh, sw), 20, tex_rng)
    out: list[Sprite] = []
    for tilt in tilts:
        W, H = float(sw), float(sh)
        pivot = (0.5 * W, 0.95 * H)
        layers: list[tuple[list[tuple[float, float]], npt.NDArray[np.float32], float]] = []
        if kind == "pistol":
            # forearms from the bottom corners to the grip
            layers.append(([(0.02 * W, H), (0.26 * W, H), (0.47 * W, 0.62 * H), (0.38 * W, 0.55 * H)], sleeve, 0.0))
            layers.append(([(0.98 * W, H), (0.74 * W, H), (0.53 * W, 0.62 * H), (0.62 * W, 0.55 * H)], sleeve, 0.0))
            gun = [(0.455 * W, 0.58 * H), (0.545 * W, 0.58 * H), (0.530 * W, 0.16 * H), (0.470 * W, 0.16 * H)]
            sight = [(0.48 * W, 0.16 * H), (0.52 * W, 0.16 * H), (0.51 * W, 0.12 * H), (0.49 * W, 0.12 * H)]
            hands = [
                (0.5 * W, 0.60 * H, 0.11 * W, 0.10 * H),
                (0.43 * W, 0.55 * H, 0.05 * W, 0.07 * H),
                (0.57 * W, 0.55 * H, 0.05 * W, 0.07 * H),
            ]
            muzzle = (0.5 * W, 0.12 * H)
        else:
            layers.append(([(0.0 * W, H), (0.22 * W, H), (0.44 * W, 0.48 * H), (0.36 * W, 0.44 * H)], sleeve, 0.0))
            layers.append(([(1.0 * W, H), (0.74 * W, H), (0.62 * W, 0.78 * H), (0.70 * W, 0.74 * H)], sleeve, 0.0))
            gun = [(0.43 * W, 0.98 * H), (0.60 * W, 0.98 * H), (0.525 * W, 0.10 * H), (0.475 * W, 0.10 * H)]
            sight = [(0.485 * W, 0.10 * H), (0.515 * W, 0.10 * H), (0.507 * W, 0.05 * H), (0.493 * W, 0.05 * H)]
            hands = [
                (0.46 * W, 0.46 * H, 0.06 * W, 0.06 * H),
                (0.62 * W, 0.76 * H, 0.07 * W, 0.07 * H),
            ]
            muzzle = (0.5 * W, 0.05 * H)
        rgb = np.zeros((sh, sw, 3), np.float32)
        alpha = np.zeros((sh, sw), np.float32)

        for pts, colour, _ in layers:
            _paint(rgb, alpha, tex, poly_mask(sh, sw, _rot(pts, pivot, tilt)), colour)
        _paint(rgb, alpha, tex, poly_mask(sh, sw, _rot(gun, pivot, tilt)), metal, 8.0)
        _paint(rgb, alpha, tex, poly_mask(sh, sw, _rot(sight, pivot, tilt)), metal * 0.6, 4.0)
        for cx, cy, rx, ry in hands:
            (cx2, cy2) = _rot([(cx, cy)], pivot, tilt)[0]
            _paint(rgb, alpha, tex, ellipse_mask(sh, sw, cx2, cy2, rx, ry, tilt), skin, 14.0)
        anchor = _rot([muzzle], pivot, tilt)[0]
        out.append(Sprite(np.clip(rgb, 0, 255).astype(np.float32), alpha, anchor))
    return out


# ----------------------------------------------------------------------------- flash shapes


def flash_mask(
    size: float, shape: str, rng: np.random.Generator, occlusion: float | None = None, elongation: float = 1.0
) -> tuple[F32, F32]:
    """A muzzle-flash intensity map (peak 1) and its white-hot core, centred in a square of
    side ~2.6*size. ``shape``: ``star`` (spiky burst), ``cone`` (plume along -y), ``disc`` (a
    compact ball) or ``vents`` (a compensator's two side jets).
    ``occlusion``: an angle; a half-plane through the centre at that angle hides part."""
    r = max(3, math.ceil(size * 1.3))
    ax = np.arange(-r, r + 1, dtype=np.float32)
    X = ax[None, :]
    Y = ax[:, None]
    if shape == "disc":
        # a compact round ball (short barrel, clean powder): no spikes
        rr2 = (X * X + Y * Y) / (size * 0.55) ** 2
        m = np.exp(-rr2 * 1.4)
    elif shape == "vents":
        # a compensator: two jets sideways and a small one up
        side = np.exp(-((np.abs(X) - size * 0.6) ** 2 / (size * 0.35) ** 2 + (Y / (size * 0.14)) ** 2))
        up = np.exp(-((X / (size * 0.16)) ** 2 + ((Y + size * 0.35) / (size * 0.3)) ** 2))
        m = np.maximum(side, 0.7 * up)
    elif shape == "cone":
        # plume: narrow ellipse pointing up (away from the camera), plus side jets
        Yc = Y + size * 0.2 * elongation
        u = X / (size * 0.38)
        v = Yc / (size * 0.9 * elongation)
        m = np.exp(-(u * u + v * v) * 1.6)
        jets = np.exp(-((np.abs(X) - size * 0.45) ** 2 / (size * 0.12) ** 2 + (Y + size * 0.05) ** 2 / (size * 0.08) ** 2))
        m = np.maximum(m, 0.6 * jets)
    else:
        th = np.arctan2(Y, X)
        rr = np.sqrt(X * X + Y * Y) + 1e-3
        n = int(rng.integers(4, 9))
        phase = rng.uniform(0, 2 * math.pi)
        lens = rng.uniform(0.5, 1.0, n).astype(np.float32)
        k = (th + phase) * n / (2 * math.pi)
        idx = np.floor(k).astype(np.int64) % n
        frac = k - np.floor(k)
        spike = lens[idx] * np.exp(-((frac - 0.5) ** 2) / 0.012)
        reff = size * (0.35 + 0.65 * spike)
        m = np.exp(-((rr / reff) ** 2) * 1.8)
    core = np.exp(-(X * X + Y * Y) / (2 * (size * 0.16) ** 2))
    m = np.maximum(m, core).astype(np.float32)
    if occlusion is not None:
        ca, sa = math.cos(occlusion), math.sin(occlusion)
        d = (X * ca + Y * sa) / max(size * 0.15, 1.0)
        keep = np.clip(0.5 - d, 0.0, 1.0)  # hides the side the normal points to, soft edge
        m = m * keep
        core = core * keep
    return m.astype(np.float32), core.astype(np.float32)
