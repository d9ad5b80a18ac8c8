"""Small real H.264 (+AAC) clips for tests that need footage but not the full generator."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_plain_clip(path: Path, seconds: float = 3.0, fps: int = 30, size: tuple[int, int] = (320, 180),
                    audio: bool = True, gop: int | None = None, flash_frames: tuple[int, ...] = (),
                    frame_times_ms: list[int] | None = None, bframes: int = 0) -> Path:
    """A moving gradient clip; ``flash_frames`` get a bright warm blob (not a realistic shot).

    ``frame_times_ms`` gives each frame its own presentation time (a variable frame rate clip).
    """
    w, h = size
    n = round(seconds * fps) if frame_times_ms is None else len(frame_times_ms)
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.options = {"preset": "ultrafast", "g": str(gop or fps), "keyint_min": str(gop or fps), "sc_threshold": "0",
                  "x264-params": f"bframes={bframes}"}
    tb = Fraction(1, fps) if frame_times_ms is None else Fraction(1, 1000)
    vs.codec_context.time_base = tb
    as_ = None
    if audio:
        as_ = out.add_stream("aac", rate=48000)
        as_.layout = "mono"
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.empty((h, w, 3), np.uint8)
        img[..., 0] = (xx + 3 * i) % 256
        img[..., 1] = (yy + i) % 256
        img[..., 2] = 90
        if i in flash_frames:
            cy, cx = h // 2, w // 2
            img[cy - 8 : cy + 8, cx - 8 : cx + 8] = (255, 230, 160)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i if frame_times_ms is None else frame_times_ms[i]
        frame.time_base = tb
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    if as_ is not None:
        total = int(seconds * 48000)
        t = np.arange(total) / 48000
        samples = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, total, 1024):
            chunk = samples[start : start + 1024]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            af.sample_rate = 48000
            af.pts = start
            af.time_base = Fraction(1, 48000)
            for p in as_.encode(af):
                out.mux(p)
        for p in as_.encode():
            out.mux(p)
    out.close()
    return path


BURST_HZ = 1000.0


def tone_clip(path: Path, seconds: float, bursts: tuple[float, ...], rate: int = 48000,
              video_fps: int | None = None) -> Path:
    """Quiet noise with 0.2 s bursts of 1 kHz at ``bursts`` (clip seconds); optionally with video."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = np.random.default_rng(1).normal(0, 0.003, n).astype(np.float32)
    for b in bursts:
        on = (t >= b) & (t < b + 0.2)
        x[on] += (0.5 * np.sin(2 * np.pi * BURST_HZ * t[on])).astype(np.float32)
    with av.open(str(path), "w") as out:
        vs = None
        if video_fps is not None:
            vs = out.add_stream("libx264", rate=video_fps)
            vs.width, vs.height, vs.pix_fmt = 320, 180, "yuv420p"
            vs.options = {"preset": "ultrafast", "g": str(video_fps), "sc_threshold": "0"}
        aus = out.add_stream("aac", rate=rate)
        aus.layout = "mono"
        if vs is not None and video_fps is not None:
            for i in range(int(seconds * video_fps)):
                img = np.full((180, 320, 3), (i * 3) % 256, np.uint8)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, video_fps)
                for p in vs.encode(frame):
                    out.mux(p)
            for p in vs.encode(None):
                out.mux(p)
        for k in range(0, n, 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, k : k + 1024]), format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = rate, k, Fraction(1, rate)
            for p in aus.encode(f):
                out.mux(p)
        for p in aus.encode(None):
            out.mux(p)
    return path
