"""Detector invoke time: median of many single-frame invokes on one thread (budget <= 1 ms).

    python bench/bench_model.py [MODEL] [--invokes 2000] [--threads 1] [--json]

Uses the runtime only (ai-edge-litert, else tflite-runtime; never TensorFlow), with the
firmware's FrameWindow filling the input, as on the camera.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bodycam.device.detect.model_spec import default_model_path, load_model_spec
from bodycam.device.detect.preprocess import FrameWindow
from bodycam.model_compile.deps import load_interpreter

BUDGET_MS = 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", type=Path, default=default_model_path())
    ap.add_argument("--invokes", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    spec = load_model_spec(args.model)
    it = load_interpreter(args.model, num_threads=args.threads)
    win = FrameWindow(spec.input)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(16, spec.input.height, spec.input.width, 3), dtype=np.uint8)
    index = it.get_input_details()[0]["index"]
    out = it.tensor(it.get_output_details()[0]["index"])
    times = []
    for i in range(args.invokes + 100):
        win.push(frames[i % len(frames)])
        t0 = time.perf_counter_ns()
        it.set_tensor(index, win.tensor)
        it.invoke()
        _ = int(out()[0, 0])
        if i >= 100:  # warm-up excluded
            times.append((time.perf_counter_ns() - t0) / 1e6)
    times.sort()
    res = {
        "model": str(args.model),
        "threads": args.threads,
        "invokes": len(times),
        "median_ms": round(statistics.median(times), 4),
        "p90_ms": round(times[int(0.9 * len(times))], 4),
        "p99_ms": round(times[int(0.99 * len(times))], 4),
        "budget_ms": BUDGET_MS,
        "macs_per_frame": spec.raw.get("macs_per_frame"),
        "size_bytes": args.model.stat().st_size,
    }
    res["within_budget"] = res["median_ms"] <= BUDGET_MS
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(
            f"{args.model.name}: median {res['median_ms']} ms, p90 {res['p90_ms']} ms, p99 {res['p99_ms']} ms "
            f"per invoke ({args.threads} thread, {len(times)} invokes; budget {BUDGET_MS} ms: "
            f"{'OK' if res['within_budget'] else 'OVER'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
