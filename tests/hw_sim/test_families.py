"""Domain-randomised data by named families: disjoint, deterministic, held-out never in training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bodycam.device.errors import UsageError
from bodycam.hw_sim.dataset import HELDOUT_SPLIT, make_dataset, plan_family_dataset
from bodycam.hw_sim.families import AXES, DEFAULT_HOLD_OUT, HoldOut
from bodycam.hw_sim.look_plan import FlashTiming, row_weights
from bodycam.hw_sim.timeline import ClipSpec
from bodycam.hw_sim.truth import load_truth, truth_path_for
from bodycam.model_compile import dataset as ds

HOLD = HoldOut.of(DEFAULT_HOLD_OUT)


def test_in_domain_clips_never_draw_a_held_out_family_and_held_out_clips_always_do(tmp_path: Path) -> None:
    jobs = plan_family_dataset(tmp_path, 200, 11, 10.0, HOLD, 120)
    assert [j.split for j in jobs].count(HELDOUT_SPLIT) == 120
    for j in jobs:
        assert j.look is not None
        fam = dict(j.look.families)
        assert set(fam) == set(AXES)
        held = [a for a, names in HOLD.families if fam[a] in names]
        if j.split == HELDOUT_SPLIT:
            assert held, fam
            assert j.held_out
        else:
            assert not held, (j.split, fam)
            assert not j.held_out
        # the clip is made the way its families say
        assert j.spec.scene == fam["scene"] and j.spec.fps == float(fam["fps"])
        assert (j.spec.width, j.spec.height) == (j.look.width, j.look.height)
    in_domain = [dict(j.look.families) for j in jobs if j.split != HELDOUT_SPLIT and j.look is not None]
    for axis in AXES:  # every allowed family of every axis occurs in training
        assert {f[axis] for f in in_domain} == set(HOLD.allowed(axis, held_out=False)), axis
    held_fams = [dict(j.look.families) for j in jobs if j.split == HELDOUT_SPLIT and j.look is not None]
    for axis, names in HOLD.families:  # and every held-out family occurs in the held-out clips
        assert set(names) <= {f[axis] for f in held_fams}


def test_the_plan_is_a_function_of_the_seed(tmp_path: Path) -> None:
    a = plan_family_dataset(tmp_path, 30, 7, 10.0, HOLD, 10)
    b = plan_family_dataset(tmp_path, 30, 7, 10.0, HOLD, 10)
    c = plan_family_dataset(tmp_path, 30, 8, 10.0, HOLD, 10)
    assert a == b
    assert [j.spec.seed for j in a] != [j.spec.seed for j in c]
    assert [j.look for j in a] != [j.look for j in c]


def test_hold_out_specs_are_checked() -> None:
    assert str(HoldOut.parse("scene=indoor,fps=25,fps=60")) == "fps=25,fps=60,scene=indoor"
    assert HoldOut.parse("none").families == ()
    with pytest.raises(UsageError, match="hold-out axis 'colour'"):
        HoldOut.parse("colour=red")
    with pytest.raises(UsageError, match="scene family 'moon'"):
        HoldOut.parse("scene=moon")
    with pytest.raises(UsageError, match="expected AXIS=FAMILY"):
        HoldOut.parse("indoor")
    with pytest.raises(UsageError, match="every fps family held out"):
        HoldOut.of({"fps": AXES["fps"]})


def test_row_weights_follow_the_exposure_of_each_row() -> None:
    # global shutter, exposure 0.1 frame: a flash inside it is seen by every row, one after it by none
    full = row_weights(90, FlashTiming(phase=0.02, duration=0.01), readout=0.0, exposure=0.1)
    assert np.allclose(full, 1.0)
    assert not row_weights(90, FlashTiming(phase=0.5, duration=0.01), readout=0.0, exposure=0.1).any()
    # rolling shutter (readout 0.8 frame): a band of rows around where the readout was at the flash
    band = row_weights(100, FlashTiming(phase=0.4, duration=0.01), readout=0.8, exposure=0.1)
    lit = np.flatnonzero(band > 0.5)
    assert lit.min() > 30 and lit.max() <= 50 and 8 <= lit.size <= 14
    # half of a flash that straddles the end of a row's exposure
    half = row_weights(1, FlashTiming(phase=0.095, duration=0.01), readout=0.0, exposure=0.1)
    assert abs(float(half[0]) - 0.5) < 1e-5


def test_a_family_data_set_keeps_held_out_clips_out_of_every_training_split(tmp_path: Path) -> None:
    root = tmp_path / "fam"
    index = make_dataset(root, 3, 5, ClipSpec(seconds=1.5), workers=1, hold=HOLD, held_out_clips=2, size=(192, 108))
    assert index["counts"] == {"train": 1, "val": 1, "test": 1, "heldout": 2}
    assert index["hold_out"] == {"flash": ["vents_orange"], "fps": ["25"], "scene": ["indoor"]}
    rows = {r["path"]: r for r in index["clips"]}
    splits = ds.find_splits(root)  # what bodycam-model build trains and validates on
    for split in ("train", "val", "test"):
        for clip in splits[split]:
            row = rows[str(clip.relative_to(root))]
            assert not row["held_out"] and not HOLD.is_held_out(row["families"])
    held = ds.clips_for(root, HELDOUT_SPLIT)
    assert len(held) == 2 and all(HOLD.is_held_out(rows[str(c.relative_to(root))]["families"]) for c in held)
    assert not set(held) & {c for s in splits.values() for c in s}
    for clip in held + [c for s in splits.values() for c in s]:  # the truth matches what was made
        t = load_truth(truth_path_for(clip))
        row = rows[str(clip.relative_to(root))]
        assert t.generator.scene == row["families"]["scene"]
        assert (t.video.width, t.video.height) == (192, 108)
        assert abs(t.video.fps - float(row["families"]["fps"])) < 1e-6
    # the same command makes the same truth (and the same index but for paths)
    again = make_dataset(tmp_path / "again", 3, 5, ClipSpec(seconds=1.5), workers=1, hold=HOLD, held_out_clips=2,
                         size=(192, 108))
    assert json.dumps(again["clips"]) == json.dumps(index["clips"])
    for r in index["clips"]:
        assert (root / r["truth"]).read_bytes().replace(b"fam", b"") == (tmp_path / "again" / r["truth"]).read_bytes()


def test_the_looks_own_distractors_render_and_sound(tmp_path: Path) -> None:
    import av

    from bodycam.hw_sim.clipgen import generate_clip
    from bodycam.hw_sim.families import draw_look

    fam = {"scene": "night", "weather": "clear", "flash": "star_warm", "fps": "30", "camera": "global_shutter",
           "distance": "near", "distractors": "celebration"}
    look = draw_look(np.random.default_rng(1), fam)
    out = tmp_path / "c.mp4"
    truth = generate_clip(out, ClipSpec(seconds=4, shots=0, seed=9, scene="night", width=look.width,
                                        height=look.height, fps=30.0), look=look)
    fireworks = [d for d in truth.distractors if d.kind == "firework"]
    assert fireworks and all(d.audio_sample is not None for d in fireworks)
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]
    with av.open(str(out)) as c:
        afr = list(c.decode(audio=0))
        start = int(afr[0].pts or 0)  # AAC priming: the track may start before 0
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in afr])
    for d in fireworks:
        if d.start_frame > 0:  # the burst lights the sky at once
            bright = [int((frames[k].max(axis=2) > 200).sum()) for k in (d.start_frame - 1, d.start_frame)]
            assert bright[1] > bright[0] + 30, bright
        a = int(d.audio_sample or 0) - start  # a bang well over the clip's bed
        assert np.abs(audio[a : a + 2400]).max() > 5 * float(np.median(np.abs(audio)))


def test_flicker_bands_need_a_rolling_shutter() -> None:
    from bodycam.hw_sim.families import draw_look
    from bodycam.hw_sim.look_render import LookRenderer
    from bodycam.hw_sim.timeline import EventPlan

    fam = {"scene": "indoor", "weather": "clear", "flash": "star_warm", "fps": "30", "camera": "bodycam_wide",
           "distance": "near", "distractors": "flicker"}
    rolling = draw_look(np.random.default_rng(2), fam)
    ev = EventPlan("led_flicker", 0, 10, {"hz": 400.0, "depth": 0.6, "duty": 0.4, "phase": 0.0})
    for readout, banded in ((rolling.readout, True), (0.0, False)):
        r = LookRenderer.__new__(LookRenderer)  # only the flicker model: no panorama needed
        r.H = 120
        r.look = replace(rolling, readout=readout, exposure=0.05)
        r.exposure = 0.05
        r.plan = type("P", (), {"fps": 30.0})()  # type: ignore[assignment]
        rows = r._flicker(3, ev)
        assert (float(rows.max() - rows.min()) > 0.3) is banded
