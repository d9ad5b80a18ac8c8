"""What happens when: the per-clip plan (camera path, weapon, shots, distractors).

:func:`make_plan` turns a :class:`ClipSpec` and a seeded ``numpy.random.Generator`` into a
:class:`Plan` of per-frame arrays (camera yaw/pitch, motion-blur level, rolling-shutter
skew, exposure gain, weapon draw progress, recoil kick) and event lists. The renderer and
the audio synthesiser only *execute* a plan; the truth file is derived from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import UsageError
from bodycam.hw_sim.scene import BLUR_WIDTHS, Figure
from bodycam.hw_sim.truth import DISTRACTOR_KINDS, SCENES

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

VISUAL_KINDS = ("photo_flash", "lightbar_strobe", "torch_sweep", "headlight_sweep", "sun_glint")
AUDIO_ONSET_KINDS = ("door_slam", "clap", "dropped_object")
AUDIO_BED_KINDS = ("siren", "shouting", "babble")
#: the kinds this planner makes (the look's own kinds are planned by hw_sim.look_plan)
PLAN_KINDS = tuple(DISTRACTOR_KINDS[: DISTRACTOR_KINDS.index("babble") + 1])
_SCENE_KIND_WEIGHTS: dict[str, dict[str, float]] = {
    "range": {"photo_flash": 1, "sun_glint": 3, "torch_sweep": 0.3, "headlight_sweep": 0.3, "lightbar_strobe": 0.3,
              "door_slam": 1, "clap": 1.5, "dropped_object": 1.5, "siren": 0.3, "shouting": 1, "babble": 0.7},
    "street": {"photo_flash": 1, "sun_glint": 2, "torch_sweep": 0.5, "headlight_sweep": 1.5, "lightbar_strobe": 1.5,
               "door_slam": 1.5, "clap": 0.7, "dropped_object": 1, "siren": 1, "shouting": 1, "babble": 1},
    "indoor": {"photo_flash": 1.5, "sun_glint": 1, "torch_sweep": 1.5, "headlight_sweep": 0.3, "lightbar_strobe": 0.7,
               "door_slam": 2, "clap": 1, "dropped_object": 1.5, "siren": 0.3, "shouting": 1.2, "babble": 1},
    "night": {"photo_flash": 1.2, "sun_glint": 0.5, "torch_sweep": 2, "headlight_sweep": 2, "lightbar_strobe": 2,
              "door_slam": 1, "clap": 0.7, "dropped_object": 1, "siren": 1, "shouting": 1, "babble": 0.7},
}


@dataclass(frozen=True)
class ClipSpec:
    """What to generate. ``shots=None``: a random count; ``scene="random"``: picked from the seed.
    ``force_distractors``: kinds that must each occur at least once (when they fit).
    ``distractor_rate``: mean distractor events per 10 s (``None``: about 2.5, or 6 when shot-free).
    ``burst``: force a rapid burst (needs >= 3 shots); ``other_shooter``: force/forbid a
    shooter other than the wearer (``None``: random)."""

    seconds: float = 20.0
    shots: int | None = None
    seed: int = 0
    scene: str = "random"
    width: int = 640
    height: int = 360
    fps: float = 30.0
    sample_rate: int = 48000
    force_distractors: tuple[str, ...] = ()
    distractor_rate: float | None = None
    burst: bool | None = None
    other_shooter: bool | None = None

    def validate(self) -> None:
        """Raise :class:`UsageError` for anything out of range."""
        if not (isinstance(self.seed, int) and 0 <= self.seed <= 2**32 - 1):
            raise UsageError(f"seed {self.seed} out of range 0..{2**32 - 1}")
        if not (1 <= self.seconds <= 3600) or not math.isfinite(self.seconds):
            raise UsageError(f"seconds {self.seconds} out of range 1..3600")
        if not (5 <= self.fps <= 60) or not math.isfinite(self.fps):
            raise UsageError(f"fps {self.fps} out of range 5..60")
        if self.width % 2 or self.height % 2:
            raise UsageError(f"size {self.width}x{self.height} must be even")
        if not (160 <= self.width <= 1920 and 96 <= self.height <= 1080):
            raise UsageError(f"size {self.width}x{self.height} out of range 160x96..1920x1080")
        if self.scene not in (*SCENES, "random"):
            raise UsageError(f"scene {self.scene!r} is not one of {', '.join((*SCENES, 'random'))}")
        for k in self.force_distractors:
            if k not in PLAN_KINDS:
                raise UsageError(f"distractor kind {k!r} is not one of {', '.join(PLAN_KINDS)}")
        if self.sample_rate not in (16000, 22050, 24000, 32000, 44100, 48000):
            raise UsageError(f"sample rate {self.sample_rate} not supported")
        if self.shots is not None:
            if self.shots < 0:
                raise UsageError(f"shots {self.shots} must be >= 0")
            if self.shots > self.max_shots:
                raise UsageError(f"{self.shots} shots do not fit in {self.seconds:g} s (at most {self.max_shots})")
        if self.distractor_rate is not None and not (0 <= self.distractor_rate <= 60):
            raise UsageError(f"distractor rate {self.distractor_rate} out of range 0..60")

    @property
    def fps_fraction(self) -> Fraction:
        return Fraction(self.fps).limit_denominator(1001)

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * float(self.fps_fraction)))

    @property
    def min_interval(self) -> int:
        """Fewest frames between two shots (~100 ms, and never overlapping flashes)."""
        return max(3, math.ceil(0.1 * float(self.fps_fraction) - 1e-9))

    @property
    def max_shots(self) -> int:
        return max(0, (self.frames - 4) // self.min_interval)


@dataclass(frozen=True)
class ShotPlan:
    frame: int
    shooter: str  # wearer | other
    flash_frames: int
    intensity: float
    shape: str  # star | cone
    colour_k: float
    size: float  # flash radius, pixels
    occluded: bool
    occlusion_angle: float
    loudness_db: float
    figure: int  # index into Plan.figures, -1 for the wearer
    flash_seed: int


@dataclass(frozen=True)
class EventPlan:
    """A distractor. ``params`` holds kind-specific numbers (positions in screen pixels
    unless named ``world_*``)."""

    kind: str
    start: int
    end: int  # inclusive
    params: dict[str, float]
    audio_sample: int | None = None
    visual: bool = True


@dataclass
class Plan:
    spec: ClipSpec
    scene: str
    frames: int
    fps: float
    weapon_kind: str
    horizon_frac: float
    yaw: F64  # panorama column of the frame's left edge (unwrapped)
    vel: F32  # yaw velocity, pixels/frame
    pitch: F32  # panorama row of the frame's top row
    skew: F32  # rolling-shutter shift of the last row relative to the first (pixels)
    blur: npt.NDArray[np.int8]  # index into BLUR_WIDTHS
    gain: F32
    noise_sigma: float
    state: npt.NDArray[np.int8]  # 0 holstered, 1 drawing, 2 drawn, 3 holstering
    draw: F32  # 0 (out of view) .. 1 (fully up)
    kick: F32  # 0..1 recoil of the weapon (relative to the camera)
    sway_x: F32
    sway_y: F32
    shots: list[ShotPlan] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    events: list[EventPlan] = field(default_factory=list)


STATE_NAMES = ("holstered", "drawing", "drawn", "holstering")


def _smooth(x: F64, n: int) -> F64:
    if n <= 1:
        return x
    k = np.hanning(n + 2)[1:-1]
    k /= k.sum()
    pad = np.concatenate([np.full(n, x[0]), x, np.full(n, x[-1])])
    return np.convolve(pad, k, mode="same")[n:-n]


def _smooth_noise(rng: np.random.Generator, frames: int, n: int) -> F64:
    x = rng.normal(0, 1, frames + 2 * n)
    y = _smooth(x, n)[n : n + frames]
    s = float(y.std()) or 1.0
    return (y / s).astype(np.float64)


def make_plan(spec: ClipSpec, rng: np.random.Generator) -> Plan:
    spec.validate()
    fps = float(spec.fps_fraction)
    N = spec.frames
    W, H = spec.width, spec.height
    scene = spec.scene if spec.scene != "random" else str(rng.choice(SCENES))
    weapon_kind = "pistol" if rng.random() < 0.7 else "carbine"
    horizon_frac = float(rng.uniform(0.36, 0.48))
    sec = N / fps
    mi = spec.min_interval

    # ---------------------------------------------------------------- shot strings
    if spec.shots is None:
        hi = min(spec.max_shots, max(1, int(sec / 2.5)))
        n_shots = int(rng.integers(0, hi + 1))
    else:
        n_shots = spec.shots
    strings: list[tuple[str, list[int]]] = []  # (shooter, offsets in frames)
    left = n_shots
    want_burst = spec.burst if spec.burst is not None else (n_shots >= 3 and rng.random() < 0.6)
    while left > 0:
        if want_burst and left >= 3 and not any(len(o) >= 3 for _, o in strings):
            size = min(left, int(rng.integers(3, 6)))
            burst = True
        else:
            size = min(left, int(rng.choice([1, 1, 2, 2, 3, 4])))
            burst = size > 1 and rng.random() < 0.5
        gaps = [
            (max(mi, round(rng.uniform(0.1, 0.18) * fps)) if burst else max(mi, round(rng.uniform(0.25, 0.8) * fps)))
            for _ in range(size - 1)
        ]
        if burst and gaps:
            gaps[0] = mi  # down to ~100 ms
        offs = [0, *np.cumsum(gaps).astype(int).tolist()]
        strings.append(("wearer", offs))
        left -= size
    if strings:
        if spec.other_shooter is True:
            others = {int(rng.integers(len(strings)))}
        elif spec.other_shooter is False:
            others = set()
        else:
            others = {i for i in range(len(strings)) if rng.random() < 0.25}
        strings = [("other" if i in others else "wearer", o) for i, (_, o) in enumerate(strings)]
        order = rng.permutation(len(strings))
        strings = [strings[i] for i in order]

    draw_len = max(2, round(rng.uniform(0.45, 0.75) * fps))
    hol_len = max(2, round(rng.uniform(0.5, 0.8) * fps))
    settle = max(2, round(0.3 * fps))

    def need(shooter: str, offs: list[int], compact: bool) -> tuple[int, int, int]:
        if compact:
            return (2, offs[-1] + 1, 2)
        if shooter == "wearer":
            return (draw_len + settle, offs[-1] + 1, settle + hol_len)
        return (settle + 4, offs[-1] + 1, settle)

    compact = False
    lens = [need(s, o, False) for s, o in strings]
    if sum(sum(x) for x in lens) > N - 2:
        compact = True
        lens = [need(s, o, True) for s, o in strings]
        if sum(sum(x) for x in lens) > N - 2:
            # pack everything into one string at the minimum interval
            allo = [k * mi for k in range(n_shots)]
            strings = [("wearer", allo)]
            lens = [need("wearer", allo, True)]
            if sum(lens[0]) > N:
                raise UsageError(f"{n_shots} shots do not fit in {sec:g} s")
    slack = N - 1 - sum(sum(x) for x in lens)
    gaps_f = rng.dirichlet(np.ones(len(strings) + 1)) * max(slack, 0) if strings else np.zeros(1)
    cursor = 0
    placed: list[tuple[str, int, list[int], tuple[int, int, int]]] = []
    for i, ((shooter, offs), ln) in enumerate(zip(strings, lens, strict=True)):
        cursor += int(gaps_f[i])
        start = cursor + ln[0]
        placed.append((shooter, start, offs, ln))
        cursor += sum(ln)

    # ---------------------------------------------------------------- weapon state
    state = np.zeros(N, np.int8)
    windows: list[list[int]] = []  # drawn windows [a, b] inclusive
    for shooter, start, offs, _ln in placed:
        if shooter != "wearer":
            continue
        a = start - (settle if not compact else 1)
        b = min(N - 1, start + offs[-1] + (settle if not compact else 1))
        if windows and a - windows[-1][1] < 1.5 * fps:
            windows[-1][1] = b
        else:
            windows.append([max(0, a), b])
    if not windows and rng.random() < (0.6 if n_shots == 0 else 0.35) and 3 * fps < N:
        a = int(rng.integers(0, max(1, N - int(2.5 * fps))))
        windows.append([a, min(N - 1, a + int(rng.uniform(1.2, 4.0) * fps))])
    for a, b in windows:
        state[a : b + 1] = 2
        d0 = max(0, a - draw_len)
        if a > 0:
            state[d0:a] = 1
        h1 = min(N, b + 1 + hol_len)
        state[b + 1 : h1] = 3
    draw = np.zeros(N, np.float64)
    draw[state == 2] = 1.0
    for fd in np.flatnonzero(state == 1).tolist():
        d0 = fd
        while d0 > 0 and state[d0 - 1] == 1:
            d0 -= 1
        t = (fd - d0 + 1) / (draw_len + 1)
        draw[fd] = 0.5 - 0.5 * math.cos(math.pi * min(1.0, t))
    for fh in np.flatnonzero(state == 3).tolist():
        h0 = fh
        while h0 > 0 and state[h0 - 1] == 3:
            h0 -= 1
        t = (fh - h0 + 1) / (hol_len + 1)
        draw[fh] = 0.5 + 0.5 * math.cos(math.pi * min(1.0, t))

    # ---------------------------------------------------------------- camera
    sc = W / 640.0
    v = _smooth_noise(rng, N, max(3, int(0.8 * fps))) * rng.uniform(1.0, 3.5) * sc
    v += rng.normal(0, 0.6) * sc
    amp = np.zeros(N)
    freq = np.zeros(N)
    f = 0
    while f < N:
        mode = rng.choice(["walk", "walk", "run", "stand"])
        ln_ = int(rng.uniform(1.0, 4.0) * fps)
        amp[f : f + ln_] = {"walk": 0.012, "run": 0.03, "stand": 0.003}[str(mode)] * H
        freq[f : f + ln_] = {"walk": 1.8, "run": 2.7, "stand": 0.5}[str(mode)]
        if mode == "stand":
            v[f : f + ln_] *= 0.3
        f += ln_
    aim = state >= 1
    steady = np.zeros(N, bool)
    for shooter, start, offs, ln in placed:
        a = max(0, start - ln[0] + 2)
        b = min(N, start + offs[-1] + ln[2])
        if shooter == "other":
            steady[a:b] = True
    v[aim] *= 0.25
    amp[aim] = 0.004 * H
    freq[aim] = 0.7
    v[steady] = 0.0
    amp[steady] = 0.002 * H
    amp = _smooth(amp, max(3, int(0.3 * fps)))
    freq = _smooth(freq, max(3, int(0.3 * fps)))
    shot_frames_all = sorted(start + o for _, start, offs, _ in placed for o in offs)
    events: list[EventPlan] = []
    # fast pans (distractors): some while the weapon is drawn, never near a shot
    n_pans = int(rng.poisson(sec / 7.0)) + (1 if "fast_pan" in spec.force_distractors else 0)
    blocked = steady.copy()
    for sf_ in shot_frames_all:
        blocked[max(0, sf_ - 8) : sf_ + 8] = True
    for _ in range(n_pans):
        d = max(3, round(rng.uniform(0.2, 0.45) * fps))
        for _try in range(30):
            a = int(rng.integers(0, max(1, N - d)))
            if not blocked[a : a + d + 2].any() and a + d <= N:
                break
        else:
            continue
        total = float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.3) * W)
        prof = np.sin(np.linspace(0, math.pi, d)) ** 2
        v[a : a + d] += total * prof / prof.sum()
        blocked[max(0, a - 3) : a + d + 3] = True
        events.append(EventPlan("fast_pan", a, a + d - 1, {"pan_px": total}, None, True))
    yaw = float(rng.uniform(0, 4 * W)) + np.cumsum(v)
    phase = np.cumsum(2 * math.pi * freq / fps) + rng.uniform(0, 2 * math.pi)
    margin = round(0.14 * H)
    pitch = margin + amp * np.abs(np.sin(phase)) * 2 - amp + _smooth_noise(rng, N, int(1.5 * fps)) * 0.02 * H
    yaw_sway = amp * 0.6 * np.sin(phase / 2)
    yaw = yaw + yaw_sway
    kick = np.zeros(N)
    jerk_y = np.zeros(N)
    jerk_x = np.zeros(N)
    prof_k = (0.0, 1.0, 0.65, 0.35, 0.15)

    # ---------------------------------------------------------------- shots
    figures: list[Figure] = []
    shots: list[ShotPlan] = []
    daylight = scene in ("range", "street")
    for shooter, start, offs, _ln in placed:
        fig_idx = -1
        if shooter == "other":
            drawn_here = bool((state[start : start + offs[-1] + 1] >= 1).any())
            side = rng.choice([-1, 1])
            xf = rng.uniform(0.14, 0.32) if drawn_here else rng.uniform(0.15, 0.4)
            xfrac = xf if side < 0 else 1 - xf
            height = rng.uniform(0.14, 0.3) * H
            facing = 1 if xfrac < 0.5 else -1
            world_x = float(yaw[start]) + xfrac * W - facing * 0.42 * height
            foot = margin + horizon_frac * H + rng.uniform(0.03, 0.12) * H
            figures.append(Figure(world_x=world_x % (4 * W), foot_row=float(foot), height=float(height), facing=facing))
            fig_idx = len(figures) - 1
        for o in offs:
            fr = start + o
            if fr >= N:
                continue
            if shooter == "wearer":
                intensity = float(rng.uniform(0.4, 1.0) if daylight else rng.uniform(0.55, 1.0))
                fsize = float(rng.uniform(0.07, 0.17) * H * (0.6 + 0.4 * intensity))
                loud = float(rng.uniform(-6.0, 4.0))
                for k, pk_ in enumerate(prof_k):
                    if fr + k < N:
                        kick[fr + k] = max(kick[fr + k], pk_)
                        jerk_y[fr + k] -= pk_ * 0.035 * H * (0.6 + 0.4 * intensity)
                jerk_x[fr + 1 : fr + 4] += rng.normal(0, 0.006 * W)
            else:
                intensity = float(rng.uniform(0.45, 1.0) if daylight else rng.uniform(0.6, 1.0))
                fsize = float(figures[fig_idx].height * rng.uniform(0.22, 0.4))
                loud = float(rng.uniform(-11.0, -3.0))
            occluded = bool(rng.random() < 0.12)
            shots.append(
                ShotPlan(
                    frame=int(fr),
                    shooter=shooter,
                    flash_frames=1 if rng.random() < 0.6 else 2,
                    intensity=round(intensity, 3),
                    shape="star" if rng.random() < 0.55 else "cone",
                    colour_k=float(round(rng.uniform(1900, 4200))),
                    size=fsize,
                    occluded=occluded,
                    occlusion_angle=float(rng.uniform(0, 2 * math.pi)),
                    loudness_db=round(loud, 2),
                    figure=fig_idx,
                    flash_seed=int(rng.integers(2**31)),
                )
            )
    shots.sort(key=lambda s: s.frame)
    # a burst can overrun the clip end (only in compact packing): ensure flashes don't overlap
    # and strictly increasing frames
    uniq: list[ShotPlan] = []
    for s in shots:
        if not uniq or s.frame > uniq[-1].frame + uniq[-1].flash_frames - 1:
            uniq.append(s)
    shots = uniq

    # ---------------------------------------------------------------- distractors
    rate = spec.distractor_rate if spec.distractor_rate is not None else (6.0 if n_shots == 0 else 2.5)
    n_d = int(rng.poisson(rate * sec / 10.0))
    weights = _SCENE_KIND_WEIGHTS[scene]
    kinds_w = [k for k in PLAN_KINDS if k != "fast_pan"]
    pw = np.array([weights.get(k, 0.5) for k in kinds_w])
    kinds = [k for k in spec.force_distractors if k != "fast_pan"]
    kinds += [str(k) for k in rng.choice(kinds_w, size=n_d, p=pw / pw.sum())]
    flash_busy = np.zeros(N, bool)
    for s in shots:
        flash_busy[max(0, s.frame - 2) : s.frame + s.flash_frames + 2] = True
    audio_busy = np.zeros(N, bool)
    guard = max(2, round(0.3 * fps))
    for s in shots:
        audio_busy[max(0, s.frame - guard) : s.frame + guard] = True
    sr = spec.sample_rate
    for kind in kinds:
        ev = _make_event(kind, rng, N, fps, W, H, sr, flash_busy, audio_busy, state, yaw, margin, horizon_frac)
        if ev is None:
            continue
        events.append(ev)
        if ev.kind in AUDIO_ONSET_KINDS:
            a0 = ev.start
            audio_busy[max(0, a0 - guard) : a0 + guard] = True
            if ev.kind == "door_slam":
                for k, pk in enumerate((0.0, 0.5, 0.3, 0.12)):
                    if a0 + k < N:
                        jerk_y[a0 + k] += pk * ev.params["jerk"] * H
                        jerk_x[a0 + k] += pk * ev.params["jerk"] * 0.5 * W
        if ev.visual and ev.kind not in AUDIO_ONSET_KINDS:
            flash_busy[ev.start : ev.end + 1] = True
    events.sort(key=lambda e: (e.start, e.kind))

    # ---------------------------------------------------------------- exposure, skew, blur
    base_gain = {"range": 1.0, "street": 1.0, "indoor": 0.95, "night": 1.7}[scene]
    gain = base_gain * (1 + 0.1 * _smooth_noise(rng, N, int(2 * fps)))
    for _ in range(int(rng.poisson(sec / 10.0))):  # auto-exposure hunting
        c = int(rng.integers(0, N))
        w = rng.uniform(0.3, 1.0) * fps
        gain *= 1 + rng.uniform(-0.3, 0.3) * np.exp(-((np.arange(N) - c) ** 2) / (2 * w * w))
    noise_sigma = float(rng.uniform(9.0, 14.0) if scene == "night" else rng.uniform(2.0, 4.5) if daylight else rng.uniform(3.5, 6.0))
    pitch = pitch + jerk_y
    yaw = yaw + jerk_x
    pitch = np.clip(pitch, 0, 2 * margin)
    vel = np.diff(yaw, prepend=yaw[0])
    pad = math.ceil(0.12 * W)
    skew = np.clip(vel * 0.6, -pad, pad)
    speeds = np.abs(vel) / sc
    blur = np.digitize(speeds, [3.0, 10.0, 24.0]).astype(np.int8)
    blur = np.minimum(blur, len(BLUR_WIDTHS) - 1).astype(np.int8)
    sway_x = _smooth_noise(rng, N, int(1.2 * fps)) * 0.006 * W
    sway_y = _smooth_noise(rng, N, int(1.0 * fps)) * 0.006 * H

    return Plan(
        spec=spec,
        scene=scene,
        frames=N,
        fps=fps,
        weapon_kind=weapon_kind,
        horizon_frac=horizon_frac,
        yaw=yaw.astype(np.float64),
        vel=vel.astype(np.float32),
        pitch=pitch.astype(np.float32),
        skew=skew.astype(np.float32),
        blur=blur,
        gain=gain.astype(np.float32),
        noise_sigma=noise_sigma,
        state=state,
        draw=draw.astype(np.float32),
        kick=kick.astype(np.float32),
        sway_x=sway_x.astype(np.float32),
        sway_y=sway_y.astype(np.float32),
        shots=shots,
        figures=figures,
        events=events,
    )


def _make_event(
    kind: str,
    rng: np.random.Generator,
    N: int,
    fps: float,
    W: int,
    H: int,
    sr: int,
    flash_busy: npt.NDArray[np.bool_],
    audio_busy: npt.NDArray[np.bool_],
    state: npt.NDArray[np.int8],
    yaw: F64,
    margin: int,
    horizon_frac: float,
) -> EventPlan | None:
    def frames_of(sec_lo: float, sec_hi: float) -> int:
        return max(1, round(rng.uniform(sec_lo, sec_hi) * fps))

    dur = {
        "photo_flash": 1 if rng.random() < 0.75 else 2,
        "lightbar_strobe": frames_of(1.0, 3.0),
        "torch_sweep": frames_of(0.7, 2.5),
        "headlight_sweep": frames_of(1.0, 3.0),
        "sun_glint": int(rng.integers(1, 4)),
        "door_slam": frames_of(0.3, 0.6),
        "clap": frames_of(0.05, 0.15),
        "dropped_object": frames_of(0.4, 0.9),
        "siren": frames_of(2.0, 8.0),
        "shouting": frames_of(0.8, 2.5),
        "babble": frames_of(2.0, 6.0),
    }[kind]
    dur = min(dur, N)
    prefer_drawn = rng.random() < 0.5 and bool((state == 2).any())
    for _try in range(40):
        a = int(rng.integers(0, max(1, N - dur + 1)))
        if prefer_drawn and _try < 20 and state[a] != 2:
            continue
        b = a + dur - 1
        if kind in VISUAL_KINDS and flash_busy[a : b + 1].any():
            continue
        if kind in AUDIO_ONSET_KINDS and audio_busy[a] :
            continue
        if kind in AUDIO_ONSET_KINDS and kind == "dropped_object" and flash_busy[a : b + 1].any():
            continue
        break
    else:
        return None
    asamp = round(a / fps * sr) if kind not in VISUAL_KINDS else None
    P: dict[str, float] = {}
    visual = kind in VISUAL_KINDS
    if kind == "photo_flash":
        P = {"strength": float(rng.uniform(0.45, 0.95))}
    elif kind == "lightbar_strobe":
        P = {
            "world_x": float(yaw[a] + rng.uniform(0.1, 0.9) * W),
            "row": float(margin + horizon_frac * H + rng.uniform(-0.15, 0.1) * H),
            "radius": float(rng.uniform(0.03, 0.09) * W),
            "period": float(int(rng.integers(2, 5))),
            "spacing": float(rng.uniform(0.05, 0.12) * W),
        }
    elif kind in ("torch_sweep", "headlight_sweep"):
        y0 = rng.uniform(0.25, 0.8) * H
        P = {
            "x0": float(rng.uniform(-0.1, 0.5) * W),
            "y0": float(y0),
            "x1": float(rng.uniform(0.5, 1.1) * W),
            "y1": float(y0 + rng.uniform(-0.2, 0.2) * H),
            "radius": float(rng.uniform(0.025, 0.07) * W),
            "kelvin": float(rng.uniform(5000, 6500) if kind == "torch_sweep" else rng.uniform(3200, 4500)),
            "strength": float(rng.uniform(0.6, 1.0)),
            "pair": float(rng.uniform(0.08, 0.18) * W) if kind == "headlight_sweep" else 0.0,
        }
        if rng.random() < 0.5:
            P["x0"], P["x1"] = P["x1"], P["x0"]
    elif kind == "sun_glint":
        near_bottom = rng.random() < 0.45
        P = {
            "x": float(rng.uniform(0.3, 0.7) * W if near_bottom else rng.uniform(0.05, 0.95) * W),
            "y": float(rng.uniform(0.7, 0.97) * H if near_bottom else rng.uniform(0.1, 0.9) * H),
            "radius": float(rng.uniform(1.5, 5.0) * W / 640),
            "strength": float(rng.uniform(0.6, 1.0)),
        }
    elif kind == "door_slam":
        P = {"jerk": float(rng.uniform(0.004, 0.012)), "level_db": float(rng.uniform(-14, -3))}
    elif kind == "clap":
        P = {"level_db": float(rng.uniform(-16, -4))}
    elif kind == "dropped_object":
        shown = rng.random() < 0.5
        visual = shown
        P = {
            "level_db": float(rng.uniform(-20, -6)),
            "shown": 1.0 if shown else 0.0,
            "x": float(rng.uniform(0.2, 0.8) * W),
            "fall": float(max(2, int(rng.uniform(0.12, 0.25) * fps))),
        }
        if shown:
            # the object falls into view before the clatter
            fall = int(P["fall"])
            if a - fall < 0:
                P["shown"] = 0.0
                visual = False
    elif kind == "siren":
        P = {"level_db": float(rng.uniform(-26, -14)), "wail": float(rng.uniform(2.5, 5.0)), "yelp": float(rng.random() < 0.4)}
    elif kind == "shouting":
        P = {"level_db": float(rng.uniform(-22, -10)), "f0": float(rng.uniform(110, 260))}
    elif kind == "babble":
        P = {"level_db": float(rng.uniform(-30, -20)), "voices": float(int(rng.integers(3, 8)))}
    return EventPlan(kind, a, b, P, asamp, visual)


def while_drawn(plan: Plan, ev: EventPlan) -> bool:
    return bool((plan.state[ev.start : ev.end + 1] == 2).any())
