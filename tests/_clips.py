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
