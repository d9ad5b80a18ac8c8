"""The renderer with a camera :class:`~bodycam.hw_sim.families.Look` on top.

Over the generator's :class:`~bodycam.hw_sim.render.Renderer`: a muzzle flash lights only the rows
whose exposure overlapped it (:func:`~bodycam.hw_sim.look_plan.row_weights`), and every frame goes
through the look's post-processing: flicker banding (fluorescent, LED PWM, per row by the rolling
shutter), screens, fireworks, weather (haze, rain), white balance, then field of view and lens
distortion as one precomputed remap (applied first: the sensor's rows are the output's rows, so
flicker bands are straight there; the flash's rows are weighted before it, a small inconsistency
where the lens bends rows). Which shots' flashes were visible is recorded
(:attr:`LookRenderer.flash_seen`), so the truth can say ``flash_frames: 0`` for the others.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from bodycam.hw_sim.families import Look
from bodycam.hw_sim.look_plan import FlashTiming, row_weights
from bodycam.hw_sim.render import Renderer
from bodycam.hw_sim.scene import Panorama
from bodycam.hw_sim.sprites import F32, U8, colour_of_temperature
from bodycam.hw_sim.timeline import EventPlan, Plan, ShotPlan

VISIBLE_RISE = 60.0  # a flash is "visible" when it raised some pixel's R+G+B by this much
_FIREWORK_RGB = np.array(
    [[255, 60, 40], [60, 255, 80], [70, 110, 255], [255, 220, 60], [255, 80, 230], [240, 240, 255]], np.float32
)


def _remap(W: int, H: int, zoom: float, k1: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Output pixel -> source pixel (flat index), for a zoom (narrower field of view) and a radial
    distortion ``k1`` (negative: barrel; the corners stay the corners)."""
    cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    u, v = (xs - cx) / cx, (ys - cy) / cx
    rmax2 = 1.0 + (cy / cx) ** 2
    k = -k1
    f = (1 + k * (u * u + v * v) / rmax2) / (1 + k) / zoom
    sx = np.clip(cx + u * f * cx, 0, W - 1)
    sy = np.clip(cy + v * f * cx, 0, H - 1)
    return (np.round(sy).astype(np.int64) * W + np.round(sx).astype(np.int64)), sx, sy


class LookRenderer(Renderer):
    def __init__(self, plan: Plan, pano: Panorama, rng: np.random.Generator, look: Look,
                 timings: dict[int, FlashTiming]) -> None:
        super().__init__(plan, pano, rng)
        self.look = look
        exposure = min(look.exposure, 1.8 - look.readout)
        self.exposure = exposure
        self.weights = {si: row_weights(self.H, t, look.readout, exposure) for si, t in timings.items()}
        self.flash_seen: dict[int, bool] = {}
        self.idx, self.src_x, self.src_y = _remap(self.W, self.H, look.zoom, look.k1)
        self.idx_flat = np.ascontiguousarray(self.idx.ravel())
        self.wb = np.array(look.wb, np.float32)
        weather = look.family("weather")
        self.haze = 0.45 * look.weather_strength if weather == "haze" else 0.0
        ramp = np.arange(256, dtype=np.float32)
        self.luts = [np.clip((ramp * (1 - self.haze) + self.haze * 190.0) * float(g), 0, 255).astype(np.uint8)
                     for g in self.wb]
        self.rain: F32 | None = None
        if weather == "rain":
            streak = np.zeros((self.H * 2, self.W), np.float32)
            n = int(self.W * self.H / 900 * look.weather_strength)
            xs = rng.integers(0, self.W, n)
            ys = rng.integers(0, self.H * 2, n)
            ln = max(3, self.H // 30)
            for dy in range(ln):
                streak[(ys + dy) % (2 * self.H), (xs + dy // 3) % self.W] = 28.0
            self.rain = streak

    # ------------------------------------------------------------------ flashes by exposure
    def _draw_flash(self, img: U8, si: int, s: ShotPlan, k: int, mx: float, my: float, cast_scale: float) -> None:
        before = img.astype(np.float32)
        super()._draw_flash(img, si, s, k, mx, my, cast_scale)
        w = self.weights.get(si)
        if w is None:
            return
        rise = (img.astype(np.float32) - before) * w[:, None, None]
        img[:] = np.clip(before + rise, 0, 255).astype(np.uint8)
        seen = float(rise.sum(axis=2).max()) >= VISIBLE_RISE and self.to_output(mx, my) is not None
        self.flash_seen[si] = self.flash_seen.get(si, False) or seen

    def to_output(self, x: float, y: float) -> tuple[float, float] | None:
        """A point of the rendered frame in the output frame (after zoom and distortion), or
        ``None`` when the remap leaves it out of view."""
        if not (0 <= x < self.W and 0 <= y < self.H):
            return None
        d = (self.src_x - x) ** 2 + (self.src_y - y) ** 2
        j = int(np.argmin(d))
        if float(d.flat[j]) > 4.0:
            return None
        return (float(j % self.W), float(j // self.W))

    # ------------------------------------------------------------------ frame
    def render(self, i: int) -> U8:
        img = super().render(i)
        events = self._events_by_frame.get(i, ())
        row_gain = np.ones(self.H, np.float32)
        for ev in events:
            if ev.kind in ("fluorescent_flicker", "led_flicker"):
                row_gain *= self._flicker(i, ev)
            elif ev.kind == "screen":
                self._screen(img, i, ev)
            elif ev.kind == "firework":
                self._firework(img, i, ev)
        # the lens first (the sensor's rows are the output's rows: flicker bands are straight there)
        out = np.take(img.reshape(-1, 3), self.idx_flat, axis=0).reshape(self.H, self.W, 3)
        if self.rain is None and bool((row_gain == 1.0).all()):  # per-channel affine only: LUTs
            for c in range(3):
                out[..., c] = self.luts[c][out[..., c]]
            return out
        x = out.astype(np.float32)
        if self.rain is not None:
            off = (i * max(2, self.H // 12)) % self.H
            x += self.rain[self.H - off : 2 * self.H - off, :, None]
        x *= row_gain[:, None, None]
        x = (x * (1 - self.haze) + self.haze * 190.0) * self.wb
        return np.clip(x, 0, 255).astype(np.uint8)

    def _flicker(self, i: int, ev: EventPlan) -> F32:
        """Row brightness under a flickering light: its output averaged over each row's exposure."""
        P = ev.params
        T = 1.0 / self.plan.fps
        t0 = i * T + np.arange(self.H, dtype=np.float64) / self.H * self.look.readout * T
        e = self.exposure * T
        samples = t0[:, None] + e * (np.arange(12) + 0.5)[None, :] / 12
        ph = (samples * P["hz"] + P["phase"]) % 1.0
        if ev.kind == "fluorescent_flicker":
            light = 1.0 + P["depth"] * np.sin(2 * math.pi * ph)
        else:
            light = np.where(ph < P["duty"], 1.0, 1.0 - P["depth"])
        return np.asarray(light.mean(axis=1), np.float32)

    def _screen(self, img: U8, i: int, ev: EventPlan) -> None:
        P = ev.params
        sx, sy = self.world_to_screen(i, P["world_x"], P["world_y"])
        cut = int((i - ev.start) / self.plan.fps * P["cut_rate"])
        crng = np.random.default_rng(int(P["seed"]) + cut)
        level = float(crng.choice([0.1, 0.4, 0.7, 1.0, 1.0]))
        col = (crng.uniform(0.5, 1.0, 3) * 255 * level).astype(np.float32)
        x0, y0 = round(sx), round(sy)
        w, h = round(P["w"]), round(P["h"])
        xa, ya, xb, yb = max(0, x0), max(0, y0), min(self.W, x0 + w), min(self.H, y0 + h)
        if xb > xa and yb > ya:
            reg = img[ya:yb, xa:xb].astype(np.float32)
            img[ya:yb, xa:xb] = np.clip(reg * 0.1 + col * 0.9, 0, 255).astype(np.uint8)

    def _firework(self, img: U8, i: int, ev: EventPlan) -> None:
        P = ev.params
        age = (i - ev.start) / self.plan.fps
        cx, cy = self.world_to_screen(i, P["world_x"], P["world_y"])
        frng = np.random.default_rng(int(P["seed"]))
        n = int(P["sparks"])
        ang = frng.uniform(0, 2 * math.pi, n)
        spd = frng.uniform(0.5, 1.0, n) * P["radius"]
        grow = 1 - math.exp(-age / 0.25)
        fade = math.exp(-age / 0.45)
        col = _FIREWORK_RGB[int(P["hue"]) % len(_FIREWORK_RGB)] * 0.5 + colour_of_temperature(P["kelvin"]) * 127
        if i == ev.start:
            self._add(img, cx, cy, self._glow(P["radius"] * 0.3), col * 1.5)
        r = max(1.5, P["radius"] * 0.04)
        g = self._glow(r)
        for a, s in zip(ang, spd, strict=True):
            x = cx + math.cos(a) * s * grow
            y = cy + math.sin(a) * s * grow + 0.15 * P["radius"] * age * age
            self._add(img, x, y, g, col * fade)
