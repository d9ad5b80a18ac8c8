"""`bodycam-sim make-clip OUT.mp4`: render one synthetic clip and its truth file."""

from __future__ import annotations

import argparse
import math
import sys

from bodycam.device.errors import UsageError
from bodycam.hw_sim.timeline import ClipSpec
from bodycam.hw_sim.truth import SCENES, truth_path_for


def parse_size(text: str) -> tuple[int, int]:
    """``"640x360"`` -> (640, 360); :class:`UsageError` otherwise."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 640x360)")
    return int(parts[0]), int(parts[1])


def parse_seed(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise UsageError(f"seed {text!r} is not an integer") from None
    if not 0 <= v <= 2**32 - 1:
        raise UsageError(f"seed {v} out of range 0..{2**32 - 1}")
    return v


def parse_float(name: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise UsageError(f"{name} {text!r} is not a finite number")
    return v


def parse_int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not an integer") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT.mp4", help="clip to write (truth goes to OUT.truth.json)")
    parser.add_argument("--seconds", default="20", help="duration, 1..3600 (default 20)")
    parser.add_argument("--shots", default=None, help="number of shots (default: random; 0: shot-free)")
    parser.add_argument("--seed", default="0", help="seed, 0..2**32-1 (default 0)")
    parser.add_argument("--scene", default="random", help=f"{'|'.join(SCENES)}|random (default random)")
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT, even, 160x96..1920x1080 (default 640x360)")
    parser.add_argument("--fps", default="30", help="frame rate, 5..60 (default 30)")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")


def spec_from_args(args: argparse.Namespace) -> ClipSpec:
    w, h = parse_size(args.size)
    shots = None if args.shots is None else parse_int("shots", args.shots)
    spec = ClipSpec(
        seconds=parse_float("seconds", args.seconds),
        shots=shots,
        seed=parse_seed(args.seed),
        scene=args.scene,
        width=w,
        height=h,
        fps=parse_float("fps", args.fps),
    )
    spec.validate()
    return spec


def run(args: argparse.Namespace) -> int:
    from bodycam.hw_sim.clipgen import generate_clip

    spec = spec_from_args(args)
    bar = None
    if not args.quiet and sys.stderr.isatty():  # a 3-minute clip takes most of a minute to render
        from tqdm import tqdm

        bar = tqdm(total=round(spec.seconds * spec.fps), unit="frame", desc="  rendering", file=sys.stderr,
                   leave=False)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        truth = generate_clip(args.out, spec, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        print(
            f"{args.out}: {truth.video.width}x{truth.video.height} {truth.video.fps:g} fps, "
            f"{truth.video.frames} frames ({truth.video.duration_s:g} s), scene {truth.generator.scene}, "
            f"{len(truth.shots)} shots, {len(truth.distractors)} distractors; truth: {truth_path_for(args.out)}",
            file=sys.stdout,
        )
    return 0
