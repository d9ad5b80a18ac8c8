from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from _clips import make_plain_clip

from bodycam.device.detect.preprocess import FrameWindow, InputSpec, stack_windows
from bodycam.device.errors import ClipError
from bodycam.hw_sim.clip_camera import ClipCamera, read_lores

S = 1_000_000_000


def test_frames_are_stamped_from_pts_and_scaled(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "c.mp4", seconds=1, fps=30)
    times, frames = read_lores(clip, (64, 36))
    assert frames.shape == (30, 36, 64, 3) and frames.dtype == np.uint8
    assert all(abs(int(t) - i * S / 30) < 1000 for i, t in enumerate(times))


def test_packets_arrive_with_frames_video_and_audio(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "c.mp4", seconds=2, fps=30, audio=True)
    kinds = set()
    keyframes = 0
    with ClipCamera(clip, (32, 18)) as cam:
        assert cam.info is not None and cam.info.has_audio and cam.info.width == 320
        while (f := cam.read()) is not None:
            for p in f.packets:
                kinds.add(p.stream)
                keyframes += p.stream == "video" and p.keyframe
    assert kinds == {"video", "audio"} and keyframes == 2


def test_truncated_clip_delivers_what_is_readable_then_names_the_offset(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "c.mp4", seconds=4, fps=30, audio=False)
    fast = tmp_path / "fast.mp4"
    with av.open(str(clip)) as inp, av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        vs = out.add_stream_from_template(inp.streams.video[0])
        for pkt in inp.demux(inp.streams.video[0]):
            if pkt.dts is None:
                continue
            pkt.stream = vs
            out.mux(pkt)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    n = 0
    with ClipCamera(cut, (32, 18)) as cam, \
            pytest.raises(ClipError, match=r"truncated or damaged after byte offset \d+: \d+ of 120 frames"):
        while cam.read() is not None:
            n += 1
    assert 0 < n < 120


def test_frame_window_equals_stacked_windows(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "c.mp4", seconds=0.5, fps=30, audio=False)
    _, frames = read_lores(clip, (16, 8))
    spec = InputSpec(width=16, height=8, frames=4, colour="rgb", scale=1 / 255, zero_point=-128, target_offset=1)
    stacked = stack_windows(frames, spec)
    win = FrameWindow(spec)
    for i, f in enumerate(frames):
        win.push(f)
        if win.ready:
            assert np.array_equal(win.tensor[0], stacked[i - 3])
    assert stacked.shape == (len(frames) - 3, 8, 16, 12)
    assert int(stacked[0, 0, 0, 9]) == int(frames[3, 0, 0, 0]) - 128
