"""Generate one synthetic first-person clip (H.264 + AAC MP4) and its truth file.

    from bodycam.hw_sim.clipgen import ClipSpec, generate_clip
    truth = generate_clip("out.mp4", ClipSpec(seconds=20, shots=4, seed=7, scene="range"))

Same spec (incl. seed) -> identical truth and identical decoded frames. The MP4 is
written to a temporary name and renamed when complete; the truth file is written last.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import StorageError
from bodycam.hw_sim.audio_synth import impulse_sound, synthesise
from bodycam.hw_sim.families import Look
from bodycam.hw_sim.render import Renderer
from bodycam.hw_sim.scene import build_panorama
from bodycam.hw_sim.timeline import STATE_NAMES, ClipSpec, EventPlan, Plan, make_plan, while_drawn
from bodycam.hw_sim.truth import (
    GENERATOR_NAME,
    AudioInfo,
    Distractor,
    GeneratorInfo,
    Shot,
    Truth,
    VideoInfo,
    WeaponPhase,
    save_truth,
    truth_path_for,
)

if TYPE_CHECKING:
    from bodycam.hw_sim.look_plan import FlashTiming

__all__ = ["GENERATOR_VERSION", "ClipSpec", "clip_sound", "generate_clip", "plan_clip"]

GENERATOR_VERSION = "1.0"
X264_PRESET = "superfast"  # deterministic here (veryfast's mb-tree lookahead was not, run to run)
X264_CRF = "23"
AAC_BITRATE = 128_000


def rgb_to_yuv420p(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """BT.601 limited-range RGB -> planar yuv420p (H*3/2 x W), in numpy: a fixed, deterministic
    conversion (libswscale's path through PyAV gave run-to-run differences in the encoded stream)."""
    h, w = img.shape[:2]
    f = img.astype(np.float32)
    y = f @ np.array([65.481, 128.553, 24.966], np.float32) / 255.0 + 16.5
    s = f.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    u = s @ np.array([-37.797, -74.203, 112.0], np.float32) / 255.0 + 128.5
    v = s @ np.array([112.0, -93.786, -18.214], np.float32) / 255.0 + 128.5
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = np.clip(y, 0, 255)
    out[h:].reshape(-1)[: u.size] = np.clip(u, 0, 255).ravel()
    out[h:].reshape(-1)[u.size :] = np.clip(v, 0, 255).ravel()
    return out


def _rngs(seed: int, n: int) -> list[np.random.Generator]:
    ss = np.random.SeedSequence(seed)
    return [np.random.Generator(np.random.PCG64(c)) for c in ss.spawn(n)]


def plan_clip(spec: ClipSpec) -> Plan:
    """The plan (what happens when) for ``spec``, without rendering anything."""
    spec.validate()
    return make_plan(spec, _rngs(spec.seed, 4)[0])


def _plan_and_sound(spec: ClipSpec, look: Look | None) -> tuple[Plan, dict[int, FlashTiming], npt.NDArray[np.float32]]:
    """The clip's plan (with the look applied), its flash timings and its sound track, from the seed."""
    r_plan, _, _, r_audio = _rngs(spec.seed, 4)
    plan = make_plan(spec, r_plan)
    timings: dict[int, FlashTiming] = {}
    if look is not None:
        from bodycam.hw_sim.look_plan import apply_look

        timings = dict(apply_look(plan, look, _rngs(spec.seed, 5)[4]))
    audio = synthesise(plan, r_audio)
    for ev in plan.events:  # sounds the generator's synthesiser does not make
        if ev.kind == "firework" and ev.audio_sample is not None:
            bang = impulse_sound("firework", r_audio, spec.sample_rate) * (10 ** (ev.params["level_db"] / 20))
            seg = audio[ev.audio_sample : ev.audio_sample + len(bang)]
            seg += bang[: len(seg)]
            np.clip(audio, -1.0, 1.0, out=audio)
    return plan, timings, audio


def clip_sound(spec: ClipSpec, look: Look | None = None) -> tuple[Plan, npt.NDArray[np.float32]]:
    """The plan and the sound track (float32 mono at ``spec.sample_rate``, before AAC) that
    :func:`generate_clip` would put in the clip, without rendering a frame (audio training data)."""
    spec.validate()
    plan, _, audio = _plan_and_sound(spec, look)
    return plan, audio


def _check_output(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise StorageError(f"{out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(f"{out}: directory {parent} is not writable")
    if out.is_dir():
        raise StorageError(f"{out}: is a directory")


def generate_clip(
    out_path: str | os.PathLike[str],
    spec: ClipSpec,
    progress: Callable[[int, int], None] | None = None,
    look: Look | None = None,
) -> Truth:
    """Render ``spec`` to ``out_path`` (MP4) and ``truth_path_for(out_path)``; return the truth.
    With a ``look`` (domain-randomised data: :mod:`bodycam.hw_sim.families`), the camera, flash
    style and extra distractors of the look are applied (``spec`` must have its size and rate)."""
    import av  # imported here: keeps `bodycam-sim --help` fast

    spec.validate()
    out = Path(out_path)
    _check_output(out)
    _, r_scene, r_render, _ = _rngs(spec.seed, 4)
    plan, timings, audio = _plan_and_sound(spec, look)
    renderer: Renderer
    crf = X264_CRF
    pano = build_panorama(plan.scene, spec.width, spec.height, r_scene, plan.figures, plan.horizon_frac)
    if look is None:
        renderer = Renderer(plan, pano, r_render)
    else:
        from bodycam.hw_sim.look_render import LookRenderer

        renderer = LookRenderer(plan, pano, r_render, look, timings)
        crf = str(look.crf)

    fps_q = spec.fps_fraction
    sr = spec.sample_rate
    gop = max(1, round(float(fps_q)))
    tmp = out.with_name(f".{out.name}.part")
    try:
        container = av.open(str(tmp), mode="w", format="mp4")
    except OSError as exc:
        raise StorageError(f"{out}: cannot write: {exc}") from exc
    try:
        vs = container.add_stream("libx264", rate=fps_q)
        vs.width, vs.height = spec.width, spec.height
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1) / fps_q
        vs.codec_context.gop_size = gop
        vs.codec_context.thread_count = 1  # x264 frame threads make the bitstream vary run to run
        vs.options = {
            "preset": X264_PRESET,
            "crf": crf,
            "threads": "1",
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
        }
        aus = container.add_stream("aac", rate=sr)
        aus.layout = "mono"
        aus.bit_rate = AAC_BITRATE
        atb = Fraction(1, sr)
        vtb = Fraction(1, 1) / fps_q
        a_pos = 0
        chunk = 1024
        for i in range(plan.frames):
            img = renderer.render(i)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            vf.time_base = vtb
            for pkt in vs.encode(vf):
                container.mux(pkt)
            a_end = min(len(audio), round((i + 1) / float(fps_q) * sr))
            while a_pos + chunk <= a_end or (i == plan.frames - 1 and a_pos < len(audio)):
                seg = audio[a_pos : a_pos + chunk]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(seg[None, :]), format="fltp", layout="mono")
                af.sample_rate = sr
                af.pts = a_pos
                af.time_base = atb
                for pkt in aus.encode(af):
                    container.mux(pkt)
                a_pos += len(seg)
            if progress is not None:
                progress(i + 1, plan.frames)
        for pkt in vs.encode(None):
            container.mux(pkt)
        for pkt in aus.encode(None):
            container.mux(pkt)
        container.close()
    except OSError as exc:
        container.close()
        tmp.unlink(missing_ok=True)
        raise StorageError(f"{out}: cannot write: {exc}") from exc
    except BaseException:
        container.close()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    muzzle = renderer.muzzle_xy
    if look is not None:  # flashes no row saw, muzzles moved by the optics
        from bodycam.hw_sim.look_render import LookRenderer

        assert isinstance(renderer, LookRenderer)
        plan.shots = [s if renderer.flash_seen.get(si, False) else replace(s, flash_frames=0)
                      for si, s in enumerate(plan.shots)]
        muzzle = {}
        for si, xy in renderer.muzzle_xy.items():
            o = renderer.to_output(*xy)
            if o is not None and renderer.flash_seen.get(si, False):
                muzzle[si] = o
    truth = build_truth(out.name, plan, muzzle, audio)
    save_truth(truth, truth_path_for(out))
    return truth


def _event_xy(ev: EventPlan, renderer_w: int, renderer_h: int) -> tuple[float, float] | None:
    P = ev.params
    if ev.kind in ("sun_glint",) or (ev.kind == "dropped_object" and P.get("shown", 0.0) > 0):
        return (round(P["x"], 1), round(P.get("y", 0.9 * renderer_h), 1))
    if ev.kind in ("torch_sweep", "headlight_sweep"):
        return (round(P["x0"], 1), round(P["y0"], 1))
    return None


def build_truth(
    clip_name: str, plan: Plan, muzzle: dict[int, tuple[float, float]], audio: np.ndarray
) -> Truth:
    spec = plan.spec
    fps = plan.fps
    sr = spec.sample_rate
    N = plan.frames
    shots: list[Shot] = []
    for si, s in enumerate(plan.shots):
        a = round(s.frame / fps * sr)
        head = np.abs(audio[a : a + int(0.02 * sr)])
        shots.append(
            Shot(
                frame=s.frame,
                t_s=round(s.frame / fps, 6),
                audio_sample=a,
                muzzle_xy=muzzle.get(si),
                shooter=s.shooter,
                flash_frames=min(s.flash_frames, N - s.frame),  # 0: in no frame (look)
                intensity=s.intensity,
                occluded=s.occluded,
                weapon=plan.weapon_kind if s.shooter == "wearer" else "pistol",
                flash_shape=s.shape,
                colour_k=s.colour_k,
                loudness_db=s.loudness_db,
                clipped=bool(head.size and float(head.max()) >= 0.999),
            )
        )
    distractors: list[Distractor] = []
    for ev in plan.events:
        start = ev.start
        if ev.kind == "dropped_object" and ev.params.get("shown", 0.0) > 0:
            start = max(0, ev.start - int(ev.params["fall"]))
        xy = _event_xy(ev, spec.width, spec.height)
        if ev.kind == "lightbar_strobe":
            xy = None
        distractors.append(
            Distractor(
                kind=ev.kind,
                start_frame=start,
                end_frame=ev.end,
                start_s=round(start / fps, 6),
                end_s=round((ev.end + 1) / fps, 6),
                xy=xy,
                audio_sample=ev.audio_sample,
                while_drawn=while_drawn(plan, ev),
            )
        )
    distractors.sort(key=lambda d: (d.start_frame, d.kind))
    phases: list[WeaponPhase] = []
    st = plan.state
    a = 0
    for f in range(1, N + 1):
        if f == N or st[f] != st[a]:
            phases.append(WeaponPhase(STATE_NAMES[int(st[a])], a, f - 1, plan.weapon_kind))
            a = f
    return Truth(
        clip=clip_name,
        generator=GeneratorInfo(GENERATOR_NAME, GENERATOR_VERSION, spec.seed, plan.scene),
        video=VideoInfo(spec.width, spec.height, round(fps, 6), N, round(N / fps, 6)),
        audio=AudioInfo(sr, len(audio)),
        shots=tuple(shots),
        distractors=tuple(distractors),
        weapon=tuple(phases),
    )
