"""The footage generator renders what its truth says: flashes at the muzzle in the shot
frames (and not before), gunshot onsets within 1 ms in the decoded audio, exact frame
timing, determinism, every scene and distractor kind, shot-free clips, the example clip."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from bodycam.hw_sim.clipgen import ClipSpec, generate_clip, plan_clip
from bodycam.hw_sim.timeline import PLAN_KINDS
from bodycam.hw_sim.truth import DISTRACTOR_KINDS, SCENES, Truth, load_truth, truth_path_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "range_demo.mp4"
U8 = npt.NDArray[np.uint8]


@dataclass
class Decoded:
    frames: list[U8]
    pts: list[Fraction]
    audio: npt.NDArray[np.float32]
    audio_start: int  # sample index (by pts) of audio[0]
    sample_rate: int


def decode(path: Path) -> Decoded:
    frames: list[U8] = []
    pts: list[Fraction] = []
    chunks: list[npt.NDArray[np.float32]] = []
    start: int | None = None
    sr = 0
    with av.open(str(path)) as c:
        for pkt in c.demux():
            for fr_ in pkt.decode():
                fr: Any = fr_
                if type(fr).__name__ == "VideoFrame":
                    frames.append(fr.to_ndarray(format="rgb24"))
                    pts.append(Fraction(fr.pts) * fr.time_base)
                elif type(fr).__name__ == "AudioFrame":
                    sr = fr.sample_rate
                    if start is None:
                        start = round(Fraction(fr.pts) * fr.time_base * sr)
                    chunks.append(fr.to_ndarray()[0].astype(np.float32))
    return Decoded(frames, pts, np.concatenate(chunks), start or 0, sr)


def warm_score(img: U8) -> npt.NDArray[np.float32]:
    """Warm brightness: mean of R, G, B plus half of how much redder than blue the pixel is,
    box-blurred 5x5: a map of localised warm-bright spots."""
    f = img.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    s = (r + g + b) / 3 + 0.5 * np.maximum(r - b, 0.0)
    k = 5
    c = np.cumsum(np.cumsum(np.pad(s, ((k, 0), (k, 0))), 0), 1)
    out = (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)
    res: npt.NDArray[np.float32] = out.astype(np.float32)
    return res


def check_flashes(truth: Truth, dec: Decoded, absolute: bool) -> int:
    """For each visible, unoccluded shot: the shot frame's brightest warm spot is within 5% of the
    width of muzzle_xy, and that spot was not there in the frame before (warm brightness at the
    muzzle rose). ``absolute=False`` (night: street lamps are brighter) checks only that the
    muzzle is where the warm brightness rose most nearby. Returns the number of shots checked."""
    W = truth.video.width
    tol = 0.05 * W
    checked = 0
    for s in truth.shots:
        if s.occluded or s.muzzle_xy is None or s.frame == 0:
            continue
        mx, my = s.muzzle_xy
        now = warm_score(dec.frames[s.frame])
        before = warm_score(dec.frames[s.frame - 1])
        rise = now - before
        y, x = np.unravel_index(int(np.argmax(rise)), rise.shape)
        assert abs(x - mx) <= tol and abs(y - my) <= tol, (s, (x, y))
        iy, ix = round(my), round(mx)
        r = max(2, int(tol / 2))
        peak_now = float(now[max(0, iy - r) : iy + r, max(0, ix - r) : ix + r].max())
        peak_before = float(before[max(0, iy - r) : iy + r, max(0, ix - r) : ix + r].max())
        assert peak_now - peak_before > 15, (s, peak_now, peak_before)
        if absolute:
            y2, x2 = np.unravel_index(int(np.argmax(now)), now.shape)
            assert abs(x2 - mx) <= tol and abs(y2 - my) <= tol, (s, (x2, y2))
        checked += 1
    return checked


def audio_onset(dec: Decoded, sample: int, window_s: float = 0.01) -> int:
    """First sample in +-window whose |x| exceeds half the window's peak (in clip samples)."""
    w = int(window_s * dec.sample_rate)
    a = sample - dec.audio_start
    seg = np.abs(dec.audio[max(0, a - w) : a + w])
    k = int(np.argmax(seg > 0.5 * seg.max()))
    return max(0, a - w) + k + dec.audio_start


@pytest.fixture(scope="module")
def shot_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Truth, Decoded, Path]:
    out = tmp_path_factory.mktemp("gen") / "shots.mp4"
    spec = ClipSpec(seconds=4, shots=6, seed=11, scene="street", width=320, height=180, burst=True, other_shooter=True)
    truth = generate_clip(out, spec)
    return truth, decode(out), out


def test_truth_file_matches_returned_truth(shot_clip: tuple[Truth, Decoded, Path]) -> None:
    truth, _, out = shot_clip
    assert load_truth(truth_path_for(out)) == truth
    assert truth.clip == "shots.mp4"
    assert len(truth.shots) == 6
    assert {s.shooter for s in truth.shots} == {"wearer", "other"}
    gaps = np.diff([s.frame for s in truth.shots])
    assert gaps.min() == 3  # a rapid burst: ~100 ms at 30 fps


def test_frame_timing_is_exact(shot_clip: tuple[Truth, Decoded, Path]) -> None:
    truth, dec, _ = shot_clip
    assert len(dec.frames) == truth.video.frames
    fps = Fraction(truth.video.fps).limit_denominator(1001)
    assert dec.pts == [Fraction(i) / fps for i in range(truth.video.frames)]
    assert dec.frames[0].shape == (truth.video.height, truth.video.width, 3)
    assert dec.audio_start == 0
    assert abs(len(dec.audio) - truth.audio.samples) < 1024


def test_flash_is_at_the_muzzle_in_shot_frames_only(shot_clip: tuple[Truth, Decoded, Path]) -> None:
    truth, dec, _ = shot_clip
    assert check_flashes(truth, dec, absolute=False) == sum(1 for s in truth.shots if not s.occluded) >= 2


def test_gunshot_onsets_within_1ms(shot_clip: tuple[Truth, Decoded, Path]) -> None:
    truth, dec, _ = shot_clip
    one_ms = dec.sample_rate // 1000
    for s in truth.shots:
        assert s.audio_sample == round(s.frame / truth.video.fps * truth.audio.sample_rate)
        onset = audio_onset(dec, s.audio_sample)
        assert abs(onset - s.audio_sample) <= one_ms, (s, onset)
        # quiet before: nothing in the 15 ms before the onset reaches a quarter of the shot's peak
        a = s.audio_sample - dec.audio_start
        pre = np.abs(dec.audio[a - int(0.015 * dec.sample_rate) : a - 48]).max()
        assert pre < 0.5 * np.abs(dec.audio[a : a + 96]).max()


def test_wearer_shots_only_while_drawn_and_recoil_follows(shot_clip: tuple[Truth, Decoded, Path]) -> None:
    truth, _, _ = shot_clip
    spec = ClipSpec(seconds=4, shots=6, seed=11, scene="street", width=320, height=180, burst=True, other_shooter=True)
    plan = plan_clip(spec)
    for s in truth.shots:
        if s.shooter == "wearer":
            assert plan.state[s.frame] == 2
            assert plan.kick[s.frame + 1] > 0.9  # the weapon kicks in the next frame
        else:
            assert plan.kick[s.frame + 1] == 0 or any(
                w.shooter == "wearer" and 0 < s.frame - w.frame < 5 for w in truth.shots
            )


def _hash_frames(path: Path) -> tuple[list[str], int]:
    with av.open(str(path)) as c:
        hs = [hashlib.sha1(f.to_ndarray(format="rgb24").tobytes()).hexdigest() for f in c.decode(video=0)]
    return hs, len(hs)


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path: Path) -> None:
    spec = ClipSpec(seconds=2, shots=2, seed=123, scene="random", width=320, height=180)
    t1 = generate_clip(tmp_path / "a.mp4", spec)
    t2 = generate_clip(tmp_path / "b.mp4", spec)
    t3 = generate_clip(tmp_path / "c.mp4", ClipSpec(seconds=2, shots=2, seed=124, scene="random", width=320, height=180))
    assert t1.to_dict() | {"clip": ""} == t2.to_dict() | {"clip": ""}
    h1, h2, h3 = _hash_frames(tmp_path / "a.mp4"), _hash_frames(tmp_path / "b.mp4"), _hash_frames(tmp_path / "c.mp4")
    assert h1 == h2
    assert t3.to_dict() | {"clip": ""} != t1.to_dict() | {"clip": ""}
    assert len(set(h1[0]) & set(h3[0])) == 0


@pytest.mark.parametrize("scene", SCENES)
def test_every_scene_renders_with_correct_flashes(tmp_path: Path, scene: str) -> None:
    out = tmp_path / f"{scene}.mp4"
    truth = generate_clip(out, ClipSpec(seconds=3, shots=3, seed=5, scene=scene, width=320, height=180))
    assert truth.generator.scene == scene
    dec = decode(out)
    assert len(dec.frames) == truth.video.frames
    lum = np.mean([f.mean() for f in dec.frames[:10]])
    assert (lum < 60) if scene == "night" else (lum > 60)
    assert float(np.std(dec.frames[5].astype(np.float32))) > 8  # textured, not flat
    assert check_flashes(truth, dec, absolute=scene in ("range", "indoor")) >= 1


def test_every_distractor_kind_renders_in_a_shot_free_clip(tmp_path: Path) -> None:
    # the planner's kinds; the camera look's own (flicker, screens, fireworks): test_families.py
    assert set(PLAN_KINDS) | {"fluorescent_flicker", "led_flicker", "screen", "firework"} == set(DISTRACTOR_KINDS)
    out = tmp_path / "d.mp4"
    spec = ClipSpec(seconds=10, shots=0, seed=3, scene="night", width=320, height=180,
                    force_distractors=PLAN_KINDS, distractor_rate=0.0)
    truth = generate_clip(out, spec)
    assert truth.shots == ()
    kinds = {d.kind for d in truth.distractors}
    assert kinds == set(PLAN_KINDS)
    dec = decode(out)
    lum = [float(f.mean()) for f in dec.frames]
    for d in truth.distractors:
        if d.kind == "photo_flash":  # global and white: the whole frame jumps
            assert lum[d.start_frame] > lum[d.start_frame - 1] + 40 if d.start_frame else True
        if d.kind == "sun_glint" and d.xy is not None:  # brief, local, white
            x, y = round(d.xy[0]), round(d.xy[1])
            f = dec.frames[d.start_frame].astype(np.float32)
            assert f[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].max() > 200
        if d.kind in ("torch_sweep", "headlight_sweep"):
            f0, f1 = dec.frames[d.start_frame].mean(), dec.frames[d.start_frame - 1].mean() if d.start_frame else 0
            assert f0 >= f1
        if d.audio_sample is not None and d.kind in ("door_slam", "clap", "dropped_object"):
            a = d.audio_sample - dec.audio_start
            burst = np.abs(dec.audio[a : a + 2400]).max()
            bed = np.abs(dec.audio[max(0, a - 9600) : a - 4800]).max() if a > 9600 else 0.0
            assert burst > bed
    strobe = next(d for d in truth.distractors if d.kind == "lightbar_strobe")
    reds = [int((f[..., 0].astype(int) - f[..., 2] > 120).sum()) for f in dec.frames[strobe.start_frame : strobe.end_frame + 1]]
    blues = [int((f[..., 2].astype(int) - f[..., 0] > 120).sum()) for f in dec.frames[strobe.start_frame : strobe.end_frame + 1]]
    assert max(reds) > 20 and max(blues) > 20  # red and blue both appear


def test_shot_free_clip_has_no_shots_and_no_gunshot_sound(tmp_path: Path) -> None:
    out = tmp_path / "free.mp4"
    truth = generate_clip(out, ClipSpec(seconds=3, shots=0, seed=77, width=320, height=180))
    assert truth.shots == ()
    assert len(truth.distractors) >= 1
    raw = load_truth(truth_path_for(out)).to_dict()
    assert raw["shots"] == []


def test_example_clip_matches_its_truth() -> None:
    truth = load_truth(truth_path_for(EXAMPLE))
    assert (truth.video.width, truth.video.height, truth.video.fps) == (640, 360, 30.0)
    assert 15 <= truth.video.duration_s <= 25
    dec = decode(EXAMPLE)
    assert len(dec.frames) == truth.video.frames
    assert float(dec.pts[-1]) == pytest.approx((truth.video.frames - 1) / 30.0)
    assert len(truth.shots) >= 3
    assert min(np.diff([s.frame for s in truth.shots])) <= 4  # contains a rapid burst
    assert len(truth.distractors) >= 3
    assert check_flashes(truth, dec, absolute=False) >= 2
    for s in truth.shots:
        assert abs(audio_onset(dec, s.audio_sample) - s.audio_sample) <= dec.sample_rate // 1000
