"""The feature code is one function for training and firmware: the stream gives the same frames."""

from __future__ import annotations

import numpy as np
import pytest

from bodycam.device.detect.audio_features import FEATURES, LogMelStream, log_mel, n_frames
from bodycam.device.hw.microphone import AudioBlock
from bodycam.model_compile import audio_data


def _stream(x: np.ndarray, sizes: list[int], t0: int = 5_000_000) -> tuple[list[int], np.ndarray]:
    st = LogMelStream()
    times: list[int] = []
    frames = []
    k = 0
    i = 0
    while k < len(x):
        n = sizes[i % len(sizes)]
        t, f = st.push(AudioBlock(t0 + k * 62_500, x[k : k + n]))
        times += [t + j * FEATURES.hop_ns for j in range(len(f))]
        frames.append(f)
        k += n
        i += 1
    return times, np.concatenate(frames)


def test_stream_equals_the_training_function_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    x = (rng.normal(0, 0.1, 16000 * 3) * np.sin(np.arange(48000) / 900)).astype(np.float32)
    whole = log_mel(x)
    assert whole.shape == (n_frames(len(x)), FEATURES.mels)
    for sizes in ([1024], [160], [37, 999, 4000, 1], [48000]):
        times, frames = _stream(x, sizes)
        assert np.array_equal(frames, whole), sizes
        assert times == [5_000_000 + i * 10_000_000 for i in range(len(whole))]


def test_training_windows_are_cut_from_the_same_features() -> None:
    scenes = audio_data.make_scenes(audio_data.families("in_domain"), 2, seed=5, seconds=1.0)
    ws = audio_data.windows(scenes, 20, (6, 8), seed=1, negatives_per_scene=400)
    whole = [log_mel(s.audio) for s in scenes]
    for w in ws.x[:50]:
        assert any(np.array_equal(w, m[j : j + 20]) for m in whole for j in range(len(m) - 19))


def test_a_gap_restarts_the_stream_at_the_block_time() -> None:
    st = LogMelStream()
    st.push(AudioBlock(0, np.zeros(1000, np.float32)))
    t, f = st.push(AudioBlock(900_000_000, np.zeros(400, np.float32)))
    assert t == 900_000_000 and len(f) == 1


def test_wrong_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="16000"):
        LogMelStream().push(AudioBlock(0, np.zeros(480, np.float32), rate=48000))


def test_a_shot_is_louder_than_the_bed_in_its_frames() -> None:
    from bodycam.hw_sim.audio_synth import gun_sound

    x = np.zeros(16000, np.float32)
    x[8000 : 8000 + 8000] += gun_sound("pistol", np.random.default_rng(1), 16000)[:8000] * 0.5
    m = log_mel(x)
    onset_frame = 8000 // FEATURES.hop
    assert m[onset_frame].mean() > m[onset_frame - 5].mean() + 3  # +30 dB at least



def test_timestamp_jitter_is_not_a_gap_the_stream_follows_it() -> None:
    """A block 0.3 ms off where the previous one ended (period timestamp jitter, or the converter's
    clock correction) continues the stream: the same frames as without it, timed from the new stamp."""
    x = np.random.default_rng(5).normal(0, 0.1, 3200).astype(np.float32)
    whole = log_mel(x)
    st = LogMelStream()
    t1, f1 = st.push(AudioBlock(0, x[:1000]))
    t2, f2 = st.push(AudioBlock(1000 * 62_500 + 300_000, x[1000:]))
    assert np.array_equal(np.concatenate([f1, f2]), whole)  # nothing dropped
    assert t1 == 0 and t2 == len(f1) * FEATURES.hop_ns + 300_000
