"""A second sound generator for the audio detector's training: the clip generator's own sound tracks.

The audio model's families (:mod:`bodycam.hw_sim.audio_synth`) are one way of making gunshots,
impulses and beds; the clip generator (:func:`bodycam.hw_sim.clipgen.clip_sound`) is another, written
separately, with its own gunshot, door slam, clap, dropped object and firework. A model that hears
only one generator learns that generator (the shipped model scores the clip generator's shots at a
median 0.75 and its door slams at 0.31, under its 0.9 threshold for most shots). Training on both
is the usual cure for a domain gap (more than one source domain); what it may not do is hear the
families evaluation holds out, so :func:`clip_scenes` draws clips exactly as ``bodycam-sim
make-dataset --families`` does, **in-domain families only** (:data:`~bodycam.hw_sim.families.DEFAULT_HOLD_OUT`:
never an indoor scene), from its own seed, and renders no frame.

Each clip's track (48 kHz, before AAC) goes through the firmware's resampler to the features' rate;
its shots are the positives, its door slams, claps, dropped objects and fireworks the hard negatives,
sirens, shouting and babble the bed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bodycam.device.detect.audio_features import FEATURES
from bodycam.hw_sim.audio_randomise import firmware_resample
from bodycam.hw_sim.clipgen import clip_sound
from bodycam.hw_sim.dataset import plan_family_dataset
from bodycam.hw_sim.families import DEFAULT_HOLD_OUT, HoldOut
from bodycam.model_compile.audio_data import Scene

#: the clip generator's sounds that are impulses (hard negatives); the rest of its events are beds
IMPULSE_KINDS = ("door_slam", "clap", "dropped_object", "firework")


def clip_scenes(count: int, seed: int, seconds: float, *, shot_free: bool = False,
                log: Callable[[str], None] | None = None) -> list[Scene]:
    """``count`` clip sound tracks of ``seconds`` from in-domain families (see the module docstring);
    ``shot_free``: the generator's distractor-heavy shot-free clips (``make-dataset --shot-free``)."""
    if count <= 0:
        return []
    hold = HoldOut(tuple(DEFAULT_HOLD_OUT.items()))
    jobs = plan_family_dataset(Path("clip-sound"), max(3, count), seed, seconds, hold, 0,
                               shot_free=shot_free)[:count]
    sr = FEATURES.sample_rate
    out: list[Scene] = []
    for k, job in enumerate(jobs):
        plan, audio = clip_sound(job.spec, job.look)
        rate = job.spec.sample_rate
        x = firmware_resample(audio, rate, sr)

        def at(sample: int, rate: int = rate) -> int:
            return sample * sr // rate

        shots = tuple((at(round(s.frame / plan.fps * rate)), "clip") for s in plan.shots)
        impulses = tuple(sorted(
            (at(ev.audio_sample if ev.audio_sample is not None else round(ev.start / plan.fps * rate)), ev.kind)
            for ev in plan.events if ev.kind in IMPULSE_KINDS))
        out.append(Scene(x, shots, impulses, len(x) / sr))
        if log is not None and (k + 1) % 100 == 0:
            log(f"clip sound: {k + 1}/{count}")
    return out


__all__ = ["IMPULSE_KINDS", "clip_scenes"]
