"""Encryption at rest: CPU cost per second of 720p30 footage (issue 13 target: < 10 % of one core).

Encodes a real 720p30 H.264 stream with libx264 at the camera's default bitrate (8 Mbit/s,
``camera.bitrate``), muxes one second of it as fragmented MP4 the way the firmware does, and
measures the CPU time (``time.process_time``) of the same mux into

  * a plain file (``segment-*.mp4``, encryption off), and
  * the encrypting file object (``segment-*.mp4.age``, footage/atrest.py: age v1, X25519 +
    ChaCha20-Poly1305 in 64 KiB chunks, plaintext SHA-256 on the way),

repeated N times; the difference of the medians is what encryption costs per second of footage,
quoted as a percentage of one core. Also the raw encrypt throughput (MB/s) and the median
per frame. Run under ``nice -n 15``: ``nice -n 15 python bench/bench_atrest.py [N]`` (default 30).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bodycam.device.footage.atrest import EncryptingWriter

W, H, FPS, BITRATE = 1280, 720, 30, 8_000_000
OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


def encode_second() -> tuple[list[tuple[bytes, int, bool]], Any]:
    """One second of 720p30 H.264 with moving noise (so the encoder spends the whole bitrate)."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = W, H, "yuv420p"
    enc.time_base = Fraction(1, FPS)
    enc.framerate = Fraction(FPS, 1)
    enc.bit_rate = BITRATE
    enc.options = {"preset": "ultrafast", "g": "15", "nal-hrd": "cbr", "maxrate": "8M", "bufsize": "2M"}
    rng = np.random.default_rng(1)
    packets: list[tuple[bytes, int, bool]] = []
    for i in range(FPS):
        img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        for p in enc.encode(frame):
            packets.append((bytes(p), int(p.pts), p.is_keyframe))
    for p in enc.encode(None):
        packets.append((bytes(p), int(p.pts), p.is_keyframe))
    return packets, enc


def mux(packets: list[tuple[bytes, int, bool]], enc: Any, target: Any) -> None:
    out = av.open(target, "w", format="mp4", options=dict(OPTIONS))
    st = out.add_stream("h264", rate=FPS)
    st.width, st.height, st.pix_fmt = W, H, "yuv420p"
    st.codec_context.extradata = enc.extradata
    st.time_base = Fraction(1, FPS)
    for data, pts, key in packets:
        p = av.Packet(data)
        p.pts = p.dts = pts
        p.time_base = Fraction(1, FPS)
        p.is_keyframe = key
        p.stream = st
        out.mux(p)
    out.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    packets, enc = encode_second()
    size = sum(len(d) for d, _, _ in packets)
    key = X25519PrivateKey.generate().public_key()
    plain_s: list[float] = []
    enc_s: list[float] = []
    raw_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            p = Path(tmp) / f"s{i}.mp4"
            t0 = time.process_time()
            mux(packets, enc, str(p))
            plain_s.append(time.process_time() - t0)
            e = Path(tmp) / f"s{i}.mp4.age"
            t0 = time.process_time()
            w = EncryptingWriter.create(e, key)
            mux(packets, enc, w)
            w.close()
            enc_s.append(time.process_time() - t0)
            data = p.read_bytes()
            t0 = time.process_time()
            with EncryptingWriter.create(Path(tmp) / f"r{i}.age", key) as raw:
                for k in range(0, len(data), 32768):  # the muxer's I/O buffer size
                    raw.write(data[k:k + 32768])
            raw_s.append(time.process_time() - t0)
            p.unlink()
            e.unlink()
            (Path(tmp) / f"r{i}.age").unlink()
    mp, me, mr = statistics.median(plain_s), statistics.median(enc_s), statistics.median(raw_s)
    print(f"one second of 720p30 H.264: {size / 1e6:.2f} MB ({size * 8 / 1e6:.1f} Mbit/s), {n} runs")
    print(f"mux to a plain file:        median {mp * 1e3:7.2f} ms CPU")
    print(f"mux encrypted (age):        median {me * 1e3:7.2f} ms CPU")
    print(f"encryption alone:           median {mr * 1e3:7.2f} ms CPU per second of footage = "
          f"{mr * 100:.2f} % of one core ({size / mr / 1e6:.0f} MB/s; {mr / FPS * 1e3:.3f} ms per frame)")
    print(f"difference of the medians:  {(me - mp) * 1e3:7.2f} ms per second of footage = {(me - mp) * 100:.2f} % "
          "of one core (target < 10 %)")


if __name__ == "__main__":
    main()
