"""Window labels and training batches agree with the firmware's preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bodycam.device.detect.preprocess import stack_windows
from bodycam.hw_sim.truth import AudioInfo, Distractor, GeneratorInfo, Shot, Truth, VideoInfo
from bodycam.model_compile.batches import BatchSampler, WindowPool, to_float
from bodycam.model_compile.config import BuildConfig
from bodycam.model_compile.dataset import ClipData
from bodycam.model_compile.labels import target_frames, window_labels

SPEC = BuildConfig(width=16, height=8, frames=4, target_offset=1).input_spec()


def _truth(frames: int, shots: list[int], distractor: tuple[int, int] | None = None) -> Truth:
    fps = 30.0
    return Truth(
        clip="c.mp4",
        generator=GeneratorInfo("bodycam-sim", "0", 1, "range"),
        video=VideoInfo(16, 8, fps, frames, frames / fps),
        audio=AudioInfo(48000, int(frames / fps * 48000)),
        shots=tuple(
            Shot(frame=f, t_s=f / fps, audio_sample=round(f / fps * 48000), muzzle_xy=None, shooter="wearer",
                 flash_frames=1, intensity=1.0, occluded=False)
            for f in shots
        ),
        distractors=()
        if distractor is None
        else (Distractor("photo_flash", distractor[0], distractor[1], distractor[0] / fps, (distractor[1] + 1) / fps),),
    )


def test_target_frames_follow_the_window_contract() -> None:
    # window k ends at frame k+3 and speaks for frame k+2 (target_offset 1)
    assert target_frames(10, SPEC).tolist() == list(range(2, 9))
    assert target_frames(3, SPEC).tolist() == []


def test_labels_positive_exactly_at_the_flash_frame() -> None:
    lab = window_labels(_truth(30, [10], (20, 21)), SPEC, near_weight=0.3)
    by_frame = dict(zip(lab.target_frame.tolist(), range(len(lab)), strict=True))
    assert lab.y[by_frame[10]] == 1.0 and lab.y.sum() == 1.0
    assert lab.weight[by_frame[9]] == 0.3 and lab.weight[by_frame[11]] == 0.3 and lab.weight[by_frame[10]] == 1.0
    assert lab.hard[by_frame[20]] and lab.hard[by_frame[12]] and not lab.hard[by_frame[10]]
    assert not lab.hard[by_frame[5]]


def test_pool_windows_are_the_firmware_windows() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(12, 8, 16, 3), dtype=np.uint8)
    clip = ClipData(Path("c.mp4"), _truth(12, [5]), np.arange(12, dtype=np.int64), frames, "0" * 64)
    pool = WindowPool([clip], SPEC)
    rows = np.arange(len(pool), dtype=np.int64)
    ours = pool.windows_u8(rows)
    firmware = stack_windows(frames, SPEC)  # int8, pixel - 128
    assert np.array_equal((ours ^ np.uint8(0x80)).view(np.int8), firmware)
    # the float model sees pixel/255 == (q + 128) * 1/255, the int8 input's dequantisation
    assert np.allclose(to_float(ours), (firmware.astype(np.float32) + 128) / 255)


def test_batches_are_balanced_and_reproducible() -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(200, 8, 16, 3), dtype=np.uint8)
    clip = ClipData(Path("c.mp4"), _truth(200, [50, 120], (80, 82)), np.arange(200, dtype=np.int64), frames, "0" * 64)
    pool = WindowPool([clip], SPEC)
    a = BatchSampler(pool, 32, seed=3).draw()
    b = BatchSampler(pool, 32, seed=3).draw()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    x, y, _w = a
    assert x.shape == (32, 8, 16, 12) and x.dtype == np.float32
    assert y.sum() >= 8  # a quarter of the batch are positives


def test_a_flash_in_no_frame_is_no_positive_and_its_frame_is_ignored() -> None:
    from dataclasses import replace

    t = _truth(30, [10, 20])
    t = replace(t, shots=(t.shots[0], replace(t.shots[1], flash_frames=0)))
    lab = window_labels(t, SPEC, near_weight=0.3)
    by_frame = dict(zip(lab.target_frame.tolist(), range(len(lab)), strict=True))
    assert lab.y[by_frame[10]] == 1.0 and lab.y.sum() == 1.0
    assert lab.y[by_frame[20]] == 0.0 and lab.weight[by_frame[20]] == 0.0


def test_a_mix_gives_each_source_its_share_of_the_drawn_windows_whatever_its_size() -> None:
    """Synthetic footage (many clips) and a force's range footage (one clip), mixed 1:3: the range
    clip's windows are drawn three times as often as all the synthetic ones together, in every part
    of a batch (shots, hard negatives, the rest); without a mix every window is alike."""
    rng = np.random.default_rng(1)

    def clip(shots: list[int]) -> ClipData:
        frames = rng.integers(0, 256, size=(40, 8, 16, 3), dtype=np.uint8)
        return ClipData(Path("c.mp4"), _truth(40, shots, (30, 31)), np.arange(40, dtype=np.int64), frames, "0" * 64)

    clips = [clip([10, 20]) for _ in range(9)] + [clip([15])]
    sources = [0] * 9 + [1]
    mixed = WindowPool(clips, SPEC, sources=sources, mix=[1.0, 3.0])
    sampler = BatchSampler(mixed, 64, seed=3)
    rows = np.concatenate([sampler.rows() for _ in range(300)])
    share = float(np.mean(mixed.source[rows] == 1))
    assert 0.70 < share < 0.80  # 3 / (1 + 3)
    pos = np.concatenate([mixed.choose(sampler.rng, mixed.pos, 64) for _ in range(100)])
    assert 0.70 < float(np.mean(mixed.source[pos] == 1)) < 0.80
    plain = WindowPool(clips, SPEC)
    rows = np.concatenate([BatchSampler(plain, 64, seed=3).rows() for _ in range(300)])
    range_rows = plain.clip_idx[rows] == 9
    assert float(np.mean(range_rows)) < 0.2  # one clip of ten (its one shot is a third of a clip's shots)
