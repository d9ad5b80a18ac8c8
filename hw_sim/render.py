"""Per-frame renderer: samples the panorama and composites the weapon, flashes, smoke and
visual distractors; then exposure and sensor noise.

Cost per frame is one ``np.take`` of the panorama (pan = column offset, bob = row offset,
rolling-shutter skew = per-row shift, motion blur = a pre-blurred panorama level), a
256-entry LUT for exposure and photo flashes, and a noise bank slice; sprites and glows
touch small regions only.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from bodycam.hw_sim.scene import Panorama
from bodycam.hw_sim.sprites import (
    F32,
    U8,
    Sprite,
    colour_of_temperature,
    ellipse_mask,
    flash_mask,
    gaussian_blob,
    weapon_sprites,
)
from bodycam.hw_sim.timeline import EventPlan, Plan, ShotPlan

_SCENE_LIGHT = {"range": 1.0, "street": 0.95, "indoor": 0.8, "night": 0.22}
_CAST = {"range": 22.0, "street": 28.0, "indoor": 45.0, "night": 70.0}


class Renderer:
    """Renders frame ``i`` of ``plan`` as an H x W x 3 uint8 RGB array; records each shot's
    muzzle position (frame pixels) in :attr:`muzzle_xy` as its first flash frame is drawn."""

    def __init__(self, plan: Plan, pano: Panorama, rng: np.random.Generator) -> None:
        self.plan = plan
        self.pano = pano
        sp = plan.spec
        self.W, self.H = sp.width, sp.height
        W, H = self.W, self.H
        self.ys = np.arange(H, dtype=np.float32)
        xs = np.arange(W, dtype=np.int64)
        self.base_idx = (np.arange(H, dtype=np.int64)[:, None] * pano.padded_width + xs[None, :] + pano.pad).astype(np.int64)
        self.light = _SCENE_LIGHT[plan.scene]
        self.sprites: list[Sprite] = weapon_sprites(plan.weapon_kind, H, rng)
        self.sprites = [Sprite(s.rgb * self.light, s.alpha, s.anchor) for s in self.sprites]
        # noise bank: rows are sliced at a per-frame offset
        extra = 48
        self.noise = np.clip(rng.normal(0.0, plan.noise_sigma, (H + extra, W, 3)), -127, 127).astype(np.int16)
        # luma-correlated part (real sensor noise is mostly in luma)
        luma = rng.normal(0.0, plan.noise_sigma * 0.7, (H + extra, W, 1)).astype(np.int16)
        self.noise = np.clip(self.noise + luma, -127, 127).astype(np.int16)
        self.noise_off = rng.integers(0, extra, plan.frames)
        self.buf16 = np.empty((H, W, 3), np.int16)
        self.ramp = np.arange(256, dtype=np.float32)
        self.muzzle_xy: dict[int, tuple[float, float]] = {}
        self._flash_cache: dict[tuple[int, int], tuple[F32, F32]] = {}
        self._glow_cache: dict[int, F32] = {}
        self._shots_by_frame: dict[int, list[tuple[int, ShotPlan, int]]] = {}
        for si, s in enumerate(plan.shots):
            for k in range(s.flash_frames):
                self._shots_by_frame.setdefault(s.frame + k, []).append((si, s, k))
        smoke_len = max(2, round(0.5 * plan.fps))
        self._smoke: dict[int, list[tuple[ShotPlan, int, float, float]]] = {}
        self.smoke_len = smoke_len
        self._smoke_dir = rng.uniform(-1.0, 1.0, max(1, len(plan.shots)))
        self._events_by_frame: dict[int, list[EventPlan]] = {}
        for ev in plan.events:
            a = ev.start
            if ev.kind == "dropped_object" and ev.params.get("shown", 0.0) > 0:
                a = ev.start - int(ev.params["fall"])
            for f in range(max(0, a), ev.end + 1):
                self._events_by_frame.setdefault(f, []).append(ev)

    # ------------------------------------------------------------------ helpers
    def _glow(self, radius: float) -> F32:
        key = max(2, round(radius))
        g = self._glow_cache.get(key)
        if g is None:
            g = gaussian_blob(key)
            self._glow_cache[key] = g
        return g

    def _add(self, img: U8, cx: float, cy: float, patch: F32, colour: npt.NDArray[np.float32]) -> None:
        """Additive light: ``img += patch * colour`` centred at (cx, cy), saturating."""
        h, w = patch.shape
        x0, y0 = round(cx) - w // 2, round(cy) - h // 2
        xa, ya = max(0, x0), max(0, y0)
        xb, yb = min(self.W, x0 + w), min(self.H, y0 + h)
        if xb <= xa or yb <= ya:
            return
        p = patch[ya - y0 : yb - y0, xa - x0 : xb - x0, None] * colour[None, None, :]
        reg = img[ya:yb, xa:xb]
        reg[:] = np.minimum(reg + p, 255.0).astype(np.uint8)

    def _blend(self, img: U8, x0: int, y0: int, rgb: F32, alpha: F32) -> None:
        h, w = alpha.shape
        xa, ya = max(0, x0), max(0, y0)
        xb, yb = min(self.W, x0 + w), min(self.H, y0 + h)
        if xb <= xa or yb <= ya:
            return
        a = alpha[ya - y0 : yb - y0, xa - x0 : xb - x0, None]
        src = rgb[ya - y0 : yb - y0, xa - x0 : xb - x0] if rgb.ndim == 3 else rgb
        reg = img[ya:yb, xa:xb]
        reg[:] = (reg * (1 - a) + src * a).astype(np.uint8)

    def world_to_screen(self, i: int, wx: float, wy: float) -> tuple[float, float]:
        """Panorama (x, y) -> frame pixel (x, y) in frame ``i``, including rolling-shutter skew."""
        p = self.plan
        Wp = self.pano.width
        x0 = math.floor(float(p.yaw[i]))
        dx = (wx - x0) % Wp
        if dx > Wp - self.W:
            dx -= Wp
        sy = wy - round(float(p.pitch[i]))
        shift = round(float(p.skew[i]) * sy / self.H) if 0 <= sy < self.H else 0
        return (dx - shift, sy)

    def _flash(self, si: int, s: ShotPlan, k: int) -> tuple[F32, F32]:
        key = (si, k)
        m = self._flash_cache.get(key)
        if m is None:
            frng = np.random.default_rng(s.flash_seed + k)
            size = s.size * (1.0 if k == 0 else 0.7)
            m = flash_mask(size, s.shape, frng, s.occlusion_angle if s.occluded else None, float(frng.uniform(0.8, 1.4)))
            if s.shooter == "other" and s.shape == "cone":
                # the plume points along the other person's aim (sideways), not away from us
                m0, c0 = m[0].T, m[1].T
                if self.plan.figures[s.figure].facing > 0:
                    m0, c0 = m0[:, ::-1], c0[:, ::-1]
                m = (np.ascontiguousarray(m0), np.ascontiguousarray(c0))
            self._flash_cache[key] = m
        return m

    # ------------------------------------------------------------------ frame
    def weapon_pose(self, i: int) -> tuple[int, int, Sprite] | None:
        p = self.plan
        d = float(p.draw[i])
        if d <= 0.01:
            return None
        kick = float(p.kick[i])
        spr = self.sprites[0 if kick < 0.3 else 1 if kick < 0.75 else 2]
        sh, sw = spr.shape
        y_top = self.H - d * 0.9 * sh + float(p.sway_y[i]) * d - kick * 0.06 * self.H
        x_left = self.W / 2 - sw / 2 + float(p.sway_x[i]) * d + (1 - d) * 0.25 * self.W
        return round(x_left), round(y_top), spr

    def render(self, i: int) -> U8:
        p = self.plan
        pano = self.pano
        H = self.H
        x0 = math.floor(float(p.yaw[i])) % pano.width
        row0 = round(float(p.pitch[i]))
        shift = np.round(float(p.skew[i]) * self.ys / H).astype(np.int64)
        idx = self.base_idx + (row0 * pano.padded_width + x0) + shift[:, None]
        img: U8 = np.take(pano.levels[int(p.blur[i])], idx, axis=0)

        # world-anchored light: other shooters' flashes and lightbars
        events = self._events_by_frame.get(i, ())
        for ev in events:
            if ev.kind == "lightbar_strobe":
                per = int(ev.params["period"])
                ph = ((i - ev.start) // per) % 4
                if ph in (0, 2):
                    sx, sy = self.world_to_screen(i, ev.params["world_x"], ev.params["row"])
                    r = ev.params["radius"]
                    col = np.array([255, 25, 20] if ph == 0 else [30, 70, 255], np.float32) * 0.95
                    g = self._glow(r * 1.6)
                    off = ev.params["spacing"] * (0 if ph == 0 else 1)
                    self._add(img, sx + off, sy, g, col)
                    self._add(img, sx + off, sy, self._glow(r * 0.5), np.array([255, 255, 255], np.float32) * 0.7)
        shots_here = self._shots_by_frame.get(i, ())
        for si, s, k in shots_here:
            if s.shooter == "other":
                fig = p.figures[s.figure]
                mx, my = self.world_to_screen(i, *fig.muzzle)
                self._draw_flash(img, si, s, k, mx, my, cast_scale=0.35)
                if k == 0:
                    self.muzzle_xy[si] = (round(mx, 1), round(my, 1))

        # the wearer's weapon and hands
        pose = self.weapon_pose(i)
        if pose is not None:
            xl, yt, spr = pose
            self._blend(img, xl, yt, spr.rgb, spr.alpha)
        for si, s, k in shots_here:
            if s.shooter == "wearer" and pose is not None:
                xl, yt, spr = pose
                mx, my = xl + spr.anchor[0], yt + spr.anchor[1]
                self._draw_flash(img, si, s, k, mx, my, cast_scale=1.0)
                if k == 0:
                    self.muzzle_xy[si] = (round(mx, 1), round(my, 1))
        self._draw_smoke(img, i)

        photo = 0.0
        for ev in events:
            if ev.kind == "photo_flash":
                photo = max(photo, ev.params["strength"] * (1.0 if i == ev.start else 0.35))
            elif ev.kind in ("torch_sweep", "headlight_sweep"):
                t = (i - ev.start) / max(1, ev.end - ev.start)
                cx = ev.params["x0"] + (ev.params["x1"] - ev.params["x0"]) * t
                cy = ev.params["y0"] + (ev.params["y1"] - ev.params["y0"]) * t
                col = colour_of_temperature(ev.params["kelvin"]) * 255 * ev.params["strength"]
                r = ev.params["radius"]
                pair = ev.params["pair"]
                for dx in ((-pair / 2, pair / 2) if pair > 0 else (0.0,)):
                    self._add(img, cx + dx, cy, self._glow(r * 2.2), col * 0.8)
                    self._add(img, cx + dx, cy, self._glow(r * 0.6), col * 1.2)
            elif ev.kind == "sun_glint":
                r = ev.params["radius"]
                st = ev.params["strength"] * (1.0 if i == ev.start else 0.6)
                n = max(3, int(r * 5))
                ax = np.arange(-n, n + 1, dtype=np.float32)
                star = np.maximum(
                    np.exp(-(ax[None, :] ** 2) / (2 * (r * 1.5) ** 2)) * np.exp(-(ax[:, None] ** 2) / 0.8),
                    np.exp(-(ax[:, None] ** 2) / (2 * (r * 1.5) ** 2)) * np.exp(-(ax[None, :] ** 2) / 0.8),
                )
                core = np.exp(-(ax[None, :] ** 2 + ax[:, None] ** 2) / (2 * (r * 0.6) ** 2))
                patch = np.maximum(star * 0.8, core).astype(np.float32)
                self._add(img, ev.params["x"], ev.params["y"], patch, np.array([255, 255, 252], np.float32) * st)
            elif ev.kind == "dropped_object" and ev.params.get("shown", 0.0) > 0:
                fall = int(ev.params["fall"])
                t = (i - (ev.start - fall)) / max(1, fall)
                if 0 <= t <= 1.0:
                    y = 0.45 * H + t * t * 0.55 * H
                    r = 0.02 * H
                    m = ellipse_mask(int(4 * r), int(4 * r), 2 * r, 2 * r, r * 1.3, r * 0.8, t * 3)
                    self._blend(img, int(ev.params["x"] - 2 * r), int(y - 2 * r), np.array([35, 32, 30], np.float32) * self.light, m)

        # exposure (+ photo flash) as a LUT, then sensor noise
        gain_i = float(p.gain[i])
        lut = self.ramp * gain_i
        if photo > 0:
            lut = lut + (255.0 - lut) * photo + 40 * photo
        lut_u8 = np.clip(lut, 0, 255).astype(np.uint8)
        img = lut_u8[img]
        o = int(self.noise_off[i])
        np.add(img, self.noise[o : o + H], out=self.buf16, dtype=np.int16)
        np.clip(self.buf16, 0, 255, out=self.buf16)
        out: U8 = self.buf16.astype(np.uint8)
        return out

    def _draw_flash(self, img: U8, si: int, s: ShotPlan, k: int, mx: float, my: float, cast_scale: float) -> None:
        mask, core = self._flash(si, s, k)
        inten = s.intensity * (1.0 if k == 0 else 0.45)
        warm = colour_of_temperature(s.colour_k)
        # local light cast on the scene (broad, dim, warm)
        cast_r = (0.35 * self.W if cast_scale >= 1 else 0.12 * self.W) * (0.6 + 0.4 * inten)
        self._add(img, mx, my, self._glow(cast_r), warm * _CAST[self.plan.scene] * inten * cast_scale)
        self._add(img, mx, my, mask, warm * 255.0 * 2.2 * inten)
        self._add(img, mx, my, core, np.array([255, 250, 235], np.float32) * 1.2 * inten)

    def _draw_smoke(self, img: U8, i: int) -> None:
        p = self.plan
        for si, s in enumerate(p.shots):
            age = i - s.frame - 1
            if age < 0 or age >= self.smoke_len or si not in self.muzzle_xy:
                continue
            t = (age + 1) / self.smoke_len
            mx, my = self.muzzle_xy[si]
            if s.shooter == "wearer":
                pose = self.weapon_pose(i)
                if pose is not None:
                    xl, yt, spr = pose
                    mx, my = xl + spr.anchor[0], yt + spr.anchor[1]
            r = s.size * (0.8 + 2.2 * t)
            cx = mx + float(self._smoke_dir[si]) * s.size * 1.5 * t
            cy = my - s.size * (0.3 + 1.5 * t)
            a = 0.4 * (1 - t) * (0.5 + 0.5 * s.intensity)
            g = self._glow(r) * a
            grey = np.float32(175.0 * self.light + 30.0)
            self._blend(img, round(cx) - g.shape[1] // 2, round(cy) - g.shape[0] // 2, np.full((*g.shape, 3), grey, np.float32), g)
