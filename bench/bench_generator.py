"""Footage generator speed: median x real time at 640x360 30 fps over a few clips, single
process, including H.264 + AAC encoding. Run: ``python bench/bench_generator.py [N]``."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from bodycam.hw_sim.clipgen import ClipSpec, generate_clip

SCENES = ("range", "street", "indoor", "night")


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 4
    seconds = 10.0
    speeds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(n):
            spec = ClipSpec(seconds=seconds, seed=1000 + k, scene=SCENES[k % len(SCENES)], shots=4)
            t0 = time.perf_counter()
            generate_clip(Path(tmp) / f"b{k}.mp4", spec)
            dt = time.perf_counter() - t0
            speeds.append(seconds / dt)
            print(f"clip {k} ({spec.scene}): {dt:.2f} s for {seconds:g} s of footage = {seconds / dt:.2f}x real time")
    print(f"median: {statistics.median(speeds):.2f}x real time at 640x360 30 fps (n={n}, includes H.264+AAC encoding)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
