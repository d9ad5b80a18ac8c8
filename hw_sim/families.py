"""Named families of variation for domain-randomised training data (``bodycam-sim make-dataset``).

Every clip of a domain-randomised data set is one draw from each *axis*; each axis is a set of
named *families*, each family with its own random ranges. Whole families can be held out of
training (:class:`HoldOut`), so evaluation sees kinds of footage the model never saw:

* ``scene``: where (range, street, indoor, night: the generator's painted worlds);
* ``weather``: clear, haze, rain, dusk (an overlay over the scene);
* ``flash``: how a muzzle flash looks (shape, colour temperature, size, duration, strength);
* ``fps``: the frame rate (24, 25, 30, 48, 60);
* ``camera``: optics and sensor (resolution, field of view, lens distortion, rolling-shutter
  readout, noise, white balance, bitrate);
* ``distance``: how far other shooters stand (near, far);
* ``distractors``: which kinds of non-shot light and sound a clip is rich in.

A :class:`Look` is one concrete draw (all numbers fixed); :func:`draw_look` makes it from a seeded
generator, so a clip is a pure function of its seed and the hold-out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bodycam.device.errors import UsageError

SCENE_FAMILIES = ("range", "street", "indoor", "night")
WEATHER_FAMILIES = ("clear", "haze", "rain", "dusk")
FPS_FAMILIES = ("24", "25", "30", "48", "60")


@dataclass(frozen=True)
class FlashStyle:
    shape: str  # flash_mask shape
    kelvin: tuple[float, float]
    size: tuple[float, float]  # scale of the generator's flash size
    intensity: tuple[float, float]  # scale of the generator's intensity
    duration_ms: tuple[float, float]  # how long the flash burns (the exposure decides what a frame sees)


FLASH_STYLES: dict[str, FlashStyle] = {
    "star_warm": FlashStyle("star", (1900, 3600), (0.8, 1.3), (0.8, 1.0), (0.3, 1.5)),
    "cone_warm": FlashStyle("cone", (2000, 4000), (0.8, 1.4), (0.8, 1.0), (0.3, 1.5)),
    "disc_white": FlashStyle("disc", (4500, 6500), (0.5, 0.9), (0.7, 1.0), (0.2, 0.8)),
    "dim_small": FlashStyle("star", (1800, 3000), (0.3, 0.6), (0.35, 0.7), (0.2, 0.6)),
    "vents_orange": FlashStyle("vents", (1700, 2600), (0.9, 1.5), (0.7, 1.0), (0.5, 2.0)),
}


@dataclass(frozen=True)
class CameraFamily:
    sizes: tuple[tuple[int, int], ...]
    zoom: tuple[float, float]  # > 1: a narrower field of view than the generator's 90 degrees
    k1: tuple[float, float]  # radial distortion (negative: barrel)
    readout: tuple[float, float]  # rolling-shutter readout, fraction of the frame period (0: global)
    noise: tuple[float, float]  # scale of the generator's sensor noise
    crf: tuple[int, int]  # x264 constant rate factor (bitrate: lower is better)
    wb: float  # white-balance error, +- per channel gain


CAMERA_FAMILIES: dict[str, CameraFamily] = {
    "bodycam_wide": CameraFamily(((640, 360), (480, 270), (424, 240)), (1.0, 1.1), (-0.22, -0.08), (0.55, 0.9),
                                 (0.8, 1.6), (22, 30), 0.08),
    "action_fisheye": CameraFamily(((640, 360), (512, 288)), (1.0, 1.05), (-0.38, -0.25), (0.5, 0.8),
                                   (1.0, 2.0), (24, 32), 0.12),
    "phone_narrow": CameraFamily(((640, 480), (480, 360), (320, 240)), (1.2, 1.5), (-0.05, 0.03), (0.6, 0.95),
                                 (0.7, 1.4), (20, 28), 0.06),
    "global_shutter": CameraFamily(((640, 360), (320, 180)), (1.0, 1.2), (-0.1, 0.0), (0.0, 0.0),
                                   (0.8, 1.5), (23, 30), 0.05),
    "cheap_lowlight": CameraFamily(((320, 180), (424, 240), (480, 270)), (1.0, 1.15), (-0.15, 0.0), (0.7, 0.98),
                                   (1.8, 3.0), (28, 36), 0.15),
}

DISTANCE_FAMILIES = ("near", "far")
#: distractor families: the kinds a clip is rich in (each family forces a few of its kinds)
DISTRACTOR_FAMILIES: dict[str, tuple[str, ...]] = {
    "emergency": ("lightbar_strobe", "lightbar_strobe", "headlight_sweep", "siren"),
    "flicker": ("fluorescent_flicker", "led_flicker", "screen"),
    "camera_flash": ("photo_flash", "photo_flash", "sun_glint"),
    "street_light": ("headlight_sweep", "torch_sweep", "sun_glint"),
    "celebration": ("firework", "firework", "photo_flash", "clap"),
}
AXES: dict[str, tuple[str, ...]] = {
    "scene": SCENE_FAMILIES,
    "weather": WEATHER_FAMILIES,
    "flash": tuple(FLASH_STYLES),
    "fps": FPS_FAMILIES,
    "camera": tuple(CAMERA_FAMILIES),
    "distance": DISTANCE_FAMILIES,
    "distractors": tuple(DISTRACTOR_FAMILIES),
}
#: the split the shipped video model is trained with: one scene, one flash style, one frame rate
DEFAULT_HOLD_OUT: dict[str, tuple[str, ...]] = {"scene": ("indoor",), "flash": ("vents_orange",), "fps": ("25",)}


@dataclass(frozen=True)
class HoldOut:
    """Families kept out of training, per axis."""

    families: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def of(cls, d: dict[str, tuple[str, ...]]) -> HoldOut:
        for axis, names in d.items():
            if axis not in AXES:
                raise UsageError(f"hold-out axis {axis!r} is not one of {', '.join(AXES)}")
            for n in names:
                if n not in AXES[axis]:
                    raise UsageError(f"hold-out {axis} family {n!r} is not one of {', '.join(AXES[axis])}")
            if set(names) >= set(AXES[axis]):
                raise UsageError(f"hold-out: every {axis} family held out; keep at least one for training")
        return cls(tuple(sorted((a, tuple(sorted(n))) for a, n in d.items() if n)))

    @classmethod
    def parse(cls, text: str) -> HoldOut:
        """``scene=indoor,flash=vents_orange,fps=25`` (an axis may repeat); ``none``: nothing held out."""
        d: dict[str, tuple[str, ...]] = {}
        if text.strip().lower() in ("", "none"):
            return cls(())
        for part in text.split(","):
            axis, sep, name = part.strip().partition("=")
            if not sep or not name:
                raise UsageError(f"hold-out {part!r}: expected AXIS=FAMILY (e.g. scene=indoor)")
            d[axis] = (*d.get(axis, ()), name)
        return cls.of(d)

    def held(self, axis: str) -> tuple[str, ...]:
        return dict(self.families).get(axis, ())

    def allowed(self, axis: str, held_out: bool) -> tuple[str, ...]:
        """The families of ``axis`` an in-domain (``held_out=False``) clip may use; a held-out
        clip may use any."""
        if held_out:
            return AXES[axis]
        h = set(self.held(axis))
        return tuple(n for n in AXES[axis] if n not in h)

    def is_held_out(self, families: dict[str, str]) -> bool:
        return any(families.get(a) in names for a, names in self.families)

    def as_dict(self) -> dict[str, list[str]]:
        return {a: list(n) for a, n in self.families}

    def __str__(self) -> str:
        return ",".join(f"{a}={n}" for a, names in self.families for n in names) or "none"


@dataclass(frozen=True)
class Look:
    """One concrete draw of every axis (all numbers fixed)."""

    families: tuple[tuple[str, str], ...]
    width: int
    height: int
    fps: float
    zoom: float
    k1: float
    readout: float  # fraction of the frame period
    exposure: float  # fraction of the frame period
    noise: float
    crf: int
    wb: tuple[float, float, float]
    gain: float
    flash_kelvin: tuple[float, float]
    flash_size: tuple[float, float]
    flash_intensity: tuple[float, float]
    flash_duration_ms: tuple[float, float]
    flash_shape: str
    far: bool
    weather_strength: float

    def family(self, axis: str) -> str:
        return dict(self.families)[axis]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["families"] = dict(self.families)
        return d


_EXPOSURE = {  # fraction of the frame period the shutter is open, per scene light
    "range": (0.02, 0.25),
    "street": (0.03, 0.35),
    "indoor": (0.25, 0.8),
    "night": (0.6, 1.0),
}


def draw_families(rng: np.random.Generator, hold: HoldOut, held_out: bool) -> dict[str, str]:
    """One family per axis. In-domain: never a held-out family. Held-out: at least one held-out
    family (an axis with held-out families is picked, and one of them forced)."""
    fam = {axis: str(rng.choice(hold.allowed(axis, held_out=False))) for axis in AXES}
    if held_out:
        axes = [a for a, _ in hold.families]
        if not axes:
            raise UsageError("held-out clips asked for, but nothing is held out")
        for a in axes:  # each held-out axis: its held-out family with probability 1/2 ...
            if rng.random() < 0.5:
                fam[a] = str(rng.choice(hold.held(a)))
        if not hold.is_held_out(fam):  # ... and at least one
            a = axes[int(rng.integers(len(axes)))]
            fam[a] = str(rng.choice(hold.held(a)))
    return fam


def draw_look(rng: np.random.Generator, families: dict[str, str]) -> Look:
    cam = CAMERA_FAMILIES[families["camera"]]
    style = FLASH_STYLES[families["flash"]]
    w, h = cam.sizes[int(rng.integers(len(cam.sizes)))]
    lo, hi = _EXPOSURE[families["scene"]]
    if families["weather"] == "dusk":
        lo, hi = min(1.0, lo * 3), min(1.0, hi * 2.5)
    u = rng.uniform
    return Look(
        families=tuple(sorted(families.items())),
        width=w,
        height=h,
        fps=float(families["fps"]),
        zoom=float(u(*cam.zoom)),
        k1=float(u(*cam.k1)),
        readout=float(u(*cam.readout)),
        exposure=float(u(lo, hi)),
        noise=float(u(*cam.noise)),
        crf=int(rng.integers(cam.crf[0], cam.crf[1] + 1)),
        wb=(float(1 + u(-cam.wb, cam.wb)), 1.0, float(1 + u(-cam.wb, cam.wb))),
        gain=float(u(0.75, 1.25)),
        flash_kelvin=style.kelvin,
        flash_size=style.size,
        flash_intensity=style.intensity,
        flash_duration_ms=style.duration_ms,
        flash_shape=style.shape,
        far=families["distance"] == "far",
        weather_strength=float(u(0.3, 1.0)),
    )
