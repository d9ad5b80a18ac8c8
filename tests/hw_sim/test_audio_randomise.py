"""The randomised gun physics and recording path of the audio training data (hw_sim.audio_randomise)."""

from __future__ import annotations

import numpy as np

from bodycam.device.detect.audio_features import FEATURES, log_mel
from bodycam.hw_sim import audio_randomise as rnd
from bodycam.hw_sim import audio_synth as synth
from bodycam.model_compile import audio_data

SR = FEATURES.sample_rate


def test_physics_guns_start_at_sample_zero_and_differ_from_each_other() -> None:
    rng = np.random.default_rng(7)
    shots = [rnd.physics_gun(rng, SR) for _ in range(40)]
    for x in shots:
        assert x.dtype == np.float32 and np.max(np.abs(x)) <= 1.0 + 1e-6
        assert abs(float(x[0])) > 0  # the onset is sample 0
        # the bang is at the start: the first 60 ms hold the loudest part
        assert np.argmax(np.abs(x)) < 0.06 * SR
    spectra = np.array([log_mel(np.concatenate([np.zeros(800, np.float32), x]))[5] for x in shots])
    assert np.std(spectra, axis=0).mean() > 0.3  # spectral shapes spread (log10 power per band)


def test_shaping_puts_nothing_before_the_onset() -> None:
    x = np.zeros(4000, np.float32)
    x[:400] = np.random.default_rng(1).normal(0, 1, 400) * np.exp(-np.arange(400) / 40)
    y = rnd.shape(x, SR, rng=np.random.default_rng(2))
    assert len(y) == len(x) and np.isfinite(y).all()
    padded = np.concatenate([np.zeros(1600, np.float32), y])
    m = log_mel(padded)
    onset = 1600 // FEATURES.hop
    assert m[onset - 4].max() < m[onset + 1].max() - 3  # silent (-30 dB) before the onset frame


def test_aac_round_trip_keeps_the_onset_in_place() -> None:
    x = np.zeros(2 * SR, np.float32)
    k = SR
    x[k : k + 400] = (np.random.default_rng(3).normal(0, 0.3, 400) * np.exp(-np.arange(400) / 50)).astype(np.float32)
    for rate in (rnd.AAC_BITRATES[0], rnd.AAC_BITRATES[-1]):
        y = rnd.aac_round_trip(x, SR, rate)
        assert len(y) == len(x)
        c = np.correlate(y[k - 500 : k + 1000], x[k - 500 : k + 1000], "full")
        assert int(np.argmax(np.abs(c))) - 1499 == 0, rate  # no shift (the encoder's priming removed)
        assert np.abs(y[: k - 400]).max() < 0.01  # pre-echo stays within a codec frame


def test_recording_path_is_deterministic_and_bounded() -> None:
    x = (np.random.default_rng(4).normal(0, 0.3, SR) * 3).astype(np.float32)
    a = [rnd.recording_path(x, np.random.default_rng(s), SR, codec=1.0) for s in (5, 5, 6)]
    assert np.array_equal(a[0], a[1]) and not np.array_equal(a[0], a[2])
    assert all(np.abs(y).max() <= 1.0 and len(y) == len(x) for y in a)


def test_randomised_scenes_carry_physics_guns_and_label_their_onsets() -> None:
    fams = audio_data.families("in_domain")
    rng = np.random.default_rng(8)
    fams_seen = set()
    for _ in range(6):
        audio, shots, _imp = synth.audio_scene(rng, 2.0, SR, guns=fams["guns"], impulses=fams["impulses"],
                                               continuous=fams["continuous"], rooms=fams["rooms"], shots=4,
                                               impulse_count=2, randomise=True)
        assert len(audio) == 2 * SR and np.abs(audio).max() <= 1.0
        fams_seen |= {f for _s, f in shots}
    assert "physics" in fams_seen
    assert not fams_seen & set(audio_data.HELD_OUT["guns"])


def test_evaluation_scenes_are_not_randomised() -> None:
    spec = audio_data.DataSpec(train_scenes=2, val_scenes=2, eval_scenes=2, shot_free_minutes_held_out=0.2,
                               shot_free_minutes_in_domain=0.2)
    sets = audio_data.scene_sets(spec, lambda _m: None, training=False)
    assert set(sets) == set(audio_data.EVAL_SETS)
    again = audio_data.scene_sets(spec, lambda _m: None)
    for k in audio_data.EVAL_SETS:  # the same scenes whether or not the training sets are made
        assert all(np.array_equal(a.audio, b.audio) for a, b in zip(sets[k], again[k], strict=True))
    assert all(f != "physics" for sc in sets["in_domain"] for _s, f in sc.shots)


def test_mining_returns_the_highest_scoring_negatives_only() -> None:
    scenes = audio_data.make_scenes(audio_data.families("in_domain"), 6, seed=9, seconds=2.0)

    def loudness(x: np.ndarray) -> np.ndarray:
        return x[:, 22:24].mean(axis=(1, 2)).astype(np.float32)

    mined = audio_data.mine_negatives(scenes, 36, (22, 24), loudness, count=25, chunk=4)
    again = audio_data.mine_negatives(scenes, 36, (22, 24), loudness, count=25, chunk=2)
    assert len(mined.y) == 25 and not mined.y.any() and mined.hard_negatives == 25
    assert np.array_equal(np.sort(loudness(mined.x)), np.sort(loudness(again.x)))  # chunking does not matter
    pos = audio_data.windows(scenes, 36, (22, 24), seed=1)
    positives = pos.x[pos.y > 0]
    for w in mined.x:  # no mined window is a positive one
        assert not any(np.array_equal(w, p) for p in positives)
    # every window of the scenes not mined scores at most the lowest mined one (among negatives)
    assert loudness(mined.x).min() >= np.quantile(loudness(pos.x[pos.y == 0]), 0.5)


def test_physics_impulses_start_at_sample_zero_and_join_only_randomised_scenes() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        x = rnd.physics_impulse(rng, SR)
        assert abs(float(x[0])) > 0 and np.max(np.abs(x)) <= 1.0 + 1e-6 and np.isfinite(x).all()
    fams = audio_data.families("in_domain")
    seen: set[str] = set()
    for randomise in (True, False):
        for _ in range(4):
            _a, _s, imp = synth.audio_scene(rng, 2.0, SR, guns=fams["guns"], impulses=fams["impulses"],
                                            continuous=fams["continuous"], rooms=fams["rooms"], shots=1,
                                            impulse_count=6, randomise=randomise, physics_impulses=True)
            names = {f for _o, f in imp}
            assert randomise or "physics_impulse" not in names
            seen |= names
    assert "physics_impulse" in seen
