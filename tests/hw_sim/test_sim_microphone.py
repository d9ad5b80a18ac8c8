"""The simulated microphone plays a clip's audio by its PTS: onsets within 1 ms of where they are."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bodycam.device.hw.microphone import AUDIO_RATE
from bodycam.hw_sim.clip_camera import ClipCamera
from bodycam.hw_sim.sim_microphone import ClipMicrophone
from tests._clips import make_plain_clip

CLICKS_S = (0.5, 1.2345, 2.0007)


def _clip_with_clicks(path: Path, rate: int, layout: str, seconds: float = 2.5, video_start: int = 0) -> Path:
    """Video at 30 fps plus AAC with three clicks at CLICKS_S (on the video's timeline)."""
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=30)
    vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
    vs.codec_context.time_base = Fraction(1, 30)
    as_ = out.add_stream("aac", rate=rate)
    as_.layout = layout
    ch = 2 if layout == "stereo" else 1
    for i in range(round(seconds * 30)):
        f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i % 256, np.uint8), format="rgb24")
        f.pts, f.time_base = i + video_start, Fraction(1, 30)
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    n = int(seconds * rate)
    x = np.zeros((ch, n), np.float32)
    rng = np.random.default_rng(1)
    x += rng.normal(0, 0.002, (ch, n)).astype(np.float32)
    for c in CLICKS_S:
        k = round(c * rate)
        x[-1, k : k + 200] += 0.8 * np.exp(-np.arange(200) / 30.0)  # in the last channel only
    off = round(video_start / 30 * rate)
    for start in range(0, n, 1024):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, start : start + 1024]), format="fltp", layout=layout)
        af.sample_rate, af.pts, af.time_base = rate, start + off, Fraction(1, rate)
        for p in as_.encode(af):
            out.mux(p)
    for p in as_.encode():
        out.mux(p)
    out.close()
    return path


def _onsets(mic: ClipMicrophone, until_ns: int, step_ns: int) -> list[float]:
    blocks = []
    t = 0
    while t <= until_ns:
        blocks += mic.read(t)  # as the loop does: everything before the current frame's time
        t += step_ns
    for a, b in itertools.pairwise(blocks):
        assert b.t_ns == a.end_ns or abs(b.t_ns - a.end_ns) <= 62_500  # one continuous stream
    assert all(b.rate == AUDIO_RATE for b in blocks)
    y = np.concatenate([b.samples for b in blocks])
    t0 = blocks[0].t_ns
    env = np.abs(y)
    out: list[float] = []
    k = 0
    while k < len(env):
        if env[k] > 0.1:
            out.append((t0 + k * 1e9 / AUDIO_RATE) / 1e9)
            k += AUDIO_RATE // 10
        else:
            k += 1
    return out


def test_clicks_land_within_1ms_of_their_pts_after_mixing_and_resampling(tmp_path: Path) -> None:
    for rate, layout in ((44100, "stereo"), (48000, "mono"), (16000, "mono")):
        clip = _clip_with_clicks(tmp_path / f"c{rate}{layout}.mp4", rate, layout)
        mic = ClipMicrophone(clip)
        assert mic.start()
        try:
            found = _onsets(mic, 2_400_000_000, 33_333_333)
        finally:
            mic.close()
        assert len(found) == len(CLICKS_S), (rate, layout, found)
        for want, got in zip(CLICKS_S, found, strict=True):
            assert abs(got - want) < 0.001, (rate, layout, want, got)


def test_audio_shares_the_camera_origin_when_video_does_not_start_at_zero(tmp_path: Path) -> None:
    clip = _clip_with_clicks(tmp_path / "late.mp4", 48000, "mono", video_start=15)
    cam = ClipCamera(clip, (32, 24), with_packets=False)
    cam.start()
    first = cam.read()
    cam.stop()
    assert first is not None and first.t_ns == 0
    mic = ClipMicrophone(clip)
    assert mic.start()
    try:
        found = _onsets(mic, 2_400_000_000, 33_333_333)
    finally:
        mic.close()
    assert len(found) == len(CLICKS_S)
    assert all(abs(f - c) < 0.001 for f, c in zip(found, CLICKS_S, strict=True)), found


def test_read_returns_only_what_was_captured_before_the_frame(tmp_path: Path) -> None:
    clip = _clip_with_clicks(tmp_path / "c.mp4", 48000, "mono")
    mic = ClipMicrophone(clip)
    mic.start()
    try:
        blocks = mic.read(100_000_000)
        assert blocks and all(b.t_ns < 100_000_000 for b in blocks)
        later = mic.read(200_000_000)
        assert later and later[0].t_ns == blocks[-1].end_ns
    finally:
        mic.close()


def test_a_clip_without_audio_reports_no_audio(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "silent.mp4", seconds=0.5, audio=False)
    mic = ClipMicrophone(clip)
    assert mic.start() is False
    assert mic.read(10**9) == []
    mic.close()
