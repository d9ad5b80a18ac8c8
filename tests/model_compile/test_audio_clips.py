"""The clip generator as a second source of training sound: the same track the clips carry,
in-domain families only, onsets where the shots are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bodycam.device.detect.audio_features import FEATURES
from bodycam.hw_sim.clipgen import clip_sound, generate_clip
from bodycam.hw_sim.dataset import plan_family_dataset
from bodycam.hw_sim.families import DEFAULT_HOLD_OUT, HoldOut
from bodycam.hw_sim.truth import load_truth, truth_path_for
from bodycam.model_compile import audio_clips
from bodycam.model_compile.audio_clips import clip_scenes


def _decoded(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]).astype(np.float32)


def test_the_sound_is_the_track_the_clip_carries(tmp_path: Path) -> None:
    hold = HoldOut(tuple(DEFAULT_HOLD_OUT.items()))
    job = next(j for j in plan_family_dataset(tmp_path, 6, 4401, 2.0, hold, 0, size=(192, 108)) if j.spec.shots)
    generate_clip(tmp_path / "c.mp4", job.spec, look=job.look)
    plan, mine = clip_sound(job.spec, job.look)
    track = _decoded(tmp_path / "c.mp4")
    n = min(len(track), len(mine)) - 4096
    # the AAC track is the synthesised sound after the codec: aligned within the codec's delay, and close
    lag = max(range(0, 4096), key=lambda k: float(np.dot(track[k : k + n], mine[:n])))
    a, b = track[lag : lag + n], mine[:n]
    corr = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert corr > 0.97, (lag, corr)
    truth = load_truth(truth_path_for(tmp_path / "c.mp4"))
    assert [s.frame for s in plan.shots] == [s.frame for s in truth.shots]
    assert len(truth.shots) >= 1


def test_only_in_domain_families_are_heard(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = audio_clips.clip_sound

    def spy(spec, look):  # type: ignore[no-untyped-def]
        seen.append((spec, dict(look.families)))
        return real(spec, look)

    monkeypatch.setattr(audio_clips, "clip_sound", spy)
    scenes = clip_scenes(12, 4402, 2.0) + clip_scenes(12, 4403, 2.0, shot_free=True)
    assert len(scenes) == 24 and len(seen) == 24
    for spec, fam in seen:
        assert spec.scene != "indoor"
        assert all(fam[axis] not in names for axis, names in DEFAULT_HOLD_OUT.items()), fam
    assert sum(len(s.shots) for s in scenes[:12]) >= 6 and not any(s.shots for s in scenes[12:])
    assert sum(len(s.impulses) for s in scenes[12:]) >= 12  # the distractor-heavy ones carry the hard negatives


def test_onsets_are_where_the_shots_start_at_the_features_rate() -> None:
    scenes = clip_scenes(8, 4404, 3.0)
    sr = FEATURES.sample_rate
    sharp = checked = 0
    for sc in scenes:
        assert len(sc.audio) == pytest.approx(3.0 * sr, abs=sr * 0.02)
        for s, _fam in sc.shots:
            # the loudest sample within 20 ms either side is in the shot's first 5 ms (unless another
            # sound overlaps it: most do not)
            lo = max(0, s - 320)
            peak = lo + int(np.argmax(np.abs(sc.audio[lo : s + 320])))
            sharp += int(s <= peak < s + 80)
            checked += 1
    assert checked >= 8
    assert sharp >= 0.8 * checked, (sharp, checked)


def test_the_tails_of_sounds_are_negatives_after_their_onsets_only() -> None:
    from bodycam.model_compile.audio_data import Scene, _labels, windows

    sr, hop, target = FEATURES.sample_rate, FEATURES.hop, (10, 12)
    rng = np.random.default_rng(5)
    sc = Scene(rng.normal(0, 0.01, 3 * sr).astype(np.float32), ((8000, "pistol"),), ((32000, "door_slam"),), 3.0)
    n = 250
    starts = (np.arange(n) + target[0]) * hop
    plain, tailed = _labels(sc, n, target), _labels(sc, n, target, tail_s=0.5)
    assert not (plain == 4).any()
    assert ((plain == tailed) | (tailed == 4)).all()  # only plain negatives become tails
    four = starts[tailed == 4]
    assert len(four) > 50
    for s in (8000, 32000):  # every tail window starts after its sound's onset, within 0.5 s of it
        mine = four[(four > s - sr) & (four < s + sr)]
        assert len(mine) and mine.min() > s + hop and mine.max() < s + sr // 2
    assert (tailed[(starts <= 8000) & ((np.arange(n) + target[1]) * hop > 8000)] == 1).all()
    base = windows([sc], 24, target, 3)
    assert windows([sc], 24, target, 3, tail_s=0.0, tails_per_scene=9).digest() == base.digest()
    more = windows([sc], 24, target, 3, tail_s=0.5, tails_per_scene=9)
    assert len(more.y) == len(base.y) + 9 and more.hard_negatives == base.hard_negatives + 9
    assert more.positives == base.positives
