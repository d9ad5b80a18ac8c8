"""Apply a :class:`~bodycam.hw_sim.families.Look` to a generator :class:`Plan` (before rendering).

* flashes take the style's shape, colour, size and strength; each burns ``duration_ms`` at a random
  instant inside its frame's period, and the rolling shutter decides which rows of that frame see
  it (:func:`row_weights`): a flash can light a band of rows only, or fall between exposures;
* other shooters stand far away in the ``far`` family (figure and flash scaled down);
* exposure (gain), sensor noise, motion blur (by exposure time) and rolling-shutter skew (by
  readout time) follow the camera;
* new distractor events: fluorescent/LED flicker, screens, fireworks (drawn by ``look_draw``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from bodycam.hw_sim.families import DISTRACTOR_FAMILIES, Look
from bodycam.hw_sim.scene import BLUR_WIDTHS, Figure
from bodycam.hw_sim.timeline import EventPlan, Plan

F32 = npt.NDArray[np.float32]
LOOK_KINDS = ("fluorescent_flicker", "led_flicker", "screen", "firework")


@dataclass(frozen=True)
class FlashTiming:
    """When a shot's flash burns, as fractions of the frame period from its frame's start."""

    phase: float
    duration: float


def row_weights(height: int, timing: FlashTiming, readout: float, exposure: float) -> F32:
    """Fraction of the flash's light each row of the shot's frame collects (0..1).

    Row ``y`` is exposed over ``[y/H * readout, y/H * readout + exposure]`` (frame periods from
    the frame's start; ``readout`` 0 is a global shutter)."""
    y = np.arange(height, dtype=np.float64) / height * readout
    a = np.maximum(y, timing.phase)
    b = np.minimum(y + exposure, timing.phase + timing.duration)
    return np.clip((b - a) / max(timing.duration, 1e-9), 0.0, 1.0).astype(np.float32)


def _far_figures(plan: Plan, rng: np.random.Generator) -> dict[int, float]:
    scale: dict[int, float] = {}
    for k, fig in enumerate(plan.figures):
        s = float(rng.uniform(0.3, 0.55))
        muzzle = fig.muzzle  # keep the muzzle where the plan put it (in view)
        h = fig.height * s
        foot = fig.foot_row - (1 - s) * 0.35 * fig.height  # farther: closer to the horizon
        wx = muzzle[0] - fig.facing * 0.42 * h
        plan.figures[k] = Figure(world_x=wx, foot_row=foot, height=h, facing=fig.facing)
        scale[k] = s
    return scale


def apply_look(plan: Plan, look: Look, rng: np.random.Generator) -> dict[int, FlashTiming]:
    """Restyle ``plan`` in place for ``look``; return each shot's flash timing (by shot index)."""
    fps = plan.fps
    scale = _far_figures(plan, rng) if look.far else {}
    timings: dict[int, FlashTiming] = {}
    shots = []
    exposure = min(look.exposure, 1.8 - look.readout)
    for si, s in enumerate(plan.shots):
        d = float(rng.uniform(*look.flash_duration_ms)) / 1000.0 * fps
        # the instant lies where no row of the previous frame and none of the next sees it,
        # so the shot's frame is the only one that can (a flash lasts well under a frame)
        lo = max(0.0, look.readout + exposure - 1.0)
        hi = max(lo, 1.0 - d)
        timings[si] = FlashTiming(float(rng.uniform(lo, hi)), d)
        size = s.size * float(rng.uniform(*look.flash_size)) * scale.get(s.figure, 1.0)
        shots.append(
            replace(
                s,
                flash_frames=1,
                shape=look.flash_shape,
                colour_k=float(round(rng.uniform(*look.flash_kelvin))),
                size=max(1.0, size),
                intensity=round(min(1.0, s.intensity * float(rng.uniform(*look.flash_intensity))), 3),
            )
        )
    plan.shots = shots
    plan.gain = (plan.gain * look.gain * (0.55 if look.family("weather") == "dusk" else 1.0)).astype(np.float32)
    plan.noise_sigma = plan.noise_sigma * look.noise
    sc = plan.spec.width / 640.0
    speeds = np.abs(plan.vel) / sc * (exposure / 0.5)
    plan.blur = np.minimum(np.digitize(speeds, [3.0, 10.0, 24.0]), len(BLUR_WIDTHS) - 1).astype(np.int8)
    pad = math.ceil(0.12 * plan.spec.width)
    plan.skew = np.clip(plan.vel * look.readout, -pad, pad).astype(np.float32)
    plan.events.extend(_look_events(plan, look, rng))
    plan.events.sort(key=lambda e: (e.start, e.kind))
    return timings


def _busy(plan: Plan) -> npt.NDArray[np.bool_]:
    busy = np.zeros(plan.frames, bool)
    for s in plan.shots:
        busy[max(0, s.frame - 3) : s.frame + 4] = True
    return busy


def _look_events(plan: Plan, look: Look, rng: np.random.Generator) -> list[EventPlan]:
    """The family's own new kinds, plus one of them at random now and then."""
    N, fps, W, H = plan.frames, plan.fps, plan.spec.width, plan.spec.height
    sr = plan.spec.sample_rate
    kinds = [k for k in DISTRACTOR_FAMILIES[look.family("distractors")] if k in LOOK_KINDS]
    if rng.random() < 0.3:
        kinds.append(str(rng.choice(LOOK_KINDS)))
    busy = _busy(plan)
    margin = round(0.14 * H)  # panorama rows above the frame's top at neutral pitch
    out: list[EventPlan] = []
    for kind in kinds:
        if kind in ("fluorescent_flicker", "led_flicker"):
            a = int(rng.integers(0, max(1, N // 3)))
            b = N - 1 if rng.random() < 0.6 else int(rng.integers(a, N))
            P = {
                "hz": float(rng.choice([100.0, 120.0])) if kind == "fluorescent_flicker" else float(rng.uniform(90, 1500)),
                "depth": float(rng.uniform(0.08, 0.3) if kind == "fluorescent_flicker" else rng.uniform(0.3, 0.8)),
                "duty": float(rng.uniform(0.2, 0.7)),
                "phase": float(rng.uniform(0, 1)),
            }
            out.append(EventPlan(kind, a, b, P, None, True))
        elif kind == "screen":
            dur = int(rng.uniform(2.0, 8.0) * fps)
            a = int(rng.integers(0, max(1, N - dur)))
            b = min(N - 1, a + dur)
            P = {
                "world_x": float(plan.yaw[a] + rng.uniform(0.15, 0.75) * W),
                "world_y": float(margin + plan.horizon_frac * H + rng.uniform(-0.2, 0.1) * H),
                "w": float(rng.uniform(0.06, 0.2) * W),
                "h": float(rng.uniform(0.05, 0.14) * H),
                "cut_rate": float(rng.uniform(0.5, 4.0)),  # content cuts per second
                "seed": float(int(rng.integers(2**31))),
            }
            out.append(EventPlan(kind, a, b, P, None, True))
        elif kind == "firework":
            dur = max(3, int(rng.uniform(0.6, 1.5) * fps))
            for _try in range(30):
                a = int(rng.integers(0, max(1, N - 2)))
                if not busy[a]:
                    break
            else:
                continue
            busy[max(0, a - 3) : a + 4] = True
            P = {
                "world_x": float(plan.yaw[a] + rng.uniform(0.1, 0.9) * W),
                "world_y": float(margin + rng.uniform(0.08, 0.3) * H),
                "radius": float(rng.uniform(0.06, 0.2) * W),
                "kelvin": float(rng.choice([1800.0, 3000.0, 6500.0, 9000.0])),
                "hue": float(rng.integers(0, 6)),
                "sparks": float(int(rng.integers(20, 60))),
                "seed": float(int(rng.integers(2**31))),
                "level_db": float(rng.uniform(-20, -6)),
            }
            out.append(EventPlan(kind, a, min(N - 1, a + dur), P, round(a / fps * sr), True))
    return out
