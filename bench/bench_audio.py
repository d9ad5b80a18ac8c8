"""Audio detector cost per hop (budget <= 1 ms on one thread), split into features and invoke.

    python bench/bench_audio.py [MODEL] [--seconds 60] [--block 1024] [--json]

Streams synthetic sound (a bed with shots and distractors from hw_sim.audio_synth) through the
firmware's own AudioDetector in microphone-sized blocks, as on the camera, and times each block's
work: log-mel features (LogMelStream) and the model (quantise + set + invoke + read). A hop is one
model run (``stride`` feature frames, 20 ms of sound with the shipped model).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bodycam.device.detect.audio_detector import AudioDetector
from bodycam.device.detect.audio_model_spec import default_audio_model_path
from bodycam.device.hw.microphone import AudioBlock
from bodycam.hw_sim import audio_synth as synth

BUDGET_MS = 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", type=Path, default=default_audio_model_path())
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--block", type=int, default=1024, help="samples per microphone block (16 kHz)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(7)
    sr = 16000
    audio, _, _ = synth.audio_scene(rng, args.seconds, sr, guns=synth.GUN_FAMILIES, impulses=synth.IMPULSE_FAMILIES,
                                    continuous=synth.CONTINUOUS_FAMILIES, rooms=synth.ROOM_FAMILIES,
                                    shots=int(args.seconds / 2), impulse_count=int(args.seconds / 2))
    det = AudioDetector(args.model, threads=1)
    # time the two halves the detector runs per block: features, then the model per hop
    feat_ns: list[int] = []
    hops_ns: list[int] = []
    stream = det.stream
    real_push = stream.push

    def timed_push(block: AudioBlock) -> tuple[int, np.ndarray]:
        t0 = time.perf_counter_ns()
        r = real_push(block)
        feat_ns.append(time.perf_counter_ns() - t0)
        return r

    real_score = det.score_window

    def timed_score(window: np.ndarray) -> float:
        t0 = time.perf_counter_ns()
        r = real_score(window)
        hops_ns.append(time.perf_counter_ns() - t0)
        return r

    stream.push = timed_push  # type: ignore[method-assign]
    det.score_window = timed_score  # type: ignore[method-assign]
    block_ns: list[int] = []
    for k in range(0, len(audio), args.block):
        b = AudioBlock(k * 62_500, audio[k : k + args.block])
        t0 = time.perf_counter_ns()
        det.feed(b)
        block_ns.append(time.perf_counter_ns() - t0)
    hops = max(1, det.invokes)
    total_ms = sum(block_ns) / 1e6
    res = {
        "model": str(args.model),
        "seconds_of_audio": args.seconds,
        "hops": det.invokes,
        "hop_ms_of_audio": det.spec.stride * 10,
        "per_hop_ms": round(total_ms / hops, 4),
        "per_hop_features_ms": round(sum(feat_ns) / 1e6 / hops, 4),
        "invoke_median_ms": round(statistics.median(hops_ns) / 1e6, 4),
        "invoke_p99_ms": round(sorted(hops_ns)[int(0.99 * len(hops_ns))] / 1e6, 4),
        "per_block_median_ms": round(statistics.median(block_ns) / 1e6, 4),
        "per_30fps_frame_ms": round(total_ms / (args.seconds * 30), 4),
        "x_real_time": round(args.seconds * 1000 / total_ms, 1),
        "budget_ms_per_hop": BUDGET_MS,
        "macs_per_hop": det.spec.raw.get("macs_per_hop"),
        "size_bytes": args.model.stat().st_size,
    }
    print(json.dumps(res, indent=1) if args.json else "\n".join(f"{k:22} {v}" for k, v in res.items()))
    return 0 if res["per_hop_ms"] <= BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
