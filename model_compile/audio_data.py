"""Training and evaluation data for the audio shot detector, with whole families held out.

Sounds come from :mod:`bodycam.hw_sim.audio_synth` by named family along four axes (gun, impulsive
non-shot, continuous bed, room). :data:`HELD_OUT` names the families that training never hears;
evaluation reports those first (:func:`scene_sets`), and in-domain beside them. Features are the
firmware's own :func:`~bodycam.device.detect.audio_features.log_mel`.

Window labels (``frames`` log-mel frames, target ``[t0, t1)``): 1 when a shot's onset sample lies
in the target frames' first samples ``[(j+t0)*hop, (j+t1)*hop)``, ignored (weight 0) within one
hop of that, 0 otherwise. Every positive window is kept; negatives are sampled, with all windows
whose target holds a non-shot impulse's onset kept (the hard negatives).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.detect.audio_features import FEATURES, log_mel
from bodycam.hw_sim import audio_synth as synth

F32 = npt.NDArray[np.float32]

#: families training never hears (one or more per axis)
HELD_OUT: dict[str, tuple[str, ...]] = {
    "guns": ("shotgun", "carbine_suppressed"),
    "impulses": ("nail_gun", "car_backfire", "balloon_pop"),
    "continuous": ("radio_chatter", "traffic"),
    "rooms": ("indoor_hall", "vehicle"),
}
ALL: dict[str, tuple[str, ...]] = {
    "guns": synth.GUN_FAMILIES,
    "impulses": synth.IMPULSE_FAMILIES,
    "continuous": synth.CONTINUOUS_FAMILIES,
    "rooms": synth.ROOM_FAMILIES,
}


def families(which: str, held_out: dict[str, tuple[str, ...]] = HELD_OUT) -> dict[str, tuple[str, ...]]:
    """``in_domain``: every family not held out; ``held_out``: only the held-out ones."""
    if which == "in_domain":
        return {k: tuple(f for f in v if f not in held_out[k]) for k, v in ALL.items()}
    if which == "held_out":
        return {k: tuple(held_out[k]) for k in ALL}
    raise ValueError(f"unknown family set {which!r}")


@dataclass(frozen=True)
class Scene:
    audio: F32 = field(repr=False)
    shots: tuple[tuple[int, str], ...]
    impulses: tuple[tuple[int, str], ...]
    seconds: float


def make_scenes(fams: dict[str, tuple[str, ...]], count: int, seed: int, seconds: float, *,
                shot_free: bool = False, impulse_rate: float = 1.0, randomise: float = 0.0,
                physics_impulses: bool = False) -> list[Scene]:
    """``count`` scenes; ~60% with 1-6 shots unless ``shot_free``; ``impulse_rate`` per second;
    ``randomise``: the fraction of scenes whose physics and recording path are drawn independently
    (:func:`synth.audio_scene`; 0 or 1: none or all, and no random draw is spent on deciding)."""
    rng = np.random.default_rng(seed)
    sr = FEATURES.sample_rate
    out: list[Scene] = []
    for _ in range(count):
        shots = 0 if shot_free or rng.random() < 0.4 else int(rng.integers(1, 7))
        imp = int(rng.poisson(impulse_rate * seconds))
        wide = randomise >= 1.0 or bool(randomise > 0 and rng.random() < randomise)
        audio, s, i = synth.audio_scene(rng, seconds, sr, guns=fams["guns"], impulses=fams["impulses"],
                                        continuous=fams["continuous"], rooms=fams["rooms"], shots=shots,
                                        impulse_count=imp, randomise=wide,
                                        physics_impulses=physics_impulses)
        out.append(Scene(audio, tuple(s), tuple(i), seconds))
    return out


@dataclass
class WindowSet:
    x: F32  # [n, frames, mels]
    y: F32  # [n] 0/1
    w: F32  # [n] weight
    positives: int = 0
    hard_negatives: int = 0

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.x, self.y, self.w):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def _labels(sc: Scene, n: int, target: tuple[int, int], tail_s: float = 0.0) -> npt.NDArray[np.int8]:
    """Per window start: 0 negative, 1 positive, 2 ignore, 3 hard negative (a non-shot impulse),
    4 tail (``tail_s`` > 0: the target lies in the first ``tail_s`` after a shot's or an impulse's
    onset, past its onset: the sound's own body, echoes and reverb, or an object's later bounces)."""
    hop = FEATURES.hop
    starts = (np.arange(n) + target[0]) * hop
    ends = (np.arange(n) + target[1]) * hop
    label = np.zeros(n, np.int8)
    if tail_s > 0:
        tail = int(tail_s * FEATURES.sample_rate)
        for s, _fam in (*sc.shots, *sc.impulses):
            label[(starts - hop > s) & (starts < s + tail)] = 4
    for s, _fam in sc.impulses:
        label[(starts - hop <= s) & (s < ends + hop)] = 3
    for s, _fam in sc.shots:
        label[(starts - hop <= s) & (s < ends + hop) & (label != 1)] = 2
        label[(starts <= s) & (s < ends)] = 1
    return label


def mine_negatives(scenes: list[Scene], frames: int, target: tuple[int, int],
                   score: Callable[[F32], npt.NDArray[np.float32]], count: int, stride: int = 2,
                   chunk: int = 200) -> WindowSet:
    """The ``count`` negative windows (every ``stride``-th start, as the firmware hops) that ``score``
    (a batch ``[n, frames, mels]`` -> ``[n]``) rates highest: hard-negative mining. Ties keep the
    earlier window, so the choice is deterministic for deterministic scores."""
    best_x: list[F32] = []
    best_s: list[npt.NDArray[np.float32]] = []
    for c in range(0, len(scenes), chunk):
        xs: list[F32] = []
        for sc in scenes[c : c + chunk]:
            mel = log_mel(sc.audio)
            n = len(mel) - frames + 1
            if n <= 0:
                continue
            label = _labels(sc, n, target)
            for j in range(0, n, stride):
                if label[j] in (0, 3, 4):
                    xs.append(mel[j : j + frames])
        if not xs:
            continue
        x = np.stack(xs).astype(np.float32)
        sc_ = np.asarray(score(x), np.float32).reshape(-1)
        x_all = np.concatenate([*best_x, x]) if best_x else x
        s_all = np.concatenate([*best_s, sc_]) if best_s else sc_
        top = np.sort(np.argsort(-s_all, kind="stable")[:count])
        best_x, best_s = [x_all[top]], [s_all[top]]
    x = best_x[0] if best_x else np.zeros((0, frames, FEATURES.mels), np.float32)
    return WindowSet(x, np.zeros(len(x), np.float32), np.ones(len(x), np.float32), 0, len(x))


def windows(scenes: list[Scene], frames: int, target: tuple[int, int], seed: int,
            negatives_per_scene: int = 10, tail_s: float = 0.0, tails_per_scene: int = 0) -> WindowSet:
    """Labelled feature windows from ``scenes`` (see the module docstring); with ``tail_s``, up to
    ``tails_per_scene`` windows on the tails of shots and impulses (:func:`_labels`) join them as
    hard negatives."""
    rng = np.random.default_rng(seed)
    xs: list[F32] = []
    ys: list[float] = []
    ws: list[float] = []
    pos = hard = 0
    for sc in scenes:
        mel = log_mel(sc.audio)
        n = len(mel) - frames + 1
        if n <= 0:
            continue
        label = _labels(sc, n, target, tail_s)
        keep = list(np.flatnonzero((label == 1) | (label == 3)))
        neg = np.flatnonzero(label == 0)
        if len(neg):
            keep += list(rng.choice(neg, size=min(len(neg), negatives_per_scene), replace=False))
        tails = np.flatnonzero(label == 4)
        if tails_per_scene and len(tails):
            keep += list(rng.choice(tails, size=min(len(tails), tails_per_scene), replace=False))
        for j in sorted(keep):
            xs.append(mel[j : j + frames])
            ys.append(1.0 if label[j] == 1 else 0.0)
            ws.append(1.0)
            pos += int(label[j] == 1)
            hard += int(label[j] in (3, 4))
    x = np.stack(xs).astype(np.float32) if xs else np.zeros((0, frames, FEATURES.mels), np.float32)
    return WindowSet(x, np.asarray(ys, np.float32), np.asarray(ws, np.float32), pos, hard)


#: the shipped sound library's sources that no choice and no training may use
#: (model_compile/third_party_sounds.tsv; evaluate-library reports them first)
LIBRARY_HELD_OUT = ("freedoom", "hedgewars", "nexuiz", "wesnoth", "warzone2100")


@dataclass(frozen=True)
class DataSpec:
    """How much data: sized so a full build takes minutes on two shared cores."""

    train_scenes: int = 2400
    val_scenes: int = 160
    scene_s: float = 2.0
    eval_scenes: int = 60  # shot-carrying evaluation scenes per domain
    eval_scene_s: float = 10.0
    shot_free_minutes_held_out: float = 60.0
    shot_free_minutes_in_domain: float = 20.0
    seed: int = 20261129
    #: the fraction of training and validation scenes with independently randomised gun physics and
    #: recording path (the evaluation scenes never are: they stay the named families' own sound)
    randomise: float = 0.0
    #: randomised scenes also carry physics-drawn non-gun impulses (hw_sim.audio_randomise.physics_impulse)
    physics_impulses: bool = False
    #: training scenes from a second generator: the clip generator's sound tracks (in-domain families
    #: only; model_compile.audio_clips), with shots and shot-free distractor-heavy; a tenth as many
    #: of each join the validation scenes
    clip_scenes: int = 0
    clip_free_scenes: int = 0
    clip_scene_s: float = 8.0
    #: hard negatives on the tails of sounds: up to ``tails_per_scene`` training windows per scene whose
    #: target lies within ``tail_s`` after a shot's or an impulse's onset (its echoes, reverb, bounces)
    tail_s: float = 0.0
    tails_per_scene: int = 0
    #: training scenes mixed from a sound library's **development** sources only (other people's sounds;
    #: model_compile.library_scenes; the library's held-out sources are never read), with shots and
    #: shot-free (training only: validation stays the project's own). An experiment (docs/model.md,
    #: "Other people's sounds"): the shipped model hears none.
    library_scenes: int = 0
    library_free_scenes: int = 0
    library_scene_s: float = 4.0
    library_root: str = "build/third-party/usr/share/games"
    library_manifest: str = ""  # empty: the shipped model_compile/third_party_sounds.tsv
    library_held_out: tuple[str, ...] = LIBRARY_HELD_OUT

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _library_training(spec: DataSpec, log: Callable[[str], None]) -> list[Scene]:
    from pathlib import Path

    from bodycam.model_compile import library_eval as le
    from bodycam.model_compile.library_scenes import Prepared, library_scenes

    manifest = Path(spec.library_manifest) if spec.library_manifest else le.DEFAULT_MANIFEST
    decoded, _bad = le.load_library(manifest, Path(spec.library_root), log)
    dev = Prepared(le.split_library(decoded, spec.library_held_out)["dev"])
    log(f"audio data: {spec.library_scenes} + {spec.library_free_scenes} shot-free library scenes of "
        f"{spec.library_scene_s} s from the development sources ({len(dev.shots)} gunshots, "
        f"{len(dev.impulses)} impulses, {len(dev.beds)} beds)")
    out: list[Scene] = []
    for k, (n, free) in enumerate(((spec.library_scenes, False), (spec.library_free_scenes, True))):
        out += [ls.scene for ls in library_scenes(dev, n, spec.seed + 31 + k, spec.library_scene_s, shot_free=free)]
    return out


#: the evaluation sets, held-out first
EVAL_SETS = ("held_out", "held_out_shot_free", "in_domain", "in_domain_shot_free")


def scene_sets(spec: DataSpec, log: Callable[[str], None], training: bool = True) -> dict[str, list[Scene]]:
    """Every scene set of a build, each from its own seed (training never sees an evaluation seed);
    ``training=False``: only the evaluation sets (:data:`EVAL_SETS`, the same scenes either way)."""
    ind, held = families("in_domain"), families("held_out")
    s = spec.seed
    sets: dict[str, list[Scene]] = {}
    if training:
        log(f"audio data: {spec.train_scenes} training scenes of {spec.scene_s} s (families held out: {HELD_OUT})")
        sets["train"] = make_scenes(ind, spec.train_scenes, s + 1, spec.scene_s, impulse_rate=1.0,
                                    randomise=spec.randomise, physics_impulses=spec.physics_impulses)
        sets["val"] = make_scenes(ind, spec.val_scenes, s + 2, spec.eval_scene_s / 2, impulse_rate=0.6,
                                  randomise=spec.randomise, physics_impulses=spec.physics_impulses)
        if spec.clip_scenes or spec.clip_free_scenes:
            from bodycam.model_compile.audio_clips import clip_scenes

            log(f"audio data: {spec.clip_scenes} + {spec.clip_free_scenes} shot-free clip-generator scenes of "
                f"{spec.clip_scene_s} s (in-domain clip families)")
            for k, (n, free) in enumerate(((spec.clip_scenes, False), (spec.clip_free_scenes, True))):
                sets["train"] += clip_scenes(n, s + 21 + k, spec.clip_scene_s, shot_free=free, log=log)
                sets["val"] += clip_scenes(n // 10, s + 23 + k, spec.clip_scene_s, shot_free=free)
        if spec.library_scenes or spec.library_free_scenes:
            sets["train"] += _library_training(spec, log)
    sets["held_out"] = make_scenes(held, spec.eval_scenes, s + 3, spec.eval_scene_s, impulse_rate=0.5)
    sets["in_domain"] = make_scenes(ind, spec.eval_scenes, s + 4, spec.eval_scene_s, impulse_rate=0.5)
    n_free = round(spec.shot_free_minutes_held_out * 60 / spec.eval_scene_s)
    sets["held_out_shot_free"] = make_scenes(held, n_free, s + 5, spec.eval_scene_s, shot_free=True,
                                             impulse_rate=0.6)
    n_free = round(spec.shot_free_minutes_in_domain * 60 / spec.eval_scene_s)
    sets["in_domain_shot_free"] = make_scenes(ind, n_free, s + 6, spec.eval_scene_s, shot_free=True,
                                              impulse_rate=0.6)
    return sets


__all__ = ["ALL", "EVAL_SETS", "HELD_OUT", "LIBRARY_HELD_OUT", "DataSpec", "Scene", "WindowSet", "families", "make_scenes", "mine_negatives", "scene_sets", "windows"]
